"""``warmup_exponential`` and ``warmup_cosine``: a linear warm-up, then a decay that ends at ``final_lr``.

Notation (shared by both): ``lr`` the optimizer's ``lr`` argument, ``t`` the iteration counted from 0,
``T = steps_per_epoch * epochs`` the iterations of the run (the last is ``T - 1``),
``W = min(round(warmup_epochs * steps_per_epoch), T // 2)`` the warm-up iterations (Python's ``round``: half to
even; a warm-up longer than half the run is shortened to half of it, with a warning),
``D = T - 1 - W`` the decay iterations, ``p = min(1, (t - W) / D)`` (``p = 1`` when ``D = 0``) the decay's
progress. Each param group gets ``its initial lr * factor(t)``; ``factor`` is written below with ``lr = 1``.
"""

from __future__ import annotations

import math
from typing import Annotated

from torch.optim import Optimizer

from vvframe.core.schema import Range

from .common import IterationScheduler, check_range, check_run, check_warmup, decaying_lr, warmup_iterations

Epochs = Annotated[float, Range(0)]  # a warm-up length, in epochs


class WarmupExponential(IterationScheduler):
    """Linear warm-up from warmup_from * lr to lr, then exponential decay reaching final_lr at the last iteration.

    WeSpeaker's schedule (``ExponentialDecrease`` with warm-up), per iteration::

        t <  W:  lr(t) = lr * (a + (1 - a) * t / W)              a = warmup_from
        t >= W:  lr(t) = lr * (final_lr / lr) ** p               p = min(1, (t - W) / (T - 1 - W))

    so ``lr(0) = a * lr``, ``lr(W) = lr`` and ``lr(T - 1) = final_lr`` (and after the run it stays there).
    Here the decay starts where the warm-up ends. WeSpeaker's ``ExponentialDecrease`` instead multiplies its warm-up
    ramp ``w(t)`` into a decay over the whole run, ``lr * w(t) * (final_lr / lr) ** (t / T)``, so its peak is a
    below ``lr`` (``lr * (final_lr / lr) ** (W / T)``: 0.74 lr for lr 0.1, the defaults and 150 epochs) and its
    last iteration a little above ``final_lr``; in between the two curves differ by up to that factor.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        steps_per_epoch: int,
        epochs: int,
        warmup_epochs: Epochs = 6.0,
        final_lr: Annotated[float, Range(0)] = 5e-5,
        warmup_from: Annotated[float, Range(0, 1)] = 0.0,
    ):
        name = "warmup_exponential"
        steps_per_epoch, epochs = check_run(name, steps_per_epoch, epochs)
        lr = decaying_lr(name, optimizer)
        self.warmup_epochs = check_warmup(name, warmup_epochs)
        self.final_lr = check_range(name, "final_lr", final_lr, 0, lr, low_open=True)
        self.warmup_from = check_range(name, "warmup_from", warmup_from, 0, 1)
        self.warmup = warmup_iterations(name, self.warmup_epochs, steps_per_epoch, epochs)
        self.log_ratio = math.log(self.final_lr / lr)
        super().__init__(optimizer, steps_per_epoch, epochs)

    def factor(self, t: int) -> float:
        W, a = self.warmup, self.warmup_from
        if t < W:
            return a + (1.0 - a) * t / W
        decay = self.total - 1 - W
        p = 1.0 if decay <= 0 else min(1.0, (t - W) / decay)
        return math.exp(p * self.log_ratio)


class WarmupCosine(IterationScheduler):
    """Linear warm-up from 0 to lr, then a half cosine down to final_lr at the last iteration.

    Per iteration::

        t <  W:  lr(t) = lr * t / W
        t >= W:  lr(t) = final_lr + (lr - final_lr) * (1 + cos(pi * p)) / 2     p = min(1, (t - W) / (T - 1 - W))

    so ``lr(0) = 0`` (when there is a warm-up), ``lr(W) = lr`` and ``lr(T - 1) = final_lr``.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        steps_per_epoch: int,
        epochs: int,
        warmup_epochs: Epochs = 1.0,
        final_lr: Annotated[float, Range(0)] = 0.0,
    ):
        name = "warmup_cosine"
        steps_per_epoch, epochs = check_run(name, steps_per_epoch, epochs)
        lr = decaying_lr(name, optimizer)
        self.warmup_epochs = check_warmup(name, warmup_epochs)
        self.final_lr = check_range(name, "final_lr", final_lr, 0, lr)
        self.warmup = warmup_iterations(name, self.warmup_epochs, steps_per_epoch, epochs)
        self.end = self.final_lr / lr
        super().__init__(optimizer, steps_per_epoch, epochs)

    def factor(self, t: int) -> float:
        W = self.warmup
        if t < W:
            return t / W
        decay = self.total - 1 - W
        p = 1.0 if decay <= 0 else min(1.0, (t - W) / decay)
        return self.end + (1.0 - self.end) * 0.5 * (1.0 + math.cos(math.pi * p))
