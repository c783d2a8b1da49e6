"""Coat-pattern matcher variants, measured from one cached pass over every same-side photo pair of nyala/train.

Step 1 (cached in bench/work/pattern_pairs/): every photo of nyala/train goes the product's way once (bundled
detector's best box + pipeline margin, bundled embedding), and its box and vector are kept. Step 2: for an
extraction recipe, every pair of same-side photos from different encounters within one part of the split (seed 0,
trainer.fusion's split: 118 calibration individuals, 61 test) is matched once, and what each matcher variant
would score is kept per pair. Step 3: each variant is read off those pairs the product's way (the 40 best
individuals by appearance, their 8 best photos verified, logistic fusion with leads fitted on calibration,
two-fold cross-validation over calibration individuals chooses; the test third is printed beside it and chooses
nothing).

    python bench/pattern_pairs.py [--recipe base|mask|retry|core] [--variants base,guided,evidence]
    # writes bench/results/pattern_pairs.json

Rows of the results without a "table" field were measured before v3, with a never-seen animal judged inside the
list that still held its individual (their AUROCs and open-set shares flatter; top-1 and top-5 stand).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fusion_variants import cross_validated, held_out, two_folds  # noqa: E402  (as the photos/leads choice)

from engine import pattern  # noqa: E402
from engine.calibration import feature_columns  # noqa: E402
from engine.demo import find_data_dir  # noqa: E402
from engine.detect import load_detector  # noqa: E402
from engine.evaluate import best_animal_box  # noqa: E402
from engine.imageio import crop, load_rgb  # noqa: E402
from engine.pipeline import CROP_MARGIN  # noqa: E402
from engine.reid import Embedder  # noqa: E402
from trainer.data import folder_samples, split_by_identity  # noqa: E402

WORK = ROOT / "bench" / "work" / "pattern_pairs"
K, PHOTOS = 40, 8  # the shipped card's; the threshold flags fusion_variants.NEW_FLAGGED of the fit's new
STATE: dict = {}
TABLE_VERSION = "v3"  # cached pair tables of another version lack some counts (v2: guided, evidence; v3: 41st)


def photo_table(samples):
    """Boxes and embeddings of every photo, cached (the detector is the slow part)."""
    path = WORK / "photos.npz"
    if path.exists():
        z = np.load(path, allow_pickle=True)
        if list(z["paths"]) == [s.path for s in samples]:
            return z["boxes"], z["vectors"]
    detector, embedder = load_detector("bundled"), Embedder()
    boxes, vectors = [], []
    for i, s in enumerate(samples):
        image = load_rgb(s.path)
        box = best_animal_box(image, detector)
        boxes.append(box or (np.nan,) * 4)
        vectors.append(embedder.embed([crop(image, box, s.path, CROP_MARGIN)])[0])
        if i % 100 == 0:
            print(f"  photos {i}/{len(samples)}", flush=True)
    WORK.mkdir(parents=True, exist_ok=True)
    np.savez(path, paths=np.array([s.path for s in samples]), boxes=np.array(boxes), vectors=np.array(vectors))
    return np.array(boxes), np.array(vectors)


def split_photos() -> dict:
    """trainer.fusion's split of nyala/train (seed 0): {"calibration" | "test": (samples, their boxes, their
    vectors)}, from the cached photo table."""
    samples = folder_samples(find_data_dir() / "nyala" / "train")
    boxes, vectors = photo_table(samples)
    index = {s.path: i for i, s in enumerate(samples)}
    out = {}
    for name, part in zip(("calibration", "test"), split_by_identity(samples, 0.34, 0), strict=True):
        rows = [index[s.path] for s in part]
        out[name] = (part, boxes[rows], vectors[rows])
    return out


def animal_crop(path, box):
    image = load_rgb(path)
    return crop(image, None if np.isnan(box).any() else tuple(box), path, CROP_MARGIN)


def extract_base(rgb):
    """The recipe before the foreground mask (pattern.PATTERN_METHOD /1): keypoints on the whole crop."""
    return pattern.sift_features(pattern.stripe_image(rgb))


CORE = 0.25  # the retry's certain foreground: an ellipse of this share of the crop's width and height


def core_foreground(rgb, work_height):
    """GrabCut seeded with the crop's central ellipse as certainly animal (a detector's box is centred on it)
    and its border as certainly not, for crops where the rectangle alone loses the animal."""
    h, w = rgb.shape[:2]
    width = pattern.MASK_WIDTH
    height = max(8, round(width * h / w))
    small = cv2.cvtColor(cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2BGR)
    labels = np.full(small.shape[:2], cv2.GC_PR_FGD, np.uint8)
    dx, dy = max(1, round(width * pattern.MASK_INSET)), max(1, round(height * pattern.MASK_INSET))
    labels[:dy], labels[-dy:], labels[:, :dx], labels[:, -dx:] = (cv2.GC_BGD,) * 4
    axes = (round(width * CORE / 2), round(height * CORE / 2))
    cv2.ellipse(labels, (width // 2, height // 2), axes, 0, 0, 360, cv2.GC_FGD, -1)
    cv2.setRNGSeed(0)
    models = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    try:
        cv2.grabCut(small, labels, None, *models, pattern.MASK_ITERATIONS, cv2.GC_INIT_WITH_MASK)
    except cv2.error:
        return None
    animal = np.where((labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD), 255, 0).astype(np.uint8)
    animal = cv2.dilate(animal, np.ones((5, 5), np.uint8))
    return cv2.resize(animal, (pattern.WORK_WIDTH, work_height), interpolation=cv2.INTER_NEAREST)


def extract_retry(rgb):
    """The shipped mask; where it falls back to the whole crop, GrabCut again from the crop's core."""
    image = pattern.stripe_image(rgb)
    mask = pattern.foreground(rgb, image.shape[0])
    return pattern.sift_features(image, mask if mask is not None else core_foreground(rgb, image.shape[0]))


