"""OSNet and OSNet-AIN (Zhou et al., ICCV 2019 / TPAMI 2021), written here from the papers' description.

Omni-scale residual blocks: four streams of 1..4 lightweight 3x3 convolutions (receptive fields 3..9) mixed by
a shared channel gate. OSNet-AIN places instance normalisation in chosen blocks and the stem, which makes the
features less sensitive to image style (contrast, colour cast, light). x1.0: channels 64/256/384/512, 512-d.
No weights are downloaded: these start from scratch (or from a checkpoint of ours).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ConvLayer(nn.Module):
    """Conv + BatchNorm (or InstanceNorm) + ReLU."""

    def __init__(self, cin, cout, k, stride=1, padding=0, groups=1, instance_norm=False):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride=stride, padding=padding, bias=False, groups=groups)
        self.norm = nn.InstanceNorm2d(cout, affine=True) if instance_norm else nn.BatchNorm2d(cout)

    def forward(self, x):
        return F.relu(self.norm(self.conv(x)))


class Conv1x1(ConvLayer):
    def __init__(self, cin, cout, stride=1):
        super().__init__(cin, cout, 1, stride=stride)


class Conv1x1Linear(nn.Module):
    """1x1 conv + optional BatchNorm, no activation."""

    def __init__(self, cin, cout, bn=True):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1, bias=False)
        self.bn = nn.BatchNorm2d(cout) if bn else nn.Identity()

    def forward(self, x):
        return self.bn(self.conv(x))


class LightConv3x3(nn.Module):
    """1x1 conv then depthwise 3x3: a cheap 3x3."""

    def __init__(self, cin, cout):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 1, bias=False)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False, groups=cout)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        return F.relu(self.bn(self.conv2(self.conv1(x))))


class ChannelGate(nn.Module):
    """Unified aggregation gate shared by the streams of one block."""

    def __init__(self, channels, reduction=16):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels // reduction, 1)
        self.fc2 = nn.Conv2d(channels // reduction, channels, 1)

    def forward(self, x):
        w = torch.sigmoid(self.fc2(F.relu(self.fc1(F.adaptive_avg_pool2d(x, 1)))))
        return x * w


class OSBlock(nn.Module):
    def __init__(self, cin, cout, instance_norm=False, reduction=4, streams=4):
        super().__init__()
        mid = cout // reduction
        self.conv1 = Conv1x1(cin, mid)
        self.streams = nn.ModuleList(
            nn.Sequential(*[LightConv3x3(mid, mid) for _ in range(depth)]) for depth in range(1, streams + 1)
        )
        self.gate = ChannelGate(mid)
        # In an IN block the instance norm replaces the last BatchNorm inside the residual branch.
        self.conv3 = Conv1x1Linear(mid, cout, bn=not instance_norm)
        self.instance_norm = nn.InstanceNorm2d(cout, affine=True) if instance_norm else nn.Identity()
        self.downsample = Conv1x1Linear(cin, cout) if cin != cout else nn.Identity()

    def forward(self, x):
        x1 = self.conv1(x)
        x2 = sum(self.gate(stream(x1)) for stream in self.streams)
        return F.relu(self.instance_norm(self.conv3(x2)) + self.downsample(x))


class OSNet(nn.Module):
    """Returns the conv5 feature map (B, 512, H/16, W/16); ``feature_dim`` is its channel count."""

    def __init__(self, blocks_in: list[list[bool]], channels=(64, 256, 384, 512), stem_instance_norm=False):
        super().__init__()
        self.conv1 = ConvLayer(3, channels[0], 7, stride=2, padding=3, instance_norm=stem_instance_norm)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        stages, cin = [], channels[0]
        for i, flags in enumerate(blocks_in):
            cout = channels[i + 1]
            layers = [OSBlock(cin if j == 0 else cout, cout, instance_norm=flag) for j, flag in enumerate(flags)]
            if i < len(blocks_in) - 1:  # transition: 1x1 conv and 2x2 average pooling
                layers += [Conv1x1(cout, cout), nn.AvgPool2d(2, stride=2)]
            stages.append(nn.Sequential(*layers))
            cin = cout
        self.stages = nn.Sequential(*stages)
        self.conv5 = Conv1x1(channels[-1], channels[-1])
        self.feature_dim = channels[-1]
        self._init_params()

    def _init_params(self):
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d)) and m.weight is not None:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        return self.conv5(self.stages(self.maxpool(self.conv1(x))))


def osnet_x1_0(**_) -> OSNet:
    return OSNet([[False, False], [False, False], [False, False]])


def osnet_ain_x1_0(**_) -> OSNet:
    # Which blocks carry instance norm, as in the OSNet-AIN paper's searched x1.0 architecture.
    return OSNet([[True, True], [False, True], [True, False]], stem_instance_norm=True)
