"""``speaker_balanced``: batches of distinct speakers, ``per_speaker`` utterances each (voxceleb_trainer's sampler,
except that a group whose speaker is already in the batch waits for a later batch instead of being dropped).

How an epoch is drawn, from a generator seeded by (seed, epoch) and so the same on every rank:

1. Each speaker's utterances are shuffled, the first ``max_per_speaker`` kept, and cut into groups of
   ``per_speaker`` (a remainder smaller than a group is left out). Speaker ``s`` has ``c_s`` groups.
2. The epoch holds ``K`` batches of ``G = batch_size // per_speaker`` groups, ``K`` the largest number that can be
   filled without a speaker twice in a batch: a speaker appears at most once per batch, so ``K`` batches can hold
   at most ``sum_s min(c_s, K)`` groups, and ``K`` is feasible exactly when that is at least ``K * G``.
   ``K`` is rounded down to a multiple of ``world_size``; it depends only on the labels, not on the epoch.
3. Batch by batch, the speakers are drawn like groups from a shuffled pool of the remaining ones: each next
   speaker with probability proportional to its remaining groups, a speaker already in the batch skipped, so its
   group waits for a later batch (Efraimidis-Spirakis keys ``Exp(1) / c_s``, the ``G`` smallest win). One
   correction keeps every remaining batch fillable: with ``k`` batches left, a speaker with at least ``k``
   groups left must appear in all but ``slack = sum_s min(c_s, k) - k * G`` of them, so when more than ``slack``
   such speakers would be missing from this batch, enough of them (by their keys) are placed first.
4. Rank ``r`` takes batches ``r, r + world_size, ...``: disjoint utterances and the same number of batches.

Only the groups that no full batch can take (and the rounding to ``world_size``) are left out; ``dropped`` says
how many utterances within the cap that is per epoch (the same every epoch). When an epoch uses less than half the
listed utterances (a batch of nearly as many speakers as there are, and a small speaker), the first ``set_epoch``
logs at info level how many, why, and the batch size, ``per_speaker`` or ``max_per_speaker`` that would use more.
"""

from __future__ import annotations

import logging
from typing import Annotated

import numpy as np

from vvframe import BadValue
from vvframe.core.schema import Range

from .random import EpochBatchSampler

log = logging.getLogger(__name__)


def max_batches(groups: np.ndarray, per_batch: int) -> int:
    """The largest ``K`` with ``sum(min(groups, K)) >= K * per_batch``: how many batches of ``per_batch`` distinct
    speakers the ``groups`` (groups per speaker) can fill. The slack is concave in ``K`` and 0 at 0, so the feasible
    ``K`` form an interval starting at 0, found by bisection."""
    lo, hi = 0, int(groups.sum()) // per_batch
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if np.minimum(groups, mid).sum() >= mid * per_batch:
            lo = mid
        else:
            hi = mid - 1
    return lo


