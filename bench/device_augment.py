"""Does the GPU wait for data? The train stage with VoxCeleb's augmentation in the loader workers against on the device.

A VoxCeleb-shaped synthetic run, generated in a temporary folder: 2-second crops of 3-second WAV utterances
(256 speakers; the list repeats the files to fill the epoch, so the page cache serves them), a MUSAN-shaped folder
(``noise/``, ``music/``, ``speech/`` of generated audio) and an RIRS_NOISES-shaped one (``simulated_rirs/<size>room/
RoomNNN/*.wav``, decaying noise with a direct path). The recipe is ``recipes/base/voxceleb_augment.yaml``'s: speed
perturbation (0.9, 1.0, 1.1) as new speakers, then reverberation or MUSAN noise with probability 0.6; ResNet34
(80 fbanks, 256-d), AAM softmax, SGD, batch 128, ``trainer.precision: auto``. It runs the real train stage twice in
this process, once with every augmentor in the loader workers (``on: workers``) and once with every augmentor on
the device (``on: device``: the workers only read crops, noise crops and impulse responses), two epochs each, and
reports the second epoch's utterances/s and ``data_wait_fraction`` as the train stage logs them (the first epoch
pays for cuDNN's autotuning and warm-up; the loader's workers start again each epoch, and that start is counted).

Needs a CUDA device for its real figures: ``python bench/device_augment.py --device cuda`` (``--workers N``,
``--batches N`` per epoch). Without one (and with ``--quick``) it runs a small form on the CPU, batch 8 and a tiny
ResNet34 (base width 4, 40 fbanks), which only shows that both paths run: on the CPU the "device" is the CPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import yaml
from common import Row, load_average, machine, table, versus, write_tone

RATE = 16000
CROP_SECONDS = 2.0
TARGET_WAIT = 0.05  # issue 15: the GPU waits for data less than 5 % of the time


@dataclass(frozen=True)
class Size:
    """How big a run is."""

    batch: int
    batches: int  # per epoch
    speakers: int
    files_per_speaker: int
    workers: int
    model: dict
    n_mels: int
    noise_files: int
    long_seconds: float  # music and speech files of the MUSAN-shaped folder
    rirs_per_room: int


def full_size(workers: int, batches: int) -> Size:
    """The VoxCeleb-shaped run for a CUDA device."""
    return Size(128, batches, 256, 8, workers, {"name": "resnet34", "embed_dim": 256}, 80, 24, 30.0, 4)


def small_size(workers: int) -> Size:
    """The small form: batch 8, a tiny ResNet34; it shows both paths run (on the CPU)."""
    model = {"name": "resnet34", "embed_dim": 32, "base_width": 4}
    return Size(8, 4, 8, 3, workers, model, 40, 3, 6.0, 1)


# --- generated corpus --------------------------------------------------------------------------------------


def make_corpus(root: Path, size: Size) -> Path:
    """Utterances under ``root/audio`` and their list ``root/train.txt``, one line per utterance of the epoch."""
    rng = np.random.default_rng(0)
    files = []
    for s in range(size.speakers):
        for i in range(size.files_per_speaker):
            path = Path("audio") / f"id{s:05d}" / f"{i:05d}.wav"
            write_tone(root / path, 3.0, RATE, rng, 90 + 2 * (s % 100), 60)
            files.append((f"id{s:05d}", path.as_posix()))
    lines = [f"{files[i % len(files)][0]} {files[i % len(files)][1]}" for i in range(size.batch * size.batches)]
    (root / "train.txt").write_text("\n".join(lines) + "\n")
    return root / "train.txt"


def make_musan(root: Path, size: Size) -> Path:
    """A MUSAN-shaped folder: ``noise/`` (coloured noise), ``music/`` (chords), ``speech/`` (voiced tones)."""
    rng = np.random.default_rng(1)
    for i in range(size.noise_files):
        n = int(rng.uniform(3, 12) * RATE)
        spectrum = np.fft.rfft(rng.standard_normal(n)) / np.maximum(np.fft.rfftfreq(n, 1 / RATE), 50) ** rng.uniform(
            0, 1
        )
        noise = np.fft.irfft(spectrum, n)
        noise = 0.1 * noise / np.abs(noise).max()
        path = root / "noise" / "free-sound" / f"noise-free-sound-{i:04d}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, noise.astype(np.float32), RATE, subtype="PCM_16")
    for i in range(max(1, size.noise_files // 3)):
        n = int(size.long_seconds * RATE)
        t = np.arange(n) / RATE
        chord = sum(np.sin(2 * np.pi * f * t) for f in rng.uniform(110, 880, 3)) * (0.6 + 0.4 * np.sin(t))
        path = root / "music" / "fma" / f"music-fma-{i:04d}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, (0.05 * chord).astype(np.float32), RATE, subtype="PCM_16")
        write_tone(
            root / "speech" / "librivox" / f"speech-librivox-{i:04d}.wav", size.long_seconds, RATE, rng, 100, 150
        )
    return root


def make_rirs(root: Path, size: Size) -> Path:
    """An RIRS_NOISES-shaped folder: ``simulated_rirs/{small,medium,large}room/RoomNNN/RoomNNN-0000K.wav``."""
    rng = np.random.default_rng(2)
    for room_size, rt60 in (("small", 0.25), ("medium", 0.5), ("large", 0.9)):
        for room in range(2):
            name = f"Room{room + 1:03d}"
            folder = root / "simulated_rirs" / f"{room_size}room" / name
            folder.mkdir(parents=True, exist_ok=True)
            for k in range(size.rirs_per_room):
                n = int(min(1.0, 1.2 * rt60) * RATE)
                delay = int(rng.uniform(0.002, 0.02) * RATE)
                rir = rng.standard_normal(n) * np.exp(-6.9 * np.arange(n) / (rt60 * RATE))
                rir[:delay] = 0.0
                rir[delay] = 4 * np.abs(rir).max()
                sf.write(folder / f"{name}-{k + 1:05d}.wav", (0.5 * rir / np.abs(rir).max()).astype(np.float32), RATE)
    return root


# --- one train stage ---------------------------------------------------------------------------------------


def augment(musan: Path, rirs: Path, on: str) -> list[dict]:
    """``recipes/base/voxceleb_augment.yaml``'s augmentation, every augmentor placed ``on``."""
    return [
        {"name": "speed", "factors": [0.9, 1.0, 1.1], "prob": 1.0, "new_speakers": True, "on": on},
        {
            "name": "choice",
            "prob": 0.6,
            "options": [
                {"name": "reverb", "root": str(rirs), "prob": 1.0, "on": on},
                {"name": "noise", "root": str(musan), "prob": 1.0, "on": on},
            ],
        },
    ]


