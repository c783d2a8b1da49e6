"""End-to-end pipeline throughput by stage and peak memory, and gallery search latency at scale.

Not a test: prints tables, writes bench/results/pipeline.json.
  1. Throughput: a fresh catalogue, the demo gallery (nyala + lion, labelled), then `import` of the held-out
     encounters through ingest -> detect (whole frame) -> embed -> suggest, timed per stage, in a child process
     so its peak RSS is its own.
  2. Search: top-10 latency over 10k, 100k, 1M gallery vectors (256-d, clustered like real galleries: 10
     photos per individual; queries are new views of known individuals) with exact numpy search and faiss HNSW,
     and HNSW's recall@10 against exact.

Usage: python bench/pipeline.py [--sizes 10000,100000,1000000] [--skip-throughput]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common import run_child, yolov8n_onnx  # noqa: E402

CHILD = r"""
import json, resource, sys, time
from engine.catalogue import Catalogue
from engine.demo import build_demo
from engine.pipeline import Pipeline
cat = Catalogue(sys.argv[1])
t0 = time.perf_counter()
demo = build_demo(cat, sys.argv[2], hold_out=True)
t_ingest = time.perf_counter() - t0
pipe = Pipeline(cat, detector="whole-frame")
summary = pipe.run()
out = {"ingest": {"items": sum(i.files_seen for i in demo.imports), "seconds": t_ingest}}
out.update({k: {"items": v.items, "seconds": v.seconds} for k, v in summary.stages.items()})
out["device"] = summary.device
out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(out))
"""


def throughput(data_dir: Path) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        return run_child(CHILD, f"{tmp}/c.sqlite", data_dir)


def detector_speed(data_dir: Path) -> dict | None:
    """YOLOv8n at 640 px through onnxruntime on real full-size camera-trap photos. Built from its yaml (no weights
    can be downloaded): the speed of a network does not depend on its weights."""
    try:
        import ultralytics  # noqa: F401
    except ImportError:
        return None
    from engine.detect import YoloOnnxDetector
    from engine.imageio import load_rgb

    with tempfile.TemporaryDirectory() as tmp:
        path = yolov8n_onnx(tmp)
        det = YoloOnnxDetector(path, conf=0.25)
        photos = sorted((data_dir / "camtraps").rglob("*.[jJ][pP]*[gG]"))
        images = [load_rgb(p) for p in photos]
        det(images[0])
        t0 = time.perf_counter()
        for img in images:
            det(img)
        seconds = time.perf_counter() - t0
    return {
        "photos": len(images),
        "seconds": seconds,
        "images_per_s": len(images) / seconds,
        "device": det.device,
        "megapixels_mean": float(np.mean([i.shape[0] * i.shape[1] / 1e6 for i in images])),
    }


def clustered_vectors(n: int, dim: int, rng: np.random.Generator, per_individual: int = 10) -> np.ndarray:
    centres = rng.normal(size=(max(1, n // per_individual), dim)).astype(np.float32)
    v = centres[rng.integers(0, len(centres), n)] + 0.6 * rng.normal(size=(n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def search_scale(sizes: list[int], dim: int = 256, queries: int = 200, k: int = 10) -> list[dict]:
    from engine.match import VectorIndex

    rng = np.random.default_rng(0)
    rows = []
    for n in sizes:
        gallery = clustered_vectors(n, dim, rng)
        # Queries are new photos of known individuals: another noisy view of a gallery vector's individual.
        q = gallery[rng.integers(0, n, queries)] + 0.05 * rng.normal(size=(queries, dim)).astype(np.float32)
        q /= np.linalg.norm(q, axis=1, keepdims=True)
        exact = VectorIndex(gallery, ann_min=10**12)
        exact.search(q[:5], k)
        t0 = time.perf_counter()
        _, e_idx = (
            exact.search(q, k)
            if n <= 200_000
            else (None, np.concatenate([exact.search(q[i : i + 20], k)[1] for i in range(0, queries, 20)]))
        )
        exact_ms = (time.perf_counter() - t0) / queries * 1000
        # one query at a time is what the review screen does
        t0 = time.perf_counter()
        for i in range(20):
            exact.search(q[i : i + 1], k)
        exact_single_ms = (time.perf_counter() - t0) / 20 * 1000
        t0 = time.perf_counter()
        ann = VectorIndex(gallery, ann_min=0)
        build_s = time.perf_counter() - t0
        ann.search(q[:5], k)
        t0 = time.perf_counter()
        for i in range(queries):
            ann.search(q[i : i + 1], k)
        ann_ms = (time.perf_counter() - t0) / queries * 1000
        _, a_idx = ann.search(q, k)
        recall = float(np.mean([len(set(e) & set(a)) / k for e, a in zip(e_idx, a_idx, strict=True)]))
        rows.append(
            {
                "gallery": n,
                "exact_ms_per_query_single": round(exact_single_ms, 3),
                "exact_ms_per_query_batched": round(exact_ms, 3),
                "hnsw_ms_per_query": round(ann_ms, 3),
                "hnsw_build_s": round(build_s, 1),
                "hnsw_recall_at_10": round(recall, 4),
            }
        )
        print(rows[-1], flush=True)
        del gallery, exact, ann
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-search", action="store_true")
    args = parser.parse_args()
    from engine.demo import find_data_dir

    out = {"machine": f"{platform.machine()} {os.cpu_count()} CPUs"}
    if not args.skip_throughput:
        tp = throughput(find_data_dir(ROOT))
        out["throughput"] = tp
        print(f"\n{'stage':<10}{'items':>8}{'seconds':>9}{'items/s':>9}")
        for stage in ("ingest", "detect", "embed", "suggest"):
            st = tp[stage]
            print(f"{stage:<10}{st['items']:>8}{st['seconds']:>9.2f}{st['items'] / max(st['seconds'], 1e-9):>9.1f}")
        print(f"peak RSS {tp['peak_rss_mb']:.0f} MB on {tp['device']}")
        out["detector_yolov8n_640"] = detector_speed(find_data_dir(ROOT))
        print("detector YOLOv8n 640 px:", out["detector_yolov8n_640"])
    if args.skip_search:
        previous = ROOT / "bench" / "results" / "pipeline.json"
        out["search"] = json.loads(previous.read_text())["search"] if previous.is_file() else []
    else:
        out["search"] = search_scale([int(s) for s in args.sizes.split(",")])
    print(f"\n{'gallery':>9}{'exact 1q ms':>13}{'exact batch ms':>16}{'hnsw ms':>9}{'recall@10':>11}{'build s':>9}")
    for r in out["search"]:
        print(
            f"{r['gallery']:>9}{r['exact_ms_per_query_single']:>13}{r['exact_ms_per_query_batched']:>16}"
            f"{r['hnsw_ms_per_query']:>9}{r['hnsw_recall_at_10']:>11}{r['hnsw_build_s']:>9}"
        )
    path = ROOT / "bench" / "results" / "pipeline.json"
    path.write_text(json.dumps(out, indent=2))
    print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
