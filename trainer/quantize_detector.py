"""Quantise the bundled detector to 8-bit integers (onnxruntime static quantisation), calibrated on real frames.

    python -m trainer.quantize_detector                     # fp32 file from trainer/release_detector.py
    python bench/detector.py --model resources/models/herdbook-detector.onnx --against FP32.onnx --write-card

The convolutions (weights per channel, activations per tensor, QDQ format) become int8, which the CPU runs on
its integer units; the box decoding at the graph's end stays in float. Calibration reads the 'tune' half of
the hand-labelled trail-camera frames (tests/data/trailcam_boxes.json, the seeded split bench/detector.py
chooses the threshold on), prepared by `engine.detect.CocoOnnxDetector.letterbox` as the app prepares a photo, so the
'test' half that the card reports stays unseen. bench/detector.py then measures the result beside the float
model in one run (recall/precision on the same frames, photos/s).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np

from engine.demo import find_data_dir
from engine.detect import CocoOnnxDetector
from engine.imageio import load_rgb_reduced

ROOT = Path(__file__).resolve().parent.parent
LABELS = ROOT / "tests" / "data" / "trailcam_boxes.json"


def tune_frames(seed: int = 0) -> list[Path]:
    """The frames bench/detector.py tunes the threshold on (the same seeded permutation)."""
    frames = json.loads(LABELS.read_text())["frames"]
    order = np.random.default_rng(seed).permutation(len(frames))
    data = find_data_dir(ROOT)
    return [data / frames[i]["path"] for i in sorted(order[: len(frames) // 2])]


def quantise(source: Path, out: Path, frames: list[Path]) -> None:
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    model = onnx.load(str(source))
    meta = {p.key: p.value for p in model.metadata_props}
    float_detector = CocoOnnxDetector(source, prefer_gpu=False)  # prepares each frame as the app will

    class Frames(CalibrationDataReader):
        def __init__(self):
            self.left = iter(frames)

        def get_next(self):
            path = next(self.left, None)
            if path is None:
                return None
            image, _ = load_rgb_reduced(path, float_detector.input_size)
            return {float_detector.input_name: float_detector.letterbox(image)[0]}

    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(Path(tmp) / "int8.onnx"),
            Frames(),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=["Conv"],
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )
        quantised = onnx.load(str(Path(tmp) / "int8.onnx"))
    del quantised.metadata_props[:]
    for key, value in meta.items() | {"quantised": f"int8 static, QDQ, calibrated on {len(frames)} frames"}.items():
        entry = quantised.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(quantised, str(out))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=ROOT / "resources" / "models" / "herdbook-detector.onnx")
    parser.add_argument("--out", type=Path, default=None, help="default: replace --source, keeping it as *-fp32.onnx")
    args = parser.parse_args(argv)
    source = args.source
    out = args.out or source
    if out == source:  # keep the float model beside it for the comparison
        kept = source.with_name(source.stem + "-fp32.onnx")
        shutil.copyfile(source, kept)
        source = kept
    frames = tune_frames()
    quantise(source, out, frames)
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    print(f"{out}: {out.stat().st_size / 1e6:.1f} MB (float {source.stat().st_size / 1e6:.1f} MB), sha256 {digest}")
    print(f"now: python bench/detector.py --model {out} --against {source} --write-card")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
