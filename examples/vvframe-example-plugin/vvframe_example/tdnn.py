"""A small TDNN speaker-embedding model: dilated 1-D convolutions, then mean and std pooling."""

from __future__ import annotations

import torch
from torch import nn


class TinyTDNN(nn.Module):
    """Three dilated TDNN layers, statistics pooling and a linear embedding layer."""

    def __init__(self, in_dim: int, embed_dim: int = 64, channels: int = 128):
        super().__init__()
        self.embed_dim = embed_dim
        layers = []
        for i, (kernel, dilation) in enumerate([(5, 1), (3, 2), (3, 3)]):
            layers += [
                nn.Conv1d(
                    in_dim if i == 0 else channels,
                    channels,
                    kernel,
                    dilation=dilation,
                    padding=dilation * (kernel // 2),
                ),
                nn.ReLU(),
                nn.BatchNorm1d(channels),
            ]
        self.frames = nn.Sequential(*layers)
        self.embedding = nn.Linear(2 * channels, embed_dim)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``(B, in_dim, frames)`` -> ``(B, embed_dim)``."""
        hidden = self.frames(features)
        stats = torch.cat([hidden.mean(dim=-1), hidden.std(dim=-1, unbiased=False)], dim=-1)
        return self.embedding(stats)
