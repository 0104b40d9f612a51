"""Random gain: each chosen utterance scaled by a level drawn uniformly in decibels."""

from __future__ import annotations

import torch

from .common import Probability, check_batch, check_prob, check_range, chosen_rows, uniform


class Gain:
    """Random gain: each chosen utterance multiplied by ``10^(g/20)``, ``g`` uniform in ``[min_db, max_db]``."""

    on = "waveform"
    label_multiplier = 1

    def __init__(self, min_db: float = -6.0, max_db: float = 6.0, prob: Probability = 0.5):
        self.min_db, self.max_db = check_range(min_db, max_db, "gain: [min_db, max_db]")
        self.prob = check_prob(prob, "gain")

    def gains_db(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        """``(batch,)`` float64 gains in dB that a call applies (0 for an utterance not chosen)."""
        chosen = chosen_rows(batch, self.prob, generator)
        db = uniform(self.min_db, self.max_db, batch, generator)
        return torch.where(chosen, db, torch.zeros_like(db))

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The ``(B, T)`` batch with a random share (``prob``) of its utterances louder or softer."""
        check_batch(x, self.on, "gain")
        scale = 10.0 ** (self.gains_db(x.shape[0], generator) / 20.0)
        return x * scale.to(x.device, x.dtype).unsqueeze(1)

    def __repr__(self) -> str:
        return f"Gain(min_db={self.min_db}, max_db={self.max_db}, prob={self.prob})"
