"""The margin schedule of the train stage: values against the formula, endpoints, monotone rise, validation."""

from __future__ import annotations

import math

import pytest

from vvframe import BadValue
from vvframe_plugins.stages.margin import MarginSchedule

SPE = 10


def exponential(p: float) -> float:
    """WeSpeaker's exp rise 1 - 1e-3 ** p, rescaled to end at exactly 1."""
    return (1 - math.exp(p * math.log(1e-3))) / (1 - 1e-3)


@pytest.mark.parametrize("kind, rise", [("exponential", exponential), ("linear", lambda p: p)])
def test_values_follow_the_formula(kind, rise):
    sched = MarginSchedule(start=0.05, final=0.3, start_epoch=2.0, end_epoch=6.0, kind=kind)
    for t in [20, 21, 25, 30, 40, 50, 59]:
        p = (t - 20) / 40
        assert math.isclose(sched.value(t, SPE), 0.05 + 0.25 * rise(p), rel_tol=1e-12), t
    assert [sched.value(t, SPE) for t in (0, 1, 19)] == [0.05] * 3
    assert [sched.value(t, SPE) for t in (60, 61, 1000)] == [0.3] * 3
    assert sched.value(20, SPE) == 0.05


def test_exponential_is_fast_at_first_and_slow_at_the_end():
    exp = MarginSchedule(kind="exponential")
    lin = MarginSchedule(kind="linear")
    s, e = 20 * SPE, 40 * SPE
    values = [exp.value(t, SPE) for t in range(0, 50 * SPE)]
    assert all(a <= b for a, b in zip(values, values[1:]))
    assert values[0] == 0.0 and values[-1] == 0.2
    assert exp.value((s + e) // 2, SPE) > lin.value((s + e) // 2, SPE)
    first, last = exp.value(s + 20, SPE) - exp.value(s, SPE), exp.value(e - 1, SPE) - exp.value(e - 21, SPE)
    assert first > 10 * last > 0
    # no jump at the end: the last rising iteration is within one iteration's rise of final
    assert 0 < exp.value(e, SPE) - exp.value(e - 1, SPE) < 1e-3


def test_fractional_epochs_and_a_step():
    sched = MarginSchedule(start=0.0, final=0.2, start_epoch=0.5, end_epoch=1.5, kind="linear")
    assert sched.value(4, SPE) == 0.0 and sched.value(5, SPE) == 0.0
    assert math.isclose(sched.value(10, SPE), 0.1) and sched.value(15, SPE) == 0.2
    step = MarginSchedule(start=0.1, final=0.2, start_epoch=3, end_epoch=3)
    assert step.value(29, SPE) == 0.1 and step.value(30, SPE) == 0.2


@pytest.mark.parametrize(
    "args, words",
    [
        ({"start_epoch": 5.0, "end_epoch": 4.0}, "end_epoch must be >= start_epoch"),
        ({"start_epoch": -1.0}, "start_epoch must be >= 0"),
        ({"start": 0.3, "final": 0.2}, "final must be >= start"),
        ({"start": -0.1}, "start must be >= 0"),
        ({"final": float("nan")}, "final must be a finite number"),
        ({"kind": "exp"}, "kind must be 'exponential' or 'linear'"),
    ],
)
def test_bad_settings(args, words):
    with pytest.raises(BadValue, match=words):
        MarginSchedule(**args)


def test_bad_calls():
    with pytest.raises(BadValue, match="steps_per_epoch"):
        MarginSchedule().value(3, 0)
    with pytest.raises(BadValue, match="iteration"):
        MarginSchedule().value(-1, 10)
