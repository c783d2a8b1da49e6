"""Does the whole stripe pattern agree once two crops are aligned? Dense and refined pattern evidence, measured.

The shipped verifier (engine.pattern) counts keypoint matches: ratio-test inliers of a similarity model plus the
matches that model predicts (guided). Both count points; neither looks at the stripes between the keypoints.
This bench scores each verified pair two more ways and reads them off the product's way:

- ``refined``: the motion refitted as an affine map by least squares on every matched pair, then guided matching
  again under it (LO-RANSAC's local optimisation): a correct fit of a walking body gets more accurate and finds
  more of the true stripes; a chance fit has nothing to grow from.
- ``dense``: the candidate's stripe image warped onto the query's by the fitted motion, and the two compared pixel
  by pixel: local normalised cross-correlation in windows, each window allowed to shift a few pixels (a body
  deforms), weighted by the query's stripe energy, on the animal's pixels of both. Chance alignments of look-alike
  stripes agree in a few windows, a true match along the flank.

Same protocol as bench/pattern_pairs.py (its cached photo table; seed 0, 118 calibration / 61 test individuals;
the 41 best individuals by appearance, their 8 best photos verified; the dense score on each candidate's
best-evidence photo; logistic fusion; two-fold CV over calibration individuals chooses, the test third chooses
nothing; a never-seen animal judged with its individual left out).

    python bench/aligned_pattern.py [--parts calibration]   # writes bench/results/aligned_pattern.json
    # calibration ~20 min on 2 cores (724 queries), the test third ~10 min more; --parts calibration: CV only

Not used (run of session 13, calibration only): CV top-1 / top-5 / AUROC 0.384 / 0.554 / 0.638 shipped, 0.375 /
0.546 / 0.639 refined, and with the dense agreement (any shift radius 0-3 px, either model) 0.379-0.404 / 0.550 -
0.574 / 0.639-0.649: within the noise of two folds, at twice the matching cost. The open-set figures moved least.
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fusion_variants import cross_validated, held_out, two_folds  # noqa: E402
from pattern_pairs import WORK, _query_individuals, animal_crop, ranked_individuals, split_photos  # noqa: E402

from engine import pattern  # noqa: E402
from engine.calibration import _leads, feature_columns  # noqa: E402

STATE: dict = {}
CACHE_VERSION = "a1"


def _one_thread():
    cv2.setNumThreads(1)  # two worker processes on two cores: OpenCV's own threads only contend


def _extract(args):
    path, box = args
    rgb = animal_crop(path, box)
    image = pattern.stripe_image(rgb)
    mask = pattern.foreground(rgb, image.shape[0])
    return pattern.sift_features(image, mask), image, mask


def fitted_model(a, b):
    """The shipped matcher's steps, keeping the similarity model and the matched pairs."""
    if len(a) < pattern.MIN_MATCHES or len(b) < pattern.MIN_MATCHES:
        return None
    sims = a.root_sift @ b.root_sift.T
    rows, cols = pattern.ratio_test(sims)
    if len(rows) < pattern.MIN_MATCHES:
        return None
    model, inlier = pattern.fit_similarity(a.points[rows], b.points[cols])
    if model is None:
        return None
    gi, gj = pattern.guided_matches(a.points, b.points, sims, model)
    pairs = np.union1d(rows[inlier] * len(b) + cols[inlier], gi * len(b) + gj)
    i, j = np.divmod(pairs, len(b))
    return sims, model, int(inlier.sum()), len(gi), i, j


RADII = (0, 1, 2, 3)  # how far (px) each window may shift to meet its partner; recorded for every radius at once


def dense_agreement(sa, ma, sb, mb, model, window=16, shift=RADII[-1]):
    """Stripe agreement of the query's stripe image ``sa`` with ``sb`` warped onto it by ``model`` (a -> b, 2x3):
    per window, the best normalised cross-correlation over shifts of up to r px, averaged with the query's
    stripe energy as weight over the pixels that are animal in both. Returns {r: agreement} for r in RADII."""
    h, w = sa.shape
    warped = cv2.warpAffine(sb, model, (w, h), flags=cv2.WARP_INVERSE_MAP | cv2.INTER_LINEAR, borderValue=0)
    inside = cv2.warpAffine(
        np.full(sb.shape, 255, np.uint8) if mb is None else mb, model, (w, h),
        flags=cv2.WARP_INVERSE_MAP | cv2.INTER_NEAREST, borderValue=0,
    )  # fmt: skip
    valid = (inside > 0) & ((ma > 0) if ma is not None else True)
    if valid.mean() < 0.05:
        return dict.fromkeys(RADII, 0.0)
    a = cv2.GaussianBlur(sa.astype(np.float32), (0, 0), 1.5)
    b = cv2.GaussianBlur(warped.astype(np.float32), (0, 0), 1.5)
    a[~valid] = 0
    b[~valid] = 0
    win = (window, window)
    mu_a = cv2.boxFilter(a, -1, win)
    var_a = cv2.boxFilter(a * a, -1, win) - mu_a**2
    best = {r: np.full((h, w), -1.0, np.float32) for r in RADII}
    pad = cv2.copyMakeBorder(b, shift, shift, shift, shift, cv2.BORDER_CONSTANT, value=0)
    for dy in range(-shift, shift + 1):
        for dx in range(-shift, shift + 1):
            bs = pad[shift + dy : shift + dy + h, shift + dx : shift + dx + w]
            mu_b = cv2.boxFilter(bs, -1, win)
            var_b = cv2.boxFilter(bs * bs, -1, win) - mu_b**2
            cov = cv2.boxFilter(a * bs, -1, win) - mu_a * mu_b
            ncc = cov / np.sqrt(np.maximum(var_a * var_b, 1e-3))
            for r in RADII:
                if max(abs(dx), abs(dy)) <= r:
                    np.maximum(best[r], ncc, out=best[r])
    weight = np.sqrt(np.maximum(var_a, 0)) * valid
    return {r: float((best[r] * weight).sum() / max(weight.sum(), 1e-6)) for r in RADII}


