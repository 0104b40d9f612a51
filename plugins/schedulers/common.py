"""What the schedulers share: checking the run's length and the arguments, and the closed-form base class.

Conventions of every first-party scheduler:

* It is stepped **once per iteration**, after ``optimizer.step()``. Iterations are counted from 0 over the whole
  run; the lr used by iteration ``t`` is the one set after ``t`` calls of ``step()`` (construction sets iteration
  0's), and ``last_epoch`` holds ``t`` (PyTorch's name; it counts iterations here).
* Every param group follows the same factor of its own initial lr (``group["initial_lr"]``, the lr it had when
  the scheduler was built), so groups keep their ratios. An absolute target such as ``final_lr`` is read against
  the optimizer's ``lr`` argument (``optimizer.defaults["lr"]``): the factor ends at ``final_lr / lr``.
* ``state_dict()`` holds the progress only (iteration, base lrs, last lrs, and a subclass's own counters), never
  the configuration, so a resumed run takes its settings from the recipe; ``load_state_dict()`` also writes the
  restored lrs into the optimizer, so the next iteration uses exactly the lr an uninterrupted run would.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from vvframe import BadValue

log = logging.getLogger(__name__)


def check_run(name: str, steps_per_epoch: int, epochs: int) -> tuple[int, int]:
    """``(steps_per_epoch, epochs)`` as ints, each at least 1; a ``BadValue`` naming scheduler ``name`` otherwise."""
    for arg, value in (("steps_per_epoch", steps_per_epoch), ("epochs", epochs)):
        if isinstance(value, bool) or int(value) != value or value < 1:
            raise BadValue(f"scheduler '{name}': {arg} must be an integer >= 1, got {value!r}")
    return int(steps_per_epoch), int(epochs)


def check_range(
    name: str, arg: str, value: float, low: float, high: float, *, low_open: bool = False, high_open: bool = False
) -> float:
    """``value`` as a float if it lies in the interval; a ``BadValue`` naming the argument and the range otherwise."""
    value = float(value)
    above = value > low if low_open else value >= low
    below = value < high if high_open else value <= high
    if not (math.isfinite(value) and above and below):
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise BadValue(f"scheduler '{name}': {arg} must be in {interval}, got {value!r}")
    return value


def check_warmup(name: str, warmup_epochs: float) -> float:
    """``warmup_epochs`` as a float >= 0; a ``BadValue`` saying so otherwise."""
    value = float(warmup_epochs)
    if not (math.isfinite(value) and value >= 0):
        raise BadValue(f"scheduler '{name}': warmup_epochs must be in [0, inf), got {warmup_epochs!r}")
    return value


def reference_lr(optimizer: Optimizer) -> float:
    """The optimizer's ``lr`` argument (its default lr), or the first param group's lr if it has no default."""
    lr = optimizer.defaults.get("lr", optimizer.param_groups[0]["lr"])
    return float(lr)


def decaying_lr(name: str, optimizer: Optimizer) -> float:
    """The optimizer's lr that a decaying schedule starts from; a ``BadValue`` naming ``name`` unless it is > 0."""
    lr = reference_lr(optimizer)
    if not lr > 0:
        raise BadValue(f"scheduler '{name}': the optimizer's lr must be > 0 to decay from it, got {lr!r}")
    return lr


def warmup_iterations(name: str, warmup_epochs: float, steps_per_epoch: int, epochs: int) -> int:
    """``round(warmup_epochs * steps_per_epoch)`` (half to even), at most half the run's iterations.

    A warm-up longer than half the run (a short smoke run with a recipe's long warm-up, say) is shortened to
    ``(steps_per_epoch * epochs) // 2`` iterations, with a warning, so the run still decays to its final lr.
    """
    total = steps_per_epoch * epochs
    iterations = int(round(warmup_epochs * steps_per_epoch))
    if iterations > total // 2:
        log.warning(
            "scheduler '%s': warmup_epochs=%g is more than half of the run's %d epochs; the warm-up is "
            "shortened to %d of the run's %d iterations",
            name,
            warmup_epochs,
            epochs,
            total // 2,
            total,
        )
        iterations = total // 2
    return iterations


class IterationScheduler(LRScheduler):
    """Base of the closed-form schedulers: the lr of every param group is ``initial_lr * factor(t)``.

    A subclass sets its attributes, calls ``super().__init__(optimizer, steps_per_epoch, epochs)`` (which sets
    ``self.total``, the iterations of the run, and applies iteration 0's lr) and defines ``factor(t)``. Because the
    lr is a function of the iteration alone, resuming from ``state_dict()`` is exact.
    """

    _STATE: tuple[str, ...] = ("last_epoch", "_step_count", "base_lrs", "_last_lr")

    def __init__(self, optimizer: Optimizer, steps_per_epoch: int, epochs: int):
        self.steps_per_epoch, self.epochs = steps_per_epoch, epochs
        self.total = steps_per_epoch * epochs
        super().__init__(optimizer)

    def factor(self, t: int) -> float:
        """The multiplier of each group's initial lr at iteration ``t`` (counted from 0)."""
        raise NotImplementedError

    def get_lr(self) -> list[float]:
        """The lr of each param group at the current iteration (``last_epoch``)."""
        f = self.factor(max(int(self.last_epoch), 0))
        return [base * f for base in self.base_lrs]

    _get_closed_form_lr = get_lr

    def state_dict(self) -> dict[str, Any]:
        """The progress: iteration, step count, base lrs and last lrs (plus a subclass's counters)."""
        return {key: getattr(self, key) for key in self._STATE}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the progress and put the restored lrs into the optimizer's param groups."""
        load_progress(self, state_dict)


def load_progress(scheduler: LRScheduler, state_dict: dict[str, Any]) -> None:
    """Set the keys of ``scheduler._STATE`` from ``state_dict`` and write its ``_last_lr`` into the optimizer."""
    missing = [key for key in scheduler._STATE if key not in state_dict]
    if missing:
        raise BadValue(
            f"{type(scheduler).__name__}.load_state_dict: the state lacks {', '.join(missing)}; "
            f"it was not saved by this scheduler"
        )
    groups = scheduler.optimizer.param_groups
    if len(state_dict["_last_lr"]) != len(groups):
        raise BadValue(
            f"{type(scheduler).__name__}.load_state_dict: the state has {len(state_dict['_last_lr'])} "
            f"param groups, the optimizer {len(groups)}"
        )
    for key in scheduler._STATE:
        value = state_dict[key]
        setattr(scheduler, key, list(value) if isinstance(value, (list, tuple)) else value)
    for group, lr in zip(groups, scheduler._last_lr):
        group["lr"] = lr
