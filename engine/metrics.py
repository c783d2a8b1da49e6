"""Re-identification metrics: CMC (rank-k), mAP, and open-set scores. numpy only.

The trainer, the benchmarks and the app's calibration all use these functions, so a number printed anywhere
in Herdbook means the same thing. Protocol details that matter for wildlife photos:

* ``exclude`` masks gallery items a query must not be matched against (its own photo, and photos of its own
  encounter: nyala's left/right photos of one number share place, background and light).
* A query whose identity has no valid gallery item left is skipped (counted in ``queries_skipped``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class RankingResult:
    cmc: np.ndarray  # cmc[k-1] = share of queries whose first correct match is within the top k
    mAP: float
    queries: int
    queries_skipped: int

    def rank(self, k: int) -> float:
        return float(self.cmc[min(k, len(self.cmc)) - 1]) if len(self.cmc) else 0.0

    def as_dict(self) -> dict:
        return {
            "rank1": self.rank(1),
            "rank5": self.rank(5),
            "rank10": self.rank(10),
            "mAP": self.mAP,
            "queries": self.queries,
            "queries_skipped": self.queries_skipped,
        }


def cosine_similarity(query: np.ndarray, gallery: np.ndarray) -> np.ndarray:
    q = query / np.maximum(np.linalg.norm(query, axis=1, keepdims=True), 1e-12)
    g = gallery / np.maximum(np.linalg.norm(gallery, axis=1, keepdims=True), 1e-12)
    return q @ g.T


def evaluate_ranking(
    similarity: np.ndarray,
    query_ids: np.ndarray,
    gallery_ids: np.ndarray,
    exclude: np.ndarray | None = None,
    max_rank: int = 50,
) -> RankingResult:
    """CMC and mAP from a (queries x gallery) similarity matrix; higher is more similar.

    ``exclude[i, j]`` True removes gallery item j from query i's ranking.
    """
    similarity = np.asarray(similarity, dtype=np.float64)
    query_ids, gallery_ids = np.asarray(query_ids), np.asarray(gallery_ids)
    cmc_sum = np.zeros(max_rank)
    aps, skipped = [], 0
    for i in range(similarity.shape[0]):
        keep = np.ones(similarity.shape[1], dtype=bool) if exclude is None else ~np.asarray(exclude[i])
        scores, ids = similarity[i, keep], gallery_ids[keep]
        matches = (ids[np.argsort(-scores, kind="stable")] == query_ids[i]).astype(np.float64)
        if not matches.any():
            skipped += 1
            continue
        first = int(np.argmax(matches))
        if first < max_rank:
            cmc_sum[first:] += 1
        hits = np.cumsum(matches)
        precision_at_hits = hits[matches == 1] / (np.flatnonzero(matches) + 1)
        aps.append(precision_at_hits.mean())
    n = len(aps)
    return RankingResult(cmc_sum / max(n, 1), float(np.mean(aps)) if aps else 0.0, n, skipped)


def auroc(positive_scores: np.ndarray, negative_scores: np.ndarray) -> float:
    """Probability that a random positive scores above a random negative (ties count half)."""
    pos, neg = np.asarray(positive_scores, float), np.asarray(negative_scores, float)
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    allv = np.concatenate([pos, neg])
    order = allv.argsort(kind="mergesort")
    ranks = np.empty(len(allv))
    ranks[order] = np.arange(1, len(allv) + 1)
    for value in np.unique(allv):  # average ranks over ties
        tied = allv == value
        if tied.sum() > 1:
            ranks[tied] = ranks[tied].mean()
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def open_set_scores(
    known_best: np.ndarray, known_correct: np.ndarray, new_best: np.ndarray, flag_new_share: float = 0.9
) -> dict:
    """How well 'new individual' is told apart from 'known'.

    known_best: best gallery similarity of queries whose individual is in the gallery; known_correct: whether
    that best match was the right individual; new_best: best similarity of queries whose individual is not.
    The threshold flags ``flag_new_share`` of new queries (their best score below it).
    """
    threshold = float(np.quantile(new_best, flag_new_share)) if len(new_best) else float("nan")
    accepted = known_best >= threshold
    return {
        "auroc_known_vs_new": auroc(known_best, new_best),
        "threshold": threshold,
        "new_flagged": float(np.mean(new_best < threshold)) if len(new_best) else float("nan"),
        "known_wrongly_flagged": float(np.mean(~accepted)) if len(known_best) else float("nan"),
        "known_correct_at_threshold": float(np.mean(accepted & known_correct)) if len(known_best) else float("nan"),
    }


# Nyala photos are numbered in the order they were taken, one number per animal seen: a herd at a waterhole gets
# consecutive numbers, all at one place and minute, often with each other in frame. In nyala/train an individual's
# own encounters lie at least 9 numbers apart (33 or more for 95 % of them), while another individual's photo 1-5
# numbers away shares the scene: the appearance embeddings of the two crops agree 0.84-0.87 against 0.81-0.82
# beyond 20, and coat-pattern evidence reaches 30 for 6.0 % / 3.8 % of the pairs 1 / 2 numbers apart against about
# 1 % beyond 10 (the other animal in frame, perhaps at times the same one under the neighbour's label; python
# bench/sighting_sessions.py). Those photos would be herd-mates in the same import in the app, not catalogued
# sightings, so a query is never judged against them: within this many numbers, photos are one sighting session.
SESSION_WINDOW = 5


def encounter_exclusion(
    encounters,
    viewpoints=None,
    same_viewpoint_only: bool = False,
    sightings=None,
    session_window: int = SESSION_WINDOW,
) -> np.ndarray:
    """Leave-one-out mask over one set of photos used as both queries and gallery.

    A query is never matched against itself or another photo of its own encounter; with
    ``same_viewpoint_only`` it is matched only against photos of the same side of the animal; with ``sightings``
    (per photo its number in the order taken, or None: engine.evaluate.sighting_numbers) never against the photos
    numbered within ``session_window`` of it, its sighting session (SESSION_WINDOW; 0 leaves only its encounter).
    """
    enc = np.asarray(encounters, dtype=object)
    exclude = enc[:, None] == enc[None, :]
    if same_viewpoint_only:
        vp = np.asarray(viewpoints, dtype=object)
        exclude |= vp[:, None] != vp[None, :]
    if sightings is not None:
        number = np.array([np.nan if n is None else n for n in sightings], np.float32)
        apart = np.abs(np.subtract.outer(number, number))  # NaN where either has no number: never excluded
        exclude |= apart <= session_window
    return exclude


def queryable(identities, exclude: np.ndarray) -> np.ndarray:
    """Per photo, whether it can be a query: its individual has a photo that ``exclude`` (encounter_exclusion)
    leaves in, so a suggestion can be right about it."""
    ids = np.asarray(identities, dtype=object)
    return ((ids[:, None] == ids[None, :]) & ~np.asarray(exclude, bool)).any(1)


def reid_protocol(embeddings: np.ndarray, identities, encounters, viewpoints, sightings=None) -> dict:
    """Herdbook's standard numbers on a held-out set: across encounters, all sides and same side only (and, with
    ``sightings``, across sighting sessions: encounter_exclusion)."""
    sim = cosine_similarity(embeddings, embeddings)
    ids = np.asarray(identities, dtype=object)
    across = evaluate_ranking(sim, ids, ids, encounter_exclusion(encounters, sightings=sightings))
    same_side = evaluate_ranking(sim, ids, ids, encounter_exclusion(encounters, viewpoints, True, sightings=sightings))
    return {"across_encounters": across.as_dict(), "same_side": same_side.as_dict()}


def known_new_queries(similarity: np.ndarray, identities, encounters, seed: int = 0) -> dict:
    """Half of the identities (seeded) are 'known' and form the gallery; the other half are 'new'.

    Every photo is a query against the known half's photos outside its own encounter. Returns, per usable
    query, its best score, whether its individual is new, and (known ones) whether the best match was right.
    Known queries whose individual has no other encounter in the gallery cannot be re-identified: skipped."""
    ids = np.asarray(identities, dtype=object)
    unique = sorted(set(ids.tolist()))
    new_ids = set(np.random.default_rng(seed).permutation(unique)[: len(unique) // 2].tolist())
    is_new = np.array([i in new_ids for i in ids])
    exclude = encounter_exclusion(encounters)
    best, new, correct = [], [], []
    for q in range(len(ids)):
        valid = ~exclude[q] & ~is_new
        if not valid.any() or (not is_new[q] and not (valid & (ids == ids[q])).any()):
            continue
        j = np.flatnonzero(valid)[np.argmax(similarity[q, valid])]
        best.append(similarity[q, j])
        new.append(is_new[q])
        correct.append(ids[j] == ids[q])
    return {"best": np.array(best, float), "is_new": np.array(new, bool), "correct": np.array(correct, bool)}


def threshold_for_new_share(new_best: np.ndarray, share: float) -> float:
    """The score below which ``share`` of new individuals' best matches fall."""
    return float(np.quantile(new_best, share)) if len(new_best) else float("nan")


