"""`herdbook evaluate --data DIR`: figures for any folder of identified photos, through the app's embedder; and
the suggestion protocol behind it (engine.evaluate)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from engine.calibration import Fusion
from engine.evaluate import (
    SuggestionRun,
    query_outcomes,
    report_lines,
    run_suggestions,
    share,
    sighting_numbers,
    suggestion_figures,
)
from engine.metrics import SESSION_WINDOW, reid_protocol
from tests.conftest import herdbook


def test_evaluate_a_folder_of_identified_photos(tmp_path, data_dir):
    root = tmp_path / "mine"
    individuals = sorted(p.name for p in (data_dir / "nyala/train").iterdir())[:8]
    for ind in individuals:
        shutil.copytree(data_dir / "nyala/train" / ind, root / ind)
    files = {p.read_bytes() for p in root.rglob("*.jpg")}  # distinct by content
    res = herdbook("evaluate", "--data", root, "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["photos"] == len(files) and out["individuals"] == 8
    a = out["across_encounters"]
    assert 0.0 <= a["rank1"] <= a["rank5"] <= 1.0 and a["queries"] > 0
    g = out["suggestions"]  # the product's path: detector crop, embedding, coat pattern, calibrated fusion
    assert out["fused"] and 0.0 <= g["top1"] <= g["top5"] <= 1.0 and g["queries"] == a["queries"]
    assert 0.0 <= g["auroc_known_vs_new"] <= 1.0 and 0.0 <= g["new_flagged"] <= 1.0
    e = out["photos_with_encounter"]  # the photos with their other flank: alone, and together as the app a burst
    assert 0 < e["together"]["queries"] == e["alone"]["queries"] <= g["queries"]
    app = out["as_the_app_judges"]  # every photo: together where both flanks show, else alone at its side's cut
    assert app["queries"] == g["queries"] and app["judged_together"] == e["together"]["queries"]
    assert out["sides"] == {"from_names": out["photos"], "inferred": 0}
    # Told the species, the card's side classifier is checked against the sides the names give (none inferred).
    named = json.loads(herdbook("evaluate", "--data", root, "--json", "--species", "nyala").stdout)
    assert named["sides"]["inferred"] == 0 and named["sides"]["inferred_against_names"]["photos"] == out["photos"]
    assert named["sides"]["inferred_against_names"]["accuracy_all"] > 0.9  # card: 97.8% on never-fitted nyala
    assert named["suggestions"] == out["suggestions"] | {"ms_per_query": named["suggestions"]["ms_per_query"]}
    checked = f"sides inferred from the crops, checked against the {out['photos']} the names give: "
    assert any(line.startswith(checked) for line in report_lines(named))  # what herdbook evaluate prints
    assert not any(line.startswith("sides inferred") for line in report_lines(out))
    text = herdbook("evaluate", "--data", root)
    assert "photos with another photo of their encounter" in text.stdout
    assert "every photo as the app judges it" in text.stdout
    assert "suggestions (appearance + coat pattern), across encounters: top-1" in text.stdout
    assert "new individual" in text.stdout


def test_evaluate_infers_the_sides_names_do_not_give_for_a_species_the_card_knows(tmp_path, data_dir):
    """One folder per encounter, files named without a side: with --species nyala the sides are inferred as an
    import's would be (engine.side), so both-flank encounters are judged together; without it, none are."""
    from tests.conftest import held_out_individuals

    root = tmp_path / "encounters"
    for individual in held_out_individuals()[:6]:
        for f in sorted((data_dir / "nyala/train" / individual).glob("*.jpg")):
            folder = root / individual / f.name.split("_")[0]
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copy(f, folder / f"photo{len(list(folder.iterdir()))}.jpg")
    results = {}
    for species in ("nyala", None):
        res = herdbook("evaluate", "--data", root, "--json", *(("--species", species) if species else ()))
        assert res.returncode == 0, res.stderr
        results[species] = json.loads(res.stdout)
    inferred, plain = results["nyala"], results[None]
    assert inferred["sides"]["from_names"] == 0 and inferred["sides"]["inferred"] >= 0.6 * inferred["photos"]
    assert plain["sides"] == {"from_names": 0, "inferred": 0}
    assert inferred["as_the_app_judges"]["judged_together"] > 0 == plain["as_the_app_judges"]["judged_together"]
    assert inferred["as_the_app_judges"]["queries"] == plain["as_the_app_judges"]["queries"] > 0


def test_evaluate_names_a_missing_folder(tmp_path):
    res = herdbook("evaluate", "--data", tmp_path / "nope")
    assert res.returncode == 1 and "nope: no such folder" in res.stderr


