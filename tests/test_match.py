"""Matching policy: exact and HNSW search, per-individual aggregation, open-set decision, grouping of new ones."""

from __future__ import annotations

import numpy as np
import pytest

from engine.match import (
    Candidate,
    Gallery,
    VectorIndex,
    bursts,
    encounter_probabilities,
    group_new,
    judge_bursts,
    log_odds_lead,
    rank_individuals,
    suggest,
)


def unit(rows):
    rows = np.asarray(rows, np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_hnsw_index_agrees_with_exact_search():
    rng = np.random.default_rng(0)
    vectors = unit(rng.normal(size=(5000, 64)))
    queries = unit(rng.normal(size=(50, 64)))
    exact = VectorIndex(vectors, ann_min=10**9)
    ann = VectorIndex(vectors, ann_min=0)
    assert exact.ann is None and ann.ann is not None
    _, e_idx = exact.search(queries, 10)
    a_scores, a_idx = ann.search(queries, 10)
    recall = np.mean([len(set(e) & set(a)) / 10 for e, a in zip(e_idx, a_idx, strict=True)])
    assert recall >= 0.9
    assert np.all(np.diff(a_scores, axis=1) <= 1e-6)  # best first


def make_gallery(vectors, individuals, viewpoints=None, species=None):
    n = len(vectors)
    return Gallery(
        unit(vectors),
        np.array(individuals),
        np.arange(100, 100 + n),
        np.array(viewpoints or [None] * n, dtype=object),
        np.array(species or ["nyala"] * n, dtype=object),
    )


def test_individual_score_is_mean_of_its_best_three():
    g = make_gallery(np.eye(5), [1, 1, 1, 1, 2])
    cands = rank_individuals(np.array([0.9, 0.8, 0.7, 0.1, 0.85]), np.arange(5), g, k=5, top_n=3)
    assert [c.individual_id for c in cands] == [2, 1]  # 0.85 alone beats mean(0.9, 0.8, 0.7) = 0.8
    assert cands[1].score == pytest.approx(0.8) and cands[1].best_detection_id == 100


def test_open_set_threshold_and_viewpoint_filter():
    g = make_gallery([[1, 0, 0], [0, 1, 0], [0, 0, 1]], [1, 2, 3], viewpoints=["left", "right", None])
    cands, is_new, best = suggest(unit([[1, 0.1, 0]])[0], g, threshold=0.5)
    assert cands[0].individual_id == 1 and not is_new and best > 0.9
    cands, is_new, _ = suggest(unit([[1, 0.1, 0]])[0], g, threshold=0.5, viewpoint="right")
    assert 1 not in [c.individual_id for c in cands]  # a left flank is no evidence for a right-flank query
    assert is_new
    _, is_new, _ = suggest(unit([[-1, -1, -1]])[0], g, threshold=0.5)
    assert is_new


def test_new_individuals_group_by_look_and_by_burst():
    vecs = unit([[1, 0], [0.99, 0.1], [0, 1], [0.6, -0.8], [0.7, 0.7]])
    items = [
        {"media_id": 1, "deployment_id": 1, "taken_at": "2024-01-01T10:00:00", "n_in_photo": 1},
        {"media_id": 2, "deployment_id": 2, "taken_at": "2024-02-01T10:00:00", "n_in_photo": 1},  # looks alike
        {"media_id": 3, "deployment_id": 1, "taken_at": "2024-03-01T10:00:00", "n_in_photo": 1},
        {"media_id": 4, "deployment_id": 1, "taken_at": "2024-03-01T10:00:30", "n_in_photo": 1},  # same burst
        {"media_id": 4, "deployment_id": 1, "taken_at": "2024-03-01T10:00:30", "n_in_photo": 2},
    ]
    items[3]["n_in_photo"] = 2
    groups = group_new(items, vecs, threshold=0.95)
    assert groups[0] == groups[1]
    assert groups[2] != groups[3]  # photo 4 holds two animals: a burst does not link it
    assert groups[3] != groups[4]  # two animals in one photo are never one proposal
    items[3]["n_in_photo"] = 1
    assert group_new(items, vecs, threshold=0.95)[2] == group_new(items, vecs, threshold=0.95)[3]


def _all_pairs_groups(items, vectors, threshold, burst_seconds=60.0):
    """The definition, pair by pair (what group_new computed before issue 13): the oracle for the n log n one."""
    from datetime import datetime

    n, parent = len(items), list(range(len(items)))

    def find(i):
        while parent[i] != i:
            i = parent[i]
        return i

    times = [datetime.fromisoformat(it["taken_at"]) for it in items]
    sims = vectors @ vectors.T
    for i in range(n):
        for j in range(i + 1, n):
            if items[i]["media_id"] == items[j]["media_id"]:
                continue
            burst = (
                items[i]["deployment_id"] == items[j]["deployment_id"]
                and abs((times[i] - times[j]).total_seconds()) <= burst_seconds
                and items[i]["n_in_photo"] == items[j]["n_in_photo"] == 1
            )
            if sims[i, j] >= threshold or burst:
                ri, rj = find(i), find(j)
                parent[max(ri, rj)] = min(ri, rj)
    return [find(i) for i in range(n)]


def _partition(groups):
    out = {}
    for i, g in enumerate(groups):
        out.setdefault(g, []).append(i)
    return sorted(out.values())


def test_grouping_new_detections_without_all_pairs_finds_the_same_groups():
    rng = np.random.default_rng(3)
    n = 400
    centres = unit(rng.normal(size=(60, 32)))
    vecs = unit(centres[rng.integers(0, 60, n)] + rng.normal(0, 0.045, (n, 32)))
    media = rng.integers(0, 350, n)  # some photos hold two or three animals
    per_photo = np.bincount(media, minlength=350)
    start = np.datetime64("2026-05-01T06:00:00")
    items = [
        {
            "media_id": int(m),
            "deployment_id": int(m % 7),
            "taken_at": str(start + np.timedelta64(int(rng.integers(0, 2 * 3600)), "s")),
            "n_in_photo": int(per_photo[m]),
        }
        for m in media
    ]
    expected = _partition(_all_pairs_groups(items, vecs, threshold=0.9))
    assert 20 < len(expected) < n - 20  # both kinds of link occur: neither all alone nor all one group
    assert _partition(group_new(items, vecs, threshold=0.9)) == expected


def test_individual_ranking_matches_the_plain_definition_on_random_ties():
    """rank_individuals is vectorised; the oracle here is its definition written plainly: per individual, its
    photos best first (ties: higher detection id), score = mean of the best top_n, individuals by score with
    ties in the order the search met them."""
    rng = np.random.default_rng(7)
    n = 3000
    gallery = Gallery(
        np.zeros((n, 4), np.float32), rng.integers(0, 200, n), np.arange(n) * 3, np.full(n, None), np.full(n, None)
    )

    def plain(sims, rows, k, top_n, keep):
        per: dict[int, list] = {}
        for s, r in zip(sims, rows, strict=True):
            if r >= 0:
                per.setdefault(int(gallery.individual_ids[r]), []).append((float(s), int(gallery.detection_ids[r])))
        out = []
        for ind, items in per.items():
            items.sort(reverse=True)
            score = sum(v for v, _ in items[:top_n]) / len(items[:top_n])
            out.append((ind, score, [d for _, d in items[: max(top_n, keep)]]))
        out.sort(key=lambda c: -c[1])
        return out[:k]

    for _ in range(300):
        rows = rng.choice(n, 200, replace=False)
        rows[rng.random(200) < 0.05] = -1
        sims = -np.sort(-np.round(rng.random(200), 2))  # two decimals: many ties
        for k, top_n, keep in ((40, 3, 8), (5, 1, 3)):
            got = [
                (c.individual_id, c.score, c.detection_ids)
                for c in rank_individuals(sims, rows, gallery, k, top_n, keep)
            ]
            want = plain(sims, rows, k, top_n, keep)
            assert [(i, d) for i, _, d in got] == [(i, d) for i, _, d in want]
            assert np.allclose([s for _, s, _ in got], [s for _, s, _ in want])


def logit(p):
    return np.log(p / (1 - p))


def test_an_encounter_judges_a_candidate_by_the_mean_log_odds_of_its_photos():
    left = {1: 0.9, 2: 0.5}  # candidate 2 is a chance match of the left flank only
    right = {1: 0.8, 3: 0.6}
    judged = encounter_probabilities(left, [right])
    assert set(judged) == {1, 2}  # only this photo's candidates: what the review draws stays this photo's
    assert logit(judged[1]) == pytest.approx((logit(0.9) + logit(0.8)) / 2)
    # missing on the right flank: counted at the right photo's least probable candidate
    assert logit(judged[2]) == pytest.approx((logit(0.5) + logit(0.6)) / 2)
    assert encounter_probabilities(left, []) == left == encounter_probabilities(left, [{}])
    same = encounter_probabilities(left, [dict(left), dict(left)])  # near-identical burst photos: no inflation
    assert same == pytest.approx(left)


def test_bursts_group_consecutive_single_animal_photos_of_one_camera():
    items = [
        {"deployment_id": 1, "taken_at": "2024-03-01T10:00:00", "n_in_photo": 1},
        {"deployment_id": 1, "taken_at": "2024-03-01T10:00:40", "n_in_photo": 1},
        {"deployment_id": 1, "taken_at": "2024-03-01T10:01:30", "n_in_photo": 1},  # 50 s after the last
        {"deployment_id": 2, "taken_at": "2024-03-01T10:00:10", "n_in_photo": 1},  # another camera
        {"deployment_id": 1, "taken_at": "2024-03-01T10:00:20", "n_in_photo": 2},  # two animals
        {"deployment_id": 1, "taken_at": None, "n_in_photo": 1},  # no time: no burst
        {"deployment_id": 1, "taken_at": "2024-03-01T11:00:00", "n_in_photo": 1},
    ]
    assert sorted(bursts(items)) == [[0, 1, 2], [3], [4], [5], [6]]
    assert sorted(bursts(items, burst_seconds=45)) == [[0, 1], [2], [3], [4], [5], [6]]


def verified(scores: dict[int, float]) -> list[Candidate]:
    out = [Candidate(i, p, 0, pattern_evidence=10) for i, p in scores.items()]
    return sorted(out, key=lambda c: -c.score)


def test_a_burst_is_judged_together_from_each_photos_own_scores():
    left, right = verified({1: 0.6, 2: 0.7}), verified({1: 0.8, 3: 0.3})  # 2: the left flank's chance best
    alone = verified({2: 0.9})
    unverified = [Candidate(1, 0.95, 0)]  # appearance only: neither changes nor counts
    lists = [left, right, alone, unverified]
    one_side = [[c.individual_id for c in x] for x in lists]
    assert judge_bursts(lists, [[0, 1, 3], [2]], ["left", "left", None, None]) == [1, 1, 1, 1]  # one flank: alone
    assert judge_bursts(lists, [[0, 1, 3], [2]], ["left", None, None, None]) == [1, 1, 1, 1]  # a side not known
    assert [[c.individual_id for c in x] for x in lists] == one_side and left[0].score == 0.7  # untouched
    photos = judge_bursts(lists, [[0, 1, 3], [2]], ["left", "right", None, None])
    assert photos == [2, 2, 1, 1]
    assert [c.individual_id for c in left] == [1, 2]  # the individual that tops both flanks comes first
    assert left[0].score == pytest.approx(1 / (1 + np.exp(-(logit(0.6) + logit(0.8)) / 2)))
    # judged from the scores before: the left list was rescored first, yet the right one sees its 1 at 0.6
    assert right[0].score == pytest.approx(left[0].score)
    assert right[1].score == pytest.approx(1 / (1 + np.exp(-(logit(0.3) + logit(0.6)) / 2)))  # 3: the left's floor
    assert alone[0].score == 0.9 and unverified[0].score == 0.95


def test_the_open_set_of_a_burst_rests_on_the_best_candidates_lead_in_log_odds():
    assert log_odds_lead([0.5, 0.9, 0.2]) == pytest.approx(logit(0.9) - logit(0.5))
    assert log_odds_lead([0.8]) == pytest.approx(logit(0.8))  # alone: against even odds
    assert log_odds_lead([]) == float("-inf")
    # two near-equal chance bests (a never-seen animal) lead less than one clear match, whatever their level
    assert log_odds_lead([0.30, 0.28]) < log_odds_lead([0.30, 0.05])
