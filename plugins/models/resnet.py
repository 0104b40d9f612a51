"""WeSpeaker's ResNet family for speaker embeddings (Wang et al., "Wespeaker", ICASSP 2023; He et al., 2016).

Features ``(B, in_dim, frames)`` are read as a one-channel image ``(B, 1, in_dim, frames)``: a 3x3 convolution of
``base_width`` channels, four stages of residual blocks (basic blocks for depths 18 and 34, bottleneck blocks with a
four-fold expansion from depth 50 up) of widths ``base_width`` x 1, 2, 4, 8 and strides 1, 2, 2, 2 (frequency and
time), then the channels and the remaining frequency bins are flattened into one axis, pooled over time, and mapped
to the embedding by one linear layer (optionally a second, after a ReLU and a batch norm without affine terms).
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from torch import nn

from vvframe import BadValue
from vvframe.core.schema import Range

from .common import Width
from .pooling import make_pooling

Pooling = Literal["tap", "tstp", "sap", "asp", "astp"]
Depth = Literal[18, 34, 50, 101, 152, 221, 293]
BaseWidth = Annotated[int, Range(1, 2048)]  # the last stage is 8x as wide (32x with bottleneck blocks)

# depth -> (bottleneck blocks?, blocks per stage)
LAYOUTS: dict[int, tuple[bool, tuple[int, int, int, int]]] = {
    18: (False, (2, 2, 2, 2)),
    34: (False, (3, 4, 6, 3)),
    50: (True, (3, 4, 6, 3)),
    101: (True, (3, 4, 23, 3)),
    152: (True, (3, 8, 36, 3)),
    221: (True, (6, 16, 48, 3)),
    293: (True, (10, 20, 64, 3)),
}
STAGE_STRIDES = (1, 2, 2, 2)


def downsampled_bins(in_dim: int, strides: tuple[int, ...], owner: str) -> int:
    """The frequency bins left after convolutions of ``strides`` (3x3, padding 1), or a ``BadValue`` if ``in_dim``
    is smaller than the total downsampling factor."""
    factor = 1
    for s in strides:
        factor *= s
    if in_dim < factor:
        raise BadValue(
            f"{owner}: in_dim {in_dim} is too small; the network halves the frequency axis "
            f"{len([s for s in strides if s > 1])} times, so it needs at least {factor} feature bins"
        )
    bins = in_dim
    for s in strides:
        bins = (bins - 1) // s + 1
    return bins


def _conv_bn(in_ch: int, out_ch: int, kernel: int, stride: int) -> list[nn.Module]:
    return [nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=kernel // 2, bias=False), nn.BatchNorm2d(out_ch)]


def _shortcut(in_ch: int, out_ch: int, stride: int) -> nn.Module:
    if stride == 1 and in_ch == out_ch:
        return nn.Identity()
    return nn.Sequential(*_conv_bn(in_ch, out_ch, 1, stride))


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and an identity (or 1x1 projection) shortcut."""

    expansion = 1

    def __init__(self, in_ch: int, planes: int, stride: int = 1):
        super().__init__()
        self.body = nn.Sequential(
            *_conv_bn(in_ch, planes, 3, stride), nn.ReLU(inplace=True), *_conv_bn(planes, planes, 3, 1)
        )
        self.shortcut = _shortcut(in_ch, planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided), 1x1 expand by four, with batch norm and a shortcut."""

    expansion = 4

    def __init__(self, in_ch: int, planes: int, stride: int = 1):
        super().__init__()
        out_ch = planes * self.expansion
        self.body = nn.Sequential(
            *_conv_bn(in_ch, planes, 1, 1),
            nn.ReLU(inplace=True),
            *_conv_bn(planes, planes, 3, stride),
            nn.ReLU(inplace=True),
            *_conv_bn(planes, out_ch, 1, 1),
        )
        self.shortcut = _shortcut(in_ch, out_ch, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


class ResNet(nn.Module):
    """WeSpeaker's ResNet, 18 to 293 layers: 2-D residual stages, stats pooling, linear embedding (Wespeaker, 2023)."""

    channels_last = True  # trainer.memory_format auto on CUDA: its 2-D convolutions train faster so

    def __init__(
        self,
        in_dim: int,
        embed_dim: Width = 256,
        depth: Depth = 34,
        base_width: BaseWidth = 32,
        pooling: Pooling = "tstp",
        two_emb_layer: bool = False,
    ):
        super().__init__()
        if depth not in LAYOUTS:
            raise BadValue(f"ResNet depth {depth} is not one of {', '.join(map(str, LAYOUTS))}")
        if base_width < 1 or embed_dim < 1:
            raise BadValue(f"ResNet needs positive base_width and embed_dim, got {base_width} and {embed_dim}")
        bins = downsampled_bins(in_dim, STAGE_STRIDES, f"ResNet{depth}")
        bottleneck, blocks = LAYOUTS[depth]
        block = Bottleneck if bottleneck else BasicBlock
        self.in_dim, self.embed_dim, self.depth = in_dim, embed_dim, depth

        self.stem = nn.Sequential(*_conv_bn(1, base_width, 3, 1), nn.ReLU(inplace=True))
        stages, channels = [], base_width
        for i, (n, stride) in enumerate(zip(blocks, STAGE_STRIDES)):
            planes = base_width * 2**i
            layers = []
            for j in range(n):
                layers.append(block(channels, planes, stride if j == 0 else 1))
                channels = planes * block.expansion
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)

        self.pool = make_pooling(pooling, channels * bins)
        self.embedding = nn.Linear(self.pool.out_dim, embed_dim)
        self.second = (
            nn.Sequential(nn.ReLU(), nn.BatchNorm1d(embed_dim, affine=False), nn.Linear(embed_dim, embed_dim))
            if two_emb_layer
            else nn.Identity()
        )
        _init_convs(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(x.unsqueeze(1)))  # (B, C, F', T')
        x = x.flatten(1, 2)  # (B, C * F', T')
        return self.second(self.embedding(self.pool(x)))


def _init_convs(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")


def resnet34(
    in_dim: int,
    embed_dim: Width = 256,
    base_width: BaseWidth = 32,
    pooling: Pooling = "tstp",
    two_emb_layer: bool = False,
) -> ResNet:
    """WeSpeaker's ResNet34 (basic blocks [3, 4, 6, 3], 6.6 M parameters at 80 bins; Wang et al., ICASSP 2023)."""
    return ResNet(in_dim, embed_dim, 34, base_width, pooling, two_emb_layer)


def resnet221(
    in_dim: int,
    embed_dim: Width = 256,
    base_width: BaseWidth = 32,
    pooling: Pooling = "tstp",
    two_emb_layer: bool = False,
) -> ResNet:
    """WeSpeaker's ResNet221 (bottleneck blocks [6, 16, 48, 3], ~23.8 M parameters at 80 bins; WeSpeaker recipe)."""
    return ResNet(in_dim, embed_dim, 221, base_width, pooling, two_emb_layer)


def resnet293(
    in_dim: int,
    embed_dim: Width = 256,
    base_width: BaseWidth = 32,
    pooling: Pooling = "tstp",
    two_emb_layer: bool = False,
) -> ResNet:
    """WeSpeaker's ResNet293 (bottleneck blocks [10, 20, 64, 3], ~28.6 M parameters at 80 bins; WeSpeaker recipe)."""
    return ResNet(in_dim, embed_dim, 293, base_width, pooling, two_emb_layer)
