"""Find animals in photos: the bundled COCO detector (default), an ultralytics YOLO detector exported to ONNX
(a MegaDetector release, or the user's own), boxes computed elsewhere (MegaDetector batch-output JSON), or the
whole frame for photos that are already crops. All run through onnxruntime.

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
from .decisions import record_species
from .exif import upright_size
from .imageio import load_rgb_reduced
from .metrics import box_intersection, box_iou
from .reid import ModelError, describe_device, open_session
from .resources import resources_dir


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


BUNDLED_DETECTOR = "herdbook-detector"
COCO_FORMAT = "centernet-tfjs"  # the `herdbook_format` metadata trainer/release_detector.py writes
DETECTOR_NAMES = ("bundled", "whole-frame")  # what --detector accepts besides a file
# COCO's animal and vehicle classes folded into MegaDetector's three: a camera trap's species are rarely COCO's,
# so a cougar scored "horse" 0.33 and "cow" 0.22 is one animal at 0.55.
COCO_ANIMALS = frozenset("bird cat dog horse sheep cow elephant bear zebra giraffe".split())
COCO_VEHICLES = frozenset("bicycle car motorcycle airplane bus train truck boat".split())


def megadetector_class(coco_name: str) -> str | None:
    """'animal', 'person', 'vehicle', or None for COCO classes a camera trap does not report (chairs, cups)."""
    if coco_name in COCO_ANIMALS:
        return "animal"
    if coco_name in COCO_VEHICLES:
        return "vehicle"
    return "person" if coco_name == "person" else None


def bundled_detector_path() -> Path:
    return resources_dir() / "models" / f"{BUNDLED_DETECTOR}.onnx"


class WholeFrameDetector:
    """For photos that are already crops of one animal (the nyala and lion sets)."""

    name = "whole-frame"
    version = "1"
    device = "CPU"
    input_size = 32  # only the frame's size matters: decode as little as the JPEG allows

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


def open_detector_session(path: str | Path, prefer_gpu: bool = True, session=None):
    """The onnxruntime session of a detector file (or the one `load_detector` already opened) and its metadata;
    a missing file is named."""
    if session is None:
        if not Path(path).is_file():
            raise ModelError(f"{path}: no such detector file")
        session = open_session(Path(path), prefer_gpu)
    return session, session.get_modelmeta().custom_metadata_map


class YoloOnnxDetector:
    """Any ultralytics detector exported to ONNX (a MegaDetector release, or one trained by the user)."""

    def __init__(self, path: str | Path, conf: float = 0.25, iou: float = 0.45, prefer_gpu: bool = True, session=None):
        self.path = Path(path)
        self.session, meta = open_detector_session(self.path, prefer_gpu, session)
        self.device = describe_device(self.session)
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        size = inp.shape[2]
        self.input_size = int(size) if isinstance(size, int) else 640
        self.names = {int(k): v for k, v in ast.literal_eval(meta["names"]).items()} if "names" in meta else {}
        self.end2end = meta.get("end2end", "False") == "True"
        self.name = self.path.stem
        self.version = meta.get("date", meta.get("version", "unknown"))
        self.conf, self.iou = conf, iou

    def __call__(self, image: np.ndarray) -> list[Box]:
        boxed, scale, pad = letterbox(image, self.input_size)
        x = boxed.astype(np.float32).transpose(2, 0, 1)[None] / 255.0
        raw = self.session.run(None, {self.input_name: x})[0]
        if self.end2end:
            return decode_end2end(raw, scale, pad, image.shape, self.names, self.conf)
        return decode_yolo(raw, scale, pad, image.shape, self.names, self.conf, self.iou)


def fold_detections(
    boxes: np.ndarray, scores: np.ndarray, groups: list[str], conf: float, iou: float = 0.3, inside: float = 0.7
) -> list[tuple[np.ndarray, float, str]]:
    """One box per animal from a COCO detector's per-class rows (x0, y0, x1, y1).

    Rows of one group on the same box (IoU > 0.9: CenterNet repeats its box once per class) add their scores,
    capped at 1; then non-maximum suppression (IoU > `iou`) and suppression of a box lying mostly (> `inside` of
    its area) within a better one of its group: a leg or a head boxed beside the whole animal.
    """
    kept: list[tuple[np.ndarray, float, str]] = []
    for group in sorted(set(groups)):
        idx = [i for i, g in enumerate(groups) if g == group]
        order = sorted(idx, key=lambda i: -scores[i])
        merged: list[list] = []
        for i in order:
            for m in merged:
                if box_iou(boxes[i][None], m[0][None])[0, 0] > 0.9:
                    m[1] = min(1.0, m[1] + float(scores[i]))
                    break
            else:
                merged.append([boxes[i], float(scores[i])])
        merged.sort(key=lambda m: -m[1])
        chosen: list[list] = []
        for box, score in merged:
            if score < conf:
                break
            if chosen:
                others = np.stack([c[0] for c in chosen])
                area = max((box[2] - box[0]) * (box[3] - box[1]), 1e-9)
                within = box_intersection(box[None], others)[0] / area
                if (box_iou(box[None], others)[0] > iou).any() or (within > inside).any():
                    continue
            chosen.append([box, score])
        kept += [(box, score, group) for box, score in chosen]
    return sorted(kept, key=lambda k: -k[1])


DATA_STRIP = 0.07  # trail cameras burn date, temperature and logo into the top or bottom 2-6% of the frame


def in_data_strip(boxes: np.ndarray, height: int) -> np.ndarray:
    """Boxes (x0, y0, x1, y1) lying wholly in the frame's top or bottom band: the burned-in data strip and its
    logos, never an animal. A real animal at the edge reaches further into the frame."""
    band = DATA_STRIP * height
    return (boxes[:, 3] <= band) | (boxes[:, 1] >= height - band)


class CocoOnnxDetector:
    """The bundled detector: COCO CenterNet (MobileNetV3) converted from TF.js (trainer/release_detector.py).

    Input: the photo letterboxed into the top-left of a 512 x 512 RGB square, 0-255. Output: 100 rows of
    x0, y0, x1, y1 (input pixels), score, COCO class. Classes fold into animal / person / vehicle; the
    threshold comes from the card (`herdbook-detector.json`), measured by bench/detector.py.
    """

    def __init__(
        self, path: str | Path | None = None, conf: float | None = None, prefer_gpu: bool = True, session=None
    ):
        self.path = Path(path) if path else bundled_detector_path()
        self.session, meta = open_detector_session(self.path, prefer_gpu, session)
        self.device = describe_device(self.session)
        if meta.get("herdbook_format") != COCO_FORMAT:
            raise ModelError(f"{self.path}: not a Herdbook COCO detector (no herdbook_format metadata)")
        self.input_name = self.session.get_inputs()[0].name
        self.input_size = int(meta["input_size"])
        names = {int(k): v for k, v in json.loads(meta["names"]).items()}
        self.groups = {k: megadetector_class(v) for k, v in names.items()}
        card_path = self.path.with_suffix(".json")
        card = json.loads(card_path.read_text()) if card_path.is_file() else {}
        self.name = card.get("name", self.path.stem)
        self.version = card.get("version", "unknown")
        self.conf = float(conf if conf is not None else card.get("threshold", 0.3))

    def letterbox(self, image: np.ndarray) -> tuple[np.ndarray, float]:
        """The network's input (the photo scaled into the top-left of the square, 0-255) and the scale used."""
        h, w = image.shape[:2]
        scale = self.input_size / max(h, w)
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        x = np.zeros((1, self.input_size, self.input_size, 3), np.float32)
        x[0, :nh, :nw] = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
        return x, scale

    def __call__(self, image: np.ndarray) -> list[Box]:
        h, w = image.shape[:2]
        x, scale = self.letterbox(image)
        rows = self.session.run(None, {self.input_name: x})[0].reshape(-1, 6)
        keep = [i for i, c in enumerate(rows[:, 5]) if self.groups.get(int(c))]
        if not keep:
            return []
        rows = rows[keep]
        boxes = np.clip(rows[:, :4] / scale, 0, [w, h, w, h])
        outside_strips = ~in_data_strip(boxes, h)
        rows, boxes = rows[outside_strips], boxes[outside_strips]
        found = fold_detections(boxes, rows[:, 4], [self.groups[int(c)] for c in rows[:, 5]], self.conf)
        return [Box(float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1]), s, g) for b, s, g in found]


