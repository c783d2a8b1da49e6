"""The local feature head: 6 horizontal parts + a global branch, SE attention, GeM pooling, 256-d embedding."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class GeM(nn.Module):
    """Generalised mean pooling over given bins; p is learned (p=1 average, p->inf max)."""

    def __init__(self, p=3.0, eps=1e-6):
        super().__init__()
        self.p = nn.Parameter(torch.tensor(p))
        self.eps = eps

    def forward(self, x):
        """x (B, C, H, W) -> (B, C)."""
        p = self.p.clamp(1.0, 8.0)
        return x.clamp(min=self.eps).pow(p).mean((2, 3)).pow(1.0 / p)

    def stripes(self, x, parts: int):
        """x (B, C, H, W) -> (B, C, parts): GeM over horizontal stripes.

        The stripes are a fixed row-averaging matrix (bins as adaptive pooling draws them, overlapping when H is
        not a multiple of ``parts``), so any input height exports to ONNX as a plain MatMul.
        """
        p = self.p.clamp(1.0, 8.0)
        rows = x.clamp(min=self.eps).pow(p).mean(3)  # (B, C, H)
        bins = torch.from_numpy(stripe_matrix(int(x.shape[2]), parts)).to(x.device, x.dtype)  # an ONNX constant
        return torch.matmul(rows, bins).pow(1.0 / p)


def stripe_matrix(height: int, parts: int) -> np.ndarray:
    """(height, parts) matrix averaging rows into ``parts`` stripes, with adaptive pooling's bin edges."""
    bins = np.zeros((height, parts), np.float32)
    for i in range(parts):
        start, end = (i * height) // parts, -((-(i + 1) * height) // parts)
        bins[start:end, i] = 1.0 / (end - start)
    return bins


class SqueezeExcite(nn.Module):
    def __init__(self, channels, reduction=16):
        super().__init__()
        self.fc = nn.Sequential(
            nn.Linear(channels, channels // reduction),
            nn.ReLU(),
            nn.Linear(channels // reduction, channels),
            nn.Sigmoid(),
        )

    def forward(self, x):
        return x * self.fc(x.mean((2, 3)))[:, :, None, None]


class PartHead(nn.Module):
    """Feature map -> (embedding before BN, BN-neck embedding).

    Each of the ``parts`` horizontal stripes and the whole map are GeM-pooled and projected to ``dim``; a softmax
    attention over the 1 + parts branches fuses them. The BN-neck output is what gets L2-normalised and compared.
    """

    def __init__(self, in_channels, dim=256, parts=6):
        super().__init__()
        self.parts = parts
        self.se = SqueezeExcite(in_channels)
        self.gem = GeM()
        self.project = nn.ModuleList(
            nn.Sequential(nn.Linear(in_channels, dim, bias=False), nn.BatchNorm1d(dim), nn.ReLU())
            for _ in range(parts + 1)
        )
        self.attention = nn.Linear(dim, 1)
        self.neck = nn.BatchNorm1d(dim)
        self.neck.bias.requires_grad_(False)

    def forward(self, fmap):
        fmap = self.se(fmap)
        pooled = [self.gem(fmap)]
        stripes = self.gem.stripes(fmap, self.parts)  # (B, C, parts)
        pooled += [stripes[:, :, i] for i in range(self.parts)]
        branches = torch.stack([proj(v) for proj, v in zip(self.project, pooled, strict=True)], 1)  # (B, 1+P, D)
        weights = torch.softmax(self.attention(branches), dim=1)
        feature = (branches * weights).sum(1)
        return feature, self.neck(feature)
