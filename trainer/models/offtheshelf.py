"""ImageNet features used off the shelf: a pretrained backbone, GeM pooling, L2 normalisation. No training.

The simplest re-identification baseline, and Herdbook's default model while no trained recipe beats it on
individuals it never saw (bench/results/reid_sweep.json). It cannot memorise training individuals, so it does
not pull every new animal towards them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .reidnet import IMAGENET_MEAN, IMAGENET_STD


class OffTheShelf(nn.Module):
    """RGB [0,1] at ``input_size`` -> L2-normalised GeM-pooled ImageNet feature (1280-d)."""

    def __init__(self, backbone: str = "mobilenet", input_size=(192, 256), p: float = 3.0):
        super().__init__()
        if backbone == "mobilenet":
            from .mobilenet import MobileNetV2Features

            self.net = MobileNetV2Features(pretrained=True)
        else:
            from .efficientnet import EfficientNetLite0Features

            self.net = EfficientNetLite0Features(pretrained=True)
        self.input_size = tuple(input_size)
        self.embedding_dim = self.net.feature_dim
        self.p = p
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.net((x - self.mean) / self.std).clamp(min=1e-6).pow(self.p).mean((2, 3)).pow(1.0 / self.p)
        return F.normalize(f, dim=1)
