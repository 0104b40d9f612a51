"""``step``: the lr multiplied by ``gamma`` every ``step_epochs`` epochs (voxceleb_trainer's ``steplr``)."""

from __future__ import annotations

from typing import Annotated

from torch.optim import Optimizer

from vvframe.core.schema import Range

from .common import IterationScheduler, check_range, check_run


class StepDecay(IterationScheduler):
    """The lr multiplied by gamma every step_epochs epochs, counted in iterations (voxceleb_trainer's steplr).

    Per iteration ``t`` (counted from 0), with ``S = max(1, round(step_epochs * steps_per_epoch))``::

        lr(t) = lr * gamma ** floor(t / S)

    voxceleb_trainer steps its ``StepLR`` once per epoch; counting ``S`` in iterations gives the same lrs at epoch
    boundaries when ``step_epochs`` is whole, and allows fractional ``step_epochs``.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        steps_per_epoch: int,
        epochs: int,
        step_epochs: Annotated[float, Range(gt=0)] = 10.0,
        gamma: Annotated[float, Range(gt=0, le=1)] = 0.5,
    ):
        name = "step"
        steps_per_epoch, epochs = check_run(name, steps_per_epoch, epochs)
        self.step_epochs = check_range(name, "step_epochs", step_epochs, 0, float("inf"), low_open=True, high_open=True)
        self.gamma = check_range(name, "gamma", gamma, 0, 1, low_open=True)
        self.period = max(1, int(round(self.step_epochs * steps_per_epoch)))
        super().__init__(optimizer, steps_per_epoch, epochs)

    def factor(self, t: int) -> float:
        return self.gamma ** (t // self.period)
