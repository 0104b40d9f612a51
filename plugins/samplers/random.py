"""``random``: every utterance once per epoch in a seeded random order, split across ranks.

Also home of ``EpochBatchSampler``, the machinery both first-party samplers share: seeding from (seed, epoch),
the split of an epoch's batches across ranks, resuming an epoch part-way through, and the note (logged at info
level on rank 0, once for each epoch length) when an epoch uses less than half the listed utterances.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

import numpy as np

from vvframe import BadValue

log = logging.getLogger(__name__)


class EpochBatchSampler:
    """Base of the samplers: seeded per (seed, epoch), equal disjoint shares per rank, resumable mid-epoch.

    A subclass defines ``rank_batches(rng)``, this rank's batches of an epoch drawn with ``rng``, and
    ``__len__``; ``share(batches)`` gives rank ``r`` the global batches ``r, r + world_size, ...``.
    """

    per_speaker: int = 1
    title = "sampler"  # the name its log lines start with
    used: int | None = None  # utterances an epoch yields, all ranks together; None where a subclass does not know
    SMALL_EPOCH = 0.5  # an epoch that uses less than this fraction of the listed utterances is reported

    def __init__(self, labels: Sequence[int], batch_size: int, rank: int, world_size: int, seed: int):
        self.labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        if self.labels.size == 0:
            raise BadValue("the sampler got no utterances (labels is empty)")
        if batch_size < 1:
            raise BadValue(f"batch_size must be at least 1, got {batch_size}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise BadValue(f"rank {rank} is not among the {world_size} ranks (0 .. world_size - 1)")
        self.batch_size, self.rank, self.world_size, self.seed = int(batch_size), int(rank), int(world_size), int(seed)
        self.epoch = 0
        self.dropped = 0  # utterances the current epoch leaves out (across all ranks)
        self._start = 0
        self._cached: tuple[int, list[list[int]]] | None = None
        self._reported: int | None = None  # the epoch length last reported by ``small_epoch``

    def small_epoch(self) -> str | None:
        """When an epoch uses less than half the listed utterances: how many of them, why, and what to change;
        else None."""
        listed = int(self.labels.size)
        if self.used is None or self.used >= self.SMALL_EPOCH * listed:
            return None
        share = f"{100 * self.used / listed:.2g}%"
        return f"an epoch uses {self.used} of the {listed} listed utterances ({share}): {self.small_epoch_advice()}"

    def small_epoch_advice(self) -> str:
        """Why an epoch is short and what to change (for ``small_epoch``); subclasses that set ``used`` define it."""
        return "see the sampler's arguments"

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Use the batches of ``epoch``; the next iteration skips its first ``start`` batches (to resume exactly)."""
        if start < 0:
            raise BadValue(f"start must be >= 0, got {start}")
        self.epoch, self._start = int(epoch), int(start)
        if self.rank == 0 and self.used != self._reported:  # once a run, again only if the epoch length changes
            self._reported = self.used
            message = self.small_epoch()
            if message:
                logging.getLogger(type(self).__module__).info("%s: %s", self.title, message)

    def rng(self) -> np.random.Generator:
        """The random generator of the current epoch: the same (seed, epoch) gives the same stream on every rank."""
        return np.random.default_rng([self.seed % (1 << 64), self.epoch % (1 << 64)])

    def rank_batches(self, rng: np.random.Generator) -> list[list[int]]:
        """This rank's batches of an epoch drawn with ``rng`` (every rank draws the same); subclasses define it."""
        raise NotImplementedError

    def share(self, batches: np.ndarray) -> list[list[int]]:
        """This rank's rows r, r + world_size, ... of the epoch's global batches ``(n * world_size, batch_size)``."""
        return batches[self.rank :: self.world_size].tolist()

    def batches(self) -> list[list[int]]:
        """This rank's batches of the current epoch, all of them (``__iter__`` honours ``start``)."""
        if self._cached is None or self._cached[0] != self.epoch:
            self._cached = (self.epoch, self.rank_batches(self.rng()))
        return self._cached[1]

    def __iter__(self) -> Iterator[list[int]]:
        """Lists of utterance indices, one list per batch of this rank."""
        start, self._start = self._start, 0
        yield from self.batches()[start:]

    def __len__(self) -> int:
        """The number of batches this rank yields in a whole epoch."""
        raise NotImplementedError


class RandomSampler(EpochBatchSampler):
    """All utterances once per epoch in a seeded random order, split evenly across ranks (speakers ignored)."""

    per_speaker = 1
    title = "random"

    def __init__(
        self,
        labels: list[int],
        batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        drop_last: bool = True,
    ):
        """``drop_last``: leave out the utterances that do not fill a last batch on every rank; when false,
        they form a last, smaller batch of the same size on every rank (fewer than ``world_size`` utterances are
        still left out, so that shares stay disjoint and equal)."""
        super().__init__(labels, batch_size, rank, world_size, seed)
        self.drop_last = drop_last
        total = self.labels.size
        per_round = self.batch_size * self.world_size
        self.full_rounds = total // per_round
        rest = total - self.full_rounds * per_round
        self.tail = 0 if drop_last else rest // self.world_size  # size of the last, smaller batch on each rank
        self.dropped = total - self.full_rounds * per_round - self.tail * self.world_size
        self.used = total - self.dropped  # above half: what is left out is less than one round, and one is used
        if len(self) == 0:
            raise BadValue(
                f"{total} utterances do not fill one batch of {self.batch_size} on each of "
                f"{self.world_size} rank(s): lower batch_size or set drop_last: false"
            )
        if self.dropped:
            log.debug("random sampler: each epoch leaves out %d of %d utterances", self.dropped, total)

    def __len__(self) -> int:
        return self.full_rounds + (1 if self.tail else 0)

    def rank_batches(self, rng: np.random.Generator) -> list[list[int]]:
        order = rng.permutation(self.labels.size)
        used = self.full_rounds * self.batch_size * self.world_size
        mine = self.share(order[:used].reshape(-1, self.batch_size))
        if self.tail:
            mine.append(order[used + self.rank * self.tail : used + (self.rank + 1) * self.tail].tolist())
        return mine
