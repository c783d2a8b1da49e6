"""Export a trained network to one ONNX graph (IPAID + backbone + head -> normalised embedding), check it
against torch on real crops, and write its model card beside it."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from engine.imageio import crop, load_rgb
from engine.ingest import sha256_of
from engine.reid import open_session, preprocess

from .models import ReIDNet, build_model

PARITY_TOLERANCE = 1e-4
INPUT_NAME = "image"


class ParityError(Exception):
    pass


def load_checkpoint(path: str | Path) -> tuple[ReIDNet, dict]:
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    model = build_model(ckpt["config"], len(ckpt["classes"]), pretrained=False)
    model.load_state_dict(ckpt["model"])
    model.eval()
    return model, ckpt


def export_onnx(model: ReIDNet, out: str | Path, opset: int = 17) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    h, w = model.input_size
    dummy = torch.rand(2, 3, h, w)
    torch.onnx.export(
        model,
        (dummy,),
        str(out),
        input_names=[INPUT_NAME],
        output_names=["embedding"],
        dynamic_axes={INPUT_NAME: {0: "batch"}, "embedding": {0: "batch"}},
        opset_version=opset,
        dynamo=False,
    )
    return out


def parity_check(model: ReIDNet, onnx_path: Path, photos: list[str | Path]) -> float:
    """Max |torch - onnxruntime| over the embeddings of real photos, preprocessed once for both (as the app
    does: RGB 0-1, the graph normalises internally)."""
    session = open_session(Path(onnx_path), prefer_gpu=False)
    crops = [crop(load_rgb(p), None, source=str(p)) for p in photos]
    x = preprocess(crops, model.input_size, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    with torch.no_grad():
        reference = model(torch.from_numpy(x)).numpy()
    diff = float(np.abs(reference - session.run(None, {INPUT_NAME: x})[0]).max())
    if diff > PARITY_TOLERANCE:
        raise ParityError(f"{onnx_path}: ONNX differs from torch by {diff:.2e} (limit {PARITY_TOLERANCE:.0e})")
    return diff


def write_card(
    onnx_path: Path,
    model: ReIDNet,
    name: str,
    version: str,
    species: list[str],
    trained_on: str,
    metrics: dict,
    extra: dict | None = None,
) -> Path:
    card = {
        "name": name,
        "version": version,
        "onnx_sha256": sha256_of(onnx_path),
        "input_name": INPUT_NAME,
        "input_size": list(model.input_size),
        "channel_order": "RGB",
        # The graph normalises internally: the app feeds RGB scaled to 0-1.
        "mean": [0.0, 0.0, 0.0],
        "std": [1.0, 1.0, 1.0],
        "embedding_dim": model.embedding_dim,
        "species": species,
        "trained_on": trained_on,
        "metrics": metrics,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        **(extra or {}),
    }
    path = onnx_path.with_suffix(".json")
    path.write_text(json.dumps(card, indent=2))
    return path
