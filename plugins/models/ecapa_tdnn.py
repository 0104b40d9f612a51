"""``ecapa_tdnn``: ECAPA-TDNN (Desplanques, Thienpondt and Demuynck, Interspeech 2020).

Written from the paper's description (its Figure 1 and Section 3):

- a 1-D convolution, kernel 5, to ``C`` channels, then ReLU and batch norm;
- three SE-Res2Blocks with kernel 3 and dilations 2, 3 and 4. Each block is a 1x1 convolution, a Res2Net
  convolution of scale 8 (the channels split into 8 groups; group ``i > 0`` is convolved after adding the
  previous group's output, group 0 passes through), another 1x1 convolution (each followed by ReLU and batch
  norm), a squeeze-excitation gate, and a residual connection around the block;
- multi-layer feature aggregation: the three block outputs concatenated and mapped by a 1x1 convolution and
  ReLU to 1536 channels (the same width for ``C`` = 512 and 1024, as in the paper);
- attentive statistics pooling whose attention also sees the utterance's mean and standard deviation
  (``astp``, channel-dependent frame attention with global context), batch norm, a linear layer to the
  embedding and a last batch norm.
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


class ConvReluBn(nn.Module):
    """A 1-D convolution (length kept), ReLU, batch norm: the paper's basic unit."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, dilation: int = 1):
        super().__init__()
        self.conv = nn.Conv1d(
            in_channels, out_channels, kernel_size, dilation=dilation, padding=dilation * (kernel_size - 1) // 2
        )
        self.bn = nn.BatchNorm1d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(torch.relu(self.conv(x)))


class Res2Conv(nn.Module):
    """Res2Net's hierarchical convolution: ``scale`` channel groups, each but the first convolved after
    adding the previous group's output, so the receptive field grows from group to group."""

    def __init__(self, channels: int, kernel_size: int, dilation: int, scale: int):
        super().__init__()
        self.scale = scale
        width = channels // scale
        self.convs = nn.ModuleList(ConvReluBn(width, width, kernel_size, dilation) for _ in range(scale - 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        groups = torch.chunk(x, self.scale, dim=1)
        out = [groups[0]]
        previous = None
        for conv, group in zip(self.convs, groups[1:]):
            previous = conv(group if previous is None else group + previous)
            out.append(previous)
        return torch.cat(out, dim=1)


class SqueezeExcitation(nn.Module):
    """Channel gates from the utterance mean: ``C -> bottleneck -> C``, ReLU then sigmoid."""

    def __init__(self, channels: int, bottleneck: int):
        super().__init__()
        self.down = nn.Conv1d(channels, bottleneck, 1)
        self.up = nn.Conv1d(bottleneck, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.up(torch.relu(self.down(x.mean(dim=-1, keepdim=True)))))
        return x * gate


class SERes2Block(nn.Module):
    """1x1 conv, Res2Net conv (dilated), 1x1 conv, squeeze-excitation, plus the block's input."""

    def __init__(self, channels: int, kernel_size: int, dilation: int, scale: int, se_bottleneck: int):
        super().__init__()
        self.body = nn.Sequential(
            ConvReluBn(channels, channels, 1),
            Res2Conv(channels, kernel_size, dilation, scale),
            ConvReluBn(channels, channels, 1),
            SqueezeExcitation(channels, se_bottleneck),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ECAPATDNN(nn.Module):
    """ECAPA-TDNN: SE-Res2Net TDNN blocks, multi-layer aggregation, attentive statistics pooling (Desplanques et al., Interspeech 2020)."""

    def __init__(
        self,
        in_dim: int,
        embed_dim: Width = 192,
        channels: Width = 512,
        scale: Annotated[int, Range(2, 64)] = 8,
        se_bottleneck: Width = 128,
        attention_bottleneck: Width = 128,
        aggregate_channels: Width = 1536,
        pooling: Pooling = "astp",
    ):
        """``channels`` is the paper's C (512 or 1024; any multiple of ``scale``), ``scale`` the Res2Net
        scale, ``se_bottleneck`` and ``attention_bottleneck`` the widths of the squeeze-excitation and
        attention layers (128 in the paper), ``aggregate_channels`` the width after multi-layer feature
        aggregation (1536 in the paper) and ``pooling`` the pooling layer (``astp``: the paper's)."""
        super().__init__()
        for name, value in (
            ("in_dim", in_dim),
            ("embed_dim", embed_dim),
            ("channels", channels),
            ("scale", scale),
            ("se_bottleneck", se_bottleneck),
            ("attention_bottleneck", attention_bottleneck),
            ("aggregate_channels", aggregate_channels),
        ):
            if value < 1:
                raise BadValue(f"{name} must be positive, got {value}")
        if scale < 2 or channels % scale:
            raise BadValue(f"channels ({channels}) must be a multiple of scale ({scale}), and scale at least 2")
        self.in_dim, self.embed_dim = int(in_dim), int(embed_dim)
        self.stem = ConvReluBn(in_dim, channels, 5)
        self.blocks = nn.ModuleList(SERes2Block(channels, 3, dilation, scale, se_bottleneck) for dilation in (2, 3, 4))
        self.aggregate = nn.Conv1d(3 * channels, aggregate_channels, 1)
        self.pooling = make_pooling(pooling, aggregate_channels, attention_bottleneck)
        self.pooled_bn = nn.BatchNorm1d(self.pooling.out_dim)
        self.embedding = nn.Linear(self.pooling.out_dim, embed_dim)
        self.embedding_bn = nn.BatchNorm1d(embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Features ``(B, in_dim, frames)`` to embeddings ``(B, embed_dim)``."""
        x = self.stem(x)
        outputs = []
        for block in self.blocks:
            x = block(x)
            outputs.append(x)
        x = torch.relu(self.aggregate(torch.cat(outputs, dim=1)))
        x = self.pooled_bn(self.pooling(x))
        return self.embedding_bn(self.embedding(x))