def pair_scores(q, j):
    feats = STATE["feats"]
    a, b = feats[q], feats[j]
    out = {"evidence": 0, "refined": 0, "inliers": 0}
    fit = fitted_model(a, b)
    if fit is None:
        return out, None
    sims, model, inliers, guided, i, j_ = fit
    out.update(evidence=inliers + guided, inliers=inliers, refined=inliers + guided)
    refined = model
    if len(i) >= 6:
        affine, _ = cv2.estimateAffine2D(a.points[i], b.points[j_], method=cv2.LMEDS)
        if affine is not None:
            gi, _ = pattern.guided_matches(a.points, b.points, sims, affine)
            out["refined"] = inliers + len(gi)
            refined = affine
    return out, (model, refined)


def _query(args):
    q, ranked = args
    images, masks = STATE["images"], STATE["masks"]
    rows = []
    for same, appearance, photos in ranked:
        scored = [pair_scores(q, int(j)) for j in photos]
        best = int(np.argmax([s[0]["evidence"] for s in scored]))
        record = {k: max(s[0][k] for s in scored) for k in scored[0][0]}
        models = scored[best][1]
        j = int(photos[best])
        for name, m in (("dense", 0), ("dense_refined", 1)):
            found = (
                dict.fromkeys(RADII, 0.0)
                if models is None
                else dense_agreement(images[q], masks[q], images[j], masks[j], models[m])
            )
            record.update({f"{name}{r}": v for r, v in found.items()})
        rows.append((bool(same), appearance, record))
    return rows


def part_runs(name, part, boxes, vectors):
    path = WORK / f"aligned_{name}.{CACHE_VERSION}.pkl"
    if path.exists():
        return pickle.loads(path.read_bytes())
    t0 = time.perf_counter()
    with Pool(2, _one_thread) as pool:
        extracted = pool.map(_extract, [(s.path, b) for s, b in zip(part, boxes, strict=True)], chunksize=16)
    feats, images, masks = zip(*extracted, strict=True)
    STATE.update(feats=feats, images=images, masks=masks)
    print(f"  {name}: {len(feats)} photos extracted, {time.perf_counter() - t0:.0f} s", flush=True)
    work = list(ranked_individuals(part, vectors))
    with Pool(2, _one_thread) as pool:
        runs = pool.map(_query, work, chunksize=4)
    print(f"  {name}: {len(runs)} queries verified, {time.perf_counter() - t0:.0f} s", flush=True)
    WORK.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(runs))
    return runs


K = 40


def columns(cands, evidence_key, extra):
    """Fusion inputs: the shipped five over ``evidence_key``, and for each ``extra`` score its value, lead and
    value above the query's median."""
    base = feature_columns([c[1] for c in cands], [c[2][evidence_key] for c in cands])
    more = []
    for key in extra:
        v = np.array([c[2][key] for c in cands], np.float64)
        more += [v, _leads(v), v - np.median(v)]
    return np.column_stack([base, *more]) if more else base


def design(runs, evidence_key, extra):
    out = []
    for cands in runs:
        known = cands[:K]
        others = [c for c in cands if not c[0]][:K]
        out.append(
            (columns(known, evidence_key, extra), np.array([c[0] for c in known]), columns(others, evidence_key, extra))
        )
    return out


VARIANTS = {"shipped (evidence)": ("evidence", ()), "refined evidence": ("refined", ())}
for _r in RADII:
    VARIANTS[f"evidence + dense r{_r}"] = ("evidence", (f"dense{_r}",))
    VARIANTS[f"evidence + dense r{_r} (refined model)"] = ("evidence", (f"dense_refined{_r}",))
    VARIANTS[f"refined + dense r{_r} (refined model)"] = ("refined", (f"dense_refined{_r}",))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default="calibration,test", help="calibration alone: CV only, no test column")
    parts = parser.parse_args(argv).parts.split(",")
    split = split_photos()
    cal = split["calibration"][0]
    runs = {name: part_runs(name, *split[name]) for name in parts}
    fold = two_folds(_query_individuals(cal), [s.individual for s in cal])
    results = []
    print(f"\n{'variant':36s} | CV on calibration: top1 top5 AUROC known-flagged new-flagged own60 | test")
    for variant, (key, extra) in VARIANTS.items():
        cal_q = design(runs["calibration"], key, extra)
        cv = cross_validated(cal_q, fold)
        t = held_out(cal_q, design(runs["test"], key, extra)) if "test" in runs else {}
        results.append({"variant": variant, "evidence": key, "extra": list(extra), "cv_calibration": cv, "test": t})
        row = " ".join(f"{v:.3f}" for v in cv.values()) + " | " + " ".join(f"{v:.3f}" for v in t.values())
        print(f"{variant:36s} | {row}", flush=True)
    out = ROOT / "bench" / "results" / "aligned_pattern.json"
    protocol = "photo-number encounters (bench/pattern_pairs.py's), before sighting sessions"
    out.write_text(
        json.dumps({"seed": 0, "k": K, "photos": 8, "parts": parts, "protocol": protocol, "rows": results}, indent=2)
        + "\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