def extract_core(rgb):
    """GrabCut from the crop's core for every crop."""
    image = pattern.stripe_image(rgb)
    return pattern.sift_features(image, core_foreground(rgb, image.shape[0]))


RECIPES = {"base": extract_base, "mask": pattern.extract, "retry": extract_retry, "core": extract_core}


def _extract(args):
    recipe, path, box = args
    return RECIPES[recipe](animal_crop(path, box))


def pair_record(a, b, full=True):
    """What each matcher variant scores for one pair (a query photo against one gallery photo); ``full=False``
    scores only the shipped matcher (base) and where its inliers lie (cells)."""
    out = {"base": 0, "good": 0, "cells": 0, "second": 0, "plausible": 0, "affine": 0}
    found = pattern.match(a, b)  # the shipped matcher: its ratio-test inliers are "base"
    out["guided"], out["evidence"] = found.guided, found.evidence
    src, dst = pattern.ratio_matches(a, b)
    out["good"] = len(src)
    for ratio in (0.8, 0.9):  # Lowe's ratio
        s2, d2 = pattern.ratio_matches(a, b, ratio)
        m = None
        if len(s2) >= pattern.MIN_MATCHES:
            _, m = cv2.estimateAffinePartial2D(
                s2, d2, method=cv2.RANSAC, ransacReprojThreshold=pattern.RANSAC_PIXELS, maxIters=500, refineIters=0
            )
        out[f"ratio{ratio:.2f}"] = 0 if m is None else int(m.sum())
    if len(src) < pattern.MIN_MATCHES:
        return out
    model, mask = cv2.estimateAffinePartial2D(
        src, dst, method=cv2.RANSAC, ransacReprojThreshold=pattern.RANSAC_PIXELS, maxIters=500, refineIters=0
    )
    if mask is None:
        return out
    inlier = mask.ravel().astype(bool)
    out["base"] = int(inlier.sum())
    # where on the query the inliers lie: occupied cells of a 6 x 3 grid over the crop
    p = src[inlier] / np.float32(a.size)
    out["cells"] = len({(int(x * 6), int(y * 3)) for x, y in np.clip(p, 0, 0.999)})
    for pixels in (7.0, 14.0):  # the RANSAC tolerance, again with keypoints on the animal only
        _, m = cv2.estimateAffinePartial2D(
            src, dst, method=cv2.RANSAC, ransacReprojThreshold=pixels, maxIters=500, refineIters=0
        )
        out[f"px{pixels:.0f}"] = 0 if m is None else int(m.sum())
    scale = float(np.hypot(model[0, 0], model[1, 0]))
    angle = abs(float(np.degrees(np.arctan2(model[1, 0], model[0, 0]))))
    if not full:
        return out
    out["plausible"] = out["base"] if 0.6 <= scale <= 1.7 and angle <= 25 else 0
    rest = ~inlier
    if rest.sum() >= pattern.MIN_MATCHES:  # a second body part moving on its own (piecewise similarity)
        _, mask2 = cv2.estimateAffinePartial2D(
            src[rest],
            dst[rest],
            method=cv2.RANSAC,
            ransacReprojThreshold=pattern.RANSAC_PIXELS,
            maxIters=500,
            refineIters=0,
        )
        if mask2 is not None:
            out["second"] = int(mask2.sum())
    _, mask3 = cv2.estimateAffine2D(
        src, dst, method=cv2.RANSAC, ransacReprojThreshold=pattern.RANSAC_PIXELS, maxIters=500, refineIters=0
    )
    out["affine"] = 0 if mask3 is None else int(mask3.sum())
    return out


