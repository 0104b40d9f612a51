"""Temporal pooling layers shared by the models, chosen with a model's ``pooling`` argument.

Each maps frame-level features ``(B, C, T)`` to an utterance vector ``(B, out_dim)`` for any ``T`` and masks
nothing, so an utterance pools the same alone or in a batch of equal lengths.

| name | what | out_dim |
|---|---|---|
| ``tap`` | temporal average pooling | C |
| ``tstp`` | temporal statistics pooling: mean and standard deviation (x-vector, WeSpeaker's ResNets) | 2C |
| ``sap`` | self-attentive pooling: attention-weighted mean (Cai et al., 2018; voxceleb_trainer) | C |
| ``asp`` | attentive statistics pooling: attention-weighted mean and std, channel-wise attention (Okabe et al., 2018) | 2C |
| ``astp`` | ``asp`` with global context: attention also sees the utterance's mean and std (ECAPA-TDNN, Desplanques et al., 2020) | 2C |
"""

from __future__ import annotations

import torch
from torch import nn

from vvframe import BadValue

EPS = 1e-5


def _std(x: torch.Tensor, mean: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    if weights is None:
        var = (x - mean.unsqueeze(-1)).pow(2).mean(dim=-1)
    else:
        var = (weights * x.pow(2)).sum(dim=-1) - mean.pow(2)
    return var.clamp(min=EPS).sqrt()


class TAP(nn.Module):
    """Temporal average pooling."""

    def __init__(self, in_dim: int):
        super().__init__()
        self.out_dim = in_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=-1)


class TSTP(nn.Module):
    """Temporal statistics pooling: mean and standard deviation over time."""

    def __init__(self, in_dim: int):
        super().__init__()
        self.out_dim = 2 * in_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=-1)
        return torch.cat([mean, _std(x, mean)], dim=-1)


class SAP(nn.Module):
    """Self-attentive pooling: a learned context vector scores each frame; the weighted mean."""

    def __init__(self, in_dim: int, bottleneck: int = 128):
        super().__init__()
        self.out_dim = in_dim
        self.project = nn.Sequential(nn.Conv1d(in_dim, bottleneck, 1), nn.Tanh())
        self.context = nn.Conv1d(bottleneck, 1, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = torch.softmax(self.context(self.project(x)), dim=-1)  # (B, 1, T)
        return (x * weights).sum(dim=-1)


class ASP(nn.Module):
    """Attentive statistics pooling with channel-wise attention; ``global_context`` adds the utterance mean/std
    to the attention's input (ECAPA-TDNN's form)."""

    def __init__(self, in_dim: int, bottleneck: int = 128, global_context: bool = False):
        super().__init__()
        self.out_dim = 2 * in_dim
        self.global_context = global_context
        self.attention = nn.Sequential(
            nn.Conv1d(in_dim * (3 if global_context else 1), bottleneck, 1),
            nn.ReLU(),
            nn.BatchNorm1d(bottleneck),
            nn.Tanh(),
            nn.Conv1d(bottleneck, in_dim, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inputs = x
        if self.global_context:
            mean = x.mean(dim=-1)
            std = _std(x, mean)
            frames = x.shape[-1]
            inputs = torch.cat(
                [x, mean.unsqueeze(-1).expand(-1, -1, frames), std.unsqueeze(-1).expand(-1, -1, frames)], dim=1
            )
        weights = torch.softmax(self.attention(inputs), dim=-1)  # (B, C, T)
        mean = (weights * x).sum(dim=-1)
        return torch.cat([mean, _std(x, mean, weights)], dim=-1)


POOLINGS = ("tap", "tstp", "sap", "asp", "astp")


def make_pooling(name: str, in_dim: int, bottleneck: int = 128) -> nn.Module:
    """The pooling layer called ``name`` for ``in_dim`` channels; its ``out_dim`` says what it produces."""
    if name == "tap":
        return TAP(in_dim)
    if name == "tstp":
        return TSTP(in_dim)
    if name == "sap":
        return SAP(in_dim, bottleneck)
    if name == "asp":
        return ASP(in_dim, bottleneck)
    if name == "astp":
        return ASP(in_dim, bottleneck, global_context=True)
    raise BadValue(f"pooling '{name}' is not one of {', '.join(POOLINGS)}")
