"""IPAID: Identity-Preserving Adaptive Illumination Decomposition (Retinex, I = R x L).

A small CNN estimates a smooth illumination map L from luminance at three scales (global + local), a
sensitivity map S decides where to correct (L' = 1 + (L - 1) * S, clamped to [0.2, 3], smoothed), and the
reflectance R = I / L' (the identity texture) goes on to the backbone. A refiner sees I, R and L' and adds a
small learned residual. Input and output are RGB in [0, 1].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .head import SqueezeExcite

LUMA = (0.299, 0.587, 0.114)


def luminance(rgb: torch.Tensor) -> torch.Tensor:
    w = rgb.new_tensor(LUMA).view(1, 3, 1, 1)
    return (rgb * w).sum(1, keepdim=True)


def image_gradients(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return x[..., :, 1:] - x[..., :, :-1], x[..., 1:, :] - x[..., :-1, :]


class IlluminationEstimator(nn.Module):
    """Luminance -> illumination logits, from branches at 1/4, 1/2 and full resolution fused by softmax weights."""

    def __init__(self, base_channels=32, num_scales=3):
        super().__init__()
        self.shared = nn.Sequential(
            nn.Conv2d(1, base_channels, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(base_channels, base_channels, 3, padding=1),
            nn.ReLU(),
            SqueezeExcite(base_channels, reduction=4),
        )
        self.scales = [2 ** (num_scales - 1 - i) for i in range(num_scales)]  # 4, 2, 1
        self.branches = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(base_channels, base_channels, 3, padding=2 * s, dilation=2 * s),
                nn.ReLU(),
                nn.Conv2d(base_channels, 1, 3, padding=1),
            )
            for s in range(1, num_scales + 1)
        )
        self.fusion = nn.Linear(base_channels, num_scales)  # global context -> weight of each scale
        self.global_gain = nn.Linear(base_channels, 1)  # global (frame-wide) illumination level

    def forward(self, y):
        # Illumination is smooth: estimate it at half resolution, which quarters the cost.
        h, w = y.shape[-2:]
        feats = self.shared(F.avg_pool2d(y, 2))
        context = feats.mean((2, 3))
        outs = []
        for scale, branch in zip(self.scales, self.branches, strict=True):
            f = F.avg_pool2d(feats, scale) if scale > 1 else feats
            o = branch(f)
            outs.append(F.interpolate(o, size=(h, w), mode="bilinear", align_corners=False))
        weights = torch.softmax(self.fusion(context), dim=1)[:, :, None, None, None]
        local = (torch.stack(outs, 1) * weights).sum(1)
        return local + self.global_gain(context)[:, :, None, None]


class Refiner(nn.Module):
    def __init__(self, channels=16):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(7, channels, 3, padding=1), nn.ReLU(), nn.Conv2d(channels, 3, 3, padding=1), nn.Tanh()
        )
        self.scale = nn.Parameter(torch.tensor(0.1))

    def forward(self, image, reflectance, light):
        return reflectance + self.scale * self.net(torch.cat([image, reflectance, light], 1))


class IPAID(nn.Module):
    def __init__(self, base_channels=32, num_scales=3, refine_iterations=2, l_min=0.2, l_max=3.0):
        super().__init__()
        self.estimator = IlluminationEstimator(base_channels, num_scales)
        self.sensitivity = nn.Sequential(
            nn.Conv2d(2, base_channels // 2, 3, padding=1), nn.ReLU(), nn.Conv2d(base_channels // 2, 1, 3, padding=1)
        )
        self.refiners = nn.ModuleList(Refiner(base_channels // 2) for _ in range(refine_iterations))
        self.l_min, self.l_max = l_min, l_max

    def decompose(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """image (B,3,H,W) in [0,1] -> reflectance R, corrected illumination L', raw L, sensitivity S."""
        y = luminance(image)
        # L starts near the local mean luminance relative to mid-grey, so an untrained IPAID is a mild Retinex.
        base = F.avg_pool2d(y, 15, stride=1, padding=7, count_include_pad=False) / 0.5
        light = base.clamp(self.l_min, self.l_max) * torch.exp(0.5 * torch.tanh(self.estimator(y)))
        sens = torch.sigmoid(self.sensitivity(torch.cat([y, light], 1)))
        corrected = (1 + (light - 1) * sens).clamp(self.l_min, self.l_max)
        corrected = F.avg_pool2d(corrected, 5, stride=1, padding=2, count_include_pad=False)
        ratio = image / corrected
        # Chromaticity guard: where dividing would push a channel past white, blend back to the original.
        over = (ratio.amax(1, keepdim=True) - 1).clamp(0, 0.5) / 0.5
        reflectance = (1 - over) * ratio.clamp(0, 1) + over * image
        for refine in self.refiners:
            reflectance = refine(image, reflectance, corrected).clamp(0, 1)
        return {"reflectance": reflectance, "light": corrected, "light_raw": light, "sensitivity": sens, "y": y}

    def forward(self, image):
        return self.decompose(image)["reflectance"]


def ipaid_losses(image: torch.Tensor, parts: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Reconstruction, illumination smoothness (edge-aware), edge preservation of R, sensitivity sparsity."""
    r, light, y = parts["reflectance"], parts["light"], parts["y"]
    recon = (r * light - image).abs().mean()
    ly_x, ly_y = image_gradients(light)
    iy_x, iy_y = image_gradients(y)
    smooth = (ly_x.abs() * torch.exp(-10 * iy_x.abs())).mean() + (ly_y.abs() * torch.exp(-10 * iy_y.abs())).mean()
    ry_x, ry_y = image_gradients(luminance(r))
    # R should keep the texture edges of I (they carry identity): penalise edges R lost.
    edge = F.relu(iy_x.abs() - ry_x.abs()).mean() + F.relu(iy_y.abs() - ry_y.abs()).mean()
    return {"recon": recon, "smooth": smooth, "edge": edge, "sparsity": parts["sensitivity"].mean()}
