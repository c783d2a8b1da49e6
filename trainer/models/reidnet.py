"""The whole re-identification network: [IPAID] -> backbone -> part head -> 256-d embedding.

Input is RGB in [0, 1] at ``input_size`` (H, W); ImageNet normalisation happens inside, so the exported ONNX
graph needs no mean/std from the app (its model card says mean 0, std 1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .head import PartHead

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ArcFace(nn.Module):
    """Additive angular margin classifier (Deng et al. 2019)."""

    def __init__(self, dim, num_classes, scale=30.0, margin=0.35):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_classes, dim))
        nn.init.xavier_uniform_(self.weight)
        self.scale, self.margin = scale, margin

    def forward(self, embedding, labels=None):
        cos = F.linear(F.normalize(embedding), F.normalize(self.weight)).clamp(-1 + 1e-7, 1 - 1e-7)
        if labels is None:
            return cos * self.scale
        theta = torch.acos(cos)
        target = torch.cos(theta + self.margin)
        onehot = F.one_hot(labels, cos.shape[1]).bool()
        return torch.where(onehot, target, cos) * self.scale


class ReIDNet(nn.Module):
    def __init__(
        self,
        backbone,
        ipaid=None,
        num_classes=0,
        embedding_dim=256,
        parts=6,
        input_size=(192, 256),
        arcface_scale=30.0,
        arcface_margin=0.35,
    ):
        super().__init__()
        self.ipaid = ipaid
        self.backbone = backbone
        self.head = PartHead(backbone.feature_dim, embedding_dim, parts)
        self.input_size = tuple(input_size)
        self.embedding_dim = embedding_dim
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        self.classifier = nn.Linear(embedding_dim, num_classes, bias=False) if num_classes else None
        self.arcface = ArcFace(embedding_dim, num_classes, arcface_scale, arcface_margin) if num_classes else None

    def features(self, image: torch.Tensor, return_parts: bool = False):
        """image RGB [0,1] -> (feature, bn_feature[, IPAID parts])."""
        parts = self.ipaid.decompose(image) if self.ipaid is not None else None
        x = parts["reflectance"] if parts is not None else image
        feature, bn_feature = self.head(self.backbone((x - self.mean) / self.std))
        return (feature, bn_feature, parts) if return_parts else (feature, bn_feature)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Inference: the L2-normalised embedding."""
        return F.normalize(self.features(image)[1], dim=1)