def _pairs(q):
    ids, enc, side, feats = STATE["ids"], STATE["enc"], STATE["side"], STATE["feats"]
    ok = np.flatnonzero((enc != enc[q]) & (side == side[q]))
    if not STATE["full"]:  # only the pairs the product verifies: the K (+1, candidate_lists) best individuals'
        # PHOTOS best photos
        sims = STATE["vectors"] @ STATE["vectors"][q]
        per: dict = {}
        for j in ok[np.argsort(-sims[ok], kind="stable")]:
            per.setdefault(ids[j], []).append(j)
        ranked = sorted(per, key=lambda i: -np.mean(sims[per[i][:3]]))[: K + 1]
        ok = [j for i in ranked for j in per[i][:PHOTOS]]
    return q, {int(j): pair_record(feats[q], feats[j], STATE["full"]) for j in ok}


def pair_table(name, recipe, samples, boxes, vectors):
    path = WORK / f"pairs_{recipe}_{name}.{TABLE_VERSION}.json"
    if path.exists():
        return {int(q): {int(j): r for j, r in d.items()} for q, d in json.loads(path.read_text()).items()}
    t0 = time.perf_counter()
    with Pool(2) as pool:
        feats = pool.map(_extract, [(recipe, s.path, b) for s, b in zip(samples, boxes, strict=True)], chunksize=16)
    print(f"  {name}: {len(feats)} photos extracted ({recipe}), {time.perf_counter() - t0:.0f} s", flush=True)
    STATE.update(
        ids=np.array([s.individual for s in samples]),
        enc=np.array([s.encounter for s in samples]),
        side=np.array([str(s.viewpoint) for s in samples]),
        feats=feats,
        full=recipe == "base",
        vectors=vectors,
    )
    with Pool(2) as pool:
        table = dict(pool.map(_pairs, range(len(samples)), chunksize=8))
    print(f"  {name}: pairs matched, {time.perf_counter() - t0:.0f} s", flush=True)
    path.write_text(json.dumps(table))
    return table


def candidate_lists(samples, vectors, table, score):
    """Per query with another encounter: the 41 best individuals by appearance (one more than the app verifies,
    for the query as a never-seen animal), each with (same, appearance, best verified score over its 8 best
    photos)."""
    out = []
    for q, ranked in ranked_individuals(samples, vectors):
        out.append(
            [(same, appearance, max(score(table[q][int(j)]) for j in photos)) for same, appearance, photos in ranked]
        )
    return out


