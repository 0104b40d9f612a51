"""``plateau``: the lr cut by ``factor`` when the validation EER stops improving.

The trainer calls ``scheduler.report(value)`` after each validation, with the validation EER (lower is better), on
any scheduler that has a ``report`` method; ``step()``, called once per iteration like every scheduler's, keeps
the lr.
"""

from __future__ import annotations

import logging
import math
from typing import Annotated, Any

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from vvframe import BadValue
from vvframe.core.schema import Range

from .common import check_range, check_run, load_progress, reference_lr

log = logging.getLogger(__name__)


class Plateau(LRScheduler):
    """The lr times factor when the validation EER has not improved for patience validations (see report()).

    ``report(value)`` counts a validation as an improvement when ``value < best * (1 - threshold)`` (a relative
    threshold; the first value always improves). After ``patience`` validations in a row without improvement each
    param group's lr becomes ``max(lr * factor, min_lr)`` (a group already at or below ``min_lr`` keeps its lr)
    and the count starts again. Unlike PyTorch's ``ReduceLROnPlateau``, which cuts after ``patience + 1`` bad
    validations, the cut comes with the ``patience``-th. A NaN value never improves.
    """

    _STATE = ("last_epoch", "_step_count", "base_lrs", "_last_lr", "lrs", "best", "bad", "reductions")

    def __init__(
        self,
        optimizer: Optimizer,
        steps_per_epoch: int,
        epochs: int,
        factor: Annotated[float, Range(gt=0, lt=1)] = 0.5,
        patience: Annotated[int, Range(1)] = 2,
        min_lr: Annotated[float, Range(0)] = 1e-6,
        threshold: Annotated[float, Range(0, lt=1)] = 1e-3,
    ):
        name = "plateau"
        self.steps_per_epoch, self.epochs = check_run(name, steps_per_epoch, epochs)
        self.factor = check_range(name, "factor", factor, 0, 1, low_open=True, high_open=True)
        if isinstance(patience, bool) or int(patience) != patience or patience < 1:
            raise BadValue(f"scheduler '{name}': patience must be an integer >= 1 (validations), got {patience!r}")
        self.patience = int(patience)
        self.min_lr = check_range(name, "min_lr", min_lr, 0, reference_lr(optimizer))
        self.threshold = check_range(name, "threshold", threshold, 0, 1, high_open=True)
        self.lrs = [float(group["lr"]) for group in optimizer.param_groups]
        self.best = math.inf
        self.bad = 0  # validations in a row without improvement since the last improvement or cut
        self.reductions = 0
        super().__init__(optimizer)

    def get_lr(self) -> list[float]:
        """The current lr of each param group (``step()`` keeps it; only ``report()`` changes it)."""
        return list(self.lrs)

    def report(self, value: float) -> bool:
        """Record one validation's EER (lower is better); ``True`` when this call cut the lr."""
        value = float(value)
        if value < self.best * (1.0 - self.threshold):
            self.best, self.bad = value, 0
            return False
        self.bad += 1
        if self.bad < self.patience:
            return False
        self.bad = 0
        new = [max(lr * self.factor, self.min_lr) if lr > self.min_lr else lr for lr in self.lrs]
        if new == self.lrs:
            return False
        self.lrs = new
        self.reductions += 1
        for group, lr in zip(self.optimizer.param_groups, new):
            group["lr"] = lr
        self._last_lr = list(new)
        log.info(
            "plateau: no improvement on %.6g for %d validations; lr now %s",
            self.best,
            self.patience,
            ", ".join(f"{lr:.3g}" for lr in new),
        )
        return True

    def state_dict(self) -> dict[str, Any]:
        """The progress: iteration, lrs, and the best value, bad count and number of cuts."""
        return {key: getattr(self, key) for key in self._STATE}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the progress and put the restored lrs into the optimizer's param groups."""
        load_progress(self, state_dict)