def open_set_protocol(
    embeddings: np.ndarray,
    identities,
    encounters,
    calibration: tuple | None = None,
    target_new_flagged: float = 0.7,
    seed: int = 0,
) -> dict:
    """Open-set figures on held-out identities: AUROC known-vs-new, and at a threshold chosen on *other*
    identities (``calibration`` = (embeddings, identities, encounters)) to flag ``target_new_flagged`` of new
    ones, the share of known animals wrongly flagged new and of new ones flagged."""
    q = known_new_queries(cosine_similarity(embeddings, embeddings), identities, encounters, seed)
    if calibration is not None:
        c = known_new_queries(cosine_similarity(calibration[0], calibration[0]), calibration[1], calibration[2], seed)
        threshold = threshold_for_new_share(c["best"][c["is_new"]], target_new_flagged)
    else:
        threshold = threshold_for_new_share(q["best"][q["is_new"]], target_new_flagged)
    known, new = q["best"][~q["is_new"]], q["best"][q["is_new"]]
    return {
        "auroc_known_vs_new": auroc(known, new),
        "threshold": threshold,
        "known_wrongly_flagged": float(np.mean(known < threshold)) if len(known) else float("nan"),
        "new_flagged": float(np.mean(new < threshold)) if len(new) else float("nan"),
        "known_top1_correct": float(np.mean(q["correct"][~q["is_new"]])) if len(known) else float("nan"),
    }


