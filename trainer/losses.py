"""Training losses: label-smoothed CE, batch-hard triplet, ArcFace (in the model) and IICL."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def batch_hard_triplet(features: torch.Tensor, labels: torch.Tensor, margin: float = 0.3) -> torch.Tensor:
    """For each anchor: hardest positive vs hardest negative, on cosine distance of normalised features."""
    f = F.normalize(features, dim=1)
    dist = 1 - f @ f.t()
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    pos = (dist * (same & ~eye)).amax(1)
    neg = dist.masked_fill(same, float("inf")).amin(1)
    valid = (same & ~eye).any(1) & (~same).any(1)
    if not valid.any():
        return features.sum() * 0
    return F.relu(pos - neg + margin)[valid].mean()


def iicl_loss(anchor: torch.Tensor, relit: torch.Tensor, kind: str = "mse", temperature: float = 0.1) -> torch.Tensor:
    """Pull the embedding of a relit image towards the embedding of its original.

    mse: squared distance of L2-normalised embeddings; cosine: 1 - cos; infonce: the relit image must pick its
    own original among the batch.
    """
    a, r = F.normalize(anchor, dim=1), F.normalize(relit, dim=1)
    if kind == "mse":
        return ((a - r) ** 2).sum(1).mean()
    if kind == "cosine":
        return (1 - (a * r).sum(1)).mean()
    if kind == "infonce":
        logits = r @ a.t() / temperature
        return F.cross_entropy(logits, torch.arange(len(a), device=a.device))
    raise ValueError(f"unknown IICL loss {kind!r}")