def normalised_boxes(detector, path: str | Path) -> list[tuple[float, float, float, float, float, str]]:
    """A photo's boxes as (x0, y0, x1, y1, score, label), normalised to the upright frame: the layout of the
    hand-drawn labels (tests/data/trailcam_boxes.json) and of `engine.metrics.detection_scores`."""
    image, _ = load_rgb_reduced(path, detector.input_size)
    h, w = image.shape[:2]
    return [(b.x / w, b.y / h, (b.x + b.w) / w, (b.y + b.h) / h, b.score, b.label) for b in detector(image)]


def export_ultralytics(pt_path: str | Path, imgsz: int = 640) -> Path:
    """A user's ultralytics .pt detector -> .onnx beside it (needs the train extra)."""
    from ultralytics import YOLO

    return Path(YOLO(str(pt_path)).export(format="onnx", imgsz=imgsz, dynamic=False, simplify=False))


def load_detector(spec: str | Path | None = None, conf: float | None = None):
    """The bundled detector (None or 'bundled'), 'whole-frame', a YOLO .onnx file, or an ultralytics .pt file
    (exported once to ONNX)."""
    if spec is None or str(spec) == "bundled":
        return CocoOnnxDetector(conf=conf)
    if str(spec) == "whole-frame":
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
    session, meta = open_detector_session(path)  # opened once; its metadata says which decoder reads it
    if meta.get("herdbook_format") == COCO_FORMAT:
        return CocoOnnxDetector(path, conf=conf, session=session)
    return YoloOnnxDetector(path, conf=0.25 if conf is None else conf, session=session)


