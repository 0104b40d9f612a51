"""``melspec``: voxceleb_trainer's front end: pre-emphasis, mel spectrogram, log, instance normalisation."""

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


class MelSpectrogram(nn.Module):
    """voxceleb_trainer's log mel spectrogram (pre-emphasis 0.97, Hamming window, log(x + 1e-6), instance norm)."""

    def __init__(
        self,
        sample_rate: int,
        n_mels: Bins = 40,
        n_fft: Samples = 512,
        win_length: Samples = 400,
        hop_length: Samples = 160,
        f_min: Hertz = 0.0,
        f_max: float | None = None,
        preemphasis: Coefficient = 0.97,
        mean_norm: bool = True,
        var_norm: bool = True,
    ):
        """``(B, T)`` waveforms → ``(B, n_mels, T // hop_length + 1)`` log mel power spectra.

        ``torchaudio.transforms.MelSpectrogram`` (centred frames, reflect padding, HTK mel scale, periodic Hamming
        window) after voxceleb_trainer's pre-emphasis; window and hop are in samples (400 and 160 are 25 ms and
        10 ms at 16 kHz). ``mean_norm`` and ``var_norm`` normalise each bin of each utterance over time: both on
        (the default) is voxceleb_trainer's ``InstanceNorm1d``.
        """
        super().__init__()
        check_window(win_length, n_fft)
        self.sample_rate, self.out_dim, self.hop_length = int(sample_rate), int(n_mels), int(hop_length)
        self.preemphasis, self.mean_norm, self.var_norm = check_preemphasis(preemphasis), mean_norm, var_norm
        self.spectrogram = torchaudio.transforms.MelSpectrogram(
            sample_rate=sample_rate,
            n_fft=n_fft,
            win_length=win_length,
            hop_length=hop_length,
            f_min=f_min,
            f_max=f_max,
            n_mels=n_mels,
            window_fn=torch.hamming_window,
        )

    def forward(self, wave: Tensor) -> Tensor:
        """``(B, T)`` waveforms → ``(B, n_mels, frames)`` features (float32, autocast off)."""
        wave = check_waveform(wave, "melspec", 2)
        with full_precision(wave.device):
            feats = (self.spectrogram(preemphasise(wave, self.preemphasis)) + 1e-6).log()
            return normalise_over_time(feats, mean=self.mean_norm, var=self.var_norm)
