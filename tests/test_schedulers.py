"""The first-party schedulers: values against their formulas, exact resume, every param group, plateau, errors."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from vvframe import BadValue
from vvframe.core import registry

LR = 0.1


def optimizer(lr: float = LR, groups: int = 1) -> torch.optim.Optimizer:
    net = torch.nn.Linear(2, groups)
    if groups == 1:
        return torch.optim.SGD(net.parameters(), lr=lr)
    # the second group has its own lr, three times the optimizer's
    return torch.optim.SGD([{"params": [net.weight]}, {"params": [net.bias], "lr": 3 * lr}], lr=lr)


def build(name: str, opt=None, steps_per_epoch: int = 10, epochs: int = 5, **args):
    return registry.build(
        "schedulers",
        {"name": name, **args},
        optimizer=opt if opt is not None else optimizer(),
        steps_per_epoch=steps_per_epoch,
        epochs=epochs,
    )


def lrs(scheduler, iterations: int) -> list[list[float]]:
    """The lrs of every group used by each iteration 0 .. iterations - 1 (stepping as a trainer does)."""
    out = []
    for _ in range(iterations):
        out.append([g["lr"] for g in scheduler.optimizer.param_groups])
        scheduler.optimizer.step()
        scheduler.step()
    return out


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-15)


# ---- formulas, written out independently of the implementation ----------------------------------------------------


def expected_warmup_exponential(t, spe, epochs, warmup_epochs, final_lr, warmup_from, lr=LR):
    total = spe * epochs
    w = round(warmup_epochs * spe)
    if t < w:
        return lr * warmup_from + (lr - lr * warmup_from) * t / w
    return lr * (final_lr / lr) ** (min(t - w, total - 1 - w) / (total - 1 - w))


def expected_warmup_cosine(t, spe, epochs, warmup_epochs, final_lr, lr=LR):
    total = spe * epochs
    w = round(warmup_epochs * spe)
    if t < w:
        return lr * t / w
    progress = min(t - w, total - 1 - w) / (total - 1 - w)
    return final_lr + (lr - final_lr) / 2 * (1 + math.cos(math.pi * progress))


@pytest.mark.parametrize("warmup_from", [0.0, 0.25])
def test_warmup_exponential_follows_its_formula(warmup_from):
    spe, epochs, warmup, final = 7, 6, 1.5, 1e-4
    sched = build(
        "warmup_exponential",
        steps_per_epoch=spe,
        epochs=epochs,
        warmup_epochs=warmup,
        final_lr=final,
        warmup_from=warmup_from,
    )
    got = [g[0] for g in lrs(sched, spe * epochs + 3)]
    for t in [0, 1, 5, 10, 11, 12, 20, 30, spe * epochs - 2, spe * epochs - 1, spe * epochs + 2]:
        assert close(got[t], expected_warmup_exponential(t, spe, epochs, warmup, final, warmup_from)), t
    assert close(got[0], warmup_from * LR)
    assert close(got[10], LR) and got[9] < LR and got[11] < LR  # W = round(10.5) = 10 (half to even): the peak
    assert close(got[spe * epochs - 1], final) and close(got[-1], final)
    assert all(a >= b for a, b in zip(got[10:], got[11:]))


def test_warmup_exponential_defaults_hit_final_lr_at_the_last_iteration():
    sched = build("warmup_exponential", steps_per_epoch=2, epochs=20)  # 6 warm-up epochs = 12 iterations
    got = [g[0] for g in lrs(sched, 40)]
    assert got[0] == 0.0 and close(got[6], LR / 2) and close(got[12], LR) and close(got[39], 5e-5)
    assert close(got[30], LR * (5e-5 / LR) ** (18 / 27))


def test_warmup_cosine_follows_its_formula():
    spe, epochs, warmup, final = 5, 4, 1.0, 1e-3
    sched = build("warmup_cosine", steps_per_epoch=spe, epochs=epochs, warmup_epochs=warmup, final_lr=final)
    got = [g[0] for g in lrs(sched, 22)]
    for t in range(22):
        assert close(got[t], expected_warmup_cosine(t, spe, epochs, warmup, final)), t
    assert got[0] == 0.0 and close(got[5], LR) and close(got[19], final)
    mid = 5 + (19 - 5) // 2  # p = 1/2: halfway between lr and final_lr
    assert close(got[mid], (LR + final) / 2)


def test_step_follows_its_formula():
    sched = build("step", steps_per_epoch=4, epochs=10, step_epochs=2.5, gamma=0.3)  # every 10 iterations
    got = [g[0] for g in lrs(sched, 40)]
    for t in [0, 9, 10, 19, 20, 29, 30, 39]:
        assert close(got[t], LR * 0.3 ** (t // 10)), t
    # whole step_epochs: the same lrs at epoch boundaries as torch's StepLR stepped once per epoch
    sched = build("step", steps_per_epoch=3, epochs=9, step_epochs=2, gamma=0.5)
    got = [g[0] for g in lrs(sched, 27)]
    ref_opt = optimizer()
    ref = torch.optim.lr_scheduler.StepLR(ref_opt, step_size=2, gamma=0.5)
    for e in range(9):
        assert close(got[3 * e], ref_opt.param_groups[0]["lr"]), e
        ref_opt.step()
        ref.step()


@pytest.mark.parametrize(
    "name, args",
    [
        ("warmup_exponential", {"warmup_epochs": 1.0, "final_lr": 1e-3}),
        ("warmup_cosine", {"warmup_epochs": 1.0, "final_lr": 1e-3}),
        ("step", {"step_epochs": 1.0, "gamma": 0.5}),
    ],
)
def test_every_param_group_follows_the_same_factor_of_its_own_lr(name, args):
    sched = build(name, optimizer(groups=2), steps_per_epoch=4, epochs=5, **args)
    single = build(name, optimizer(), steps_per_epoch=4, epochs=5, **args)
    for both, one in zip(lrs(sched, 22), lrs(single, 22)):
        assert close(both[0], one[0]) and close(both[1], 3 * one[0])
    assert sched.get_last_lr() == [g["lr"] for g in sched.optimizer.param_groups]


@pytest.mark.parametrize(
    "name, args",
    [
        ("warmup_exponential", {"warmup_epochs": 1.5}),
        ("warmup_cosine", {"warmup_epochs": 1.0, "final_lr": 1e-3}),
        ("step", {"step_epochs": 1.0}),
        ("plateau", {}),
    ],
)
def test_resume_from_state_dict_is_exact(name, args):
    def run(scheduler, start, stop, reports):
        out = []
        for t in range(start, stop):
            out.append([g["lr"] for g in scheduler.optimizer.param_groups])
            scheduler.optimizer.step()
            scheduler.step()
            if t in reports and hasattr(scheduler, "report"):
                scheduler.report(reports[t])
        return out

    reports = {5: 0.1, 11: 0.1, 17: 0.1, 23: 0.09, 29: 0.1, 35: 0.1}
    whole = build(name, optimizer(groups=2), steps_per_epoch=6, epochs=7, **args)
    expected = run(whole, 0, 42, reports)
    first = build(name, optimizer(groups=2), steps_per_epoch=6, epochs=7, **args)
    head = run(first, 0, 19, reports)
    state = first.state_dict()
    state = torch.load(_roundtrip(state), weights_only=True)  # as a checkpoint stores it
    # a fresh optimizer at its initial lr, as after a restart; the scheduler puts the lrs back
    second = build(name, optimizer(groups=2), steps_per_epoch=6, epochs=7, **args)
    second.load_state_dict(state)
    tail = run(second, 19, 42, reports)
    assert head + tail == expected
    assert second.state_dict().keys() == whole.state_dict().keys()
    if name == "plateau":
        assert expected[-1][0] < LR  # the reports did cut the lr, so the counters were exercised
        assert {"best", "bad"} <= set(state)


def _roundtrip(state):
    import io

    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return buffer


def test_plateau_cuts_after_patience_validations_and_not_before():
    sched = build("plateau", optimizer(groups=2), factor=0.5, patience=3, min_lr=1e-3, threshold=0.01)
    for _ in range(25):  # step() keeps the lr
        sched.optimizer.step()
        sched.step()
    assert [g["lr"] for g in sched.optimizer.param_groups] == [LR, 3 * LR]
    assert sched.report(0.10) is False  # first value: an improvement
    assert sched.report(0.0995) is False and sched.bad == 1  # better by 0.5 %: below the relative threshold
    assert sched.report(0.098) is False and sched.bad == 0 and sched.best == 0.098  # better by 1.5 %
    assert sched.report(0.2) is False and sched.report(0.098) is False  # two bad ones: not yet
    assert sched.get_last_lr() == [LR, 3 * LR]
    assert sched.report(0.1) is True  # the third: cut, in every group
    assert [g["lr"] for g in sched.optimizer.param_groups] == [LR / 2, 3 * LR / 2] == sched.get_last_lr()
    sched.optimizer.step()
    sched.step()
    assert [g["lr"] for g in sched.optimizer.param_groups] == [LR / 2, 3 * LR / 2]
    assert sched.bad == 0 and sched.report(0.2) is False and sched.report(0.2) is False
    assert sched.report(0.2) is True and sched.get_last_lr() == [LR / 4, 3 * LR / 4]
    assert sched.report(0.05) is False and sched.bad == 0  # an improvement resets the count


def test_plateau_respects_min_lr():
    sched = build("plateau", factor=0.1, patience=1, min_lr=2e-3)
    assert sched.report(0.1) is False
    assert sched.report(0.1) is True and close(sched.get_last_lr()[0], LR / 10)
    assert sched.report(0.1) is True and sched.get_last_lr()[0] == 2e-3  # 1e-3 would be below min_lr
    assert sched.report(0.1) is False and sched.get_last_lr()[0] == 2e-3  # at the floor: nothing left to cut
    assert sched.reductions == 2
    assert sched.report(float("nan")) is False and sched.bad == 0  # counted as no improvement (patience 1: a cut
    # was due, but there is nothing left to cut)


@pytest.mark.parametrize(
    "name, args, arg, words",
    [
        ("warmup_exponential", {"warmup_epochs": 1, "final_lr": 0.2}, "final_lr", "(0, 0.1]"),
        ("warmup_exponential", {"warmup_epochs": 1, "final_lr": 0.0}, "final_lr", "(0, 0.1]"),
        ("warmup_exponential", {"warmup_epochs": -1.0}, "warmup_epochs", "[0, inf)"),
        ("warmup_exponential", {"warmup_epochs": 1, "warmup_from": 1.5}, "warmup_from", "[0, 1]"),
        ("warmup_cosine", {"final_lr": 0.5}, "final_lr", "[0, 0.1]"),
        ("warmup_cosine", {"warmup_epochs": float("nan")}, "warmup_epochs", "[0, inf)"),
        ("step", {"gamma": 0.0}, "gamma", "(0, 1]"),
        ("step", {"gamma": 2.0}, "gamma", "(0, 1]"),
        ("step", {"step_epochs": 0.0}, "step_epochs", "(0, inf)"),
        ("plateau", {"factor": 1.0}, "factor", "(0, 1)"),
        ("plateau", {"patience": 0}, "patience", "[1, inf)"),
        ("plateau", {"min_lr": 1.0}, "min_lr", "[0, 0.1]"),
        ("plateau", {"threshold": -0.1}, "threshold", "[0, 1)"),
    ],
)
def test_bad_arguments_name_the_argument_and_the_range(name, args, arg, words):
    with pytest.raises(BadValue) as err:
        build(name, **args)
    assert arg in str(err.value) and words in str(err.value) and name in str(err.value)


@pytest.mark.parametrize("name", ["warmup_exponential", "warmup_cosine", "step", "plateau"])
@pytest.mark.parametrize("spe, epochs, arg", [(10, -1, "epochs"), (10, 0, "epochs"), (0, 5, "steps_per_epoch")])
def test_bad_run_length(name, spe, epochs, arg):
    with pytest.raises(BadValue, match=f"{arg} must be an integer >= 1"):
        build(name, steps_per_epoch=spe, epochs=epochs)


def test_no_warning_when_stepped_after_the_optimizer():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lrs(build("warmup_cosine"), 5)


def test_short_runs_still_end_at_final_lr():
    # one epoch of two iterations with a warm-up rounded to the whole run: the last iteration is final_lr
    got = [
        g[0] for g in lrs(build("warmup_exponential", steps_per_epoch=2, epochs=1, warmup_epochs=0.9, final_lr=1e-3), 2)
    ]
    assert got[0] == 0.0 and close(got[1], 1e-3)
    got = [g[0] for g in lrs(build("warmup_cosine", steps_per_epoch=1, epochs=1, warmup_epochs=0.0), 1)]
    assert got == [0.0]


def test_a_warm_up_longer_than_half_the_run_is_shortened_with_a_warning(caplog):
    # the default 6 warm-up epochs in a 3-epoch smoke run: warm up over 15 of the 30 iterations, then decay
    sched = build("warmup_exponential", steps_per_epoch=10, epochs=3)
    assert "shortened to 15 of the run's 30 iterations" in caplog.text
    got = [g[0] for g in lrs(sched, 30)]
    for t in [0, 7, 15, 22, 29]:
        assert close(got[t], expected_warmup_exponential(t, 10, 3, 1.5, 5e-5, 0.0)), t
