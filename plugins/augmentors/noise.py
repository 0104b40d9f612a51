"""Additive noise at a random SNR from a MUSAN-style folder: ``root/<category>/**/*.wav|flac``."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import torch

from vvframe import BadValue
from vvframe.core.schema import Range
from vvframe.data.audio import AudioError, random_crop

from .common import (
    Place,
    Probability,
    audio_files,
    check_batch,
    check_place,
    check_prob,
    check_range,
    chosen_rows,
    randint,
    uniform,
)

log = logging.getLogger(__name__)

DEFAULT_CATEGORIES: dict[str, tuple[float, float]] = {
    "noise": (0.0, 15.0),
    "music": (5.0, 15.0),
    "speech": (13.0, 20.0),
}
BABBLE = "speech"  # the category mixed as a babble of several talkers
ATTEMPTS = 5  # files tried for one noise crop before an unreadable-file error is raised


def add_noise(clean: torch.Tensor, noise: torch.Tensor, snr_db: float | torch.Tensor) -> torch.Tensor:
    """``clean + a * noise`` with ``a`` such that ``10 log10(P_clean / P_(a*noise)) = snr_db``.

    Powers are mean squares over the last dimension; leading dimensions broadcast (``snr_db`` a scalar or one
    value per row). A silent ``clean`` stays silent.
    """
    snr = torch.as_tensor(snr_db, dtype=torch.float64, device=clean.device)
    p_clean = clean.double().pow(2).mean(-1)
    p_noise = noise.double().pow(2).mean(-1).clamp_min(1e-20)
    scale = torch.sqrt(p_clean / (p_noise * 10.0 ** (snr / 10.0)))
    return (clean.double() + scale.unsqueeze(-1) * noise.double()).to(clean.dtype)


@dataclass(frozen=True)
class NoiseDraw:
    """What one augmented utterance gets: its row, the category, the SNR and the noise files (several: babble)."""

    row: int
    category: str
    snr_db: float
    files: tuple[str, ...]


class Noise:
    """Additive noise from a MUSAN-style folder: per utterance a category, an SNR in its range, babble for speech.

    ``categories``: subfolder -> SNR range in dB; by default noise 0-15, music 5-15, speech 13-20 (those
    of voxceleb_trainer), written out in a run's resolved recipe. Only the subfolders present with audio are used. ``babble``: the
    range of talkers (both ends included) mixed for ``speech``; each talker's crop is brought to the same
    power, the crops summed, and the sum scaled to the SNR.
    """

    on = "waveform"
    label_multiplier = 1

    def __init__(
        self,
        sample_rate: int,
        root: str,
        categories: dict[str, tuple[float, float]] = DEFAULT_CATEGORIES,
        babble: Annotated[tuple[int, int], Range(1, 100)] = (3, 7),
        prob: Probability = 0.6,
        on: Place = "workers",
    ):
        self.sample_rate = int(sample_rate)
        self.root = str(root)
        self.prob = check_prob(prob, "noise")
        self.runs_on = check_place(on, "noise")
        wanted = dict(categories)  # a copy: the shared default is never modified
        if not wanted:
            raise BadValue("noise: categories is empty; expected e.g. {noise: [0, 15], music: [5, 15]}")
        self.babble = tuple(int(k) for k in check_range(*babble, "noise: babble (talkers)"))
        if self.babble[0] < 1:
            raise BadValue(f"noise: babble={list(self.babble)}; expected at least one talker")
        base = Path(self.root).expanduser()
        if not base.is_dir():
            raise BadValue(
                f"noise: root {self.root} is not a folder; expected a MUSAN-style folder with"
                f" subfolders {', '.join(f'{c}/' for c in wanted)} of .wav/.flac files"
            )
        self.categories: dict[str, tuple[float, float]] = {}
        self.files: dict[str, list[str]] = {}
        missing = []
        for name, snr in wanted.items():
            low_high = tuple(snr)
            if len(low_high) != 2:
                raise BadValue(f"noise: categories.{name}={list(low_high)}; expected an SNR range [low, high] in dB")
            folder = base / name
            try:
                files = audio_files(folder, f"noise: category {name}")
            except BadValue:
                missing.append(name)
                continue
            self.categories[name] = check_range(*low_high, f"noise: categories.{name} (SNR dB)")
            self.files[name] = files
        if not self.categories:
            raise BadValue(
                f"noise: {self.root} has none of the categories {', '.join(wanted)}; expected a"
                f" MUSAN-style folder with subfolders {', '.join(f'{c}/' for c in wanted)} holding"
                " .wav/.flac files"
            )
        if missing:
            log.warning(
                "noise: %s has no audio in %s; using %s",
                self.root,
                ", ".join(f"{m}/" for m in missing),
                ", ".join(self.categories),
            )
        self._names = sorted(self.categories)  # a fixed order, whatever order the recipe wrote

    def draw(self, batch: int, generator: torch.Generator) -> list[NoiseDraw]:
        """Which utterances get noise, and each one's category, SNR and files (the random choices of a call)."""
        rows = chosen_rows(batch, self.prob, generator).nonzero().flatten().tolist()
        n = len(rows)
        cats = randint(0, len(self._names) - 1, n, generator).tolist()
        unit = uniform(0.0, 1.0, n, generator).tolist()
        talkers = randint(self.babble[0], self.babble[1], n, generator).tolist()
        draws = []
        for row, c, u, k in zip(rows, cats, unit, talkers):
            name = self._names[c]
            low, high = self.categories[name]
            files = self.files[name]
            count = k if name == BABBLE else 1
            if count <= len(files):  # distinct talkers when there are enough files
                picks = torch.randperm(len(files), generator=generator, device=generator.device)[:count].tolist()
            else:
                picks = randint(0, len(files) - 1, count, generator).tolist()
            draws.append(NoiseDraw(row, name, low + (high - low) * u, tuple(files[i] for i in picks)))
        return draws

    def read(self, frames: int, draws: list[NoiseDraw], generator: torch.Generator) -> dict[str, torch.Tensor]:
        """The plan of ``draws``: ``{"rows": (n,), "noise": (n, frames) float32, "snr_db": (n,) float64}``, each
        row's noise read from its files (crop positions from ``generator``; babble talkers at the same level)."""
        noise = torch.zeros(len(draws), frames, dtype=torch.float64)
        for i, d in enumerate(draws):
            for path in d.files:
                crop = self._crop(path, d.category, frames, generator).double()
                if len(d.files) > 1:  # babble: each talker at the same level, then summed
                    crop = crop / crop.pow(2).mean().sqrt().clamp_min(1e-10)
                noise[i] += crop
        return {
            "rows": torch.tensor([d.row for d in draws], dtype=torch.long),
            "noise": noise.float(),
            "snr_db": torch.tensor([d.snr_db for d in draws], dtype=torch.float64),
        }

    def plan(self, x: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """What a call draws and reads (see :meth:`read`), for :meth:`apply` here or on the device."""
        check_batch(x, self.on, "noise")
        return self.read(x.shape[1], self.draw(x.shape[0], generator), generator)

    def apply(self, x: torch.Tensor, plan: dict[str, torch.Tensor]) -> torch.Tensor:
        """``x`` with each planned row's noise added at its SNR, on ``x``'s device."""
        rows = plan["rows"].to(x.device)
        if not len(rows):
            return x
        out = x.clone()
        out[rows] = add_noise(x[rows], plan["noise"].to(x.device), plan["snr_db"].to(x.device))
        return out

    def mix(self, x: torch.Tensor, draws: list[NoiseDraw], generator: torch.Generator) -> torch.Tensor:
        """``x`` with each draw's noise added at its SNR (crop positions come from ``generator``)."""
        check_batch(x, self.on, "noise")
        return self.apply(x, self.read(x.shape[1], draws, generator))

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Noise added to a random share (``prob``) of the ``(B, T)`` batch."""
        return self.apply(x, self.plan(x, generator))

    def _crop(self, path: str, category: str, frames: int, generator: torch.Generator) -> torch.Tensor:
        """A random crop of ``path``; an unreadable or silent file is reported and another one tried."""
        for _ in range(ATTEMPTS):
            try:
                return random_crop(path, frames, self.sample_rate, generator)
            except AudioError as exc:
                log.warning("noise: skipping %s", exc)
                files = self.files[category]
                path = files[int(randint(0, len(files) - 1, 1, generator))]
        raise AudioError(path, f"noise: {ATTEMPTS} attempts in {category}/ gave no readable crop; check the folder")

    def __repr__(self) -> str:
        return (
            f"Noise(root={self.root!r}, categories={self.categories}, babble={list(self.babble)}, prob={self.prob},"
            f" on={self.runs_on!r})"
        )