def tune_test_halves(n: int, seed: int = 0) -> tuple[list[int], list[int]]:
    """The labelled detector frames split in two by a seeded shuffle: a detector's threshold (or a quantisation's
    calibration) is chosen on the first half, its figures reported on the second."""
    order = np.random.default_rng(seed).permutation(n)
    return sorted(int(i) for i in order[: n // 2]), sorted(int(i) for i in order[n // 2 :])


def detection_scores(frames: list[dict], found: list[list[tuple]], iou_min: float = 0.3) -> dict:
    """Recall and precision of animal boxes against hand-drawn ones (tests/data/trailcam_boxes.json layout).

    frames[i]['boxes'] holds {'label', 'box': [x0, y0, x1, y1] normalised, 'difficult'?}; found[i] holds
    (x0, y0, x1, y1, score, label) normalised. Greedy matching by score at IoU >= iou_min (0.3: boxes drawn by
    eye on 100 px thumbnails are loose); a match on a 'difficult' box counts neither way; a second box on an
    animal already matched is a false positive. Frames whose animal cannot be made out are skipped. Also
    frame-level: animal frames with at least one animal box, empty frames with none.
    """
    tp = fp = fn = animal_frames = animal_frames_found = empty_frames = empty_frames_clean = 0
    for frame, boxes in zip(frames, found, strict=True):
        if frame.get("status", "labelled") != "labelled":
            continue
        truth = [b for b in frame["boxes"] if b["label"] == "animal"]
        animals = sorted((b for b in boxes if b[5] == "animal"), key=lambda b: -b[4])
        matched: set[int] = set()
        for box in animals:
            if truth:
                ious = box_iou(np.asarray([box[:4]]), np.asarray([t["box"] for t in truth]))[0]
                best = int(ious.argmax())
                if ious[best] >= iou_min:
                    if truth[best].get("difficult"):
                        continue
                    if best not in matched:
                        matched.add(best)
                        tp += 1
                        continue
            fp += 1
        fn += sum(1 for i, t in enumerate(truth) if i not in matched and not t.get("difficult"))
        if truth:
            animal_frames += 1
            animal_frames_found += bool(animals)
        else:
            empty_frames += 1
            empty_frames_clean += not animals
    return {
        "recall": tp / max(tp + fn, 1),
        "precision": tp / max(tp + fp, 1),
        "true_positives": tp,
        "false_positives": fp,
        "missed": fn,
        "animal_frames": animal_frames,
        "animal_frames_found": animal_frames_found,
        "empty_frames": empty_frames,
        "empty_frames_clean": empty_frames_clean,
    }


def box_intersection(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection areas of x0, y0, x1, y1 boxes: a (N, 4) against b (M, 4) -> (N, M)."""
    ix = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    iy = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    return ix * iy


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of x0, y0, x1, y1 boxes: a (N, 4) against b (M, 4) -> (N, M)."""
    inter = box_intersection(a, b)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def epoch_summary(record: dict) -> str:
    """One line for a training epoch's record (trainer.train): loss, time, and held-out figures when evaluated;
    the command line and the app's Train dialog print the same line."""
    line = f"{record['phase']} epoch {record['epoch']}: loss {record['loss']:.3f} ({record['elapsed_s']:.0f} s)"
    if "eval" in record:
        held = record["eval"]["across_encounters"]
        line += f", held-out rank-1 {held['rank1']:.3f}, mAP {held['mAP']:.3f}"
    return line