class EpochLines(logging.Handler):
    """Collects the train stage's end-of-epoch figures: ``(utterances/s, data_wait_fraction)`` per epoch."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.epochs: list[tuple[float, float]] = []

    def emit(self, record: logging.LogRecord) -> None:
        if str(record.msg).startswith("epoch %d/%d: loss") and record.args:
            self.epochs.append((float(record.args[3]), float(record.args[4]) / 100))


def train(
    root: Path, train_list: Path, musan: Path, rirs: Path, size: Size, device: str, on: str
) -> tuple[float, float]:
    """The second epoch's ``(utterances/s, data_wait_fraction)`` of the train stage, augmentation ``on``."""
    from vvframe.core import recipe as recipes
    from vvframe.core.run import RunContext, execute

    recipe = {
        "name": f"device_augment_{on}",
        "seed": 1,
        "stages": ["train"],
        "data": {"root": str(root), "train_list": str(train_list), "crop_seconds": CROP_SECONDS},
        "frontend": {"name": "fbank", "n_mels": size.n_mels},
        "model": size.model,
        "loss": {"name": "aamsoftmax", "margin": 0.2, "scale": 32.0},
        "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 1.0e-4},
        "augment": augment(musan, rirs, on),
        "trainer": {
            "epochs": 2,
            "batch_size": size.batch,
            "workers": size.workers,
            "device": device,
            "precision": "auto" if device.startswith("cuda") else "fp32",
            "keep": 1,
        },
    }
    run_dir = root / "runs" / on
    run_dir.mkdir(parents=True)
    path = run_dir / "input.yaml"
    path.write_text(yaml.safe_dump(recipe))
    lines = EpochLines()
    logger = logging.getLogger("vvframe_plugins.stages.trainlog")
    level = logger.level
    logger.addHandler(lines)
    logger.setLevel(logging.INFO)
    try:
        ctx = RunContext(recipes.check(path, []), run_dir)
        try:
            execute(ctx)
        finally:
            ctx.close()
    finally:
        logger.removeHandler(lines)
        logger.setLevel(level)
    if len(lines.epochs) != 2:
        raise RuntimeError(f"expected the train stage's two epoch lines, got {lines.epochs}")
    return lines.epochs[1]


