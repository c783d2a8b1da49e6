"""Find animals in photos: an ultralytics YOLO detector exported to ONNX (run by onnxruntime), boxes computed
elsewhere (MegaDetector batch-output JSON), or the whole frame for photos that are already crops.

Boxes are (x, y, w, h) in pixels of the upright photo (EXIF orientation applied), top-left origin.
"""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .catalogue import Catalogue
from .exif import upright_size
from .reid import ModelError, describe_device, open_session


@dataclass(frozen=True)
class Box:
    x: float
    y: float
    w: float
    h: float
    score: float
    label: str

    @property
    def xywh(self) -> tuple[float, float, float, float]:
        return (self.x, self.y, self.w, self.h)


class WholeFrameDetector:
    """For photos that are already crops of one animal (the nyala and lion sets)."""

    name = "whole-frame"
    version = "1"
    device = "CPU"

    def __call__(self, image: np.ndarray) -> list[Box]:
        h, w = image.shape[:2]
        return [Box(0.0, 0.0, float(w), float(h), 1.0, "animal")]


def letterbox(image: np.ndarray, size: int) -> tuple[np.ndarray, float, tuple[float, float]]:
    """Resize keeping the aspect ratio and pad to size x size with grey (114), as ultralytics does."""
    h, w = image.shape[:2]
    scale = min(size / h, size / w)
    nh, nw = int(round(h * scale)), int(round(w * scale))
    resized = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
    top, left = (size - nh) / 2, (size - nw) / 2
    out = cv2.copyMakeBorder(
        resized,
        int(round(top - 0.1)),
        int(round(size - nh - top + 0.1)),
        int(round(left - 0.1)),
        int(round(size - nw - left + 0.1)),
        cv2.BORDER_CONSTANT,
        value=(114, 114, 114),
    )
    return out, scale, (left, top)


def decode_end2end(
    raw: np.ndarray, scale: float, pad: tuple[float, float], image_shape, names: dict[int, str], conf: float
) -> list[Box]:
    """NMS-free exports (ultralytics `end2end`): rows of x1, y1, x2, y2, score, class in letterbox pixels."""
    ih, iw = image_shape[:2]
    out = []
    for x1, y1, x2, y2, score, c in raw.reshape(-1, 6):
        if score < conf:
            continue
        x0, y0 = np.clip((x1 - pad[0]) / scale, 0, iw), np.clip((y1 - pad[1]) / scale, 0, ih)
        x3, y3 = np.clip((x2 - pad[0]) / scale, 0, iw), np.clip((y2 - pad[1]) / scale, 0, ih)
        out.append(
            Box(float(x0), float(y0), float(x3 - x0), float(y3 - y0), float(score), names.get(int(c), str(int(c))))
        )
    return sorted(out, key=lambda b: -b.score)


def decode_yolo(
    raw: np.ndarray, scale: float, pad: tuple[float, float], image_shape, names: dict[int, str], conf: float, iou: float
) -> list[Box]:
    """ultralytics YOLOv8-style output (4 + classes, anchors) in letterbox pixels -> boxes in image pixels."""
    pred = raw[0] if raw.ndim == 3 else raw
    channels = 4 + len(names) if names else min(pred.shape)
    if pred.shape[0] == channels and pred.shape[1] != channels:
        pred = pred.T  # ultralytics exports (4 + classes, anchors): make it (anchors, 4 + classes)
    scores = pred[:, 4:]
    cls = scores.argmax(1)
    best = scores[np.arange(len(cls)), cls]
    keep = best >= conf
    pred, cls, best = pred[keep], cls[keep], best[keep]
    if not len(pred):
        return []
    cx, cy, bw, bh = pred[:, 0], pred[:, 1], pred[:, 2], pred[:, 3]
    x0 = (cx - bw / 2 - pad[0]) / scale
    y0 = (cy - bh / 2 - pad[1]) / scale
    ih, iw = image_shape[:2]
    x0c, y0c = np.clip(x0, 0, iw), np.clip(y0, 0, ih)
    x1c, y1c = np.clip(x0 + bw / scale, 0, iw), np.clip(y0 + bh / scale, 0, ih)
    boxes = np.stack([x0c, y0c, x1c - x0c, y1c - y0c], 1)
    out = []
    for c in np.unique(cls):  # class-wise non-maximum suppression
        idx = np.flatnonzero(cls == c)
        kept = cv2.dnn.NMSBoxes(boxes[idx].tolist(), best[idx].tolist(), conf, iou)
        for k in np.asarray(kept).reshape(-1):
            i = idx[k]
            out.append(Box(*map(float, boxes[i]), float(best[i]), names.get(int(c), str(int(c)))))
    return sorted(out, key=lambda b: -b.score)


