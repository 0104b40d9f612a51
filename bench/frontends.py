"""Feature extraction speed: vvframe's batched frontends against torchaudio's per-utterance Kaldi fbank.

Run by hand (`make bench`); prints a table: milliseconds per batch of 64 two-second utterances, the
median of several runs, in eval mode (no dither), on the CPU (and on CUDA when there is one).
"""
from __future__ import annotations

import statistics
import time

import torch
import torchaudio

from vvframe import registry

BATCH, SECONDS, RATE, REPEAT = 64, 2.0, 16000, 7


def timed(fn, *args) -> float:
    fn(*args)  # warm up
    times = []
    for _ in range(REPEAT):
        if args[0].is_cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn(*args)
        if args[0].is_cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def kaldi_loop(wave: torch.Tensor) -> torch.Tensor:
    return torch.stack([torchaudio.compliance.kaldi.fbank(w.unsqueeze(0) * 32768, num_mel_bins=80, dither=0.0,
                                                          window_type="hamming").T for w in wave])


def main() -> None:
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print(f"{'frontend':<34} {'device':<6} {'ms/batch':>9}   (batch of {BATCH} x {SECONDS:g} s,"
          f" {torch.get_num_threads()} threads)")
    for device in devices:
        wave = (torch.rand(BATCH, int(SECONDS * RATE), device=device) * 2 - 1) * 0.5
        with torch.no_grad():
            print(f"{'torchaudio kaldi.fbank, a loop':<34} {device:<6} {timed(kaldi_loop, wave):>9.1f}")
            for name in ("fbank", "melspec", "mfcc"):
                frontend = registry.build("frontends", name, sample_rate=RATE).to(device).eval()
                print(f"{'vvframe ' + name + ', batched':<34} {device:<6} {timed(frontend, wave):>9.1f}")


if __name__ == "__main__":
    main()
