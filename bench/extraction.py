"""Embedding-extraction speed: `vvframe.scoring.embed.Extractor` against a loop that embeds one file at a time.

Generates WAV files of whole utterances in a temporary folder, of mixed lengths as a real list has them: half of
them whole seconds from 2 to 5 s (runs of equal length, which the Extractor batches), a quarter of lengths that
occur once (embedded alone either way) and a quarter longer than `max_seconds` = 6 (cut to 6 s, so of equal length
again); 64 files (16 in quick mode). The model is the quickstart's (40 fbanks, ECAPA-TDNN C=256, untrained), in
eval mode. Both sides read the files. Figures: files per second and the real-time factor (seconds of computing
per second of audio embedded, lower is better), the best of two alternating rounds (one in quick mode); the
embeddings of both sides are compared too. On the CPU (and on CUDA when there is one).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch
from common import Row, devices, standalone, timed, versus, write_tone

from vvframe.core import registry
from vvframe.data.audio import read
from vvframe.scoring.embed import Extractor

RATE, MAX_SECONDS = 16000, 6.0
MODEL = {"name": "ecapa_tdnn", "channels": 256, "embed_dim": 128}


def make_files(root: Path, count: int) -> dict[str, int]:
    """Write ``count`` WAV files of mixed lengths under ``root``: their paths relative to it -> samples."""
    rng = np.random.default_rng(0)
    lengths = {}
    for i in range(count):
        kind = i % 4
        if kind in (0, 1):
            seconds = float(2 + i % 4)
        elif kind == 2:
            seconds = 2.0 + 4.0 * rng.random()
        else:
            seconds = MAX_SECONDS + 4.0 * rng.random()
        path = f"spk{i % 10}/{i}.wav"
        lengths[path] = write_tone(root / path, seconds, RATE, rng, 100, 150)
    return lengths


def one_at_a_time(frontend, model, root: Path, paths: list[str], device: str) -> dict[str, torch.Tensor]:
    """The naive extraction: read each file, cut it to ``MAX_SECONDS``, embed it alone."""
    out = {}
    limit = int(MAX_SECONDS * RATE)
    with torch.inference_mode():
        for path in paths:
            wave = read(root / path, RATE)[:limit].to(device)
            out[path] = model(frontend(wave.unsqueeze(0)))[0].float().cpu()
    return out


def run(quick: bool = False) -> list[Row]:
    """Rows: files per second and real-time factor of the Extractor against the loop, on each device."""
    count, rounds = (16, 1) if quick else (64, 2)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        lengths = make_files(root, count)
        paths = list(lengths)
        frames = [min(n, int(MAX_SECONDS * RATE)) for n in lengths.values()]
        audio_seconds = sum(frames) / RATE
        distinct = len(set(frames))
        for device in devices():
            torch.manual_seed(0)
            frontend = registry.build("frontends", {"name": "fbank", "n_mels": 40}, sample_rate=RATE).to(device).eval()
            model = registry.build("models", MODEL, in_dim=frontend.out_dim, sample_rate=RATE).to(device).eval()
            one_at_a_time(frontend, model, root, paths[:8], device)  # warm up

            def extract() -> dict[str, torch.Tensor]:  # a fresh Extractor each round: it keeps what it embedded
                return Extractor(frontend, model, root, RATE, device=device, max_seconds=MAX_SECONDS, progress=False)(
                    paths
                )

            t_batched = t_loop = float("inf")
            for _ in range(rounds):  # alternating, the best of each: on a shared machine, noise only adds time
                batched, seconds = timed(device, extract)
                t_batched = min(t_batched, seconds)
                looped, seconds = timed(device, one_at_a_time, frontend, model, root, paths, device)
                t_loop = min(t_loop, seconds)

            diff = max((batched[p] - looped[p]).abs().max().item() for p in paths)
            what = f"{count} files ({distinct} lengths, {audio_seconds:.0f} s of audio), {device}"
            rows.append(
                Row(
                    f"Extractor, {what}",
                    count / t_batched,
                    "files/s",
                    versus("one file at a time", count / t_loop, "files/s", count / t_batched, True)
                    + f"; max |diff| {diff:.1e}",
                )
            )
            rows.append(
                Row(
                    f"Extractor real-time factor, {what}",
                    t_batched / audio_seconds,
                    "RTF",
                    versus("one file at a time", t_loop / audio_seconds, "", t_batched / audio_seconds, False),
                )
            )
    return rows


if __name__ == "__main__":
    standalone("extraction", run, __doc__)