def test_evaluate_says_when_no_individual_was_photographed_in_two_encounters(tmp_path, data_dir):
    """Each individual of one nyala number only (its left and right photos are one encounter): no suggestion can
    be right across encounters, so evaluate says why instead of printing figures over no queries."""
    root = tmp_path / "one-encounter-each"
    for folder in sorted((data_dir / "nyala/train").iterdir())[:2]:
        number = sorted(folder.glob("*_leftphoto.jpg"))[0].name.split("_")[0]
        (root / folder.name).mkdir(parents=True)
        for photo in folder.glob(f"{number}_*photo.jpg"):
            shutil.copy(photo, root / folder.name / photo.name)
    res = herdbook("evaluate", "--data", root)
    assert res.returncode == 1 and "one-encounter-each: no individual has photos of two encounters" in res.stderr
    assert "INDIVIDUAL/ENCOUNTER/photo.jpg" in res.stderr and "nan" not in res.stdout + res.stderr


def test_a_never_seen_animal_is_judged_without_its_individual_in_the_gallery():
    """The open set's 'new' score: the other candidates judged among themselves (their leads over each other),
    not inside the list where the true match stands ahead of them all."""
    fusion = Fusion(2.0, 0.5, -4.0, 0.5, pattern_lead_weight=1.5)
    true, other, third, fourth = (0.8, 60, True), (0.7, 20, False), (0.6, 4, False), (0.5, 3, False)
    run = SuggestionRun([[true, other, third, fourth]], 0.0, candidates=3)
    assert run.as_known() == [[true, other, third]] and run.as_new() == [[other, third, fourth]]
    ranks, known, new = query_outcomes(run, fusion)
    assert ranks.tolist() == [1]
    assert known[0] == pytest.approx(fusion.probabilities([0.8, 0.7, 0.6], [60, 20, 4]).max())
    assert new[0] == pytest.approx(fusion.probabilities([0.7, 0.6, 0.5], [20, 4, 3]).max())
    behind_the_true_match = fusion.probabilities([0.8, 0.7, 0.6], [60, 20, 4])[1]
    assert new[0] > 0.5 > behind_the_true_match  # standing first among chance matches is what a new animal does


def test_a_photo_is_judged_with_the_other_photos_of_its_encounter():
    """Individual 7's left and right flank, photographed in one encounter: on the left a look-alike (8) edges out
    the truth; the right flank, where 8 is not even listed, settles it. Left out of the gallery, 7 leaves a chance
    best on each flank (8 on the left, 9 on the right): together they bunch up, so the left photo, which alone
    looked more like a new animal's than a known one's, now leads clearly only as the known animal it is."""
    fusion = Fusion(2.0, 0.5, -4.0, 0.5, pattern_lead_weight=1.5)
    left = [(0.75, 25, False), (0.70, 20, True), (0.60, 3, False)]  # individuals 8, 7, 9
    right = [(0.75, 40, True), (0.70, 22, False), (0.50, 2, False)]  # individuals 7, 9, 10
    run = SuggestionRun([left, right], 0.0, 2, [[8, 7, 9], [7, 9, 10]], ["7/a", "7/a"], ["left", "right"])
    assert run.encounter_partners() == [[1], [0]]
    for sides in (["left", "left"], ["left", None], []):  # one flank, or sides not known: each photo alone
        assert (
            SuggestionRun([left, right], 0.0, 2, [[8, 7, 9], [7, 9, 10]], ["7/a", "7/a"], sides).paired().queries == []
        )
    ranks, known, new = query_outcomes(run, fusion)
    ranks_e, known_e, new_e = query_outcomes(run, fusion, with_encounter=True)
    assert ranks.tolist() == [2, 1] and ranks_e.tolist() == [1, 1]
    assert known[0] < new[0]  # alone, the left photo's best scores lower as the known animal than as a new one
    assert known_e[0] > new_e[0]  # together, the open set's score (the best's lead over the second) says known
    assert known[0] == max(fusion.probabilities([0.75, 0.70], [25, 20]))
    figures = suggestion_figures(run, fusion, 0.5, with_encounter=True)
    assert figures["queries"] == 2 and figures["top1"] == 1.0
    assert figures["known_wrongly_flagged"] == float(np.mean(known_e < 0.5))  # the threshold is on the lead
    alone = SuggestionRun([left, right], 0.0, 2, [[8, 7, 9], [7, 9, 10]], ["7/a", "7/b"], ["left", "right"])
    assert alone.paired().queries == [] and run.paired().queries == run.queries  # no partner, not in the pairs


def test_a_photo_of_no_known_side_is_judged_at_the_cards_threshold_for_it():
    fusion = Fusion(2.0, 0.5, -4.0, 0.5, pattern_lead_weight=1.5)
    q = [(0.75, 25, True), (0.70, 20, False), (0.60, 3, False)]
    run = SuggestionRun([q, q], 0.0, 2, [[7, 8, 9]] * 2, ["7/a", "7/b"], ["left", None])
    _, known, _ = query_outcomes(run, fusion)
    cut = float(known[0]) + 0.01  # just above both photos' (equal) best scores
    assert suggestion_figures(run, fusion, cut)["known_wrongly_flagged"] == 1.0
    mixed = suggestion_figures(run, fusion, cut, unsided_threshold=cut - 0.02)  # only the photo of no side
    assert mixed["known_wrongly_flagged"] == 0.5 and mixed["unsided_threshold"] == cut - 0.02


