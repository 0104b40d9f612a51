"""What the train stage reports while it trains: TensorBoard scalars and histograms through the run context's
writer (rank 0's; the other ranks have none), the epoch's progress bar through ``ctx.progress``, and log lines."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Iterator
from typing import Any

import torch

from vvframe import RunContext
from vvframe_plugins.stages.validation import Validation

log = logging.getLogger(__name__)


class EpochMeter:
    """An epoch's throughput: utterances trained on (over all ranks), and the time spent waiting for batches."""

    def __init__(self, world_size: int):
        self.world_size = world_size
        self.start = time.monotonic()
        self.seen = 0  # utterances of this rank
        self.waited = 0.0  # seconds
        self.last_loss = math.nan

    def timed(self, batches: Iterable) -> Iterator:
        """``batches`` as they come, the time each one kept the loop waiting counted in ``waited``."""
        tick = time.monotonic()
        for batch in batches:
            self.waited += time.monotonic() - tick
            yield batch
            tick = time.monotonic()

    def elapsed(self) -> float:
        """Seconds since the epoch began."""
        return max(time.monotonic() - self.start, 1e-9)

    def per_second(self) -> float:
        """Utterances per second over all ranks, since the epoch began."""
        return self.seen * self.world_size / self.elapsed()

    def wait_fraction(self) -> float:
        """The part of the epoch spent waiting for data."""
        return self.waited / self.elapsed()


class TrainLog:
    """One rank's reports: TensorBoard (``ctx.writer``, rank 0), progress bars (``ctx.progress``), log lines."""

    def __init__(self, ctx: RunContext, epochs: int, log_every: int):
        self.ctx, self.epochs, self.log_every = ctx, epochs, log_every

    @property
    def writer(self):
        """The run's TensorBoard writer on rank 0, else None."""
        return self.ctx.writer

    def bar(self, epoch: int, start: int, total: int):
        """The progress bar of ``epoch`` (counted from 0) over its ``total`` batches, from batch ``start``."""
        return self.ctx.progress(total=total, initial=start, desc=f"epoch {epoch + 1}/{self.epochs}", leave=False)

    def batch(self, iteration: int, meter: EpochMeter, acc: Any, lr: float, margin: float | None) -> None:
        """The training scalars, every ``trainer.log_every`` iterations."""
        writer = self.writer
        if writer is None or iteration % self.log_every:
            return
        writer.add_scalar("train/loss", meter.last_loss, iteration)
        if acc is not None:
            writer.add_scalar("train/accuracy", float(acc), iteration)
        writer.add_scalar("train/lr", lr, iteration)
        if margin is not None:
            writer.add_scalar("train/margin", margin, iteration)
        writer.add_scalar("train/utterances_per_second", meter.per_second(), iteration)
        writer.add_scalar("train/data_wait_fraction", meter.wait_fraction(), iteration)

    def epoch_done(self, epoch: int, meter: EpochMeter, skipped: int) -> None:
        """The line that ends ``epoch`` (counted from 0), on rank 0."""
        if not self.ctx.is_main:
            return
        log.info(
            "epoch %d/%d: loss %.4f, %d utterances/s, waiting for data %.0f%%%s",
            epoch + 1,
            self.epochs,
            meter.last_loss,
            meter.per_second(),
            100 * meter.wait_fraction(),
            f", {skipped} steps skipped (non-finite)" if skipped else "",
        )

    def skipped(self, count: int, iteration: int) -> None:
        """The number of steps skipped so far in the run."""
        if self.writer is not None:
            self.writer.add_scalar("train/skipped_steps", count, iteration)

    def scores(self, result: Validation, epoch: int) -> None:
        """Histograms of a validation's target and non-target scores."""
        if self.writer is None:
            return
        for name, chosen in (("target", result.labels == 1), ("nontarget", result.labels == 0)):
            shown = result.scores[chosen & torch.isfinite(result.scores)]
            if shown.numel():  # add_histogram refuses an empty (or all-NaN) tensor
                self.writer.add_histogram(f"val/{name}_scores", shown, epoch)

    def validation(self, result: Validation, epoch: int) -> None:
        """A validation's line and scalars (``epoch`` counted from 1: the epochs trained)."""
        log.info("epoch %d: validation EER %.2f%%, minDCF(0.01) %.4f", epoch, 100 * result.eer, result.min_dcf)
        if self.writer is not None:
            self.writer.add_scalar("val/eer", result.eer, epoch)
            self.writer.add_scalar("val/min_dcf", result.min_dcf, epoch)
