"""Which training recipe generalises to individuals it never saw? A sweep on nyala, made for a GPU (runs on a
CPU too, slowly). Not a test: prints a table, writes bench/results/reid_sweep.json (or --out).

Protocol (seeded, by identity): nyala/train's 179 individuals -> test third (61, never used to train or to
choose anything; the same third as bench/reid_accuracy.py, seed 0), and of the other 118, 20 validation
individuals (early stopping and the open-set threshold) and 98 training individuals. Figures are on the test
third, across encounters (a query never matches its own encounter's photos). Each variant keeps the epoch
with the best validation rank-1 ("stop on the unseen-identity metric").

Usage: python bench/reid_sweep.py --data DIR --device cuda --variants a;b --out F.json [--save DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.reid_accuracy import RELIGHTS  # noqa: E402
from engine.demo import find_data_dir  # noqa: E402
from engine.metrics import (  # noqa: E402
    cosine_similarity,
    encounter_exclusion,
    evaluate_ranking,
    open_set_protocol,
    reid_protocol,
)
from trainer.data import ImageCache, center_batch, folder_samples, split_by_identity  # noqa: E402
from trainer.models.offtheshelf import OffTheShelf  # noqa: E402
from trainer.train import Trainer, load_config  # noqa: E402

STRONG = {"data": {"augment": "strong"}}
NO_IICL = {"training": {"losses": {"iicl": {"enabled": False}}}}


def variant(backbone: str, ipaid=False, iicl=False, strong=True, lr_mult=1.0, freeze=False, epochs=(10, 50)):
    v = {
        "model": {"backbone": backbone, "use_ipaid": ipaid},
        "data": {"augment": "strong" if strong else "light"},
        "training": {
            "backbone_lr_mult": lr_mult,
            "freeze_backbone": freeze,
            "phases": {"phase1": {"epochs": epochs[0]}, "phase2": {"epochs": epochs[1]}},
            "losses": {"iicl": {"enabled": iicl, "variants": 1}},
        },
    }
    return v


VARIANTS = {
    "mnv2 light (old recipe)": variant("mobilenet_v2_imagenet", strong=False),
    "mnv2 strong": variant("mobilenet_v2_imagenet"),
    "mnv2 strong lr0.1": variant("mobilenet_v2_imagenet", lr_mult=0.1),
    "mnv2 frozen+head": variant("mobilenet_v2_imagenet", freeze=True),
    "mnv2 strong lr0.1 +ipaid+iicl": variant("mobilenet_v2_imagenet", True, True, lr_mult=0.1),
    "effl0 strong": variant("efficientnet_lite0_imagenet"),
    "effl0 strong lr0.1": variant("efficientnet_lite0_imagenet", lr_mult=0.1),
    "effl0 frozen+head": variant("efficientnet_lite0_imagenet", freeze=True),
    "effl0 strong lr0.1 +ipaid": variant("efficientnet_lite0_imagenet", True, False, lr_mult=0.1),
    "effl0 strong lr0.1 +ipaid+iicl": variant("efficientnet_lite0_imagenet", True, True, lr_mult=0.1),
    "osnet_ain strong": variant("osnet_ain_x1_0", epochs=(10, 110)),
    "osnet_ain strong +ipaid+iicl": variant("osnet_ain_x1_0", True, True, epochs=(10, 110)),
}


def split(samples, seed=0):
    rest, test = split_by_identity(samples, 0.34, seed=seed)
    ids = sorted({s.individual for s in rest})
    random.Random(seed + 1).shuffle(ids)
    val_ids = set(ids[:20])
    return [s for s in rest if s.individual not in val_ids], [s for s in rest if s.individual in val_ids], test


@torch.no_grad()
def embed(model, cache, input_size, device, transform=None, batch=64) -> np.ndarray:
    model.eval()
    out = []
    for i in range(0, len(cache), batch):
        x = center_batch(cache, range(i, min(i + batch, len(cache))), input_size).to(device)
        out.append(model(transform(x) if transform else x).cpu().numpy())
    return np.concatenate(out)


def figures(emb_test, test, emb_val, val, relit: dict | None = None) -> dict:
    ids = [s.individual for s in test]
    out = reid_protocol(emb_test, ids, [s.encounter for s in test], [s.viewpoint for s in test])
    out["open_set"] = open_set_protocol(
        emb_test,
        ids,
        [s.encounter for s in test],
        calibration=(emb_val, [s.individual for s in val], [s.encounter for s in val]),
    )
    if relit:
        arr = np.array(ids, dtype=object)
        exclude = encounter_exclusion([s.encounter for s in test])
        out["relit_rank1"] = {
            name: evaluate_ranking(cosine_similarity(q, emb_test), arr, arr, exclude).rank(1)
            for name, q in relit.items()
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="folder with nyala/train (default: shared/data)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--variants", default=";".join(VARIANTS), help="names separated by ';'")
    parser.add_argument("--input", default="224,320", help="H,W")
    parser.add_argument("--eval-every", type=int, default=3)
    parser.add_argument("--epochs", help="P1,P2: override every variant's epochs (a quick smoke run)")
    parser.add_argument("--baseline", action="store_true", help="also the off-the-shelf ImageNet features")
    parser.add_argument("--save", help="keep each variant's best checkpoint here")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "reid_sweep.json"))
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("HERDBOOK_THREADS", max(1, (os.cpu_count() or 2) // 2))))
    input_size = [int(v) for v in args.input.split(",")]
    data = Path(args.data) if args.data else find_data_dir(ROOT)
    train, val, test = split(folder_samples(data / "nyala" / "train"))
    protocol = {
        "seed": 0,
        "train": [len(train), len({s.individual for s in train})],
        "val": [len(val), len({s.individual for s in val})],
        "test": [len(test), len({s.individual for s in test})],
        "input_size": input_size,
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU x{os.cpu_count()}",
    }
    print(json.dumps(protocol), flush=True)
    results = {"protocol": protocol, "variants": {}}
    val_cache, test_cache = ImageCache(val, input_size), ImageCache(test, input_size)
    device = torch.device(args.device)

    def relit_queries(model):
        return {name: embed(model, test_cache, input_size, device, fn) for name, fn in RELIGHTS.items()}

    if args.baseline:
        for name, backbone in (("imagenet mnv2 off the shelf", "mobilenet"), ("imagenet effl0 off the shelf", "effl0")):
            base = OffTheShelf(backbone, input_size).to(device)
            results["variants"][name] = figures(
                embed(base, test_cache, input_size, device),
                test,
                embed(base, val_cache, input_size, device),
                val,
                relit_queries(base),
            )
            print(name, json.dumps(results["variants"][name]["across_encounters"]), flush=True)

    for name in [v for v in args.variants.split(";") if v]:
        overrides = {
            **VARIANTS[name],
            "model": {"input_size": input_size, **VARIANTS[name]["model"]},
            "data": {**VARIANTS[name]["data"], "eval_every": args.eval_every},
            "training": {**VARIANTS[name]["training"], "device": args.device, "time_budget_minutes": None},
        }
        if args.epochs:
            p1, p2 = (int(v) for v in args.epochs.split(","))
            overrides["training"]["phases"] = {"phase1": {"epochs": p1}, "phase2": {"epochs": p2}}
        config = load_config(overrides=overrides)
        work = Path(args.save or ROOT / "bench" / "work") / name.replace(" ", "_")
        t0 = time.time()
        trainer = Trainer(config, train, work, val=val)
        result = trainer.fit()
        seconds = time.time() - t0
        best = trainer.state["best"]
        state = torch.load(work / "best.pt", map_location=device, weights_only=False)["model"]
        trainer.model.load_state_dict(state)
        model = trainer.model.eval()
        t1 = time.time()
        emb_test = embed(model, test_cache, input_size, device)
        rate = len(test) / (time.time() - t1)
        results["variants"][name] = {
            **figures(emb_test, test, embed(model, val_cache, input_size, device), val, relit_queries(model)),
            "best_epoch": best,
            "epochs": result.epochs,
            "train_seconds": round(seconds, 1),
            "embed_per_s": round(rate, 1),
            "config": VARIANTS[name],
            "val_history": [
                (h["phase"], h["epoch"], h["eval"]["across_encounters"]["rank1"]) for h in result.history if "eval" in h
            ],
        }
        print(name, json.dumps(results["variants"][name]["across_encounters"]), best, flush=True)
        Path(args.out).write_text(json.dumps(results, indent=1))
    Path(args.out).write_text(json.dumps(results, indent=1))
    print_table(results)


def print_table(results: dict) -> None:
    print(f"\n{'variant':<34}{'r1':>6}{'r5':>6}{'mAP':>6}{'ss-r1':>7}{'AUROC':>7}{'knownF':>7}{'newF':>6}{'s':>7}")
    for name, r in results["variants"].items():
        a, s, o = r["across_encounters"], r["same_side"], r["open_set"]
        print(
            f"{name:<34}{a['rank1']:>6.3f}{a['rank5']:>6.3f}{a['mAP']:>6.3f}{s['rank1']:>7.3f}"
            f"{o['auroc_known_vs_new']:>7.3f}{o['known_wrongly_flagged']:>7.3f}{o['new_flagged']:>6.3f}"
            f"{r.get('train_seconds', 0):>7.0f}"
        )


if __name__ == "__main__":
    main()
