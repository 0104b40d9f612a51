"""Babble from the batch itself: other speakers' utterances mixed in at a random SNR, speech noise without MUSAN."""

from __future__ import annotations

import logging
from typing import Annotated

import torch

from vvframe import BadValue
from vvframe.core.schema import Range

from .common import Place, Probability, check_batch, check_place, check_prob, check_range, chosen_rows, randint, uniform
from .noise import add_noise

log = logging.getLogger(__name__)


class Babble:
    """Each chosen utterance gets ``talkers`` other utterances of its batch, never of its own speaker, each brought
    to the same level, summed and added at an SNR uniform in ``snr_db``.

    It needs the batch's speaker labels (``labels``: vvframe's collate passes them). An utterance whose batch
    holds fewer utterances of other speakers than the number drawn gets all there are; one whose batch holds
    none (every utterance of one speaker) is left as it is, said at debug level. The talkers are the batch as
    it reaches ``babble`` (list it first in ``augment`` for talkers without noise or reverberation); in a
    ``choice`` they come from the utterances the choice gave it.
    """

    on = "waveform"
    label_multiplier = 1

    def __init__(
        self,
        talkers: Annotated[tuple[int, int], Range(1, 100)] = (3, 7),
        snr_db: Annotated[tuple[float, float], Range(-30, 60)] = (13.0, 20.0),
        prob: Probability = 0.5,
        on: Place = "workers",
    ):
        self.talkers = tuple(int(k) for k in check_range(*talkers, "babble: talkers"))
        if self.talkers[0] < 1:
            raise BadValue(f"babble: talkers={list(self.talkers)}; expected at least one talker")
        self.snr_db = check_range(*snr_db, "babble: snr_db")
        self.prob = check_prob(prob, "babble")
        self.runs_on = check_place(on, "babble")

    def plan(
        self, x: torch.Tensor, generator: torch.Generator, labels: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """``{"rows": (n,), "talkers": (n, K) long, "use": (n, K) bool, "snr_db": (n,)}``: the utterances that get
        babble, the rows of the batch mixed into each (``use`` marks those taken) and the SNRs."""
        check_batch(x, self.on, "babble")
        batch = x.shape[0]
        if labels is None:
            raise ValueError(
                "babble mixes in other speakers' utterances of the batch and needs the batch's speaker labels:"
                " call it as babble(x, generator, labels=labels)"
            )
        labels = torch.as_tensor(labels).cpu()
        if labels.shape != (batch,):
            raise ValueError(f"babble: labels {tuple(labels.shape)} for a batch of {batch}; expected ({batch},)")
        chosen = chosen_rows(batch, self.prob, generator)
        wanted = randint(self.talkers[0], self.talkers[1], batch, generator)
        snr = uniform(*self.snr_db, batch, generator)
        order = torch.rand(batch, batch, generator=generator, device=generator.device, dtype=torch.float64).cpu()
        other = labels.unsqueeze(1) != labels.unsqueeze(0)  # (B, B): row i may take j; never itself
        order = order.masked_fill(~other, 2.0)  # the others first, in random order
        width = min(self.talkers[1], batch)
        picks = order.argsort(dim=1)[:, :width]
        take = torch.minimum(wanted, other.sum(1))
        use = torch.arange(width) < take.unsqueeze(1)
        alone = chosen & (take == 0)
        short = chosen & (take > 0) & (take < wanted)
        if alone.any() or short.any():
            log.debug(
                "babble: %d utterances left alone (no other speaker in the batch), %d with fewer talkers than drawn",
                int(alone.sum()),
                int(short.sum()),
            )
        rows = (chosen & (take > 0)).nonzero().flatten()
        return {"rows": rows, "talkers": picks[rows], "use": use[rows], "snr_db": snr[rows]}

    def apply(self, x: torch.Tensor, plan: dict[str, torch.Tensor]) -> torch.Tensor:
        """``x`` with each planned row's babble added at its SNR, on ``x``'s device (one ``(n, B) @ (B, T)`` product:
        each talker's weight is one over its RMS)."""
        rows = plan["rows"].to(x.device)
        if not len(rows):
            return x
        talkers, use = plan["talkers"].to(x.device), plan["use"].to(x.device)
        weights = torch.zeros(len(rows), x.shape[0], device=x.device, dtype=x.dtype)
        weights.scatter_(1, talkers, use.to(x.dtype))
        rms = x.double().pow(2).mean(-1).sqrt().clamp_min(1e-10)
        babble = (weights / rms.to(x.dtype)) @ x
        out = x.clone()
        out[rows] = add_noise(x[rows], babble, plan["snr_db"].to(x.device))
        return out

    def __call__(self, x: torch.Tensor, generator: torch.Generator, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Babble of other speakers added to a random share (``prob``) of the ``(B, T)`` batch."""
        return self.apply(x, self.plan(x, generator, labels))

    def __repr__(self) -> str:
        return (
            f"Babble(talkers={list(self.talkers)}, snr_db={list(self.snr_db)}, prob={self.prob}, on={self.runs_on!r})"
        )
