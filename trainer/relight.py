"""IICL positives: the same reflectance under another light, I' = R x L'.

L' is the IPAID illumination map transformed by a random gamma, a global scale, or a smooth local perturbation
(low-frequency noise: a shadow or a sunlit patch). Made without gradient: they are data, not a path to train
the decomposition through.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


@torch.no_grad()
def relight(
    reflectance: torch.Tensor,
    light: torch.Tensor,
    generator: torch.Generator | None = None,
    gamma=(0.6, 1.4),
    scale=(0.7, 1.3),
    local_strength=0.3,
) -> torch.Tensor:
    b = light.shape[0]
    dev = light.device

    def uniform(lo, hi, *shape):
        return lo + (hi - lo) * torch.rand(*shape, generator=generator, device=dev)

    kind = torch.randint(0, 3, (b,), generator=generator, device=dev)
    g = uniform(*gamma, b, 1, 1, 1)
    s = uniform(*scale, b, 1, 1, 1)
    noise = torch.randn(b, 1, 4, 4, generator=generator, device=dev) * local_strength
    noise = F.interpolate(noise, size=light.shape[-2:], mode="bicubic", align_corners=False)
    by_gamma = light.clamp(min=1e-3) ** g
    by_scale = light * s
    by_local = light * torch.exp(noise)
    k = kind.view(b, 1, 1, 1)
    new_light = torch.where(k == 0, by_gamma, torch.where(k == 1, by_scale, by_local))
    return (reflectance * new_light).clamp(0, 1)


def gamma_relight(image: torch.Tensor, gamma: float) -> torch.Tensor:
    """A whole-image exposure change for robustness tests: I ** gamma."""
    return image.clamp(0, 1) ** gamma


def hard_shadow(image: torch.Tensor, strength: float = 0.35) -> torch.Tensor:
    """A sharp diagonal shadow over half the image (light multiplied by ``strength`` there)."""
    h, w = image.shape[-2:]
    yy, xx = torch.meshgrid(torch.arange(h, device=image.device), torch.arange(w, device=image.device), indexing="ij")
    mask = (xx / w + yy / h < 1.0).to(image.dtype)
    return image * (1 - mask * (1 - strength))
