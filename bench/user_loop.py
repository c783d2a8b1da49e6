"""The user's loop (issue 11): a station's catalogue of confirmed individuals, fine-tuned with `herdbook train
--catalogue`, measured before and after on the next encounters of those individuals AND on individuals the
fine-tune never saw (the hubness of a model that memorises its training individuals must not come back).

Protocol: nyala/train split by identity (seed 0, 0.34, trainer.fusion's split). The station's catalogue holds the
118 calibration individuals' photos as confirmed whole-frame sightings, except each one's last encounter, which
is imported unlabelled (the new card). Before: the bundled model (coat-pattern fusion included) suggests for the
new card. Then `herdbook train --catalogue` (CPU, --budget-minutes), and the catalogue re-embedded and
re-suggested with the new model (its card carries the coat-pattern fusion refitted on its training individuals,
trainer.fusion.fit_model_fusion; until 0.11.0 it had none and suggested on appearance alone; since session 18 also
its own side classifier, checked here on the unseen photos' sides from their names). Unseen: the 61
test individuals through `herdbook evaluate`'s path (bundled detector crops, across encounters), both models.

    python bench/user_loop.py [--budget-minutes 8]   # prints a table, writes bench/results/user_loop.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.catalogue import Catalogue  # noqa: E402
from engine.demo import demo_accuracy, find_data_dir, label_folder_individuals  # noqa: E402
from engine.evaluate import evaluate_folder  # noqa: E402
from engine.ingest import import_folder  # noqa: E402
from engine.pipeline import Pipeline, open_suggestions  # noqa: E402
from trainer.data import folder_samples, split_by_identity  # noqa: E402


def station_figures(cat: Catalogue, model: Path | None) -> dict:
    pipe = Pipeline(cat, detector="whole-frame", reid_model=model)
    pipe.run()
    acc = demo_accuracy(cat, open_suggestions(cat, pipe.reid_model_id))
    return {"model": f"{pipe.embedder.card['name']} {pipe.embedder.card['version']}", "fused": bool(pipe.fusion)} | acc


def unseen_figures(folder: Path, model: Path | None) -> dict:
    out = evaluate_folder(folder, model, species="nyala")  # the model's side classifier checked on the names' sides
    return {
        "suggestions": {k: out["suggestions"][k] for k in ("top1", "top5", "mrr", "auroc_known_vs_new", "queries")},
        "appearance_across_encounters": out["across_encounters"],
        "fused": out["fused"],
        "sides_inferred_against_names": out["sides"].get("inferred_against_names"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget-minutes", type=float, default=8.0)
    args = parser.parse_args()
    data = find_data_dir() / "nyala" / "train"
    station, unseen = split_by_identity(folder_samples(data), 0.34, 0)
    station_ids = sorted({s.individual for s in station})
    unseen_ids = sorted({s.individual for s in unseen})
    work = Path(tempfile.mkdtemp(prefix="herdbook-user-loop-"))
    unseen_dir = work / "unseen"
    unseen_dir.mkdir()
    for ind in unseen_ids:
        (unseen_dir / ind).symlink_to(data / ind)
    t0 = time.perf_counter()
    result = {"protocol": {"seed": 0, "station_individuals": len(station_ids), "unseen_individuals": len(unseen_ids)}}
    with Catalogue(work / "station.sqlite") as cat:
        for ind in station_ids:
            imp = import_folder(cat, data / ind, site="nyala-station")
            label_folder_individuals(cat, imp.import_id, "nyala", hold_out=True)
        result["before"] = {"station_next_encounters": station_figures(cat, None)}
        print(f"before, station: {result['before']['station_next_encounters']} ({time.perf_counter() - t0:.0f} s)")
    result["before"]["unseen"] = unseen_figures(unseen_dir, None)
    print(f"before, unseen: {result['before']['unseen']} ({time.perf_counter() - t0:.0f} s)", flush=True)
    out = work / "model"
    cmd = [sys.executable, "-m", "herdbook", "train", "--catalogue", str(work / "station.sqlite"), "--out", str(out)]
    cmd += ["--budget-minutes", str(args.budget_minutes), "--val-fraction", "0.2"]
    started = time.perf_counter()
    trained = subprocess.run(cmd, capture_output=True, text=True)
    if trained.returncode != 0:
        print(trained.stdout[-3000:], trained.stderr[-3000:])
        return 1
    metrics = json.loads(trained.stdout[trained.stdout.index("{") :])
    result["training"] = {
        "seconds": round(time.perf_counter() - started, 1),
        "budget_minutes": args.budget_minutes,
        "held_out_of_training": metrics.get("held_out"),
        "current_model_on_same_held_out": metrics.get("current_model_held_out"),
        "new_model_suggestions_on_same_held_out": metrics.get("new_model_suggestions_held_out"),
        "epochs": metrics.get("epochs"),
        "new_model_fused": metrics.get("new_model_fused"),
        "new_model_infers_sides": metrics.get("new_model_infers_sides"),
    }
    model = next(out.glob("*.onnx"))
    with Catalogue(work / "station.sqlite") as cat:
        result["after"] = {"station_next_encounters": station_figures(cat, model)}
    result["after"]["unseen"] = unseen_figures(unseen_dir, model)
    print(f"\n{'':34s} {'top-1':>7s} {'top-5':>7s} {'flagged new':>12s}")
    for when in ("before", "after"):
        s = result[when]["station_next_encounters"]
        u = result[when]["unseen"]["suggestions"]
        a = result[when]["unseen"]["appearance_across_encounters"]
        print(f"{when + ', station next encounters':34s} {s['top1']:7.1%} {s['top5']:7.1%} {s['flagged_new']:12.1%}")
        print(
            f"{when + ', unseen individuals':34s} {u['top1']:7.1%} {u['top5']:7.1%}   (appearance rank-1 "
            f"{a['rank1']:.1%}, mAP {a['mAP']:.1%})"
        )
        checked = result[when]["unseen"]["sides_inferred_against_names"]
        if checked:
            print(
                f"{when + ', unseen sides inferred':34s} {checked['accuracy_all']:7.1%} right, "
                f"{checked['kept']:.0%} kept"
            )
    print(f"training took {result['training']['seconds']:.0f} s for a {args.budget_minutes:g}-minute budget")
    (ROOT / "bench" / "results" / "user_loop.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