def ranked_individuals(samples, vectors):
    """Per query with another encounter: (query index, its 41 best individuals by appearance as (is the true one,
    appearance score, indices of its 8 best photos)), same side, other encounters only."""
    ids = np.array([s.individual for s in samples])
    enc = np.array([s.encounter for s in samples])
    side = np.array([str(s.viewpoint) for s in samples])
    for q in range(len(samples)):
        if not ((ids == ids[q]) & (enc != enc[q])).any():
            continue
        sims = vectors @ vectors[q]
        ok = np.flatnonzero((enc != enc[q]) & (side == side[q]))
        per: dict = {}
        for j in ok[np.argsort(-sims[ok], kind="stable")]:
            per.setdefault(ids[j], []).append(j)
        ranked = sorted(per, key=lambda i: -np.mean(sims[per[i][:3]]))[: K + 1]
        yield q, [(i == ids[q], float(np.mean(sims[per[i][:3]])), per[i][:PHOTOS]) for i in ranked]


def _columns(cands):
    """The shipped fusion's inputs (engine.calibration.feature_columns) of these candidates."""
    return feature_columns([c[1] for c in cands], [c[2] for c in cands])


def design(cands):
    """(features of the top-K, which is the true individual, features of the top-K others: the query as a
    never-seen animal), as bench/fusion_variants.features."""
    return _columns(cands[:K]), np.array([c[0] for c in cands[:K]]), _columns([c for c in cands if not c[0]][:K])


SCORES = {
    "base": lambda r: r["base"],
    "plausible": lambda r: r["plausible"],
    "affine": lambda r: r["affine"],
    "piecewise": lambda r: r["base"] + (r["second"] if r["second"] >= 4 else 0),
    "cells": lambda r: r["cells"],
    "base*cells": lambda r: np.sqrt(r["base"] * r["cells"]),
    "good": lambda r: r["good"],
    "guided": lambda r: r["guided"],  # pattern.guided_matches alone
    "evidence": lambda r: r["evidence"],  # what ships from 0.6.0 on: verified + guided (PatternMatch.evidence)
    "px7": lambda r: r.get("px7", 0),
    "px14": lambda r: r.get("px14", 0),
    "ratio0.80": lambda r: r.get("ratio0.80", 0),
    "ratio0.90": lambda r: r.get("ratio0.90", 0),
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="base", choices=sorted(RECIPES))
    parser.add_argument("--variants", default=",".join(SCORES))
    args = parser.parse_args(argv)
    split = split_photos()
    cal = split["calibration"][0]
    parts = {
        name: (part, vectors, pair_table(name, args.recipe, part, boxes, vectors))
        for name, (part, boxes, vectors) in split.items()
    }
    results = []
    print(f"\n{'recipe/variant':28s} | CV on calibration: top1 top5 AUROC known-flagged new-flagged | test")
    for variant in args.variants.split(","):
        score = SCORES[variant]
        cal_q = [design(c) for c in candidate_lists(*parts["calibration"][:2], parts["calibration"][2], score)]
        test_q = [design(c) for c in candidate_lists(*parts["test"][:2], parts["test"][2], score)]
        cv = cross_validated(cal_q, two_folds(_query_individuals(cal), [s.individual for s in cal]))
        t = held_out(cal_q, test_q)
        results.append(
            {"recipe": args.recipe, "variant": variant, "table": TABLE_VERSION, "cv_calibration": cv, "test": t}
        )
        row = " ".join(f"{v:.3f}" for v in cv.values()) + " | " + " ".join(f"{v:.3f}" for v in t.values())
        print(f"{args.recipe + '/' + variant:28s} | {row}", flush=True)
    out = ROOT / "bench" / "results" / "pattern_pairs.json"
    old = json.loads(out.read_text())["rows"] if out.exists() else []
    keep = [r for r in old if (r["recipe"], r["variant"]) not in {(x["recipe"], x["variant"]) for x in results}]
    out.write_text(json.dumps({"seed": 0, "k": K, "photos": PHOTOS, "rows": keep + results}, indent=2) + "\n")
    return 0


def _query_individuals(part):
    ids = np.array([s.individual for s in part])
    enc = np.array([s.encounter for s in part])
    return [ids[q] for q in range(len(part)) if ((ids == ids[q]) & (enc != enc[q])).any()]


if __name__ == "__main__":
    raise SystemExit(main())
