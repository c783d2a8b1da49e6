"""engine.metrics against cases computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from engine.metrics import auroc, encounter_exclusion, evaluate_ranking, open_set_scores, queryable


def test_cmc_and_map_hand_computed():
    # Query 0 (id A): gallery ranked B, A, A  -> first hit at rank 2; AP = (1/2 + 2/3) / 2
    # Query 1 (id B): gallery ranked B, A, A  -> first hit at rank 1; AP = 1
    sim = np.array([[0.9, 0.8, 0.7], [0.9, 0.8, 0.7]])
    result = evaluate_ranking(sim, np.array(["A", "B"]), np.array(["B", "A", "A"]))
    assert result.rank(1) == pytest.approx(0.5)
    assert result.rank(2) == pytest.approx(1.0)
    assert result.mAP == pytest.approx(((1 / 2 + 2 / 3) / 2 + 1) / 2)


def test_exclusion_removes_own_encounter_and_skips_queries_without_match():
    # Photos 0 and 1 are one encounter of A (left/right flank); photo 2 is B.
    ids = np.array(["A", "A", "B"])
    exclude = encounter_exclusion(["A/1", "A/1", "B/7"])
    sim = np.array([[1.0, 0.9, 0.1], [0.9, 1.0, 0.1], [0.1, 0.1, 1.0]])
    result = evaluate_ranking(sim, ids, ids, exclude)
    assert result.queries == 0 and result.queries_skipped == 3  # nobody has another encounter
    assert not queryable(ids, exclude).any()
    two = encounter_exclusion(["A/1", "A/2", "B/7"])  # A seen again in another encounter, B not
    assert queryable(ids, two).tolist() == [True, True, False]
    same_side = encounter_exclusion(["A/1", "A/2", "A/3"], ["left", "right", "left"], same_viewpoint_only=True)
    assert same_side.tolist() == [[True, True, False], [True, True, True], [False, True, True]]


def test_auroc_and_open_set_threshold():
    assert auroc([0.9, 0.8], [0.1, 0.2]) == 1.0
    assert auroc([0.5], [0.5]) == 0.5
    scores = open_set_scores(
        np.array([0.9, 0.8, 0.3]),
        np.array([True, True, False]),
        np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.2, 0.1, 0.2, 0.3, 0.35]),
        flag_new_share=0.9,
    )
    assert 0.4 < scores["threshold"] <= 0.5
    assert scores["new_flagged"] == pytest.approx(0.9)
    assert scores["known_wrongly_flagged"] == pytest.approx(1 / 3)
    assert scores["known_correct_at_threshold"] == pytest.approx(2 / 3)
