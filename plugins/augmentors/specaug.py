"""SpecAugment on feature batches: time and frequency bands set to the utterance's mean, on the device."""

from __future__ import annotations

from typing import Annotated

import torch

from vvframe import BadValue
from vvframe.core.schema import Range

from .common import Probability, check_batch, check_prob, chosen_rows

Count = Annotated[int, Range(0, 10000)]  # masks, or frames or bins a mask covers


def bands(
    batch: int, count: int, max_width: int, size: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` random bands per row as ``(starts, widths)``, each ``(batch, count)``, on the CPU.

    Widths are uniform in ``[0, min(max_width, size)]``, positions uniform among those inside ``[0, size)``.
    """
    if count <= 0 or max_width <= 0 or size <= 0:
        empty = torch.zeros(batch, 0, dtype=torch.long)
        return empty, empty
    dev = generator.device
    widths = torch.randint(0, min(max_width, size) + 1, (batch, count), generator=generator, device=dev).cpu()
    starts = (
        torch.rand(batch, count, generator=generator, device=dev, dtype=torch.float64).cpu() * (size - widths + 1)
    ).long()
    return starts, widths


def band_mask(starts: torch.Tensor, widths: torch.Tensor, size: int, device: torch.device) -> torch.Tensor:
    """``(batch, size)`` bool on ``device``: the union of each row's bands."""
    starts, widths = starts.to(device), widths.to(device)
    pos = torch.arange(size, device=device)
    inside = (pos >= starts.unsqueeze(-1)) & (pos < (starts + widths).unsqueeze(-1))  # (batch, count, size)
    return inside.any(1)


class SpecAugment:
    """SpecAugment: random time and frequency bands of the features replaced by the utterance's mean value.

    The mean (over all features and frames of the utterance) rather than zero: it is neutral for raw log-mel
    features, whose zero lies far outside their range, and equals zero for mean-normalised ones.
    """

    on = "features"
    label_multiplier = 1

    def __init__(
        self,
        num_time_masks: Count = 1,
        max_time: Count = 10,
        num_freq_masks: Count = 1,
        max_freq: Count = 8,
        prob: Probability = 0.6,
    ):
        for name, value in [
            ("num_time_masks", num_time_masks),
            ("max_time", max_time),
            ("num_freq_masks", num_freq_masks),
            ("max_freq", max_freq),
        ]:
            if int(value) < 0:
                raise BadValue(f"specaug: {name}={value}; expected a count >= 0")
        self.num_time_masks, self.max_time = int(num_time_masks), int(max_time)
        self.num_freq_masks, self.max_freq = int(num_freq_masks), int(max_freq)
        self.prob = check_prob(prob, "specaug")

    def masks(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The ``(B, n_feats, frames)`` bool mask a call applies (on ``x``'s device), drawn from ``generator``."""
        check_batch(x, self.on, "specaug")
        batch, feats, frames = x.shape
        chosen = chosen_rows(batch, self.prob, generator).to(x.device)
        freq = band_mask(*bands(batch, self.num_freq_masks, self.max_freq, feats, generator), feats, x.device)
        time = band_mask(*bands(batch, self.num_time_masks, self.max_time, frames, generator), frames, x.device)
        return (freq.unsqueeze(2) | time.unsqueeze(1)) & chosen.view(batch, 1, 1)

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The feature batch with each chosen utterance's bands set to its mean (over features and frames)."""
        mask = self.masks(x, generator)
        fill = x.mean(dim=(1, 2), keepdim=True)
        return torch.where(mask, fill, x)

    def __repr__(self) -> str:
        return (
            f"SpecAugment(num_time_masks={self.num_time_masks}, max_time={self.max_time},"
            f" num_freq_masks={self.num_freq_masks}, max_freq={self.max_freq}, prob={self.prob})"
        )
