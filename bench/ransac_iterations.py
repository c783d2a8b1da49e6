"""Is RANSAC's iteration cap what limits the coat-pattern verifier? Evidence of true and impostor pairs against it.

engine.pattern.match fits a similarity model to the ratio-test matches with RANSAC, at most 500 iterations; with
a 2-point model and ~5 % inliers, 500 random draws would often miss the true motion, and guided matching rests on
it. Measured on the calibration individuals of nyala/train (trainer.fusion's split, seed 0; the product's crops and
patterns): 300 seeded pairs of one individual's photos from other encounters (same side), and for 300 seeded query
photos the other individual's photo most alike by appearance (same side, outside the query's sighting session):
the pattern evidence (verified + guided matches) with the cap at 500 / 2,000 / 10,000, and the change between two
RNG seeds at 500.

    python bench/ransac_iterations.py    # ~3 min on 2 cores; writes bench/results/ransac_iterations.json
"""

from __future__ import annotations

import json
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pattern_pairs import animal_crop, photo_table  # noqa: E402

from engine import pattern  # noqa: E402
from engine.demo import find_data_dir  # noqa: E402
from engine.evaluate import sighting_numbers  # noqa: E402
from engine.metrics import SESSION_WINDOW, auroc  # noqa: E402
from trainer.data import folder_samples, split_by_identity  # noqa: E402

PAIRS = 300
STATE: dict = {}


def _extract(i):
    cv2.setNumThreads(1)
    return pattern.extract(animal_crop(STATE["paths"][i], STATE["boxes"][i]))


def evidence(a, b, iterations: int, seed: int = 0) -> int:
    """engine.pattern.match's evidence with RANSAC capped at ``iterations`` and OpenCV's generator seeded."""
    if len(a) < pattern.MIN_MATCHES or len(b) < pattern.MIN_MATCHES:
        return 0
    sims = a.root_sift @ b.root_sift.T
    rows, cols = pattern.ratio_test(sims)
    if len(rows) < pattern.MIN_MATCHES:
        return 0
    cv2.setRNGSeed(seed)
    model, inlier = pattern.fit_similarity(a.points[rows], b.points[cols], iterations)
    if model is None:
        return 0
    return int(inlier.sum()) + len(pattern.guided_matches(a.points, b.points, sims, model)[0])


def main() -> int:
    samples = folder_samples(find_data_dir() / "nyala" / "train")
    boxes, vectors = photo_table(samples)
    index = {s.path: i for i, s in enumerate(samples)}
    cal, _ = split_by_identity(samples, 0.34, 0)
    rows = np.array([index[s.path] for s in cal])
    ids = np.array([s.individual for s in cal])
    side = np.array([str(s.viewpoint) for s in cal])
    number = np.array(sighting_numbers(s.path for s in cal))
    STATE.update(paths=[s.path for s in cal], boxes=boxes[rows])
    with Pool(2) as pool:
        features = pool.map(_extract, range(len(cal)), chunksize=16)
    rng = np.random.default_rng(0)
    true = np.argwhere((ids[:, None] == ids) & (number[:, None] != number) & (side[:, None] == side))
    true = [tuple(p) for p in true[rng.choice(len(true), PAIRS, replace=False)]]
    impostors = []
    for q in rng.choice(len(cal), PAIRS, replace=False):
        ok = np.flatnonzero((ids != ids[q]) & (np.abs(number - number[q]) > SESSION_WINDOW) & (side == side[q]))
        impostors.append((q, ok[np.argmax(vectors[rows[ok]] @ vectors[rows[q]])]))
    out = {"pairs": PAIRS, "seed": 0, "caps": []}
    print(f"{'cap':>6s} {'true median':>11s} {'impostor median':>15s} {'pair AUC':>8s} {'ms/pair':>7s}")
    for cap in (500, 2000, 10_000):
        t0 = time.perf_counter()
        et = np.array([evidence(features[i], features[j], cap) for i, j in true])
        ei = np.array([evidence(features[i], features[j], cap) for i, j in impostors])
        ms = 1000 * (time.perf_counter() - t0) / (2 * PAIRS)
        row = {
            "cap": cap,
            "true_median": float(np.median(et)),
            "true_mean": float(et.mean()),
            "impostor_median": float(np.median(ei)),
            "impostor_mean": float(ei.mean()),
            "pair_auc": auroc(np.log1p(et), np.log1p(ei)),
            "ms_per_pair": ms,
        }
        out["caps"].append(row)
        print(f"{cap:6d} {row['true_median']:11.1f} {row['impostor_median']:15.1f} {row['pair_auc']:8.3f} {ms:7.1f}")
    changes = np.array([abs(evidence(features[i], features[j], 500, 1) - evidence(features[i], features[j], 500, 2))
                        for i, j in true])  # fmt: skip
    out["seed_change_at_500"] = {"mean": float(changes.mean()), "share_over_5": float(np.mean(changes > 5))}
    print(f"evidence change between two seeds at 500 (true pairs): mean {changes.mean():.2f}")
    (ROOT / "bench" / "results" / "ransac_iterations.json").write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
