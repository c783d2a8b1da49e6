"""Does a StripeSpotter-like stripe code identify nyala? Measured before deciding to build it into the product.

The signature: the crop's thin light structures (engine.pattern.stripe_image), kept only where they run
vertically (a 15-row vertical mean), averaged in three horizontal bands across the flank (25-61 % of the crop's
height) into profiles along the body, high-passed and standardised. Two crops are compared by the best
normalised correlation of their profiles over scale (0.8-1.25) and shift (up to a sixth of the width), as
StripeSpotter aligns stripe codes. Pairs: each test photo (nyala/train split by identity, seed 0, the fusion's
test third) against up to two photos of its own individual from another encounter, same side, and its five most
similar other individuals' photos by appearance (the ones a verifier must reject). The same pairs are scored by
the shipped verifier (RANSAC inliers) for comparison.

    python bench/stripe_code.py   # prints both AUCs, writes bench/results/stripe_code.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.demo import find_data_dir  # noqa: E402
from engine.detect import load_detector  # noqa: E402
from engine.evaluate import animal_crop, photo_features  # noqa: E402
from engine.metrics import auroc  # noqa: E402
from engine.pattern import match, stripe_image  # noqa: E402
from engine.reid import Embedder  # noqa: E402
from trainer.data import folder_samples, split_by_identity  # noqa: E402

BANDS = [(0.25, 0.37), (0.37, 0.49), (0.49, 0.61)]
SCALES = np.linspace(0.8, 1.25, 10)


def profile(crop_rgb: np.ndarray) -> np.ndarray:
    stripes = cv2.blur(stripe_image(crop_rgb).astype(np.float32), (1, 15))  # vertical structures only
    h = stripes.shape[0]
    rows = []
    for a, b in BANDS:
        p = stripes[int(a * h) : max(int(b * h), int(a * h) + 1)].mean(0)
        p = cv2.GaussianBlur((p - cv2.blur(p[None], (31, 1))[0])[None], (0, 0), 2.0)[0]
        rows.append((p - p.mean()) / (p.std() + 1e-6))
    return np.stack(rows)


def compare(pa: np.ndarray, pb: np.ndarray) -> float:
    n = pa.shape[1]
    x, best = np.arange(n), -1.0
    for scale in SCALES:
        src = (x - n / 2) / scale + n / 2
        valid = (src >= 0) & (src <= n - 1)
        rb = np.stack([np.interp(src, x, row) for row in pb]) * valid
        for shift in range(-n // 6, n // 6 + 1, 2):
            a, b = pa[:, max(0, shift) : n + min(0, shift)], rb[:, max(0, -shift) : n - max(0, shift)]
            m = valid[max(0, -shift) : n - max(0, shift)]
            if m.sum() >= n // 2:
                denom = np.sqrt((a[:, m] ** 2).sum() * (b[:, m] ** 2).sum()) + 1e-6
                best = max(best, float((a * b)[:, m].sum() / denom))
    return best


def main() -> int:
    _, test = split_by_identity(folder_samples(find_data_dir() / "nyala" / "train"), 0.34, 0)
    detector, embedder = load_detector("bundled"), Embedder()
    vectors, patterns = photo_features([s.path for s in test], detector, embedder)
    profiles = []
    for s in test:  # the same crop as photo_features
        profiles.append(profile(animal_crop(s.path, detector)))
    ids = np.array([s.individual for s in test])
    enc = np.array([s.encounter for s in test])
    side = np.array([str(s.viewpoint) for s in test])
    stripe = {True: [], False: []}
    inliers = {True: [], False: []}
    for q in range(len(test)):
        own = np.flatnonzero((ids == ids[q]) & (enc != enc[q]) & (side == side[q]))[:2]
        if not len(own):
            continue
        others = np.flatnonzero((ids != ids[q]) & (side == side[q]))
        others = others[np.argsort(-(vectors[others] @ vectors[q]))[:5]]
        for same, js in ((True, own), (False, others)):
            stripe[same] += [compare(profiles[q], profiles[j]) for j in js]
            inliers[same] += [match(patterns[q], patterns[j]).inliers for j in js]
    result = {
        "pairs_same": len(stripe[True]),
        "pairs_other": len(stripe[False]),
        "auc_stripe_code": auroc(np.array(stripe[True]), np.array(stripe[False])),
        "auc_pattern_inliers": auroc(np.array(inliers[True], float), np.array(inliers[False], float)),
        "protocol": "nyala/train split_by_identity(0.34, seed 0), test third; own individual from another "
        "encounter (same side) against the 5 most similar other individuals by appearance",
    }
    print(f"{'signature':24s} {'AUC same vs look-alike':>24s}")
    print(f"{'stripe code':24s} {result['auc_stripe_code']:24.3f}")
    print(f"{'pattern inliers (0.5.0)':24s} {result['auc_pattern_inliers']:24.3f}")
    print(f"{result['pairs_same']} same-individual pairs, {result['pairs_other']} look-alike pairs")
    out = ROOT / "bench" / "results" / "stripe_code.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
