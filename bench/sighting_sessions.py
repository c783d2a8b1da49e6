"""Which nyala photos share a sighting session? The evidence behind engine.metrics.SESSION_WINDOW.

Nyala photos are numbered one per animal seen, in the order they were taken. This bench measures, over every
photo of nyala/train (the product's crops: bundled detector's best box + margin, bundled embedding, coat pattern):

- how far apart in number an individual's own encounters lie (an individual that recurred within a few numbers
  would lose true matches to a session window);
- for pairs of *different* individuals, same side, by distance in number: appearance (cosine of the bundled
  embeddings of the two crops: same place and light) and coat-pattern evidence (engine.pattern.match: the other
  animal in frame, the same background). 400 seeded pairs per band (seed 0);
- the same for pairs of one individual's photos from different encounters (what a true match looks like).

    python bench/sighting_sessions.py    # ~4 min on 2 cores; writes bench/results/sighting_sessions.json
"""

from __future__ import annotations

import json
import sys
from multiprocessing import Pool
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pattern_pairs import animal_crop, photo_table  # noqa: E402  (the cached crops and embeddings)

from engine import pattern  # noqa: E402
from engine.demo import find_data_dir  # noqa: E402
from engine.evaluate import sighting_numbers  # noqa: E402
from trainer.data import folder_samples  # noqa: E402

BANDS = [(1, 1), (2, 2), (3, 3), (4, 5), (6, 10), (11, 20), (21, 40), (100, 10_000)]
PAIRS_PER_BAND = 400
STATE: dict = {}


def _extract(i):
    cv2.setNumThreads(1)  # two processes on two cores
    return pattern.extract(animal_crop(STATE["paths"][i], STATE["boxes"][i]))


def _evidence(pair):
    i, j = pair
    return pattern.match(STATE["features"][i], STATE["features"][j]).evidence


def band_figures(pairs, vectors, pool) -> dict:
    evidence = np.array(pool.map(_evidence, pairs, chunksize=16))
    appearance = np.array([float(vectors[i] @ vectors[j]) for i, j in pairs])
    return {
        "pairs": len(pairs),
        "appearance_mean": float(appearance.mean()),
        "evidence_mean": float(evidence.mean()),
        "evidence_median": float(np.median(evidence)),
        "share_evidence_30_or_more": float(np.mean(evidence >= 30)),
        "share_evidence_60_or_more": float(np.mean(evidence >= 60)),
    }


def main() -> int:
    samples = folder_samples(find_data_dir() / "nyala" / "train")
    boxes, vectors = photo_table(samples)
    number = np.array(sighting_numbers(s.path for s in samples))
    ids = np.array([s.individual for s in samples])
    side = np.array([str(s.viewpoint) for s in samples])
    gaps = []
    for individual in sorted(set(ids)):
        gaps += np.diff(sorted(set(number[ids == individual]))).tolist()
    rng = np.random.default_rng(0)
    STATE.update(paths=[s.path for s in samples], boxes=boxes)
    with Pool(2) as pool:
        STATE["features"] = pool.map(_extract, range(len(samples)), chunksize=16)
    rows = []
    with Pool(2) as pool:  # forked after the features exist: the workers share them
        for lo, hi in BANDS:
            distance = np.abs(number[:, None] - number[None, :])
            mask = (distance >= lo) & (distance <= hi) & (side[:, None] == side[None, :]) & (ids[:, None] != ids)
            pairs = np.argwhere(mask)
            pairs = pairs[rng.choice(len(pairs), min(PAIRS_PER_BAND, len(pairs)), replace=False)]
            rows.append({"numbers_apart": [lo, hi], **band_figures([tuple(p) for p in pairs], vectors, pool)})
        true = np.argwhere((ids[:, None] == ids) & (number[:, None] != number) & (side[:, None] == side))
        true = true[rng.choice(len(true), PAIRS_PER_BAND, replace=False)]
        same = band_figures([tuple(p) for p in true], vectors, pool)
    result = {
        "data": "nyala/train",
        "photos": len(samples),
        "seed": 0,
        "own_encounters_numbers_apart": {
            "min": int(min(gaps)),
            "percentile_5": float(np.percentile(gaps, 5)),
            "median": float(np.median(gaps)),
        },
        "other_individuals_by_numbers_apart": rows,
        "same_individual_other_encounters": same,
    }
    own = result["own_encounters_numbers_apart"]
    print(f"own encounters of an individual: >= {own['min']} numbers apart (5th percentile {own['percentile_5']:.0f})")
    print(f"{'numbers apart':>14s} {'pairs':>6s} {'appearance':>10s} {'evidence':>8s} {'>=30':>6s} {'>=60':>6s}")
    for r in [*rows, {"numbers_apart": ["same", "individual"], **same}]:
        lo, hi = r["numbers_apart"]
        print(
            f"{f'{lo}-{hi}':>14s} {r['pairs']:6d} {r['appearance_mean']:10.3f} {r['evidence_mean']:8.1f} "
            f"{r['share_evidence_30_or_more']:6.1%} {r['share_evidence_60_or_more']:6.1%}"
        )
    out = ROOT / "bench" / "results" / "sighting_sessions.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
