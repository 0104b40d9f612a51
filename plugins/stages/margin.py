"""The margin schedule of the ``train`` stage: ``trainer.margin_schedule`` (WeSpeaker's margin scheduler)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from vvframe import BadValue

#: The exponential rise's ``1 - EPS ** p``: WeSpeaker's ``final_val = 1e-3``.
EPS = 1e-3


@dataclass
class MarginSchedule:
    """``trainer.margin_schedule``: the margin of a margin loss rises from ``start`` to ``final`` between ``start_epoch`` and ``end_epoch``, updated every iteration.

    With ``t`` the iteration counted from 0 over the whole run, ``s = start_epoch * steps_per_epoch`` and
    ``e = end_epoch * steps_per_epoch`` (epochs counted from 0, so ``start_epoch: 20`` begins the rise after 20 whole
    epochs; WeSpeaker counts epochs from 1, so its ``increase_start_epoch: 20`` is ``start_epoch: 19`` here) and
    ``p = (t - s) / (e - s)``::

        t <  s:      margin = start
        s <= t < e:  margin = start + (final - start) * r(p)
        t >= e:      margin = final

        exponential: r(p) = (1 - EPS ** p) / (1 - EPS)     EPS = 1e-3: fast at first, slow at the end
        linear:      r(p) = p

    WeSpeaker's exponential rise is ``1 - EPS ** p`` (it reaches 0.999 at the end, then jumps to ``final``); the
    division by ``1 - EPS`` makes it reach exactly 1 (the two differ by at most 0.1 % of ``final - start``). When
    ``start_epoch == end_epoch`` the margin steps from ``start`` to ``final`` at ``s``.
    """

    start: float = 0.0
    final: float = 0.2
    start_epoch: float = 20.0
    end_epoch: float = 40.0
    kind: Literal["exponential", "linear"] = "exponential"

    def __post_init__(self) -> None:
        where = "trainer.margin_schedule"
        for name in ("start", "final", "start_epoch", "end_epoch"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise BadValue(f"{where}.{name} must be a finite number, got {value!r}")
            setattr(self, name, float(value))
        if self.start < 0:
            raise BadValue(f"{where}.start must be >= 0 (a margin), got {self.start!r}")
        if self.final < self.start:
            raise BadValue(f"{where}.final must be >= start ({self.start!r}): the margin rises, got {self.final!r}")
        if self.start_epoch < 0:
            raise BadValue(f"{where}.start_epoch must be >= 0, got {self.start_epoch!r}")
        if self.end_epoch < self.start_epoch:
            raise BadValue(f"{where}.end_epoch must be >= start_epoch ({self.start_epoch!r}), got {self.end_epoch!r}")
        if self.kind not in ("exponential", "linear"):
            raise BadValue(f"{where}.kind must be 'exponential' or 'linear', got {self.kind!r}")

    def value(self, iteration: int, steps_per_epoch: int) -> float:
        """The margin at ``iteration`` (counted from 0 over the whole run) of a run with ``steps_per_epoch``."""
        if isinstance(steps_per_epoch, bool) or int(steps_per_epoch) != steps_per_epoch or steps_per_epoch < 1:
            raise BadValue(f"steps_per_epoch must be an integer >= 1, got {steps_per_epoch!r}")
        if iteration < 0:
            raise BadValue(f"iteration must be >= 0 (counted from 0), got {iteration!r}")
        s, e = self.start_epoch * steps_per_epoch, self.end_epoch * steps_per_epoch
        if iteration < s:
            return self.start
        if iteration >= e:
            return self.final
        p = (iteration - s) / (e - s)
        r = p if self.kind == "linear" else (1.0 - EPS**p) / (1.0 - EPS)
        return self.start + (self.final - self.start) * r
