"""``campplus``: CAM++ (Wang et al., Interspeech 2023, "CAM++: A Fast and Efficient Network for Speaker
Verification Using Context-Aware Masking").

Written from the paper's description:

- a front-end convolution module (FCM) on the (frequency, time) plane: a 3x3 convolution to 32 channels, two
  stages of two residual blocks whose first block halves the frequency axis, and a last 3x3 convolution that
  halves it again; its 32 maps of ``in_dim / 8`` bins are flattened to ``32 * in_dim / 8`` channels per frame;
- a TDNN layer (kernel 5, stride 2: the backbone runs at half the frame rate) to ``init_channels``;
- the densely connected TDNN (D-TDNN) backbone: three blocks of 12, 24 and 16 layers (kernel 3, dilations 1,
  2 and 2). Each layer is a bottleneck (batch norm, ReLU, 1x1 convolution to ``bn_size * growth_rate``,
  batch norm, ReLU) followed by a context-aware masking (CAM) TDNN layer that adds ``growth_rate`` channels;
  a transit layer (batch norm, ReLU, 1x1 convolution) halves the channels after each block;
- the CAM layer: a local TDNN convolution whose output is multiplied by a sigmoid mask. The mask comes from
  a context: the utterance mean plus the mean of the frame's 100-frame segment (the last segment may be
  shorter), through a two-layer network (reduction 2, ReLU, sigmoid);
- batch norm and ReLU, statistics pooling (mean and standard deviation), and a dense layer (1x1 linear,
  batch norm without affine parameters) to the embedding.
"""

from __future__ import annotations

from typing import Annotated

import torch
from torch import nn

from vvframe import BadValue
from vvframe.core.schema import Range

from .common import Width
from .pooling import make_pooling

FCM_CHANNELS = 32


