"""Feature extraction speed: vvframe's batched frontends against torchaudio's per-utterance Kaldi fbank.

Milliseconds per batch of 64 two-second utterances (16 in quick mode), the median of several runs, in eval mode
(no dither), on the CPU (and on CUDA when there is one). vvframe's fbank gives the same features as the loop
over `torchaudio.compliance.kaldi.fbank`; melspec and mfcc are other features, timed against the same loop.
"""

from __future__ import annotations

import torch
import torchaudio
from common import Row, devices, median_seconds, standalone, versus

from vvframe.core import registry

SECONDS, RATE = 2.0, 16000


def kaldi_loop(wave: torch.Tensor) -> torch.Tensor:
    """80 Kaldi fbanks of each utterance of ``(B, T)`` in [-1, 1], one call per utterance: ``(B, 80, frames)``."""
    return torch.stack(
        [
            torchaudio.compliance.kaldi.fbank(
                w.unsqueeze(0) * 32768, num_mel_bins=80, dither=0.0, window_type="hamming"
            ).T
            for w in wave
        ]
    )


def run(quick: bool = False) -> list[Row]:
    """Rows: ms per batch of each vvframe frontend, against the torchaudio loop, on each device."""
    batch, repeat = (16, 3) if quick else (64, 7)
    rows = []
    for device in devices():
        wave = (torch.rand(batch, int(SECONDS * RATE), device=device) * 2 - 1) * 0.5
        with torch.no_grad():
            loop = 1000 * median_seconds(lambda: kaldi_loop(wave), repeat, device=device)
            for name in ("fbank", "melspec", "mfcc"):
                frontend = registry.build("frontends", name, sample_rate=RATE).to(device).eval()
                ms = 1000 * median_seconds(lambda: frontend(wave), repeat, device=device)
                rows.append(
                    Row(
                        f"{name} of {batch} x {SECONDS:g} s, batched, {device}",
                        ms,
                        "ms/batch",
                        versus("torchaudio kaldi.fbank, one call per utterance", loop, "ms", ms, False),
                    )
                )
    return rows


if __name__ == "__main__":
    standalone("frontends", run, __doc__)
