"""Reviewer decisions (engine/decisions.py) on a real catalogue of real photos: no duplicate codes, no
cross-species suggestions or confirmations, merges logged and undoable, undo per reviewer."""

from __future__ import annotations

import numpy as np
import pytest

from engine import decisions
from engine.catalogue import Catalogue
from engine.match import Gallery, suggest
from tests.conftest import herdbook


@pytest.fixture
def cat(decision_catalogue):
    """The shared five-photo catalogue, and a nyala '100' in it."""
    c = Catalogue(decision_catalogue)
    c.ensure_individual("100", "nyala")
    yield c
    c.close()


def dets(cat) -> list[int]:
    return [r["id"] for r in cat.query("SELECT id FROM detections ORDER BY id")]


def test_new_individual_with_an_existing_code_names_the_existing_one(cat):
    d = dets(cat)[0]
    decisions.set_detection_species(cat, d, "nyala", who="ann")
    with pytest.raises(decisions.ExistingIndividual) as err:
        decisions.name_new_individual(cat, d, "100", who="ann")
    assert err.value.code == "100" and err.value.species == "nyala"
    assert cat.db["individuals"].count == 1  # no second "100"
    decisions.confirm(cat, d, err.value.individual_id, who="ann")  # what the app offers instead
    assert cat.sighting_of(d)["individual_id"] == err.value.individual_id


def test_unknown_species_detection_cannot_become_a_second_100(cat):
    """The issue's case: a frame labelled 'animal' and code '100' typed: the existing 100 is named."""
    with pytest.raises(decisions.ExistingIndividual):
        decisions.name_new_individual(cat, dets(cat)[0], "100", who="ann")
    with pytest.raises(decisions.DecisionError, match="species .* unknown"):
        decisions.name_new_individual(cat, dets(cat)[0], "F-1", who="ann")
    assert decisions.name_new_individual(cat, dets(cat)[0], "F-1", who="ann", species="fox")
    assert {(r["code"], r["species"]) for r in cat.query("SELECT code, species FROM individuals")} == {
        ("100", "nyala"),
        ("F-1", "fox"),
    }


def test_species_are_never_crossed(cat):
    d = dets(cat)[1]
    decisions.set_detection_species(cat, d, "fox", who="ann")
    nyala = cat.query("SELECT id FROM individuals WHERE code = '100'")[0]["id"]
    with pytest.raises(decisions.DecisionError, match="is a fox"):
        decisions.confirm(cat, d, nyala, who="ann")
    gallery = Gallery(
        vectors=np.eye(3, dtype=np.float32),
        individual_ids=np.array([1, 2, 3]),
        detection_ids=np.array([11, 12, 13]),
        viewpoints=np.array([None, None, None], dtype=object),
        species=np.array(["nyala", "fox", "animal"], dtype=object),
    )
    query = np.array([1.0, 0.9, 0.8], np.float32)
    found = {c.individual_id for c in suggest(query, gallery, 0.0, species="fox")[0]}
    assert found == {2, 3}  # the nyala never; an individual of unknown species may match
    assert {c.individual_id for c in suggest(query, gallery, 0.0, species="animal")[0]} == {1, 2, 3}


def test_merge_is_a_logged_decision_with_undo(cat):
    a = cat.ensure_individual("A", "nyala")
    b = cat.ensure_individual("B", "nyala")
    d = dets(cat)
    decisions.set_detection_species(cat, d[0], "nyala", who="ann")
    decisions.confirm(cat, d[0], b, who="ann")
    decisions.merge(cat, a, b, who="ann")
    assert decisions.resolve_individual(cat, b) == a
    assert cat.db["merges"].count == 1
    with pytest.raises(Exception, match="append-only"):
        cat.db.execute("DELETE FROM merges")
    assert decisions.undo_merge(cat, who="bob") is None  # not bob's merge
    undone = decisions.undo_merge(cat, who="ann")
    assert undone["merged_id"] == b and decisions.resolve_individual(cat, b) == b
    assert cat.db["merges"].count == 2  # the undo is a new row
    assert cat.sighting_of(d[0])["individual_id"] == b  # B's history was never touched


def test_undo_is_per_reviewer(cat):
    ind = cat.ensure_individual("X", "animal")
    d = dets(cat)
    first = decisions.confirm(cat, d[0], ind, who="ann")
    decisions.confirm(cat, d[1], ind, who="bob")
    undone = decisions.undo_last(cat, who="ann")
    assert undone["id"] == first and undone["code"] == "X"
    assert cat.sighting_of(d[1]) is not None  # bob's confirmation stands
    assert "confirmation of detection" in decisions.describe(undone)


def test_cli_new_individual_with_existing_code_says_to_confirm(cat):
    path = cat.target
    d = dets(cat)[0]
    res = herdbook("--catalogue", path, "new-individual", d, "100", "--species", "nyala", "--who", "ann")
    assert res.returncode == 1 and "exists already" in res.stderr and f"confirm {d} 100" in res.stderr
    res = herdbook("--catalogue", path, "new-individual", d, "N-2", "--species", "nyala", "--who", "ann")
    assert res.returncode == 0, res.stderr
    res = herdbook("--catalogue", path, "undo", "--who", "ann")
    assert res.returncode == 0 and "confirmation of detection" in res.stdout and "N-2" in res.stdout


def test_a_detections_side_is_set_with_its_trail_and_nonsense_is_refused(cat):
    d = dets(cat)[0]
    assert decisions.side_of(cat, d) == (None, None)
    decisions.set_detection_side(cat, d, "left", who="ann")
    decisions.set_detection_side(cat, d, "right", who="ben")
    assert decisions.side_of(cat, d) == ("right", "ben")
    with pytest.raises(decisions.DecisionError, match="'up' is not a side"):
        decisions.set_detection_side(cat, d, "up", who="ann")
    decisions.set_detection_side(cat, d, None, who="ann")  # not known after all
    trail = cat.query("SELECT side, who FROM side_changes WHERE detection_id = ? ORDER BY id", [d])
    assert trail == [{"side": "left", "who": "ann"}, {"side": "right", "who": "ben"}, {"side": None, "who": "ann"}]
    assert decisions.side_of(cat, d) == (None, "ann")
    with pytest.raises(decisions.DecisionError, match="no detection"):
        decisions.side_of(cat, 10**9)
