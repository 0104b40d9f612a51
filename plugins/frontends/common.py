"""Helpers shared by the frontends (this module is not a component): input checks, pre-emphasis, normalisation."""

from __future__ import annotations

from typing import Annotated

import torch
from torch import Tensor

from vvframe import Range

# what the frontends' signatures accept: feature bins, sizes in samples, a pre-emphasis coefficient
Bins = Annotated[int, Range(1, 1024)]
Samples = Annotated[int, Range(1, 65536)]
Coefficient = Annotated[float, Range(0, 1)]
Hertz = Annotated[float, Range(0)]


def check_waveform(wave: Tensor, owner: str, min_samples: int = 1) -> Tensor:
    """``wave`` as a float32 ``(B, T)`` batch, or a ``ValueError`` naming ``owner`` and the shape it got."""
    if wave.dim() != 2:
        raise ValueError(f"{owner} expects a waveform batch (B, T), got shape {tuple(wave.shape)}")
    if wave.shape[-1] < min_samples:
        raise ValueError(f"{owner} needs at least {min_samples} samples per utterance, got {wave.shape[-1]}")
    return wave if wave.dtype == torch.float32 else wave.float()


def check_preemphasis(coef: float) -> float:
    """``coef`` as a float, or a ``ValueError`` if it is outside [0, 1] (for a frontend built outside a recipe)."""
    if not 0.0 <= coef <= 1.0:
        raise ValueError(f"preemphasis must be in [0, 1], got {coef}")
    return float(coef)


def check_window(win_length: int, n_fft: int) -> None:
    """A ``ValueError`` if a window of ``win_length`` samples does not fit the FFT size ``n_fft``."""
    if win_length > n_fft:
        raise ValueError(f"win_length {win_length} must not exceed n_fft {n_fft}")


def preemphasise(wave: Tensor, coef: float) -> Tensor:
    """``y[t] = x[t] - coef * x[t-1]``, ``x[-1]`` reflected to ``x[1]`` (voxceleb_trainer's PreEmphasis)."""
    if coef == 0.0:
        return wave
    previous = torch.cat([wave[..., 1:2], wave[..., :-1]], dim=-1)
    return wave - coef * previous


def normalise_over_time(feats: Tensor, mean: bool, var: bool = False, eps: float = 1e-5) -> Tensor:
    """Per-utterance, per-bin normalisation of ``(B, D, frames)`` over frames: subtract the mean, divide by the std.

    With both it equals ``nn.InstanceNorm1d(D)`` (biased variance, no affine); ``var`` alone divides by the std
    about the mean without centring.
    """
    if not (mean or var):
        return feats
    centre = feats.mean(dim=-1, keepdim=True)
    out = feats - centre if mean else feats
    if var:
        variance = (feats - centre).pow(2).mean(dim=-1, keepdim=True)
        out = out / torch.sqrt(variance + eps)
    return out


def full_precision(device: torch.device) -> torch.autocast:
    """A context that turns autocast off on ``device``: features are computed in float32 under mixed precision."""
    return torch.autocast(device_type=device.type, enabled=False)
