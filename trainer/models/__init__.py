"""Model registry (as torchreid's): backbones by name, and the full re-identification network."""

from __future__ import annotations

from .efficientnet import efficientnet_lite0_imagenet
from .mobilenet import mobilenet_v2_imagenet
from .osnet import osnet_ain_x1_0, osnet_x1_0
from .reidnet import ReIDNet

BACKBONES = {
    "osnet_ain_x1_0": osnet_ain_x1_0,
    "osnet_x1_0": osnet_x1_0,
    "mobilenet_v2_imagenet": mobilenet_v2_imagenet,
    "efficientnet_lite0_imagenet": efficientnet_lite0_imagenet,
}


def build_backbone(name: str, pretrained: bool = True):
    if name not in BACKBONES:
        raise KeyError(f"unknown backbone {name!r}; choose from {', '.join(BACKBONES)}")
    return BACKBONES[name](pretrained=pretrained)


def build_model(config: dict, num_classes: int, pretrained: bool = True) -> ReIDNet:
    """The network described by a training config's `model` section."""
    from .ipaid import IPAID

    m = config["model"]
    ipaid = None
    if m.get("use_ipaid", True):
        p = config.get("illumination_module", {}).get("module_params", {})
        ipaid = IPAID(p.get("base_channels", 32), p.get("num_scales", 3), p.get("refine_iterations", 2))
    return ReIDNet(
        backbone=build_backbone(m["backbone"], pretrained=pretrained),
        ipaid=ipaid,
        num_classes=num_classes,
        embedding_dim=m.get("embedding_dim", 256),
        parts=m.get("parts", 6),
        input_size=tuple(m["input_size"]),
        arcface_scale=config["training"]["losses"]["arcface"].get("scale", 30.0),
        arcface_margin=config["training"]["losses"]["arcface"].get("margin", 0.35),
    )


__all__ = ["BACKBONES", "ReIDNet", "build_backbone", "build_model"]
