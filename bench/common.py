"""What the benchmark scripts share: running a measurement in a fresh child process (its peak RSS is its own)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_child(code: str, *args: str) -> dict:
    """Run ``code`` with ``python -c`` in the repository root; its last stdout line is a JSON object."""
    res = subprocess.run(
        [sys.executable, "-c", code, *map(str, args)], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return json.loads(res.stdout.strip().splitlines()[-1])


def yolov8n_onnx(directory: str | Path, imgsz: int = 640) -> Path:
    """YOLOv8n built from its yaml (no weights can be downloaded) and exported to ONNX in ``directory``: the
    speed baseline for detectors, since a network's speed does not depend on its weights. Needs ultralytics."""
    import os

    from ultralytics import YOLO

    cwd = os.getcwd()
    os.chdir(directory)  # ultralytics writes yolov8n.onnx into the working directory
    try:
        return Path(directory) / YOLO("yolov8n.yaml").export(format="onnx", imgsz=imgsz, dynamic=False, simplify=False)
    finally:
        os.chdir(cwd)