class YoloOnnxDetector:
    """Any ultralytics detector exported to ONNX (a MegaDetector release, or one trained by the user)."""

    def __init__(self, path: str | Path, conf: float = 0.25, iou: float = 0.45, prefer_gpu: bool = True):
        self.path = Path(path)
        if not self.path.is_file():
            raise ModelError(f"{self.path}: no such detector file")
        self.session = open_session(self.path, prefer_gpu)
        self.device = describe_device(self.session)
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        size = inp.shape[2]
        self.size = int(size) if isinstance(size, int) else 640
        meta = self.session.get_modelmeta().custom_metadata_map
        self.names = {int(k): v for k, v in ast.literal_eval(meta["names"]).items()} if "names" in meta else {}
        self.end2end = meta.get("end2end", "False") == "True"
        self.name = self.path.stem
        self.version = meta.get("date", meta.get("version", "unknown"))
        self.conf, self.iou = conf, iou

    def __call__(self, image: np.ndarray) -> list[Box]:
        boxed, scale, pad = letterbox(image, self.size)
        x = boxed.astype(np.float32).transpose(2, 0, 1)[None] / 255.0
        raw = self.session.run(None, {self.input_name: x})[0]
        if self.end2end:
            return decode_end2end(raw, scale, pad, image.shape, self.names, self.conf)
        return decode_yolo(raw, scale, pad, image.shape, self.names, self.conf, self.iou)


def export_ultralytics(pt_path: str | Path, imgsz: int = 640) -> Path:
    """A user's ultralytics .pt detector -> .onnx beside it (needs the train extra)."""
    from ultralytics import YOLO

    return Path(YOLO(str(pt_path)).export(format="onnx", imgsz=imgsz, dynamic=False, simplify=False))


def load_detector(spec: str | Path | None, conf: float = 0.25):
    """'whole-frame', an .onnx file, or an ultralytics .pt file (exported once to ONNX)."""
    if spec is None or str(spec) == "whole-frame":
        return WholeFrameDetector()
    path = Path(spec)
    if path.suffix == ".pt":
        onnx_path = path.with_suffix(".onnx")
        if not onnx_path.is_file():
            try:
                onnx_path = export_ultralytics(path)
            except ImportError as exc:
                raise ModelError(f"{path}: exporting a .pt detector needs the train extra ({exc})") from None
        path = onnx_path
    return YoloOnnxDetector(path, conf=conf)


@dataclass
class MegaDetectorImport:
    detections: int
    media_matched: int
    unmatched_files: list[str]
    ambiguous_files: list[str]


def import_megadetector_json(catalogue: Catalogue, json_path: str | Path, conf: float = 0.2) -> MegaDetectorImport:
    """Boxes from a MegaDetector batch-output file (format 1.x-3.x, as AddaxAI writes it).

    Its file paths are the original author's, so photos are matched by file name; names that match no photo,
    or several, are reported, not guessed. Boxes are normalised [x, y, w, h] of the upright image.
    """
    doc = json.loads(Path(json_path).read_text())
    categories = doc.get("detection_categories", {"1": "animal", "2": "person", "3": "vehicle"})
    by_name: dict[str, list[dict]] = {}
    for m in catalogue.query("SELECT id, file_name, width, height, orientation FROM media WHERE status = 'ok'"):
        by_name.setdefault(m["file_name"].casefold(), []).append(m)
    model = catalogue.ensure_model("megadetector-json", doc.get("info", {}).get("detector", "unknown"), "detector")
    added, matched, unmatched, ambiguous = 0, 0, [], []
    with catalogue.transaction():
        for entry in doc.get("images", []):
            name = Path(str(entry.get("file", "")).replace("\\", "/")).name
            candidates = by_name.get(name.casefold(), [])
            if not candidates:
                unmatched.append(entry.get("file", ""))
                continue
            if len(candidates) > 1:
                ambiguous.append(entry.get("file", ""))
                continue
            m = candidates[0]
            if catalogue.stage_done(m["id"], "detect", model):
                matched += 1
                continue
            w, h = upright_size(m["width"], m["height"], m["orientation"])
            for det in entry.get("detections") or []:
                if det.get("conf", 0) < conf:
                    continue
                bx, by, bw, bh = det["bbox"]
                catalogue.add_detection(
                    m["id"],
                    (bx * w, by * h, bw * w, bh * h),
                    score=float(det["conf"]),
                    label=categories.get(str(det["category"]), str(det["category"])),
                    source="megadetector-json",
                    model_id=model,
                )
                added += 1
            catalogue.mark_stage(m["id"], "detect", model)
            matched += 1
    return MegaDetectorImport(added, matched, unmatched, ambiguous)
