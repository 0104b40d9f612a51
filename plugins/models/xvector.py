"""``xvector``: the TDNN x-vector network (Snyder et al., ICASSP 2018, "X-vectors: robust DNN embeddings for
speaker recognition").

Written from the paper's Table 1: five frame-level layers (context [t-2, t+2], {t-2, t, t+2}, {t-3, t, t+3},
{t}, {t}; 512 channels, the fifth 1500), each a 1-D convolution (kernel 5, 3 dilated 2, 3 dilated 3, 1, 1)
followed by ReLU and batch norm; statistics pooling (mean and standard deviation over all frames); then
segment6, an affine layer to the embedding. The embedding is segment6's output before its nonlinearity, the
paper's "embedding a". Segment7 and the softmax layer of the paper belong to the training head, which in
vvframe is the loss (it takes the embeddings), so they are not part of this model.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from vvframe import BadValue

from .common import Width
from .pooling import make_pooling

Pooling = Literal["tap", "tstp", "sap", "asp", "astp"]

# (kernel size, dilation) of the five frame-level layers: contexts of 5, 9, 15, 15 and 15 frames in total.
FRAME_LAYERS = ((5, 1), (3, 2), (3, 3), (1, 1), (1, 1))


class XVector(nn.Module):
    """TDNN x-vector: five frame-level TDNN layers, statistics pooling, segment6 embedding (Snyder et al., ICASSP 2018)."""

    def __init__(
        self,
        in_dim: int,
        embed_dim: Width = 512,
        channels: Width = 512,
        stats_channels: Width = 1500,
        pooling: Pooling = "tstp",
    ):
        """``channels`` is the width of frame layers 1-4, ``stats_channels`` that of frame5 (pooled),
        ``embed_dim`` that of segment6 (the embedding); ``pooling`` the pooling layer (``tstp``: the
        paper's mean and standard deviation)."""
        super().__init__()
        for name, value in (
            ("in_dim", in_dim),
            ("embed_dim", embed_dim),
            ("channels", channels),
            ("stats_channels", stats_channels),
        ):
            if value < 1:
                raise BadValue(f"{name} must be positive, got {value}")
        self.in_dim, self.embed_dim = int(in_dim), int(embed_dim)
        layers: list[nn.Module] = []
        width = in_dim
        for i, (kernel, dilation) in enumerate(FRAME_LAYERS):
            out = stats_channels if i == len(FRAME_LAYERS) - 1 else channels
            layers += [
                nn.Conv1d(width, out, kernel, dilation=dilation, padding=dilation * (kernel - 1) // 2),
                nn.ReLU(),
                nn.BatchNorm1d(out),
            ]
            width = out
        self.frames = nn.Sequential(*layers)
        self.pooling = make_pooling(pooling, stats_channels)
        self.segment6 = nn.Linear(self.pooling.out_dim, embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Features ``(B, in_dim, frames)`` to embeddings ``(B, embed_dim)``."""
        return self.segment6(self.pooling(self.frames(x)))