def _measure(size: Size, device: str) -> dict[str, tuple[float, float]]:
    """``{"workers": (utterances/s, wait), "device": (...)}`` from two train stages on a generated corpus."""
    figures = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        began = time.perf_counter()
        train_list = make_corpus(root, size)
        musan, rirs = make_musan(root / "musan", size), make_rirs(root / "RIRS_NOISES", size)
        print(f"device_augment: corpus generated in {time.perf_counter() - began:.0f} s", file=sys.stderr)
        for on in ("workers", "device"):
            began = time.perf_counter()
            figures[on] = train(root, train_list, musan, rirs, size, device, on)
            print(
                f"device_augment: augmentation on {on}: {time.perf_counter() - began:.0f} s"
                f" (load average {load_average()})",
                file=sys.stderr,
            )
    return figures


def run(quick: bool = False, device: str | None = None, workers: int | None = None, batches: int = 200) -> list[Row]:
    """Rows: utterances/s and the data wait fraction with augmentation in the workers and on the device."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    small = quick or not device.startswith("cuda")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    workers = workers if workers is not None else (2 if small else min(8, max(1, cores - 2)))
    size = small_size(workers) if small else full_size(workers, batches)
    what = f"{device}, batch {size.batch}" + (", small form" if small else "")
    threads = torch.get_num_threads()
    if not device.startswith("cuda"):
        torch.set_num_threads(1)  # the network beside the loader workers on the CPU, without oversubscription
    try:
        figures = _measure(size, device)
    finally:
        torch.set_num_threads(threads)
    (w_speed, w_wait), (d_speed, d_wait) = figures["workers"], figures["device"]
    target = f"target < {100 * TARGET_WAIT:.0f} %"
    return [
        Row(f"train stage, augmentation in the workers, {what}", w_speed, "utt/s", f"{workers} loader workers"),
        Row(
            f"train stage, augmentation on the device, {what}",
            d_speed,
            "utt/s",
            versus("in the workers", w_speed, "utt/s", d_speed, True),
        ),
        Row(f"data_wait_fraction, augmentation in the workers, {what}", 100 * w_wait, "%", target),
        Row(
            f"data_wait_fraction, augmentation on the device, {what}",
            100 * d_wait,
            "%",
            f"in the workers: {100 * w_wait:.1f} %; {target}",
        ),
    ]


def main() -> None:
    """The command line: ``--device``, ``--workers``, ``--batches``, ``--quick``, ``--markdown``."""
    parser = argparse.ArgumentParser(prog="bench/device_augment.py", description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--device", default=None, help="cuda, cuda:N or cpu (default: cuda when there is one)")
    parser.add_argument("--workers", type=int, default=None, help="loader workers (default: min(8, cores - 2))")
    parser.add_argument("--batches", type=int, default=200, help="batches per epoch in the full form (default 200)")
    parser.add_argument("--quick", action="store_true", help="the small form (batch 8, tiny model), on any device")
    parser.add_argument("--markdown", action="store_true", help="print the table as markdown")
    args = parser.parse_args()
    print(f"machine: {machine()}", flush=True)
    start = time.perf_counter()
    rows = run(args.quick, args.device, args.workers, args.batches)
    rows = [dataclasses.replace(r, benchmark="device_augment") for r in rows]
    print(table(rows, args.markdown), flush=True)
    print(f"device_augment: {time.perf_counter() - start:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
