"""``mfcc``: mel-frequency cepstral coefficients (torchaudio's MFCC on log mel energies)."""

from __future__ import annotations

import torch
import torchaudio
from torch import Tensor, nn

from .common import (
    Bins,
    Coefficient,
    Hertz,
    Samples,
    check_preemphasis,
    check_waveform,
    check_window,
    full_precision,
    normalise_over_time,
    preemphasise,
)


class MFCC(nn.Module):
    """MFCCs: pre-emphasis, log mel energies (Hamming window), orthonormal DCT-II, per-utterance mean normalisation."""

    def __init__(
        self,
        sample_rate: int,
        n_mfcc: Bins = 30,
        n_mels: Bins = 80,
        n_fft: Samples = 512,
        win_length: Samples = 400,
        hop_length: Samples = 160,
        f_min: Hertz = 20.0,
        f_max: float | None = None,
        preemphasis: Coefficient = 0.97,
        mean_norm: bool = True,
    ):
        """``(B, T)`` waveforms → ``(B, n_mfcc, T // hop_length + 1)`` cepstra.

        ``torchaudio.transforms.MFCC`` with ``log_mels=True`` (log(mel + 1e-6), computed per utterance; the
        decibel scale with ``top_db`` would clip against the loudest utterance of the batch), centred frames;
        window and hop are in samples (25 ms and 10 ms at 16 kHz). ``mean_norm`` subtracts each utterance's
        mean over time per coefficient (cepstral mean normalisation).
        """
        super().__init__()
        if n_mfcc > n_mels:
            raise ValueError(f"n_mfcc {n_mfcc} must not exceed n_mels {n_mels}")
        check_window(win_length, n_fft)
        self.sample_rate, self.out_dim, self.hop_length = int(sample_rate), int(n_mfcc), int(hop_length)
        self.preemphasis, self.mean_norm = check_preemphasis(preemphasis), mean_norm
        self.mfcc = torchaudio.transforms.MFCC(
            sample_rate=sample_rate,
            n_mfcc=n_mfcc,
            log_mels=True,
            melkwargs={
                "n_fft": n_fft,
                "win_length": win_length,
                "hop_length": hop_length,
                "f_min": f_min,
                "f_max": f_max,
                "n_mels": n_mels,
                "window_fn": torch.hamming_window,
            },
        )

    def forward(self, wave: Tensor) -> Tensor:
        """``(B, T)`` waveforms → ``(B, n_mfcc, frames)`` cepstra (float32, autocast off)."""
        wave = check_waveform(wave, "mfcc", 2)
        with full_precision(wave.device):
            return normalise_over_time(self.mfcc(preemphasise(wave, self.preemphasis)), mean=self.mean_norm)
