"""Training-data throughput: 2-second crops per second, from short and long files, with and without augmentation.

Generates its own audio in a temporary folder: 10-second and 10-minute FLAC files, a MUSAN-like noise folder
and a folder of room impulse responses. Crops go through vvframe's CropDataset (which seeks and decodes only the
crop) and AugmentingCollate in a DataLoader, 16 batches of 32 (4 in quick mode), with 0 and 2 workers (worker
start-up included). Without augmentation the figure is compared with reading whole files and cropping in memory
(what a loader that decodes whole files does); with 2 workers, with the same loader in the main process.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from common import Row, standalone, versus, write_tone

from vvframe.core import registry
from vvframe.data.audio import read
from vvframe.data.dataset import AugmentingCollate, CropDataset
from vvframe.data.lists import Utterance

RATE = 16000
CROP_SECONDS = 2.0
BATCH = 32


def make_corpus(root: Path) -> dict[str, list[Utterance]]:
    rng = np.random.default_rng(0)

    def write(path: Path, seconds: float) -> None:
        write_tone(path, seconds, RATE, rng, 120, 80)

    sets = {
        "10 s": [Utterance(f"spk{i % 8}", f"short/spk{i % 8}/{i}.flac") for i in range(16)],
        "10 min": [Utterance(f"spk{i}", f"long/spk{i}/{i}.flac") for i in range(4)],
    }
    for label, seconds in (("10 s", 10.0), ("10 min", 600.0)):
        for u in sets[label]:
            write(root / u.path, seconds)
    for category in ("noise", "music", "speech"):
        for i in range(3):
            write(root / "musan" / category / f"{i}.wav", 8.0)
    (root / "rirs").mkdir(parents=True, exist_ok=True)
    for i in range(3):
        decay = np.exp(-np.arange(int(0.4 * RATE)) / (0.05 * RATE)) * rng.standard_normal(int(0.4 * RATE))
        decay[0] = 1.0
        sf.write(str(root / "rirs" / f"{i}.wav"), decay.astype(np.float32), RATE, subtype="FLOAT")
    return sets


def crops_per_second(dataset: CropDataset, augmentors: list, workers: int, batches: int) -> float:
    """Crops per second through a DataLoader whose workers read and augment (worker start-up included)."""
    indices = torch.randint(0, len(dataset), (batches * BATCH,), generator=torch.Generator().manual_seed(0))
    collate = AugmentingCollate(augmentors, num_speakers=len(dataset.speakers))
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=BATCH, sampler=indices.tolist(), num_workers=workers, collate_fn=collate
    )
    start = time.perf_counter()
    for _ in loader:
        pass
    return batches * BATCH / (time.perf_counter() - start)


def whole_file_crops_per_second(root: Path, utterances: list[Utterance], count: int) -> float:
    """Crops per second when each crop comes from decoding its whole file (no workers, no augmentation)."""
    start = time.perf_counter()
    for i in range(count):
        wave = read(root / utterances[i % len(utterances)].path, RATE)
        offset = (i * 7919) % (len(wave) - int(CROP_SECONDS * RATE))
        _ = wave[offset : offset + int(CROP_SECONDS * RATE)]
    return count / (time.perf_counter() - start)


def run(quick: bool = False) -> list[Row]:
    """Rows: crops per second for each kind of file and augmentation, with 0 and 2 loader workers."""
    batches = 4 if quick else 16
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a loader worker
    try:
        with tempfile.TemporaryDirectory() as tmp:
            return _measure(Path(tmp), batches)
    finally:
        torch.set_num_threads(threads)


def _measure(root: Path, batches: int) -> list[Row]:
    sets = make_corpus(root)
    augmentations = {
        "no augmentation": [],
        "noise": [{"name": "noise", "root": str(root / "musan"), "prob": 1.0}],
        "reverb": [{"name": "reverb", "root": str(root / "rirs"), "prob": 1.0}],
        "speed + (reverb | noise)": [
            {"name": "speed", "prob": 1.0},
            {
                "name": "choice",
                "options": [
                    {"name": "reverb", "root": str(root / "rirs")},
                    {"name": "noise", "root": str(root / "musan")},
                ],
            },
        ],
    }
    rows = []
    for label, utterances in sets.items():
        dataset = CropDataset(utterances, root, RATE, CROP_SECONDS)
        for name, entries in augmentations.items():
            augmentors = [registry.build("augmentors", e, sample_rate=RATE) for e in entries]
            alone = crops_per_second(dataset, augmentors, 0, batches)
            if not entries:
                whole = whole_file_crops_per_second(root, utterances, 2 * batches)
                rows.append(
                    Row(
                        f"2 s crops of {label} FLACs, {name}, 0 workers",
                        alone,
                        "crops/s",
                        versus("whole-file decode, then crop", whole, "crops/s", alone, True),
                    )
                )
            workers = crops_per_second(dataset, augmentors, 2, batches)
            rows.append(
                Row(
                    f"2 s crops of {label} FLACs, {name}, 2 workers",
                    workers,
                    "crops/s",
                    versus("0 workers", alone, "crops/s", workers, True),
                )
            )
    return rows


if __name__ == "__main__":
    standalone("loader", run, __doc__)
