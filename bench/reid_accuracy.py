"""Re-identification accuracy on unseen nyala individuals, across encounters: ablation, relighting robustness,
throughput. Not a test: prints tables, writes bench/results/reid_accuracy.json.

Protocol: nyala/train split by identity (seed 0): 2/3 of the individuals train, 1/3 are never seen in training.
Each held-out photo is a query against all other held-out photos except those of its own encounter (its
`<n>_left/rightphoto` partner shares place, background and light). Same-side: only photos of the same flank.
Every trained variant gets the same wall-clock budget on this CPU.

Usage: python bench/reid_accuracy.py [--budget-minutes 5] [--variants a,b,...] [--no-sift]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.demo import find_data_dir  # noqa: E402
from engine.metrics import cosine_similarity, encounter_exclusion, evaluate_ranking, reid_protocol  # noqa: E402
from trainer.data import ImageCache, center_batch, folder_samples, split_by_identity  # noqa: E402
from trainer.models.offtheshelf import OffTheShelf  # noqa: E402
from trainer.relight import gamma_relight, hard_shadow  # noqa: E402
from trainer.train import Trainer, load_config  # noqa: E402

VARIANTS = {
    "osnet_ain": {
        "model": {"backbone": "osnet_ain_x1_0", "use_ipaid": False},
        "training": {"losses": {"iicl": {"enabled": False}}},
    },
    "osnet_ain+ipaid": {
        "model": {"backbone": "osnet_ain_x1_0", "use_ipaid": True},
        "training": {"losses": {"iicl": {"enabled": False}}},
    },
    "osnet_ain+ipaid+iicl": {"model": {"backbone": "osnet_ain_x1_0", "use_ipaid": True}},
    "mobilenet_imagenet": {
        "model": {"backbone": "mobilenet_v2_imagenet", "use_ipaid": False},
        "training": {"losses": {"iicl": {"enabled": False}}},
    },
    "mobilenet_imagenet+ipaid+iicl": {"model": {"backbone": "mobilenet_v2_imagenet", "use_ipaid": True}},
    "mobilenet_imagenet+ipaid+iicl, backbone lr x0.1": {
        "model": {"backbone": "mobilenet_v2_imagenet", "use_ipaid": True},
        "training": {"backbone_lr_mult": 0.1},
    },
}
RELIGHTS = {
    "gamma 0.4": lambda x: gamma_relight(x, 0.4),
    "gamma 0.6": lambda x: gamma_relight(x, 0.6),
    "gamma 1.6": lambda x: gamma_relight(x, 1.6),
    "gamma 2.5": lambda x: gamma_relight(x, 2.5),
    "hard shadow": hard_shadow,
}
INPUT = [160, 224]


@torch.no_grad()
def embed_with(model, cache: ImageCache, transform=None, batch=64) -> np.ndarray:
    model.eval()
    out = []
    for i in range(0, len(cache), batch):
        x = center_batch(cache, range(i, min(i + batch, len(cache))), INPUT)
        out.append(model(transform(x) if transform else x).numpy())
    return np.concatenate(out)


def robustness(model, cache, samples) -> dict:
    """Rank-1 across encounters when the queries are relit and the gallery is not."""
    ids = np.array([s.individual for s in samples], dtype=object)
    exclude = encounter_exclusion([s.encounter for s in samples])
    gallery = embed_with(model, cache)
    out = {"clean": evaluate_ranking(cosine_similarity(gallery, gallery), ids, ids, exclude).rank(1)}
    for name, fn in RELIGHTS.items():
        queries = embed_with(model, cache, fn)
        out[name] = evaluate_ranking(cosine_similarity(queries, gallery), ids, ids, exclude).rank(1)
    return out


def ImageNetBaseline(backbone: str = "mobilenet"):  # noqa: N802 (kept name: a model, as before)
    """Off-the-shelf ImageNet features, GeM-pooled (trainer/models/offtheshelf.py)."""
    return OffTheShelf(backbone, INPUT)


def sift_baseline(samples) -> dict:
    """Non-learned baseline: SIFT + ratio test + RANSAC inlier count as the similarity."""
    import cv2

    sift = cv2.SIFT_create(nfeatures=400)
    feats = []
    for s in samples:
        img = cv2.imread(s.path, cv2.IMREAD_GRAYSCALE)
        img = cv2.resize(img, (320, int(320 * img.shape[0] / img.shape[1])))
        feats.append(sift.detectAndCompute(img, None))
    matcher = cv2.BFMatcher()
    n = len(samples)
    sim = np.zeros((n, n))
    for i in range(n):
        ki, di = feats[i]
        for j in range(i + 1, n):
            kj, dj = feats[j]
            if di is None or dj is None or len(di) < 2 or len(dj) < 2:
                continue
            good = [
                m
                for m, m2 in (p for p in matcher.knnMatch(di, dj, k=2) if len(p) == 2)
                if m.distance < 0.75 * m2.distance
            ]
            if len(good) >= 4:
                src = np.float32([ki[m.queryIdx].pt for m in good])
                dst = np.float32([kj[m.trainIdx].pt for m in good])
                _, mask = cv2.findHomography(src, dst, cv2.RANSAC, 5.0)
                sim[i, j] = sim[j, i] = 0 if mask is None else mask.sum()
    ids = np.array([s.individual for s in samples], dtype=object)
    enc = [s.encounter for s in samples]
    vps = [s.viewpoint for s in samples]
    return {
        "across_encounters": evaluate_ranking(sim, ids, ids, encounter_exclusion(enc)).as_dict(),
        "same_side": evaluate_ranking(sim, ids, ids, encounter_exclusion(enc, vps, True)).as_dict(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-minutes", type=float, default=5.0)
    parser.add_argument("--variants", default=";".join(VARIANTS), help="names separated by ';'")
    parser.add_argument("--no-sift", action="store_true")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "reid_accuracy.json"))
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    samples = folder_samples(find_data_dir(ROOT) / "nyala" / "train")
    train, val = split_by_identity(samples, 0.34, seed=0)
    val_cache = ImageCache(val, INPUT)
    results = {
        "protocol": {
            "train_images": len(train),
            "train_individuals": len({s.individual for s in train}),
            "val_images": len(val),
            "val_individuals": len({s.individual for s in val}),
            "budget_minutes": args.budget_minutes,
            "input_size": INPUT,
            "machine": f"{platform.machine()} {os.cpu_count()} CPUs",
        },
        "variants": {},
    }
    print(json.dumps(results["protocol"]))

    base = ImageNetBaseline()
    emb = embed_with(base, val_cache)
    results["variants"]["imagenet_off_the_shelf"] = {
        **reid_protocol(emb, [s.individual for s in val], [s.encounter for s in val], [s.viewpoint for s in val]),
        "robustness_rank1": robustness(base, val_cache, val),
    }
    if not args.no_sift:
        t0 = time.time()
        results["variants"]["sift_ransac"] = sift_baseline(val)
        results["variants"]["sift_ransac"]["seconds"] = round(time.time() - t0, 1)

    for name in args.variants.split(";"):
        overrides = {
            "model": {"input_size": INPUT, **VARIANTS[name]["model"]},
            "training": {
                "time_budget_minutes": args.budget_minutes,
                "phases": {"phase1": {"epochs": 10}, "phase2": {"epochs": 20}},
                **VARIANTS[name].get("training", {}),
            },
            "data": {"eval_every": 1000},
        }
        overrides["training"].setdefault("losses", {}).setdefault("iicl", {}).setdefault("variants", 1)
        config = load_config(overrides=overrides)
        trainer = Trainer(config, train, ROOT / "bench" / "work" / name, val=val)
        t0 = time.time()
        result = trainer.fit()
        model = trainer.model.eval()
        t1 = time.time()
        emb = trainer.embed(val_cache)
        embed_rate = len(val) / (time.time() - t1)
        results["variants"][name] = {
            **trainer.evaluate(),
            "robustness_rank1": robustness(model, val_cache, val),
            "train_images_per_s": round(result.images_per_second, 2),
            "epochs": result.epochs,
            "train_seconds": round(time.time() - t0, 1),
            "embed_images_per_s_torch": round(embed_rate, 1),
        }
        print(name, json.dumps(results["variants"][name]["across_encounters"]))
        Path(args.out).write_text(json.dumps(results, indent=2))

    print(f"\n{'variant':<32}{'rank1':>7}{'rank5':>7}{'mAP':>7}{'same-side r1':>14}{'train img/s':>13}")
    for name, r in results["variants"].items():
        a, s = r["across_encounters"], r["same_side"]
        print(
            f"{name:<32}{a['rank1']:>7.3f}{a['rank5']:>7.3f}{a['mAP']:>7.3f}{s['rank1']:>14.3f}"
            f"{r.get('train_images_per_s', float('nan')):>13}"
        )
    print(f"\n{'relit queries: rank-1':<32}" + "".join(f"{k:>12}" for k in ["clean", *RELIGHTS]))
    for name, r in results["variants"].items():
        if "robustness_rank1" in r:
            rob = r["robustness_rank1"]
            print(f"{name:<32}" + "".join(f"{rob[k]:>12.3f}" for k in ["clean", *RELIGHTS]))
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