@dataclass
class MegaDetectorImport:
    detections: int
    media_matched: int
    unmatched_files: list[str]
    ambiguous_files: list[str]
    classified: int = 0  # boxes given a species by the file's classifier


# A species classifier's label (MegaDetector's 'classifications', e.g. from AddaxAI or animl) is taken as the box's
# species from this confidence: lower ones are left for the reviewer.
CLASSIFICATION_THRESHOLD = 0.5


def import_megadetector_json(
    catalogue: Catalogue, json_path: str | Path, conf: float | None = None
) -> MegaDetectorImport:
    """Boxes from a MegaDetector batch-output file (format 1.x-3.x, as AddaxAI writes it).

    Its file paths are relative to the card (MegaDetector's usual output) or the original author's absolute ones,
    so a photo is matched by file name and, where one name occurs in several folders (StationA/IMG0001.JPG and
    StationB/IMG0001.JPG), by the longest run of trailing folder names it shares with the entry; entries that match
    no photo, or several equally well, are reported, not guessed. Boxes are normalised [x, y, w, h] of the upright
    image.
    """
    doc = json.loads(Path(json_path).read_text())
    if conf is None:  # the threshold the file's own detector recommends (format 1.2+), else MegaDetector's 0.2
        meta = doc.get("info", {}).get("detector_metadata", {})
        conf = float(meta.get("typical_detection_threshold", 0.2))
    categories = doc.get("detection_categories", {"1": "animal", "2": "person", "3": "vehicle"})
    classes = doc.get("classification_categories") or {}
    classifier = f"classifier:{doc.get('info', {}).get('classifier') or 'unnamed'}"
    by_name: dict[str, list[dict]] = {}
    for m in catalogue.query("SELECT id, path, file_name, width, height, orientation FROM media WHERE status = 'ok'"):
        by_name.setdefault(m["file_name"].casefold(), []).append(m)
    model = catalogue.ensure_model("megadetector-json", doc.get("info", {}).get("detector", "unknown"), "detector")
    added, matched, unmatched, ambiguous, classified = 0, 0, [], [], 0
    with catalogue.transaction():
        for entry in doc.get("images", []):
            parts = str(entry.get("file", "")).replace("\\", "/").casefold().split("/")
            candidates = _best_path_matches(by_name.get(parts[-1], []), parts)
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
                top = max(det.get("classifications") or [], key=lambda c: c[1], default=None)
                species = classes.get(str(top[0])) if top and top[1] >= CLASSIFICATION_THRESHOLD else None
                detection_id = catalogue.add_detection(
                    m["id"],
                    (bx * w, by * h, bw * w, bh * h),
                    score=float(det["conf"]),
                    label=categories.get(str(det["category"]), str(det["category"])),
                    source="megadetector-json",
                    model_id=model,
                )
                if species:  # the same trail as a reviewer's species, naming the classifier
                    record_species(catalogue, detection_id, species, classifier)
                    classified += 1
                added += 1
            catalogue.mark_stage(m["id"], "detect", model)
            matched += 1
    return MegaDetectorImport(added, matched, unmatched, ambiguous, classified)


def _best_path_matches(candidates: list[dict], entry_parts: list[str]) -> list[dict]:
    """The photos (same file name) whose paths share the most trailing components with the entry's path."""
    if len(candidates) < 2:
        return candidates

    def shared(m: dict) -> int:
        mine = str(m["path"]).replace("\\", "/").casefold().split("/")
        n = 0
        while n < min(len(mine), len(entry_parts)) and mine[-1 - n] == entry_parts[-1 - n]:
            n += 1
        return n

    scores = [shared(m) for m in candidates]
    return [m for m, s in zip(candidates, scores, strict=True) if s == max(scores)]