def test_known_animals_flagged_new_are_told_apart_by_whether_their_first_suggestion_was_right():
    """A known animal whose first suggestion is a look-alike scores as a never-seen one does: the figures say how
    many of those are flagged apart from the ones whose first suggestion was right."""
    fusion = Fusion(2.0, 0.5, -4.0, 0.5, pattern_lead_weight=1.5)
    right = [(0.80, 60, True), (0.70, 8, False), (0.60, 3, False)]  # the truth first, far ahead
    wrong = [(0.75, 12, False), (0.70, 10, True), (0.60, 3, False)]  # a look-alike edges out the truth
    run = SuggestionRun([right, wrong, wrong], 0.0, 2, [[7, 8, 9], [8, 7, 9], [8, 7, 9]])
    ranks, known, _ = query_outcomes(run, fusion)
    assert ranks.tolist() == [1, 2, 2] and known[0] > known[1]
    cut = float(known[1]) + 0.01  # flags the two whose first suggestion was wrong, not the right one
    figures = suggestion_figures(run, fusion, cut)
    assert figures["known_wrongly_flagged"] == pytest.approx(2 / 3)
    assert figures["known_flagged_when_first_right"] == 0.0 and figures["known_flagged_when_first_wrong"] == 1.0
    every_first_right = suggestion_figures(SuggestionRun([right], 0.0, 2, [[7, 8, 9]]), fusion, cut)
    assert every_first_right["known_flagged_when_first_wrong"] is None  # none to take it over, not NaN
    assert share(every_first_right["known_flagged_when_first_wrong"]) == "none" and share(0.254, 1) == "25.4%"


def test_suggestion_runs_keep_one_candidate_more_for_the_never_seen_case():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(6, 16))
    vectors = np.repeat(centres, 4, 0) + 0.3 * rng.normal(size=(24, 16))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = np.repeat(np.arange(6), 4)
    encounters = [f"{i}/{j // 2}" for i, j in zip(ids, np.tile(np.arange(4), 6), strict=True)]
    run = run_suggestions(vectors, ids.tolist(), encounters, [None] * 24, candidates=3)
    assert len(run.queries) == 24 and all(len(q) == 4 for q in run.queries)
    assert all(len(q) == 3 for q in run.as_known()) and all(len(q) == 3 for q in run.as_new())
    assert all(not any(c[2] for c in q) for q in run.as_new())
    assert all(sum(c[2] for c in q) == 1 for q in run.queries)  # every individual listed once, its own too
    appearance = [[a for a, _, _ in q] for q in run.queries]
    assert all(a == sorted(a, reverse=True) for a in appearance)  # appearance order, as the app verifies them


def test_photo_numbers_give_sighting_sessions_only_where_names_carry_them():
    names = ["/d/100/124_leftphoto.jpg", "/d/100/124_RightPhoto.JPG", "/d/lion/Face1.jpg", "/d/x/a_leftphoto.jpg"]
    assert sighting_numbers(names) == [124, 124, None, None]


def test_a_query_is_never_judged_against_the_herd_mates_of_its_own_sighting_session():
    """Nyala photos numbered one apart are two animals seen at one place and minute (often both in frame): a
    herd-mate's photo that looks just like the query must not stand in its gallery, while the query's own
    individual, seen in another session, still must."""
    rng = np.random.default_rng(1)
    query = rng.normal(size=16)
    herd_mate = query + 0.01 * rng.normal(size=16)  # same scene: nearly the query's own vector
    own_later = query + 0.5 * rng.normal(size=16)  # its individual, 40 numbers later
    strangers = rng.normal(size=(4, 16))
    vectors = np.vstack([query, herd_mate, own_later, strangers])
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = ["a", "b", "a", "c", "c", "d", "d"]
    numbers = [100, 101, 140, 300, 340, 500, 540]
    encounters = [f"{i}/{n}" for i, n in zip(ids, numbers, strict=True)]
    by_number = run_suggestions(vectors, ids, encounters, [None] * 7, candidates=2, sightings=[None] * 7)
    by_session = run_suggestions(vectors, ids, encounters, [None] * 7, candidates=2, sightings=numbers)
    assert SESSION_WINDOW >= 1
    first = {"by_number": by_number.queries[0][0], "by_session": by_session.queries[0][0]}
    assert not first["by_number"][2]  # the herd-mate came first: a chance 'match' on the shared scene
    assert first["by_session"][2]  # with the session left out, the query's own individual does
    assert all(c[0] < 0.99 for c in by_session.queries[0])  # the herd-mate is in no candidate's score
    assert len(by_session.queries) == len(by_number.queries)  # nobody lost a true match to the window
    # the appearance figures (engine.metrics.reid_protocol) follow the same rule as the suggestions
    sides = [None] * 7
    appearance = {
        k: reid_protocol(vectors, ids, encounters, sides, n) for k, n in (("number", None), ("session", numbers))
    }
    assert appearance["session"]["across_encounters"]["rank1"] > appearance["number"]["across_encounters"]["rank1"]
