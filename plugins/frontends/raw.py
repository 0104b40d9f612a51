"""``raw``: the waveform itself, for models that read samples (RawNet, SincNet-style front layers)."""

from __future__ import annotations

from torch import Tensor, nn

from .common import Coefficient, check_preemphasis, check_waveform, preemphasise


class Raw(nn.Module):
    """The waveform as features: ``(B, T)`` → ``(B, 1, T)``, optionally pre-emphasised and with its mean removed."""

    def __init__(self, sample_rate: int, preemphasis: Coefficient = 0.0, mean_norm: bool = False):
        """``preemphasis``: coefficient of ``y[t] = x[t] - c x[t-1]`` (0 is off, 0.97 the usual choice);
        ``mean_norm``: subtract each utterance's mean (its DC offset)."""
        super().__init__()
        self.sample_rate, self.preemphasis, self.mean_norm = int(sample_rate), check_preemphasis(preemphasis), mean_norm
        self.out_dim = 1

    def forward(self, wave: Tensor) -> Tensor:
        """``(B, T)`` waveforms → ``(B, 1, T)``."""
        wave = preemphasise(check_waveform(wave, "raw", 2), self.preemphasis)
        if self.mean_norm:
            wave = wave - wave.mean(dim=-1, keepdim=True)
        return wave.unsqueeze(1)
