"""Training data: random fixed-length crops of a list's utterances, with labels; broken files skipped and counted.

A file that cannot be used (missing, corrupt, empty, silent or NaN/inf in the crop read, shorter than
``audio.MIN_SECONDS``: see :mod:`vvframe.data.audio`) is logged with the count so far and replaced by another utterance of
the same speaker, so one bad file does not end a week-long run; more than ``max_skipped`` of them stops it
with the list, since then something is wrong with the data rather than with a file.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import torch

from vvframe.core.errors import VvframeError
from vvframe.data.audio import AudioError, read, utterance_info
from vvframe.data.lists import Utterance, speaker_labels

log = logging.getLogger(__name__)


class TooManySkipped(VvframeError, RuntimeError):
    """More unreadable files than a run allows; the message lists them."""


class CropDataset(torch.utils.data.Dataset):
    """``dataset[i]`` is ``(crop (T,), speaker label, i)``: a random crop of utterance ``i``, repeated if short.

    Crop positions come from ``(seed, epoch, i)``, so a resumed epoch reads the same crops.
    """

    def __init__(
        self,
        utterances: Sequence[Utterance],
        root: str | Path,
        sample_rate: int,
        crop_seconds: float,
        max_skipped: int = 100,
        seed: int = 0,
    ):
        self.utterances = list(utterances)
        self.root = Path(root)
        self.sample_rate = sample_rate
        self.frames = int(round(crop_seconds * sample_rate))
        self.labels, self.speakers = speaker_labels(self.utterances)
        self.max_skipped = max_skipped
        self.seed = seed
        self.epoch = 0
        self.skipped: list[str] = []  # "<path>: <reason>", each file once
        self._seen: set[str] = set()
        self._by_label: dict[int, list[int]] = defaultdict(list)
        for i, label in enumerate(self.labels):
            self._by_label[label].append(i)

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose crops ``__getitem__`` returns."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.utterances)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        label = self.labels[index]
        same = self._by_label[label]
        start = same.index(index)
        for attempt in range(len(same)):  # the utterance itself, then the speaker's others in turn
            i = same[(start + attempt) % len(same)]
            try:
                return self._crop(i), label, index
            except AudioError as exc:
                self._skip(exc)
        raise TooManySkipped(
            f"no readable file of speaker {self.speakers[label]!r}; skipped so far:\n  " + "\n  ".join(self.skipped)
        )

    def _crop(self, index: int) -> torch.Tensor:
        path = self.root / self.utterances[index].path
        meta = utterance_info(path)
        total = int(meta.frames * self.sample_rate / meta.sample_rate)
        gen = torch.Generator().manual_seed(hash((self.seed, self.epoch, index)) & 0x7FFF_FFFF_FFFF_FFFF)
        start = int(torch.randint(0, total - self.frames + 1, (1,), generator=gen)) if total > self.frames else 0
        return read(path, self.sample_rate, start, self.frames)

    def _skip(self, exc: AudioError) -> None:
        if exc.path in self._seen:  # counted once: a bad file met again in a later epoch is no new problem
            return
        self._seen.add(exc.path)
        self.skipped.append(f"{exc.path}: {exc.reason}")
        log.warning("skipped %s (%d so far, at most %d allowed)", exc, len(self.skipped), self.max_skipped)
        if len(self.skipped) > self.max_skipped:
            raise TooManySkipped(
                f"{len(self.skipped)} unreadable files, more than the {self.max_skipped} allowed"
                " (data.max_skipped):\n  " + "\n  ".join(self.skipped)
            ) from exc


class AugmentingCollate:
    """A loader ``collate_fn``: stack crops and labels, then apply the waveform augmentors, in the loader worker.

    Randomness comes from ``(seed, epoch, the batch's indices)``, so a resumed epoch augments the same way. An augmentor with ``label_multiplier > 1``
    (speed perturbation as new speakers) returns ``(wave, k)``, and the label becomes ``label + k * num_speakers``
    (the speakers before it in the list multiply the count for those after).
    """

    def __init__(self, augmentors: Sequence, num_speakers: int, seed: int = 0):
        self.augmentors = [a for a in augmentors if getattr(a, "on", "waveform") == "waveform"]
        self.num_speakers = num_speakers
        self.seed = seed
        self.epoch = 0

    @property
    def num_classes(self) -> int:
        """The number of labels after augmentation (more than the speakers when an augmentor makes new ones)."""
        total = self.num_speakers
        for aug in self.augmentors:
            total *= getattr(aug, "label_multiplier", 1)
        return total

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __call__(
        self, items: Sequence[tuple[torch.Tensor, int, int]]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(waves (B, T), labels (B,), utterance indices (B,))``, augmented."""
        waves = torch.stack([w for w, _, _ in items])
        labels = torch.tensor([label for _, label, _ in items], dtype=torch.long)
        indices = tuple(i for _, _, i in items)
        gen = torch.Generator().manual_seed(hash((self.seed, self.epoch, indices)) & 0x7FFF_FFFF_FFFF_FFFF)
        classes = self.num_speakers
        for aug in self.augmentors:
            out = aug(waves, gen)
            if getattr(aug, "label_multiplier", 1) > 1:
                waves, k = out
                labels = labels + k * classes
                classes *= aug.label_multiplier
            else:
                waves = out
        return waves, labels, torch.tensor(indices, dtype=torch.long)
