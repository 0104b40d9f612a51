"""Training-data throughput: 2-second crops per second, from short and long files, with and without augmentation.

Run by hand (`make bench`). Generates its own audio in a temporary folder: 10-second and 10-minute FLAC
files, a MUSAN-like noise folder and a folder of room impulse responses. Prints a table.
Also times reading whole files and cropping in memory (what a loader that decodes whole files does).
"""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from vvframe import registry
from vvframe.audio import read
from vvframe.dataset import AugmentingCollate, CropDataset
from vvframe.lists import Utterance

RATE = 16000
CROP_SECONDS = 2.0
BATCH = 32
BATCHES = 16


def make_corpus(root: Path) -> dict[str, list[Utterance]]:
    rng = np.random.default_rng(0)

    def write(path: Path, seconds: float) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        n = int(seconds * RATE)
        t = np.arange(n) / RATE
        x = 0.2 * np.sin(2 * np.pi * (120 + 80 * rng.random()) * t) + 0.05 * rng.standard_normal(n)
        sf.write(str(path), x.astype(np.float32), RATE, subtype="PCM_16")

    sets = {"short (10 s)": [], "long (10 min)": []}
    for i in range(16):
        write(root / "short" / f"spk{i % 8}" / f"{i}.flac", 10.0)
        sets["short (10 s)"].append(Utterance(f"spk{i % 8}", f"short/spk{i % 8}/{i}.flac"))
    for i in range(4):
        write(root / "long" / f"spk{i}" / f"{i}.flac", 600.0)
        sets["long (10 min)"].append(Utterance(f"spk{i}", f"long/spk{i}/{i}.flac"))
    for category in ("noise", "music", "speech"):
        for i in range(3):
            write(root / "musan" / category / f"{i}.wav", 8.0)
    for i in range(3):
        decay = np.exp(-np.arange(int(0.4 * RATE)) / (0.05 * RATE)) * rng.standard_normal(int(0.4 * RATE))
        decay[0] = 1.0
        (root / "rirs").mkdir(parents=True, exist_ok=True)
        sf.write(str(root / "rirs" / f"{i}.wav"), decay.astype(np.float32), RATE, subtype="FLOAT")
    return sets


def crops_per_second(dataset: CropDataset, augmentors: list, workers: int) -> float:
    """Crops per second through a DataLoader whose workers read and augment (worker start-up included)."""
    indices = torch.randint(0, len(dataset), (BATCHES * BATCH,), generator=torch.Generator().manual_seed(0))
    collate = AugmentingCollate(augmentors, num_speakers=len(dataset.speakers))
    loader = torch.utils.data.DataLoader(dataset, batch_size=BATCH, sampler=indices.tolist(), num_workers=workers,
                                         collate_fn=collate)
    start = time.perf_counter()
    for _ in loader:
        pass
    return BATCHES * BATCH / (time.perf_counter() - start)


def whole_file_crops_per_second(root: Path, utterances: list[Utterance], count: int = 32) -> float:
    start = time.perf_counter()
    for i in range(count):
        wave = read(root / utterances[i % len(utterances)].path, RATE)
        offset = (i * 7919) % (len(wave) - int(CROP_SECONDS * RATE))
        _ = wave[offset:offset + int(CROP_SECONDS * RATE)]
    return count / (time.perf_counter() - start)


def main() -> None:
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        sets = make_corpus(root)
        augmentations = {
            "none": [],
            "noise": [{"name": "noise", "root": str(root / "musan"), "prob": 1.0}],
            "reverb": [{"name": "reverb", "root": str(root / "rirs"), "prob": 1.0}],
            "speed+reverb|noise": [{"name": "speed", "prob": 1.0},
                                   {"name": "choice", "options": [{"name": "reverb", "root": str(root / "rirs")},
                                                                  {"name": "noise", "root": str(root / "musan")}]}],
        }
        print(f"{'files':<15} {'augmentation':<20} {'workers':>7} {'crops/s':>9}   "
              f"(2 s crops, batches of {BATCH}, {os.cpu_count()} cpus)")
        for label, utterances in sets.items():
            dataset = CropDataset(utterances, root, RATE, CROP_SECONDS)
            for name, entries in augmentations.items():
                augmentors = [registry.build("augmentors", e, sample_rate=RATE) for e in entries]
                for workers in (0, 2):
                    rate = crops_per_second(dataset, augmentors, workers)
                    print(f"{label:<15} {name:<20} {workers:>7} {rate:>9.1f}")
            print(f"{label:<15} {'(whole-file read)':<20} {0:>7} {whole_file_crops_per_second(root, utterances):>9.1f}")


if __name__ == "__main__":
    main()
