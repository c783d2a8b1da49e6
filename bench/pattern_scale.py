"""The coat-pattern recipe's scale, chosen again on calibration individuals: work width, top-hat width, keypoints,
SIFT's edge threshold (the top-hat's width again with the stripes' points kept: variants tophat*e, card 0.13.0).

engine.pattern's WORK_WIDTH (288), TOPHAT_WIDTH (9) and MAX_KEYPOINTS (600) were chosen in session 4 by looking at
the test third, with keypoints on the whole crop and the matcher of then; this bench chose 1500 keypoints instead
(card 0.9.0), SIFT's edge filter off (card 0.12.0: engine.pattern.EDGE_THRESHOLD; variants edge*) and a 7 px top-hat
(card 0.13.0; variants tophat*e). Here each
setting goes the product's way
(trainer.fusion's split, seed 0: the bundled detector's crops and embedding, engine.evaluate.run_suggestions with
sighting sessions, top-40 x 8 photos verified), the pixel tolerances (RANSAC, guided radius) scaled with the width,
and is scored by two-fold cross-validation over the 118 calibration individuals (bench/fusion_variants.py's CV,
the shipped five fusion features). The test third is printed beside it and chooses nothing.

    python bench/pattern_scale.py [--variants keypoints600,w384,...] [--parts calibration,test]
    # ~4 min a variant on 2 cores; writes bench/results/pattern_scale.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fusion_variants import cross_validated, held_out, two_folds  # noqa: E402

from engine import pattern  # noqa: E402
from engine.calibration import feature_columns  # noqa: E402
from engine.demo import find_data_dir  # noqa: E402
from engine.detect import load_detector  # noqa: E402
from engine.evaluate import photo_features, run_suggestions, sighting_numbers  # noqa: E402
from engine.reid import Embedder  # noqa: E402
from trainer.data import folder_samples, split_by_identity  # noqa: E402
from trainer.fusion import CANDIDATES, PHOTOS_PER_CANDIDATE  # noqa: E402

SHIPPED = {k: getattr(pattern, k) for k in ("WORK_WIDTH", "TOPHAT_WIDTH", "MAX_KEYPOINTS", "RANSAC_PIXELS")}
SHIPPED["GUIDED_PIXELS"] = pattern.GUIDED_PIXELS
SHIPPED["EDGE_THRESHOLD"] = pattern.EDGE_THRESHOLD
SHIPPED_STRIPES = pattern.stripe_image


def multi_scale_stripes(crop_rgb):
    """Light structures narrower than TOPHAT_WIDTH or twice that (a close-up's stripes are wider), the larger."""
    narrow = SHIPPED_STRIPES(crop_rgb)
    h, w = crop_rgb.shape[:2]
    height = max(1, round(pattern.WORK_WIDTH * h / w))
    gray = cv2.cvtColor(
        cv2.resize(crop_rgb, (pattern.WORK_WIDTH, height), interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2GRAY
    )
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (2 * pattern.TOPHAT_WIDTH + 1, 1))
    wide = cv2.GaussianBlur(cv2.morphologyEx(gray, cv2.MORPH_TOPHAT, kernel), (3, 3), 0)
    return np.maximum(narrow, cv2.normalize(wide, None, 0, 255, cv2.NORM_MINMAX))


# name -> (work width, top-hat width, keypoints, stripe image, SIFT edge threshold); pixel tolerances scale with the
# width. The variants before edge* were measured with SIFT's default edge threshold (10, cards <= 0.11.0) and keep it.
DEFAULT_EDGE = 10.0
VARIANTS = {
    "keypoints600": (288, 9, 600, None, DEFAULT_EDGE),  # card 0.8.0's recipe (0.9.0 ships keypoints1500)
    "keypoints1000": (288, 9, 1000, None, DEFAULT_EDGE),
    "w224": (224, 7, 600, None, DEFAULT_EDGE),
    "w384": (384, 12, 900, None, DEFAULT_EDGE),
    "w384k600": (384, 12, 600, None, DEFAULT_EDGE),
    "tophat-multiscale": (288, 9, 600, multi_scale_stripes, DEFAULT_EDGE),
    "keypoints800": (288, 9, 800, None, DEFAULT_EDGE),
    "keypoints1500": (288, 9, 1500, None, DEFAULT_EDGE),
    "keypoints2000": (288, 9, 2000, None, DEFAULT_EDGE),
    "w224k1000": (224, 7, 1000, None, DEFAULT_EDGE),
    "edge20": (288, 9, 1500, None, 20.0),
    "edge40": (288, 9, 1500, None, 40.0),
    "edge80": (288, 9, 1500, None, 80.0),
    "edge1000": (288, 9, 1500, None, 1000.0),  # card 0.12.0's recipe
    "tophat5e": (288, 5, 1500, None, 1000.0),
    "tophat6e": (288, 6, 1500, None, 1000.0),
    "tophat7e": (288, 7, 1500, None, 1000.0),  # card 0.13.0's recipe
    "tophat12e": (288, 12, 1500, None, 1000.0),
}


def configure(width, tophat, keypoints, stripes, edge):
    scale = width / SHIPPED["WORK_WIDTH"]
    pattern.WORK_WIDTH, pattern.TOPHAT_WIDTH, pattern.MAX_KEYPOINTS = width, tophat, keypoints
    pattern.EDGE_THRESHOLD = edge
    pattern.RANSAC_PIXELS = SHIPPED["RANSAC_PIXELS"] * scale
    pattern.GUIDED_PIXELS = SHIPPED["GUIDED_PIXELS"] * scale
    pattern.MASK_WIDTH = width // 2
    pattern.stripe_image = stripes or SHIPPED_STRIPES


def as_queries(run):
    """A verified run as bench/fusion_variants' queries: (features of the known list, which is the true one,
    features of the list without the true individual)."""
    out = []
    for known, new in zip(run.as_known(), run.as_new(), strict=True):
        x = feature_columns([c[0] for c in known], [max(c[1], 0) for c in known])
        x_new = feature_columns([c[0] for c in new], [max(c[1], 0) for c in new])
        out.append((x, np.array([c[2] for c in known]), x_new))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--parts", default="calibration,test")
    args = parser.parse_args(argv)
    samples = folder_samples(find_data_dir() / "nyala" / "train")
    parts = dict(zip(("calibration", "test"), split_by_identity(samples, 0.34, 0), strict=True))
    parts = {name: part for name, part in parts.items() if name in args.parts.split(",")}
    detector, embedder = load_detector("bundled"), Embedder()
    cal = parts["calibration"]
    ids = np.array([s.individual for s in cal])
    enc = np.array([s.encounter for s in cal])
    # the calibration queries in run_suggestions' order (no individual recurs within its sighting session)
    query_ids = [ids[q] for q in range(len(cal)) if ((ids == ids[q]) & (enc != enc[q])).any()]
    fold = two_folds(query_ids, [s.individual for s in cal])
    out_path = ROOT / "bench" / "results" / "pattern_scale.json"
    # rows of other variants measured before stay (a run of some variants replaces only theirs)
    rows = [r for r in (json.loads(out_path.read_text())["rows"] if out_path.exists() else [])
            if r["variant"] not in args.variants.split(",")]  # fmt: skip
    print(f"{'variant':18s} | CV on calibration: top1 top5 AUROC known-flagged new-flagged own60 | test | s")
    for name in args.variants.split(","):
        configure(*VARIANTS[name])
        t0 = time.perf_counter()
        queries = {}
        for part_name, part in parts.items():
            vectors, patterns = photo_features([s.path for s in part], detector, embedder)
            run = run_suggestions(
                vectors, [s.individual for s in part], [s.encounter for s in part], [s.viewpoint for s in part],
                patterns, CANDIDATES, PHOTOS_PER_CANDIDATE, sightings=sighting_numbers(s.path for s in part),
            )  # fmt: skip
            queries[part_name] = as_queries(run)
        cv = cross_validated(queries["calibration"], fold)
        test = held_out(queries["calibration"], queries["test"]) if "test" in queries else {}
        seconds = time.perf_counter() - t0
        settings = [*VARIANTS[name][:3], VARIANTS[name][4]]
        rows.append({"variant": name, "settings": settings, "cv_calibration": cv, "test": test})
        line = " ".join(f"{v:.3f}" for v in cv.values()) + " | " + " ".join(f"{v:.3f}" for v in test.values())
        print(f"{name:18s} | {line} | {seconds:.0f}", flush=True)
        out_path.write_text(json.dumps({"seed": 0, "protocol": "sighting sessions", "rows": rows}, indent=2) + "\n")
    configure(SHIPPED["WORK_WIDTH"], SHIPPED["TOPHAT_WIDTH"], SHIPPED["MAX_KEYPOINTS"], None, SHIPPED["EDGE_THRESHOLD"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
