"""Embed animal crops with the exported re-identification network through onnxruntime (no torch).

A model is an ONNX file with a model card `NAME.json` beside it. The card says the input size, channel order,
mean and std; the embedder reads them from there, never from constants.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort

from .resources import resources_dir

DEFAULT_MODEL = "herdbook-reid"


class ModelError(Exception):
    """A model file or card that cannot be used."""


@dataclass
class ModelCard:
    path: Path
    data: dict

    @classmethod
    def load(cls, onnx_path: Path) -> ModelCard:
        card_path = onnx_path.with_suffix(".json")
        if not card_path.is_file():
            raise ModelError(f"{onnx_path}: model card {card_path.name} missing")
        data = json.loads(card_path.read_text())
        for key in ("name", "version", "input_size", "mean", "std", "embedding_dim", "input_name"):
            if key not in data:
                raise ModelError(f"{card_path}: model card lacks {key!r}")
        return cls(card_path, data)

    def __getitem__(self, key):
        return self.data[key]


def default_model_path() -> Path:
    return resources_dir() / "models" / f"{DEFAULT_MODEL}.onnx"


def choose_providers(prefer_gpu: bool = True) -> list[str]:
    """CUDA first when this onnxruntime build has it (onnxruntime-gpu), always CPU last as the fallback."""
    available = ort.get_available_providers()
    wanted = (["CUDAExecutionProvider"] if prefer_gpu else []) + ["CPUExecutionProvider"]
    return [p for p in wanted if p in available]


def open_session(path: Path, prefer_gpu: bool = True) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3  # a missing CUDA library is reported by `device`, not as log noise
    try:
        return ort.InferenceSession(str(path), options, providers=choose_providers(prefer_gpu))
    except Exception as exc:  # onnxruntime raises its own types for bad files
        raise ModelError(f"{path}: cannot load model ({exc})") from exc


def describe_device(session: ort.InferenceSession) -> str:
    """What the session really runs on: 'GPU (CUDA)' only when the CUDA provider loaded."""
    return "GPU (CUDA)" if "CUDAExecutionProvider" in session.get_providers() else "CPU"


def preprocess(crops: Sequence[np.ndarray], size: tuple[int, int], mean, std) -> np.ndarray:
    """Resize each crop to (H, W) with area interpolation, scale to 0-1, normalise: N x 3 x H x W float32."""
    height, width = size
    batch = np.stack([cv2.resize(c, (width, height), interpolation=cv2.INTER_AREA) for c in crops])
    x = batch.astype(np.float32).transpose(0, 3, 1, 2) / 255.0
    return (x - np.asarray(mean, np.float32).reshape(1, 3, 1, 1)) / np.asarray(std, np.float32).reshape(1, 3, 1, 1)


class Embedder:
    """crop (H x W x 3 uint8 RGB) -> L2-normalised float32 vector of the model's embedding size."""

    def __init__(self, model_path: str | Path | None = None, prefer_gpu: bool = True, batch_size: int = 32):
        self.path = Path(model_path) if model_path else default_model_path()
        if not self.path.is_file():
            raise ModelError(f"{self.path}: no such model file")
        self.card = ModelCard.load(self.path)
        self.session = open_session(self.path, prefer_gpu)
        self.device = describe_device(self.session)
        self.input_name = self.card["input_name"]
        self.height, self.width = self.card["input_size"]
        self.mean = np.asarray(self.card["mean"], np.float32).reshape(1, 3, 1, 1)
        self.std = np.asarray(self.card["std"], np.float32).reshape(1, 3, 1, 1)
        self.batch_size = batch_size

    @property
    def dim(self) -> int:
        return int(self.card["embedding_dim"])

    def preprocess(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        return preprocess(crops, (self.height, self.width), self.mean, self.std)

    def embed(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        out = np.zeros((len(crops), self.dim), np.float32)
        for start in range(0, len(crops), self.batch_size):
            x = self.preprocess(crops[start : start + self.batch_size])
            vectors = self.session.run(None, {self.input_name: x})[0]
            norms = np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
            out[start : start + len(x)] = vectors / norms
        return out
