"""Behaviour of a scheduler component: built with the engine's values and stepped once per iteration for a whole
run, every lr is finite and >= 0, and a scheduler restored from ``state_dict()`` continues with the same lrs."""

from __future__ import annotations

import math

from vvframe.core import registry


def behaves(name: str, factory) -> None:
    import torch

    def make():
        opt = torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=0.1)
        return registry.build("schedulers", {"name": name}, optimizer=opt, steps_per_epoch=10, epochs=3)

    def advance(scheduler, start: int, stop: int) -> list[float]:
        seen = []
        for t in range(start, stop):
            scheduler.optimizer.step()
            scheduler.step()
            if t % 10 == 9 and callable(getattr(scheduler, "report", None)):
                scheduler.report(0.1)  # a validation that does not improve: a plateau scheduler may cut
            seen += [float(lr) for lr in scheduler.get_last_lr()]
            seen += [float(g["lr"]) for g in scheduler.optimizer.param_groups]
        return seen

    whole = make()
    seen = advance(whole, 0, 30)
    assert all(math.isfinite(lr) and lr >= 0 for lr in seen), (name, seen)
    assert whole.get_last_lr() == [g["lr"] for g in whole.optimizer.param_groups], name

    first = make()
    head = advance(first, 0, 15)
    second = make()
    second.load_state_dict(first.state_dict())
    assert second.get_last_lr() == first.get_last_lr(), name
    assert head + advance(second, 15, 30) == seen, (
        f"{name}: a scheduler restored from state_dict() continues differently"
    )
