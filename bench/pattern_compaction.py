"""Can a crop's coat pattern be stored smaller without losing suggestions? RootSIFT projected to fewer dimensions.

A detection's pattern is ~718 keypoints x (8 bytes of position + 128 bytes of SIFT descriptor): 95 KB a detection
in make demo's catalogue, ~9.5 GB at 100k detections. Retrieval practice projects RootSIFT onto its leading
principal directions (PCA-SIFT, Ke & Sukthankar 2004; RootSIFT-PCA in Arandjelovic & Zisserman 2012). Here the
directions are those of the uncentred second moment of the calibration photos' RootSIFT vectors (projections then
approximate RootSIFT's cosines, which the ratio test and the guided-match threshold read), each component stored as
int8. Two ways of comparing are measured: the projections' dot product as is ("raw": the dropped residual counts as
disagreement, as it did before) or renormalised to unit length (cosines rise, so the shipped thresholds admit more).

Each variant goes the product's way (trainer.fusion's split, seed 0: the bundled detector's crops and embedding,
engine.evaluate.run_suggestions with sighting sessions, top-40 x 8 photos verified) and is scored by two-fold
cross-validation over the 118 calibration individuals (bench/fusion_variants.py's CV, the shipped five fusion
features) and on the test third (fitted on calibration; chooses nothing). The basis is fitted on the calibration
photos only.

    python bench/pattern_compaction.py [--variants shipped,pca96-raw,pca64-raw,pca64-unit,pca32-raw]
    # ~5 min for the patterns, then ~3 min a variant on 2 cores; writes bench/results/pattern_compaction.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from functools import cached_property
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fusion_variants import cross_validated, held_out, two_folds  # noqa: E402
from pattern_scale import as_queries  # noqa: E402

from engine import pattern  # noqa: E402
from engine.demo import find_data_dir  # noqa: E402
from engine.detect import load_detector  # noqa: E402
from engine.evaluate import photo_features, run_suggestions, sighting_numbers  # noqa: E402
from engine.reid import Embedder  # noqa: E402
from trainer.data import folder_samples, split_by_identity  # noqa: E402
from trainer.fusion import CANDIDATES, PHOTOS_PER_CANDIDATE, SEED, TEST_FRACTION  # noqa: E402

VARIANTS = {  # name -> (dimensions kept, renormalised)
    "shipped": (128, None),
    "pca96-raw": (96, False),
    "pca64-raw": (64, False),
    "pca64-unit": (64, True),
    "pca32-raw": (32, False),
}
POSITION_BYTES = 8  # two float32 per keypoint, as engine.pattern.PatternFeatures.to_bytes stores them


def principal_directions(patterns) -> np.ndarray:
    """(128, 128) directions of the RootSIFT vectors' uncentred second moment, the strongest first."""
    x = np.concatenate([p.root_sift for p in patterns if len(p)])
    values, vectors = np.linalg.eigh(x.T @ x / len(x))
    return vectors[:, ::-1].astype(np.float32), values[::-1]


def compacted(basis: np.ndarray, unit: bool):
    """A PatternFeatures whose root_sift is the int8-stored projection onto ``basis`` (128 x d)."""

    class Compacted(pattern.PatternFeatures):
        @cached_property
        def root_sift(self):
            projected = super().root_sift @ basis
            stored = np.clip(np.rint(projected * 127), -127, 127) / 127.0  # int8, as it would be stored
            if unit:
                stored = stored / np.maximum(np.linalg.norm(stored, axis=1, keepdims=True), 1e-7)
            return stored.astype(np.float32)

    return lambda p: Compacted(p.points, p.descriptors, p.size)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    args = parser.parse_args(argv)
    samples = folder_samples(find_data_dir() / "nyala" / "train")
    parts = dict(zip(("calibration", "test"), split_by_identity(samples, TEST_FRACTION, SEED), strict=True))
    detector, embedder = load_detector("bundled"), Embedder()
    t0 = time.perf_counter()
    features = {name: photo_features([s.path for s in part], detector, embedder) for name, part in parts.items()}
    print(f"crops, embeddings and patterns of {len(samples)} photos: {time.perf_counter() - t0:.0f} s", flush=True)
    basis, energy = principal_directions(features["calibration"][1])
    keypoints = np.mean([len(p) for p in features["calibration"][1]])
    cal = parts["calibration"]
    ids, enc = np.array([s.individual for s in cal]), np.array([s.encounter for s in cal])
    fold = two_folds([ids[q] for q in range(len(cal)) if ((ids == ids[q]) & (enc != enc[q])).any()], list(ids))
    rows = []
    head = "CV: top1 top5 AUROC known-flagged new-flagged own60 | test | ms/q"
    print(f"{'variant':11s} {'KB':>5s} {'energy':>6s} | {head}")
    for name in args.variants.split(","):
        dims, unit = VARIANTS[name]
        transform = None if unit is None else compacted(basis[:, :dims], unit)
        queries, ms = {}, 0.0
        for part_name, part in parts.items():
            vectors, patterns = features[part_name]
            run = run_suggestions(
                vectors, [s.individual for s in part], [s.encounter for s in part], [s.viewpoint for s in part],
                [transform(p) for p in patterns] if transform else patterns, CANDIDATES, PHOTOS_PER_CANDIDATE,
                sightings=sighting_numbers(s.path for s in part),
            )  # fmt: skip
            queries[part_name] = as_queries(run)
            ms = 1000 * run.seconds_per_query if part_name == "calibration" else ms
        cv = cross_validated(queries["calibration"], fold)
        test = held_out(queries["calibration"], queries["test"])
        kb = keypoints * (POSITION_BYTES + dims) / 1000
        kept = float(energy[:dims].sum() / energy.sum())
        rows.append({"variant": name, "dimensions": dims, "kb_per_detection": kb, "energy_kept": kept,
                     "cv_calibration": cv, "test": test, "ms_per_query_calibration": ms})  # fmt: skip
        line = " ".join(f"{v:.3f}" for v in cv.values()) + " | " + " ".join(f"{v:.3f}" for v in test.values())
        print(f"{name:11s} {kb:5.1f} {kept:6.3f} | {line} | {ms:.0f}", flush=True)
    out = {"seed": 0, "protocol": "sighting sessions", "keypoints_per_crop": float(keypoints), "rows": rows}
    (ROOT / "bench" / "results" / "pattern_compaction.json").write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
