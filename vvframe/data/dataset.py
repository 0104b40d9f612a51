"""Training data: random fixed-length crops of a list's utterances, with labels; broken files skipped and counted.

A file that cannot be used (missing, corrupt, empty, silent or NaN/inf in the crop read, shorter than
``audio.MIN_SECONDS``: see :mod:`vvframe.data.audio`) is logged with the count so far and replaced by another utterance of
the same speaker, so one bad file does not end a week-long run; more than ``max_skipped`` of them stops it
with the list, since then something is wrong with the data rather than with a file.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vvframe.core.errors import ContractError, VvframeError
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


PLACES = ("workers", "device")  # where a waveform augmentor runs: its ``runs_on`` (the recipe's ``on``)


def runs_on(augmentor: Any) -> str:
    """Where a waveform augmentor runs: its ``runs_on`` attribute (``"workers"`` or ``"device"``), ``"workers"``
    for one without it; a ``ContractError`` for another value."""
    place = getattr(augmentor, "runs_on", "workers")
    if place not in PLACES:
        raise ContractError(f"augmentor {augmentor!r}: runs_on is {place!r}; expected 'workers' or 'device'")
    return place


def takes_labels(fn: Callable) -> bool:
    """Whether ``fn`` (an augmentor, or its ``plan``) has a parameter named ``labels``: the batch's speakers."""
    try:
        return "labels" in inspect.signature(fn).parameters
    except (TypeError, ValueError):  # a callable without a signature gets what every augmentor gets
        return False


def call_augmentor(fn: Callable, x: torch.Tensor, generator: torch.Generator, labels: torch.Tensor | None) -> Any:
    """``fn(x, generator)``, with ``labels=labels`` as well when ``fn``'s signature names ``labels``.

    So an augmentor written before labels were offered (``aug(x, generator)``) keeps working unchanged, and one
    that needs the batch's speakers (``babble``) declares ``labels`` and gets them.
    """
    if labels is not None and takes_labels(fn):
        return fn(x, generator, labels=labels)
    return fn(x, generator)


def _map_tensors(obj: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """``obj`` (tensors in dicts, lists and tuples, other values as they are) with ``fn`` applied to each tensor."""
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, dict):
        return {k: _map_tensors(v, fn) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_map_tensors(v, fn) for v in obj)
    return obj


@dataclass
class PendingWaves:
    """A batch's crops ``(B, T)`` whose augmentors with ``runs_on == "device"`` are still to run: their ``plans``
    (what each drew in the loader worker, and any noise or impulse responses it read), applied on the device by
    :meth:`AugmentingCollate.apply_on_device`. Moves and pins like a tensor (``to``, ``pin_memory``, ``shape``)."""

    waves: torch.Tensor
    plans: list[Any]

    @property
    def shape(self) -> torch.Size:
        """The crops' shape ``(B, T)``."""
        return self.waves.shape

    @property
    def device(self) -> torch.device:
        """Where the crops are."""
        return self.waves.device

    def to(self, device: torch.device | str, non_blocking: bool = False) -> PendingWaves:
        """The crops and plans on ``device``."""
        move = functools.partial(torch.Tensor.to, device=device, non_blocking=non_blocking)
        return PendingWaves(move(self.waves), _map_tensors(self.plans, move))

    def pin_memory(self) -> PendingWaves:
        """The crops and plans in pinned memory (the DataLoader calls it with ``pin_memory=True``)."""
        return PendingWaves(self.waves.pin_memory(), _map_tensors(self.plans, torch.Tensor.pin_memory))


