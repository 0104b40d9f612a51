"""Random gain: each chosen utterance scaled by a level drawn uniformly in decibels."""

from __future__ import annotations

import torch

from .common import Place, Probability, check_batch, check_place, check_prob, check_range, chosen_rows, uniform


class Gain:
    """Random gain: each chosen utterance multiplied by ``10^(g/20)``, ``g`` uniform in ``[min_db, max_db]``."""

    on = "waveform"
    label_multiplier = 1

    def __init__(self, min_db: float = -6.0, max_db: float = 6.0, prob: Probability = 0.5, on: Place = "workers"):
        self.min_db, self.max_db = check_range(min_db, max_db, "gain: [min_db, max_db]")
        self.prob = check_prob(prob, "gain")
        self.runs_on = check_place(on, "gain")

    def gains_db(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        """``(batch,)`` float64 gains in dB that a call applies (0 for an utterance not chosen)."""
        chosen = chosen_rows(batch, self.prob, generator)
        db = uniform(self.min_db, self.max_db, batch, generator)
        return torch.where(chosen, db, torch.zeros_like(db))

    def plan(self, x: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """``{"scale": (B,) float64}``: each utterance's factor (1 for one not chosen)."""
        check_batch(x, self.on, "gain")
        return {"scale": 10.0 ** (self.gains_db(x.shape[0], generator) / 20.0)}

    def apply(self, x: torch.Tensor, plan: dict[str, torch.Tensor]) -> torch.Tensor:
        """``x`` scaled row by row, on ``x``'s device."""
        return x * plan["scale"].to(x.device, x.dtype).unsqueeze(1)

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The ``(B, T)`` batch with a random share (``prob``) of its utterances louder or softer."""
        return self.apply(x, self.plan(x, generator))

    def __repr__(self) -> str:
        return f"Gain(min_db={self.min_db}, max_db={self.max_db}, prob={self.prob}, on={self.runs_on!r})"
