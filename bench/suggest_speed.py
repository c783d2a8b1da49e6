"""Suggestions for one detection against a 1000-individual gallery, on this CPU: the issue-11 budget is < 1 s
with the global top-k individuals (the model card's k, 40) pattern-verified. Not a test: prints a table, writes
bench/results/suggest_speed.json.

The gallery is real: 300 nyala photos' embeddings and pattern features (bundled detector crop, bundled model),
repeated over 1000 individuals x the card's photos per candidate (8 since 0.4.0; each copy's vector jittered so
the index sees distinct rows). At most the search depth's 200 nearest gallery photos are verified per query, and
this gallery makes every query verify all 200 (worst case); the same queries with card 0.12.0's recipe (a 9 px
top-hat: engine.pattern.TOPHAT_WIDTH 9 instead of 7) are timed in turn with the shipped ones. Also timed in the same
run, per detection crop, what an import pays once to store a crop's pattern: keypoints on the whole crop (card 0.4.0)
against on the GrabCut foreground (0.5.0 on; 0.12.0's and the shipped recipe), beside the crop's embedding.
Usage: python bench/suggest_speed.py [--individuals 1000] [--photos N] [--queries 50]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine import pattern  # noqa: E402
from engine.calibration import Fusion  # noqa: E402
from engine.demo import find_data_dir  # noqa: E402
from engine.detect import load_detector  # noqa: E402
from engine.evaluate import animal_crop, photo_features  # noqa: E402
from engine.match import Gallery, suggest  # noqa: E402
from engine.pattern import extract, sift_features, stripe_image  # noqa: E402
from engine.reid import Embedder  # noqa: E402
from trainer.data import folder_samples  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--individuals", type=int, default=1000)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--photos", type=int, default=None, help="per individual (default: the card's per candidate)")
    args = parser.parse_args()
    samples = folder_samples(find_data_dir() / "nyala" / "train")
    rng = np.random.default_rng(0)
    chosen = [samples[i] for i in rng.choice(len(samples), 300 + args.queries, replace=False)]
    embedder = Embedder()
    vectors, patterns = photo_features([s.path for s in chosen], load_detector("bundled"), embedder)
    with recipe(**PREVIOUS_RECIPE):
        _, patterns_old = photo_features([s.path for s in chosen], load_detector("bundled"), embedder)
    fusion = Fusion.from_card(embedder.card.data)
    photos = args.photos or fusion.photos_per_candidate
    n = args.individuals * photos
    # Each individual's photos are copies of one real photo, so the nearest 200 gallery photos are 25 individuals x
    # 8 photos: every query pays the most verifications the search depth allows (the worst case, not the typical).
    source = (np.arange(n) // photos) % 300
    jitter = rng.normal(0, 0.01, (n, vectors.shape[1])).astype(np.float32)
    gv = vectors[source] + jitter
    gv /= np.linalg.norm(gv, axis=1, keepdims=True)
    gallery = Gallery(
        gv, np.arange(n) // photos, np.arange(n), np.array(["left"] * n, object), np.array([None] * n, object)
    )
    fused = f"appearance + pattern (top-{fusion.candidates} verified)"
    # The same pass with 0.12.0's recipe, query by query in turn with the shipped one, so that this VM's drifting
    # speed falls on both alike.
    runs = {"appearance only": (None, patterns), fused: (fusion, patterns)}
    runs["  9 px top-hat (0.12.0 recipe)"] = (fusion, patterns_old)
    stores = {name: {i: features[source[i]] for i in range(n)} for name, (_, features) in runs.items()}
    t = {name: [] for name in runs}
    for q in range(300, 300 + args.queries):
        for name, (f, features) in runs.items():
            store = stores[name]
            t0 = time.perf_counter()
            suggest(vectors[q], gallery, 0.5, "left", fusion=f, query_pattern=features[q], gallery_pattern=store.get)
            t[name].append(time.perf_counter() - t0)
    times = {
        n: {"median_ms": 1000 * float(np.median(v)), "p95_ms": 1000 * float(np.quantile(v, 0.95))} for n, v in t.items()
    }
    stored, both = extraction_times(chosen[300:], load_detector("bundled"), embedder)
    print(
        f"{args.individuals} individuals, {n} gallery photos, {args.queries} queries, {platform.processor() or 'cpu'}"
    )
    for name, v in times.items():
        print(f"{name:42s} median {v['median_ms']:7.1f} ms   p95 {v['p95_ms']:7.1f} ms")
    print("\nstored once per detection crop (one crop at a time):")
    for name, v in stored.items():
        print(f"{name:42s} median {v['median_ms']:7.1f} ms   p95 {v['p95_ms']:7.1f} ms")
    print(
        f"{both['crops']} crops' foreground patterns: {both['serial_s']:.1f} s serial, {both['two_threads_s']:.1f} s "
        f"in two threads ({both['serial_s'] / both['two_threads_s']:.2f}x; same features: {both['same_features']})"
    )
    out = ROOT / "bench" / "results" / "suggest_speed.json"
    out.write_text(
        json.dumps(
            {
                "individuals": args.individuals,
                "gallery_photos": n,
                "photos_per_individual": photos,
                "candidates_verified": fusion.candidates,
                "photos_verified_per_candidate": fusion.photos_per_candidate,
                "queries": args.queries,
                "cpu_count": os.cpu_count(),
                "results": times,
                "per_crop_once": stored,
                "all_crops_serial_vs_two_threads": both,
                "budget_ms": 1000,
            },
            indent=2,
        )
        + "\n"
    )


PREVIOUS_RECIPE = {"TOPHAT_WIDTH": 9}  # card 0.12.0's


@contextmanager
def recipe(**constants):
    """engine.pattern with these module constants within the block (sift_features reads them per call)."""
    shipped = {name: getattr(pattern, name) for name in constants}
    for name, value in constants.items():
        setattr(pattern, name, value)
    try:
        yield
    finally:
        for name, value in shipped.items():
            setattr(pattern, name, value)


def extract_previous(crop):
    with recipe(**PREVIOUS_RECIPE):
        return extract(crop)


def extraction_times(samples, detector, embedder) -> tuple[dict, dict]:
    """Per crop, one at a time: the pattern on the whole crop, on the animal's foreground, and the embedding."""
    crops = [animal_crop(s.path, detector) for s in samples]
    steps = {
        "pattern, whole crop (0.4.0)": lambda c: sift_features(stripe_image(c)),
        "pattern, foreground, 7 px top-hat (0.13.0)": extract,
        "pattern, foreground, 9 px top-hat (0.12.0)": extract_previous,
        "embedding": lambda c: embedder.embed([c]),
    }
    out = {}
    for name, step in steps.items():
        t = []
        for c in crops:
            t0 = time.perf_counter()
            step(c)
            t.append(time.perf_counter() - t0)
        out[name] = {"median_ms": 1000 * float(np.median(t)), "p95_ms": 1000 * float(np.quantile(t, 0.95))}
    # The pipeline's embed stage extracts in two threads (OpenCV releases the GIL): all crops, serial vs two.
    t0 = time.perf_counter()
    serial = [extract(c) for c in crops]
    t1 = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:
        threaded = list(pool.map(extract, crops))
    t2 = time.perf_counter()
    same = all(np.array_equal(a.descriptors, b.descriptors) for a, b in zip(serial, threaded, strict=True))
    threads = {
        "crops": len(crops),
        "serial_s": t1 - t0,
        "two_threads_s": t2 - t1,
        "same_features": same,
    }
    return out, threads


if __name__ == "__main__":
    main()
