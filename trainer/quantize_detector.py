"""Quantise the bundled detector to 8-bit integers (onnxruntime static quantisation), calibrated on real frames.

    python -m trainer.quantize_detector --out /tmp/herdbook-detector-int8.onnx
    python bench/detector.py --model /tmp/herdbook-detector-int8.onnx \
        --against resources/models/herdbook-detector.onnx --results bench/results/detector_int8_experiment.json

The convolutions (weights per channel, activations per tensor, QDQ format) become int8; the box decoding at
the graph's end stays in float. Calibration reads the 'tune' half of the hand-labelled trail-camera frames
(tests/data/trailcam_boxes.json, the seeded split bench/detector.py chooses the threshold on), prepared by
`engine.detect.CocoOnnxDetector.letterbox` as the app prepares a photo, so the 'test' half stays unseen.
Measured so (session 8): recall 0.56 / precision 0.40 on the test half against the float model's 0.75 / 0.64,
and slower on a 2-core AVX-512 CPU; the float model ships. Kept to try again with other calibration or ops.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import tempfile
from pathlib import Path

from engine.demo import find_data_dir
from engine.detect import CocoOnnxDetector
from engine.imageio import load_rgb_reduced
from engine.metrics import tune_test_halves

ROOT = Path(__file__).resolve().parent.parent
LABELS = ROOT / "tests" / "data" / "trailcam_boxes.json"


def tune_frames() -> list[Path]:
    """The frames bench/detector.py tunes the threshold on."""
    frames = json.loads(LABELS.read_text())["frames"]
    data = find_data_dir(ROOT)
    return [data / frames[i]["path"] for i in tune_test_halves(len(frames))[0]]


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
    for key, value in {**meta, "quantised": f"int8 static, QDQ, calibrated on {len(frames)} frames"}.items():
        entry = quantised.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(quantised, str(out))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=ROOT / "resources" / "models" / "herdbook-detector.onnx")
    parser.add_argument("--out", type=Path, required=True, help="the int8 model (never the shipped file)")
    args = parser.parse_args(argv)
    if args.out.resolve() == args.source.resolve():
        parser.error("--out must not overwrite --source")
    quantise(args.source, args.out, tune_frames())
    digest = hashlib.sha256(args.out.read_bytes()).hexdigest()
    print(
        f"{args.out}: {args.out.stat().st_size / 1e6:.1f} MB (float {args.source.stat().st_size / 1e6:.1f} MB), "
        f"sha256 {digest}"
    )
    print(f"measure it: python bench/detector.py --model {args.out} --against {args.source} --results JSON")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
