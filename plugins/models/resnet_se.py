"""voxceleb_trainer's squeeze-and-excitation ResNet-34s (Chung et al., "In defence of metric learning", 2020;
Heo et al., "Clova baseline system for the VoxCeleb Speaker Recognition Challenge 2020").

Both read features ``(B, in_dim, frames)`` as a one-channel image and stack SE basic blocks [3, 4, 6, 3]
(Hu et al., 2018: a residual block whose output channels are rescaled by a gate computed from their average).

- ``resnet_se34l`` (the "thin"/light ResNet-34): widths 16-32-64-128, a 7x7 first convolution with stride 2 in
  frequency only, stages strided 1, 2, 2, 1, the last map averaged over frequency, then pooled over time.
- ``resnet_se34v2``: widths 32-64-128-256, a 3x3 first convolution, stages strided 1, 2, 2, 2; channels and the
  remaining frequency bins are flattened into one axis and pooled over time.

voxceleb_trainer computes its own filterbank and instance-normalises it inside the model; here the features come
from a vvframe frontend (choose its normalisation there), so the models start at the features.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from vvframe import BadValue

from .common import Width
from .pooling import make_pooling

Pooling = Literal["tap", "tstp", "sap", "asp", "astp"]
BLOCKS = (3, 4, 6, 3)


class SqueezeExcite(nn.Module):
    """Channel gate: global average, a bottleneck of ``channels // reduction``, a sigmoid scale per channel."""

    def __init__(self, channels: int, reduction: int = 8):
        super().__init__()
        self.gate = nn.Sequential(
            nn.Linear(channels, channels // reduction),
            nn.ReLU(inplace=True),
            nn.Linear(channels // reduction, channels),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x.mean(dim=(2, 3)))[:, :, None, None]


class SEBasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm, a squeeze-and-excitation gate, and a shortcut."""

    def __init__(self, in_ch: int, planes: int, stride: int | tuple[int, int] = 1, reduction: int = 8):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_ch, planes, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(planes),
            nn.ReLU(inplace=True),
            nn.Conv2d(planes, planes, 3, padding=1, bias=False),
            nn.BatchNorm2d(planes),
            SqueezeExcite(planes, reduction),
        )
        if (stride != 1 and stride != (1, 1)) or in_ch != planes:
            self.shortcut: nn.Module = nn.Sequential(
                nn.Conv2d(in_ch, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


def _stages(widths: tuple[int, ...], strides: tuple[int, ...]) -> nn.Sequential:
    stages, channels = [], widths[0]
    for planes, n, stride in zip(widths, BLOCKS, strides):
        stages.append(
            nn.Sequential(
                *[SEBasicBlock(channels if j == 0 else planes, planes, stride if j == 0 else 1) for j in range(n)]
            )
        )
        channels = planes
    return nn.Sequential(*stages)


def _check(owner: str, in_dim: int, embed_dim: int) -> None:
    if in_dim < 8:
        raise BadValue(
            f"{owner}: in_dim {in_dim} is too small; the network halves the frequency axis 3 times,"
            f" so it needs at least 8 feature bins"
        )
    if embed_dim < 1:
        raise BadValue(f"{owner}: embed_dim must be positive, got {embed_dim}")


def _init(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, SqueezeExcite):
            # the gate reads channel means of a batch-normalised map, centred on zero across the batch: a negative
            # random bias would leave its few hidden units (16 // 8 = 2 in the first stage) dead from the start
            nn.init.zeros_(m.gate[0].bias)


class ResNetSE34L(nn.Module):
    """voxceleb_trainer's ResNetSE34L: thin SE ResNet-34, widths 16-128, 1.4 M parameters (Chung et al., 2020)."""

    channels_last = True  # trainer.memory_format auto on CUDA: its 2-D convolutions train faster so

    def __init__(self, in_dim: int, embed_dim: Width = 512, pooling: Pooling = "sap"):
        super().__init__()
        _check("ResNetSE34L", in_dim, embed_dim)
        widths = (16, 32, 64, 128)
        self.in_dim, self.embed_dim = in_dim, embed_dim
        self.stem = nn.Sequential(
            nn.Conv2d(1, widths[0], 7, stride=(2, 1), padding=3), nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True)
        )
        self.stages = _stages(widths, (1, 2, 2, 1))
        self.pool = make_pooling(pooling, widths[-1])
        self.embedding = nn.Linear(self.pool.out_dim, embed_dim)
        _init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(x.unsqueeze(1)))  # (B, 128, F', T')
        return self.embedding(self.pool(x.mean(dim=2)))


class ResNetSE34V2(nn.Module):
    """voxceleb_trainer's ResNetSE34V2: half-width SE ResNet-34, widths 32-256, 8 M parameters (Heo et al., 2020)."""

    channels_last = True  # trainer.memory_format auto on CUDA: its 2-D convolutions train faster so

    def __init__(self, in_dim: int, embed_dim: Width = 512, pooling: Pooling = "asp"):
        super().__init__()
        _check("ResNetSE34V2", in_dim, embed_dim)
        widths = (32, 64, 128, 256)
        self.in_dim, self.embed_dim = in_dim, embed_dim
        bins = in_dim
        for _ in range(3):
            bins = (bins - 1) // 2 + 1
        # voxceleb_trainer applies the ReLU before the first batch norm here
        self.stem = nn.Sequential(
            nn.Conv2d(1, widths[0], 3, padding=1), nn.ReLU(inplace=True), nn.BatchNorm2d(widths[0])
        )
        self.stages = _stages(widths, (1, 2, 2, 2))
        self.pool = make_pooling(pooling, widths[-1] * bins)
        self.embedding = nn.Linear(self.pool.out_dim, embed_dim)
        _init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(x.unsqueeze(1)))  # (B, 256, F', T')
        return self.embedding(self.pool(x.flatten(1, 2)))