def epoch_utterances(
    counts: np.ndarray, batch_size: int, per_speaker: int, max_per_speaker: int | None, world_size: int = 1
) -> int:
    """The utterances an epoch uses, all ranks together, for speakers with ``counts`` utterances (each at least
    ``per_speaker``) and a batch of ``batch_size`` on each of ``world_size`` ranks: 0 where no batch fills."""
    per_batch = batch_size // per_speaker
    if counts.size < per_batch:
        return 0
    capped = counts if max_per_speaker is None else np.minimum(counts, max_per_speaker)
    batches = max_batches(capped // per_speaker, per_batch) // world_size * world_size
    return batches * per_batch * per_speaker


def divisors(n: int) -> list[int]:
    """The divisors of ``n`` in increasing order."""
    return [d for d in range(1, n + 1) if n % d == 0]


class SpeakerBalancedSampler(EpochBatchSampler):
    """Batches of distinct speakers, ``per_speaker`` utterances each, capped per speaker; deferred, never dropped."""

    title = "speaker_balanced"

    def __init__(
        self,
        labels: list[int],
        batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        per_speaker: Annotated[int, Range(1, 1024)] = 1,
        max_per_speaker: Annotated[int, Range(1)] | None = 100,
        skip_small: bool = False,
    ):
        """``labels``: the speaker of each utterance; ``batch_size``: utterances per batch on each rank, a multiple
        of ``per_speaker``. ``per_speaker``: utterances of one speaker that sit together in a batch (a group:
        2 or more for prototypical and angular-prototypical losses); consecutive runs of ``per_speaker`` indices
        in a batch share a speaker. ``max_per_speaker``: at most this many utterances of a speaker per epoch (a
        different random subset each epoch; None: all). ``skip_small``: leave out speakers with fewer than
        ``per_speaker`` utterances instead of raising an error (off by default, so a mistaken list is noticed)."""
        super().__init__(labels, batch_size, rank, world_size, seed)
        if per_speaker < 1:
            raise BadValue(f"per_speaker must be at least 1, got {per_speaker}")
        if self.batch_size % per_speaker:
            below = self.batch_size // per_speaker * per_speaker
            above = below + per_speaker
            choices = f"{below} or {above}" if below else f"{above}"
            raise BadValue(
                f"batch_size {self.batch_size} is not a multiple of per_speaker {per_speaker}: a batch "
                f"holds whole groups of {per_speaker}; use batch_size {choices}, or per_speaker one of "
                f"{', '.join(map(str, divisors(self.batch_size)))}"
            )
        if max_per_speaker is not None and max_per_speaker < per_speaker:
            raise BadValue(
                f"max_per_speaker {max_per_speaker} is below per_speaker {per_speaker}: no speaker could form a group"
            )
        self.per_speaker, self.max_per_speaker, self.skip_small = int(per_speaker), max_per_speaker, skip_small
        self.groups_per_batch = self.batch_size // self.per_speaker

        speakers, speaker_of, counts = np.unique(self.labels, return_inverse=True, return_counts=True)
        small = counts < self.per_speaker
        if small.any():
            message = (
                f"{int(small.sum())} of {speakers.size} speakers have fewer than per_speaker={self.per_speaker}"
                f" utterances (the smallest has {int(counts.min())})"
            )
            if not skip_small:
                raise BadValue(f"{message}: lower per_speaker, or set skip_small: true to leave them out")
            log.info("speaker_balanced: %s; they are left out (skip_small)", message)
        self.small_speakers = int(small.sum())
        keep = ~small
        # Eligible utterances, renumbered by eligible speaker 0 .. S-1.
        self._utts = np.flatnonzero(keep[speaker_of])
        remap = np.cumsum(keep) - 1
        self._speaker = remap[speaker_of[self._utts]]
        self._counts = counts[keep]
        self.speakers = int(keep.sum())
        if self.speakers < self.groups_per_batch:
            raise BadValue(
                f"only {self.speakers} speakers{' with enough utterances' if small.any() else ''}, but a "
                f"batch of {self.batch_size} holds {self.groups_per_batch} groups of distinct speakers: use "
                f"batch_size at most {self.speakers * self.per_speaker}"
            )
        capped = self._counts if max_per_speaker is None else np.minimum(self._counts, max_per_speaker)
        self._groups = capped // self.per_speaker
        self.batches_per_epoch = max_batches(self._groups, self.groups_per_batch) // self.world_size * self.world_size
        if self.batches_per_epoch == 0:
            raise BadValue(
                f"{int(self._groups.sum())} groups of {self.per_speaker} cannot fill one batch of "
                f"{self.groups_per_batch} distinct speakers on each of {self.world_size} rank(s): lower "
                f"batch_size"
            )
        self.used = self.batches_per_epoch * self.batch_size  # utterances an epoch yields, all ranks together
        self.capped = int((self._counts - capped).sum())  # utterances beyond max_per_speaker, left out by design
        self.skipped = int(counts[small].sum())  # utterances of speakers too small for a group (skip_small)
        self.unfilled = int(self._groups.sum()) * self.per_speaker - self.used  # groups no full batch can take
        self.dropped = int(counts[small].sum()) + int(capped.sum()) - self.used
        log.debug(
            "speaker_balanced: %d batches per epoch on each of %d rank(s) use %d utterances; %d beyond "
            "max_per_speaker, %d more left out (incomplete groups, batches that cannot be filled, small "
            "speakers)",
            len(self),
            self.world_size,
            self.used,
            self.capped,
            self.dropped,
        )

    def __len__(self) -> int:
        return self.batches_per_epoch // self.world_size

    def small_epoch_advice(self) -> str:
        """Where the unused utterances go (largest share first), why, and the changes that would use more."""
        counts, size, per, cap = self._counts, self.batch_size, self.per_speaker, self.max_per_speaker
        smallest, groups = int(counts.min()), self.groups_per_batch
        rest = self.labels.size - self.used - self.capped - self.skipped - self.unfilled  # incomplete groups
        shares = [
            (self.unfilled, "that no full batch of distinct speakers can take"),
            (self.capped, f"beyond max_per_speaker {cap} (a different subset each epoch)"),
            (self.skipped, f"of the {self.small_speakers} speakers with fewer than per_speaker={per}"),
            (rest, f"short of a whole group of {per}"),
        ]
        left = ", ".join(f"{n} {what}" for n, what in sorted(shares, key=lambda s: -s[0]) if n > 0)
        batches = f"{len(self)} batch{'es' if len(self) != 1 else ''}"
        batches += f" on each of {self.world_size} ranks" if self.world_size > 1 else ""
        unit = "speakers" if per == 1 else f"speakers ({per} utterances each)"
        if groups == self.speakers:
            why = (
                f"a batch of {size} holds {groups} distinct {unit}, every one of the {self.speakers}, so the"
                f" smallest speaker's {smallest} utterances set the epoch at {batches}"
            )
        else:
            why = (
                f"a batch of {size} holds {groups} distinct {unit} of the {self.speakers} (the smallest has"
                f" {smallest} utterances, the median {float(np.median(counts)):g}): {batches}"
            )
        fixes = []
        better = 1.5 * self.used  # a change worth naming uses half as many again

        def usage(batch: int, per_speaker: int, max_per_speaker: int | None) -> int:
            return epoch_utterances(counts, batch, per_speaker, max_per_speaker, self.world_size)

        smaller = {b: usage(b, per, cap) for b in range(size - per, 0, -per)}
        if smaller and max(smaller.values()) >= better:  # the largest batch within 10% of the best
            best = max(smaller.values())
            b = next(b for b, n in smaller.items() if n >= 0.9 * best)
            over = f" over {self.world_size} ranks" if self.world_size > 1 else ""  # the global batch a recipe sets
            fixes.append(f"batch_size {b * self.world_size}{over} ({b // per} speakers a batch) uses {smaller[b]}")
        grouped = {p: usage(size, p, cap) for p in divisors(size) if per < p <= smallest}
        if grouped and max(grouped.values()) >= better:
            best = max(grouped.values())
            p = next(p for p, n in grouped.items() if n >= 0.9 * best)
            fixes.append(f"per_speaker: {p} ({size // p} speakers a batch) uses {grouped[p]}")
        if cap is not None and (uncapped := usage(size, per, None)) >= better:
            fixes.append(f"max_per_speaker: null uses {uncapped}")
        fixes.append("sampler: random uses every utterance (speakers ignored; per_speaker 1)")
        return f"{left} are left out; {why}. To use more: {'; or '.join(fixes)}"

    def rank_batches(self, rng: np.random.Generator) -> list[list[int]]:
        groups, per_batch = self._groups, self.groups_per_batch
        # 1. Each speaker's utterances in random order: sorted by speaker, then by a random key.
        order = self._utts[np.lexsort((rng.random(self._utts.size), self._speaker))]
        first = np.concatenate([[0], np.cumsum(self._counts)[:-1]])  # where each speaker starts in `order`
        # 3. Choose the speakers of every batch.
        left = groups.copy()
        chosen = np.empty((self.batches_per_epoch, per_batch), dtype=np.int64)
        taken = np.empty_like(chosen)  # which of the speaker's groups
        with np.errstate(divide="ignore", invalid="ignore"):
            for b in range(self.batches_per_epoch):
                remaining = self.batches_per_epoch - b
                keys = rng.standard_exponential(left.size) / left  # inf where nothing is left
                heavy = left >= remaining
                must = int(heavy.sum()) - int(np.minimum(left, remaining).sum() - remaining * per_batch)
                if must > 0:  # place the `must` heavy speakers with the smallest keys first
                    heavy_keys = np.where(heavy, keys, np.inf)
                    keys[np.argpartition(heavy_keys, must - 1)[:must]] = -1.0
                pick = np.argpartition(keys, per_batch - 1)[:per_batch]
                if left[pick].min() <= 0:  # cannot happen while slack >= 0 (see the module docstring)
                    raise RuntimeError(f"speaker_balanced: batch {b} could not be filled; this is a bug")
                pick = pick[rng.permutation(per_batch)]
                chosen[b], taken[b] = pick, groups[pick] - left[pick]
                left[pick] -= 1
        # 4. Utterance indices: group j of speaker s is order[first[s] + j * P : first[s] + (j + 1) * P].
        start = first[chosen] + taken * self.per_speaker  # (K, G)
        index = order[start[..., None] + np.arange(self.per_speaker)]  # (K, G, P)
        return self.share(index.reshape(self.batches_per_epoch, self.batch_size))
