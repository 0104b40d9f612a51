"""Reverberation: convolution with a room impulse response from a folder (e.g. RIRS_NOISES simulated_rirs)."""

from __future__ import annotations

import logging

import torch
from torchaudio.functional import fftconvolve

from vvframe.data.audio import info, read

from .common import (
    Place,
    Probability,
    audio_files,
    check_batch,
    check_place,
    check_prob,
    chosen_rows,
    fast_fft_size,
    randint,
)

log = logging.getLogger(__name__)


def reverberate(wave: torch.Tensor, rir: torch.Tensor) -> torch.Tensor:
    """``wave`` convolved with the energy-normalised ``rir``, aligned to its direct path, same length as ``wave``.

    ``rir`` is divided by its L2 norm; output sample ``t`` corresponds to input sample ``t`` (the full
    convolution is shifted by the index of the RIR's largest absolute value). Leading dimensions broadcast.
    """
    dtype = wave.dtype
    rir = rir.to(wave.device, torch.float32)
    rir = rir / rir.pow(2).sum(-1, keepdim=True).sqrt().clamp_min(1e-20)
    wave = wave.float()
    while rir.dim() < wave.dim():  # fftconvolve broadcasts leading dimensions only between equal ranks
        rir = rir.unsqueeze(0)
    while wave.dim() < rir.dim():
        wave = wave.unsqueeze(0)
    full = fftconvolve(wave, rir)
    peak = rir.abs().argmax(-1, keepdim=True)  # (..., 1)
    frames = wave.shape[-1]
    index = peak + torch.arange(frames, device=wave.device)
    index = index.expand(*full.shape[:-1], frames)
    return full.gather(-1, index).to(dtype)


class Reverb:
    """Reverberation with a randomly chosen, energy-normalised room impulse response aligned to its direct path."""

    on = "waveform"
    label_multiplier = 1

    def __init__(self, sample_rate: int, root: str, prob: Probability = 0.6, on: Place = "workers"):
        self.sample_rate = int(sample_rate)
        self.root = str(root)
        self.prob = check_prob(prob, "reverb")
        self.runs_on = check_place(on, "reverb")
        self.files = audio_files(self.root, "reverb: root (room impulse responses)")

    def plan(self, x: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """``{"rows": (n,), "rirs": (n, L)}``: the chosen utterances and their RIRs, read and zero-padded to one
        length ``L`` (at most the batch's length + 1 s) that makes a fast FFT size."""
        check_batch(x, self.on, "reverb")
        rows = chosen_rows(x.shape[0], self.prob, generator).nonzero().flatten()
        if not len(rows):
            return {"rows": rows, "rirs": torch.zeros(0, 1)}
        picks = randint(0, len(self.files) - 1, len(rows), generator).tolist()
        frames = x.shape[1]
        rirs = [self._rir(self.files[i], frames) for i in picks]
        longest = fast_fft_size(frames + max(len(r) for r in rirs) - 1) - frames + 1  # an FFT size with small factors
        return {"rows": rows, "rirs": torch.stack([torch.nn.functional.pad(r, (0, longest - len(r))) for r in rirs])}

    def apply(self, x: torch.Tensor, plan: dict[str, torch.Tensor]) -> torch.Tensor:
        """``x`` with each planned row reverberated by its RIR (FFT convolution on ``x``'s device)."""
        rows = plan["rows"].to(x.device)
        if not len(rows):
            return x
        out = x.clone()
        out[rows] = reverberate(x[rows], plan["rirs"].to(x.device))
        return out

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """A random share (``prob``) of the ``(B, T)`` batch reverberated, each utterance with its own RIR."""
        return self.apply(x, self.plan(x, generator))

    def _rir(self, path: str, frames: int) -> torch.Tensor:
        """The first ``frames`` + 1 s of an RIR at the recipe's rate (a longer tail cannot reach the kept output).

        Strictly, taps up to ``frames`` + the direct path's index reach it; direct paths come well within 1 s.
        """
        meta = info(path)
        total = meta.frames * self.sample_rate // meta.sample_rate
        return read(path, self.sample_rate, 0, max(1, min(total, frames + self.sample_rate)))

    def __repr__(self) -> str:
        return f"Reverb(root={self.root!r}, {len(self.files)} files, prob={self.prob}, on={self.runs_on!r})"
