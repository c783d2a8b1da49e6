"""HotSpotter's one-vs-many scoring (LNBNN) as a fusion feature, measured on the shipped pattern features.

Each query keypoint's RootSIFT descriptor is looked up among the descriptors of all photos the app verifies for
that query (the top-40 individuals' 8 best photos); each of its K nearest individuals gains the distance of the
(K+1)-th neighbour minus its own (local naive-Bayes nearest neighbour, Crall et al. 2013): a stripe counts for
the individual it is distinctive of, not for every look-alike. A never-seen animal is scored against the pool of
the top-40 *other* individuals. The per-candidate sum (log(1 + s), its lead and median-relative form) is added to
the shipped fusion's five features, or replaces the pattern evidence, and read off as bench/pattern_pairs.py
reads its variants (two-fold CV over the 118 calibration individuals chooses; the test third is printed beside).

    python bench/lnbnn_feature.py [--neighbours 3]   # ~25 min on 2 cores; writes bench/results/lnbnn_feature.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pattern_pairs as pp  # noqa: E402  (its cached boxes, embeddings and pair tables)
from fusion_variants import cross_validated, held_out, two_folds  # noqa: E402

from engine.calibration import feature_columns  # noqa: E402
from engine.demo import find_data_dir  # noqa: E402
from trainer.data import folder_samples, split_by_identity  # noqa: E402


def lnbnn(query: np.ndarray, pool: list[np.ndarray], owners: list[int], n_owners: int, k: int) -> np.ndarray:
    """Per owner (candidate individual), the summed LNBNN gain of the query's descriptors (RootSIFT rows)."""
    sizes = [len(p) for p in pool]
    if len(query) == 0 or sum(sizes) <= k:
        return np.zeros(n_owners)
    owner = np.repeat(np.array(owners), sizes)
    dist = np.sqrt(np.maximum(2 - 2 * (query @ np.concatenate(pool).T), 0))
    near = np.argpartition(dist, k, axis=1)[:, : k + 1]
    near_d = np.take_along_axis(dist, near, 1)
    order = np.argsort(near_d, 1)
    near, near_d = np.take_along_axis(near, order, 1), np.take_along_axis(near_d, order, 1)
    score = np.zeros(n_owners)
    for row, ds in zip(owner[near[:, :k]], near_d, strict=True):
        _, first = np.unique(row, return_index=True)  # each individual once per descriptor, its nearest photo
        np.add.at(score, row[first], ds[k] - ds[first])
    return score


def candidate_scores(query: np.ndarray, photos: list[list[int]], roots: list[np.ndarray], k: int) -> np.ndarray:
    """LNBNN of each candidate individual (its photos' indices into roots) against the pool of all of them."""
    pool = [(slot, roots[j]) for slot, js in enumerate(photos) for j in js]
    return lnbnn(query, [r for _, r in pool], [slot for slot, _ in pool], len(photos), k)


def queries(part, name, samples_index, boxes, vectors, roots, k):
    """Per query with another encounter: (candidate tuples of pattern_pairs, which are known / new, LNBNN of each)."""
    rows = [samples_index[s.path] for s in part]
    vec = vectors[rows]
    table = pp.pair_table(name, "mask", part, boxes[rows], vec)
    out, t0 = [], time.perf_counter()
    for q, ranked in pp.ranked_individuals(part, vec):
        cands = [(same, app, max(table[q][int(j)]["evidence"] for j in photos)) for same, app, photos in ranked]
        known = list(range(min(pp.K, len(ranked))))
        new = [n for n, c in enumerate(cands) if not c[0]][: pp.K]
        photos = [[rows[j] for j in p] for _, _, p in ranked]
        lk, ln = (candidate_scores(roots[rows[q]], [photos[n] for n in chosen], roots, k) for chosen in (known, new))
        out.append((cands, known, new, lk, ln))
        if len(out) % 100 == 0:
            print(f"  {name}: {len(out)} queries, {time.perf_counter() - t0:.0f} s", flush=True)
    return out


def _columns(cands, ln, kind):
    """The shipped fusion's five inputs, with LNBNN's log, lead and median-relative form added or in place of the
    pattern evidence's."""
    appearance = [c[1] for c in cands]
    if kind == "lnbnn instead of evidence":
        return feature_columns(appearance, ln)
    shipped = feature_columns(appearance, [c[2] for c in cands])
    if kind == "shipped + lnbnn":
        return np.hstack([shipped, feature_columns(appearance, ln)[:, [1, 2, 4]]])
    return shipped


def design(query, kind):
    cands, known, new, ln_known, ln_new = query
    k, n = [cands[i] for i in known], [cands[i] for i in new]
    return _columns(k, ln_known, kind), np.array([c[0] for c in k]), _columns(n, ln_new, kind)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--neighbours", type=int, default=3, help="K of LNBNN (HotSpotter uses a few)")
    args = parser.parse_args(argv)
    samples = folder_samples(find_data_dir() / "nyala" / "train")
    boxes, vectors = pp.photo_table(samples)
    with Pool(2) as pool:
        feats = pool.map(pp._extract, [("mask", s.path, b) for s, b in zip(samples, boxes, strict=True)], chunksize=16)
    roots = [f.root_sift if len(f) else np.zeros((0, 128), np.float32) for f in feats]
    index = {s.path: i for i, s in enumerate(samples)}
    cal, test = split_by_identity(samples, 0.34, 0)
    cal_q = queries(cal, "calibration", index, boxes, vectors, roots, args.neighbours)
    test_q = queries(test, "test", index, boxes, vectors, roots, args.neighbours)
    fold = two_folds(pp._query_individuals(cal), [s.individual for s in cal])
    rows = []
    print(f"\n{'fusion features':28s} | CV on calibration: top1 top5 AUROC known-flagged new-flagged | test")
    for kind in ("shipped", "shipped + lnbnn", "lnbnn instead of evidence"):
        c, t = [design(q, kind) for q in cal_q], [design(q, kind) for q in test_q]
        cv, held = cross_validated(c, fold), held_out(c, t)
        rows.append({"features": kind, "cv_calibration": cv, "test": held})
        print(
            f"{kind:28s} | "
            + " ".join(f"{v:.3f}" for v in cv.values())
            + " | "
            + " ".join(f"{v:.3f}" for v in held.values())
        )
    out = ROOT / "bench" / "results" / "lnbnn_feature.json"
    out.write_text(
        json.dumps({"seed": 0, "k": pp.K, "photos": pp.PHOTOS, "neighbours": args.neighbours, "rows": rows}, indent=2)
        + "\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