class AugmentingCollate:
    """A loader ``collate_fn``: stack crops and labels, then apply the waveform augmentors, in the loader worker.

    Randomness comes from ``(seed, epoch, the batch's indices)``, so a resumed epoch augments the same way. An
    augmentor with ``label_multiplier > 1`` (speed perturbation as new speakers) returns ``(wave, k)``, and the label
    becomes ``label + k * num_speakers`` (the speakers before it in the list multiply the count for those after).
    An augmentor whose signature names ``labels`` gets the batch's speaker labels as recorded (``babble``).

    An augmentor with ``runs_on == "device"`` (the recipe's ``on: device``) only draws in the worker: its
    ``plan(x, generator)`` holds every random choice of the call, and any noise or impulse responses it reads, and
    travels with the batch (:class:`PendingWaves`); the train step applies it on the device with
    :meth:`apply_on_device` (``apply(x, plan)``). The plans are drawn in the list's order from the same generator
    as in the workers, so a batch comes out the same either way, to float rounding, when the device augmentors
    come last in the list; a workers augmentor listed after a device one runs before it.
    """

    def __init__(self, augmentors: Sequence, num_speakers: int, seed: int = 0):
        self.augmentors = [a for a in augmentors if getattr(a, "on", "waveform") == "waveform"]
        self.num_speakers = num_speakers
        self.seed = seed
        self.epoch = 0
        self.device_augmentors = [a for a in self.augmentors if runs_on(a) == "device"]
        for aug in self.device_augmentors:
            missing = [m for m in ("plan", "apply") if not callable(getattr(aug, m, None))]
            if missing:
                raise ContractError(
                    f"augmentor {aug!r} says it runs on the device (runs_on 'device') but has no"
                    f" {' and no '.join(missing)} method; it needs plan(x, generator) -> plan and apply(x, plan)"
                )
        late = [
            a
            for i, a in enumerate(self.augmentors)
            if runs_on(a) == "workers" and any(runs_on(b) == "device" for b in self.augmentors[:i])
        ]
        if late:
            log.info(
                "augment: %s run in the loader workers, before the device augmentors listed ahead of them",
                ", ".join(map(repr, late)),
            )

    @property
    def num_classes(self) -> int:
        """The number of labels after augmentation (more than the speakers when an augmentor makes new ones)."""
        total = self.num_speakers
        for aug in self.augmentors:
            total *= getattr(aug, "label_multiplier", 1)
        return total

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose randomness ``__call__`` draws."""
        self.epoch = epoch

    def __call__(
        self, items: Sequence[tuple[torch.Tensor, int, int]]
    ) -> tuple[torch.Tensor | PendingWaves, torch.Tensor, torch.Tensor]:
        """``(waves (B, T), labels (B,), utterance indices (B,))``, augmented; ``waves`` is a :class:`PendingWaves`
        when augmentors run on the device."""
        waves = torch.stack([w for w, _, _ in items])
        labels = torch.tensor([label for _, label, _ in items], dtype=torch.long)
        speakers = labels  # what an augmentor asking for labels gets: the speakers as recorded
        indices = tuple(i for _, _, i in items)
        gen = torch.Generator().manual_seed(hash((self.seed, self.epoch, indices)) & 0x7FFF_FFFF_FFFF_FFFF)
        classes = self.num_speakers
        plans = []
        for aug in self.augmentors:
            multiplier = getattr(aug, "label_multiplier", 1)
            if runs_on(aug) == "device":
                plan = call_augmentor(aug.plan, waves, gen, speakers)
                plans.append(plan)
                k = plan["k"] if multiplier > 1 else None
            elif multiplier > 1:
                waves, k = call_augmentor(aug, waves, gen, speakers)
            else:
                waves, k = call_augmentor(aug, waves, gen, speakers), None
            if k is not None:
                labels = labels + k.to(torch.long) * classes
                classes *= multiplier
        batch = PendingWaves(waves, plans) if plans else waves
        return batch, labels, torch.tensor(indices, dtype=torch.long)

    def apply_on_device(self, waves: torch.Tensor | PendingWaves) -> torch.Tensor:
        """The crops with the device augmentors applied where they are (moved to the device first), in their list
        order; a plain tensor (no device augmentors) comes back as it is."""
        if not isinstance(waves, PendingWaves):
            return waves
        if len(waves.plans) != len(self.device_augmentors):
            raise ValueError(
                f"a batch with {len(waves.plans)} device plans for {len(self.device_augmentors)} device augmentors"
            )
        x = waves.waves
        with torch.no_grad():
            for aug, plan in zip(self.device_augmentors, waves.plans):
                x = aug.apply(x, plan)
        return x