class ResBlock2d(nn.Module):
    """A basic residual block on the (frequency, time) plane; ``stride`` downsamples frequency only."""

    def __init__(self, in_channels: int, channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=(stride, 1), padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_channels != channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride=(stride, 1), bias=False), nn.BatchNorm2d(channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


def _halved(bins: int) -> int:
    """Bins left by a 3x3 convolution with padding 1 and frequency stride 2."""
    return (bins - 1) // 2 + 1


class FCM(nn.Module):
    """The front-end convolution module: 2-D residual blocks that downsample frequency by 8."""

    def __init__(self, in_dim: int, channels: int = FCM_CHANNELS, blocks: int = 2):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels), nn.ReLU())
        self.stages = nn.Sequential(
            *(ResBlock2d(channels, channels, 2 if i == 0 else 1) for _ in range(2) for i in range(blocks))
        )
        self.last = nn.Sequential(
            nn.Conv2d(channels, channels, 3, stride=(2, 1), padding=1, bias=False), nn.BatchNorm2d(channels), nn.ReLU()
        )
        self.out_dim = channels * _halved(_halved(_halved(in_dim)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.last(self.stages(self.stem(x.unsqueeze(1))))  # (B, channels, bins / 8, frames)
        return x.flatten(1, 2)


def segment_mean(x: torch.Tensor, segment: int) -> torch.Tensor:
    """Each frame replaced by the mean of its ``segment``-frame segment; the last segment may be shorter."""
    frames = x.shape[-1]
    count = -(-frames // segment)
    padded = nn.functional.pad(x, (0, count * segment - frames))
    sums = padded.unflatten(-1, (count, segment)).sum(dim=-1)  # (B, C, count)
    sizes = torch.full((count,), float(segment), dtype=x.dtype, device=x.device)
    sizes[-1] = frames - (count - 1) * segment
    return (sums / sizes).repeat_interleave(segment, dim=-1)[..., :frames]


class CAMLayer(nn.Module):
    """Context-aware masking: a local TDNN output gated by a mask predicted from utterance- and
    segment-level means of the layer's input."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, dilation: int, segment: int, reduction: int = 2
    ):
        super().__init__()
        self.segment = segment
        self.local = nn.Conv1d(
            in_channels,
            out_channels,
            kernel_size,
            dilation=dilation,
            padding=dilation * (kernel_size - 1) // 2,
            bias=False,
        )
        self.context = nn.Sequential(
            nn.Conv1d(in_channels, in_channels // reduction, 1),
            nn.ReLU(),
            nn.Conv1d(in_channels // reduction, out_channels, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        context = x.mean(dim=-1, keepdim=True) + segment_mean(x, self.segment)
        return self.local(x) * self.context(context)


class DenseLayer(nn.Module):
    """One D-TDNN layer: bottleneck then a CAM layer; its ``growth_rate`` channels join the block's input."""

    def __init__(
        self, in_channels: int, growth_rate: int, bn_channels: int, kernel_size: int, dilation: int, segment: int
    ):
        super().__init__()
        self.bottleneck = nn.Sequential(
            nn.BatchNorm1d(in_channels),
            nn.ReLU(),
            nn.Conv1d(in_channels, bn_channels, 1, bias=False),
            nn.BatchNorm1d(bn_channels),
            nn.ReLU(),
        )
        self.cam = CAMLayer(bn_channels, growth_rate, kernel_size, dilation, segment)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.cam(self.bottleneck(x))], dim=1)


def transit(in_channels: int, out_channels: int) -> nn.Sequential:
    """Between blocks: batch norm, ReLU and a 1x1 convolution."""
    return nn.Sequential(nn.BatchNorm1d(in_channels), nn.ReLU(), nn.Conv1d(in_channels, out_channels, 1, bias=False))


class CAMPPlus(nn.Module):
    """CAM++: 2-D conv front-end and densely connected TDNN with context-aware masking (Wang et al., Interspeech 2023)."""

    def __init__(
        self,
        in_dim: int,
        embed_dim: Width = 512,
        growth_rate: Width = 32,
        bn_size: Annotated[int, Range(1, 64)] = 4,
        init_channels: Width = 128,
        config: Annotated[tuple[int, int, int], Range(1, 1024)] = (12, 24, 16),
        dilations: Annotated[tuple[int, int, int], Range(1, 1024)] = (1, 2, 2),
        segment: Width = 100,
    ):
        """``config`` is the number of D-TDNN layers per block, ``dilations`` their dilation per block,
        ``growth_rate`` the channels each layer adds, ``bn_size * growth_rate`` the bottleneck width,
        ``init_channels`` the width entering the first block, ``segment`` the CAM segment length in frames of
        the backbone (half the input frame rate)."""
        super().__init__()
        for name, value in (
            ("in_dim", in_dim),
            ("embed_dim", embed_dim),
            ("growth_rate", growth_rate),
            ("bn_size", bn_size),
            ("init_channels", init_channels),
            ("segment", segment),
            *((f"config[{i}]", n) for i, n in enumerate(config)),
            *((f"dilations[{i}]", d) for i, d in enumerate(dilations)),
        ):
            if value < 1:
                raise BadValue(f"{name} must be positive, got {value}")
        if len(config) != len(dilations):
            raise BadValue(f"config {config} and dilations {dilations} must have one entry per block")
        self.in_dim, self.embed_dim = int(in_dim), int(embed_dim)
        self.fcm = FCM(in_dim)
        layers: list[nn.Module] = [
            nn.Conv1d(self.fcm.out_dim, init_channels, 5, stride=2, padding=2, bias=False),
            nn.BatchNorm1d(init_channels),
            nn.ReLU(),
        ]
        channels = init_channels
        for count, dilation in zip(config, dilations):
            for _ in range(count):
                layers.append(DenseLayer(channels, growth_rate, bn_size * growth_rate, 3, dilation, segment))
                channels += growth_rate
            layers.append(transit(channels, channels // 2))
            channels //= 2
        layers += [nn.BatchNorm1d(channels), nn.ReLU()]
        self.backbone = nn.Sequential(*layers)
        self.pooling = make_pooling("tstp", channels)
        self.embedding = nn.Sequential(
            nn.Conv1d(self.pooling.out_dim, embed_dim, 1, bias=False), nn.BatchNorm1d(embed_dim, affine=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Features ``(B, in_dim, frames)`` to embeddings ``(B, embed_dim)``."""
        x = self.pooling(self.backbone(self.fcm(x)))
        return self.embedding(x.unsqueeze(-1)).squeeze(-1)
