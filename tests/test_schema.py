"""Signatures as schemas: suggestions, coercion of YAML values by annotation, binding arguments."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal, Optional

import pytest

from vvframe.core.errors import ContractError, did_you_mean
from vvframe.core.schema import EMPTY, CoercionError, Param, Range, bind, coerce, parameters, type_name
from vvframe.testing import limits


def test_did_you_mean_normalises_case_and_dashes_then_uses_a_strict_cutoff():
    assert did_you_mean("ResNet-34", ["resnet_34", "ecapa"]) == " (did you mean 'resnet_34'?)"
    assert did_you_mean("margn", ["margin", "scale"]) == " (did you mean 'margin'?)"
    assert did_you_mean("sdg", ["sgd", "adam"]) == " (did you mean 'sgd'?)"
    assert did_you_mean("xyz", ["margin", "scale"]) == ""
    assert did_you_mean("resnet", ["resnet18", "resnet34", "resnet50", "resnet101"]).count("'") == 6  # three names


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


@dataclass
class Inner:
    size: int
    rate: float = 0.5


@pytest.mark.parametrize(
    "value, annotation, expected",
    [
        ("1e-3", float, 1e-3),  # PyYAML reads 1e-3 as a string
        (3, float, 3.0),
        ("7", int, 7),
        (4.0, int, 4),
        (16000, str, "16000"),
        ("a/b", Path, Path("a/b")),
        (None, Optional[int], None),
        (5, int | None, 5),
        ("2.5e-1", float | None, 0.25),
        (3, int | float, 3),
        (0.5, list[float], [0.5]),  # a scalar where a list is expected: a one-item list
        ([1, "2"], tuple[int, ...], (1, 2)),
        ([1, 2.5], tuple[int, float], (1, 2.5)),
        ({"a": "1"}, dict[str, int], {"a": 1}),
        ("blue", Color, Color.BLUE),
        ("bf16", Literal["fp32", "bf16"], "bf16"),
        ({"size": "3"}, Inner, Inner(3, 0.5)),
    ],
)
def test_coerce_by_annotation(value, annotation, expected):
    assert coerce(value, annotation) == expected


def test_unannotated_parameters_take_the_type_of_their_default():
    assert coerce("0.1", EMPTY, 1.0) == 0.1
    assert coerce("x", EMPTY, None) == "x"


@pytest.mark.parametrize(
    "value, annotation, message",
    [
        ("abc", float, "expected a number, got 'abc'"),
        ("yes", bool, "expected true or false, got 'yes'"),
        (1.5, int, "expected an integer, got 1.5"),
        (None, int, "expected an integer, got null"),
        ("double", Literal["fp32", "fp16"], "expected one of 'fp32', 'fp16', got 'double'"),
        ("bf61", Literal["fp32", "bf16"], "expected one of 'fp32', 'bf16', got 'bf61' (did you mean 'bf16'?)"),
        ([1, 2, 3], tuple[int, int], "expected a list of 2 values (tuple[int, int]), got [1, 2, 3]"),
        ("green", Color, "expected one of red, blue, got 'green'"),
    ],
)
def test_coerce_errors_say_what_was_expected(value, annotation, message):
    with pytest.raises(CoercionError) as info:
        coerce(value, annotation)
    assert str(info.value) == message


def test_coerce_error_inside_a_list_names_the_index():
    with pytest.raises(CoercionError) as info:
        coerce([1, "x"], list[int])
    assert info.value.path == ("1",)


def aam(embed_dim: int, num_classes: int, margin: float = 0.2, scale: float = 32.0, easy_margin: bool = False):
    """An additive angular margin stand-in."""


def test_bind_reports_unknown_missing_engine_and_type_problems_together():
    params = parameters(aam)
    args, problems = bind(
        params,
        {"margn": 0.3, "scale": "abc", "num_classes": 3},
        engine=("embed_dim", "num_classes"),
        owner="losses 'aamsoftmax'",
    )
    assert problems == [
        (
            "margn",
            "unknown argument 'margn' for losses 'aamsoftmax' (did you mean 'margin'?); it accepts:"
            " margin=0.2, scale=32.0, easy_margin=False",
        ),
        ("scale", "expected a number, got 'abc'"),
        ("num_classes", "'num_classes' is set by vvframe for losses; remove it"),
    ]
    assert args == {}


def test_bind_missing_required_argument():
    def model(in_dim: int, embed_dim: int):
        """A model."""

    _, problems = bind(parameters(model), {}, engine=("in_dim",), owner="models 'x'")
    assert problems == [("embed_dim", "missing required argument 'embed_dim' for models 'x' (int)")]


def test_bind_coerces_values():
    args, problems = bind(parameters(aam), {"margin": "2e-1", "easy_margin": True}, engine=("embed_dim", "num_classes"))
    assert problems == [] and args == {"margin": 0.2, "easy_margin": True}


def test_parameters_refuses_callables_without_an_explicit_signature():
    def bag(a: int, **kwargs):
        """Takes anything."""

    def star(*args):
        """Takes anything."""

    with pytest.raises(ContractError, match=r"takes \*\*kwargs"):
        parameters(bag)
    with pytest.raises(ContractError, match=r"takes \*args"):
        parameters(star)


def test_parameters_of_a_class_come_from_init_with_resolved_annotations():
    params = {p.name: p for p in parameters(Inner)}
    assert params["size"].annotation is int and params["size"].required
    assert params["rate"].default == 0.5


# --- ranges: what a signature says its code accepts --------------------------------------------------------

Prob = Annotated[float, Range(0, 1)]


@pytest.mark.parametrize(
    "limit, text",
    [
        (Range(0, 1), "in [0, 1]"),
        (Range(gt=0, le=1), "in (0, 1]"),
        (Range(0, lt=math.pi / 2), "in [0, 1.570796327)"),
        (Range(gt=0), "in (0, inf)"),
        (Range(le=10), "in (-inf, 10]"),
        (Range(), ""),
    ],
)
def test_a_range_reads_as_an_interval(limit, text):
    assert str(limit) == text


def test_a_range_states_each_bound_once_and_in_order():
    with pytest.raises(ContractError, match="give each bound once"):
        Range(0, gt=0)
    with pytest.raises(ContractError, match="lower bound is above the upper one"):
        Range(2, 1)


@pytest.mark.parametrize(
    "value, annotation, message",
    [
        (2, Prob, "expected a number in [0, 1], got 2"),
        (float("nan"), Prob, "expected a number in [0, 1], got nan"),
        (-1, Annotated[float, Range(gt=0)], "expected a number in (0, inf), got -1"),
        (float("inf"), Annotated[float, Range(gt=0)], "expected a finite number in (0, inf), got inf"),
        (100000000000, Annotated[int, Range(1, 65536)], "expected an integer in [1, 65536], got 100000000000"),
        (10**23, Annotated[int, Range(1, 10**6)], "expected an integer in [1, 1000000], got 100000000000000000000000"),
        # the rules without a range: a float is finite, an integer fits in 64 bits
        (float("nan"), float, "expected a finite number, got nan"),
        ("1e400", float, "expected a finite number, got '1e400'"),
        (float("-inf"), float | None, "expected a finite number, got -inf"),
        (2**63, int, "expected an integer that fits in 64 bits (below 2**63 in size), got 9223372036854775808"),
        (
            2**70,
            Annotated[int, Range(0)],
            "expected an integer in [0, inf) that fits in 64 bits (below 2**63 in size), got 1180591620717411303424",
        ),
        # an optional or union annotation keeps the range message, not a list of types
        (0, Annotated[int, Range(1)] | None, "expected an integer in [1, inf), got 0"),
        (float("nan"), int | float, "expected a finite number, got nan"),
        (None, Prob, "expected a number in [0, 1], got null"),
    ],
)
def test_coerce_refuses_numbers_outside_their_range(value, annotation, message):
    with pytest.raises(CoercionError) as info:
        coerce(value, annotation)
    assert str(info.value) == message


def test_a_range_on_a_container_applies_to_each_number_and_names_its_index():
    with pytest.raises(CoercionError) as info:
        coerce([0.5, 1.5], Annotated[tuple[float, ...], Range(0, 1)])
    assert (str(info.value), info.value.path) == ("expected a number in [0, 1], got 1.5", ("1",))
    with pytest.raises(CoercionError) as info:
        coerce({"noise": [0, 99]}, Annotated[dict[str, tuple[float, float]], Range(-20, 60)])
    assert info.value.path == ("noise", "1")
    assert coerce([0, "0.5"], list[Prob]) == [0.0, 0.5]


@pytest.mark.parametrize(
    "value, annotation, expected",
    [
        ("1e-3", Annotated[float, Range(gt=0)], 1e-3),
        (1, Prob, 1.0),
        (None, Annotated[int, Range(1)] | None, None),
        (65536, Annotated[int, Range(1, 65536)], 65536),
        (float("inf"), Annotated[float, Range(gt=0, finite=False)], float("inf")),
        (2**63 - 1, int, 2**63 - 1),
    ],
)
def test_coerce_accepts_numbers_inside_their_range(value, annotation, expected):
    assert coerce(value, annotation) == expected


def test_nan_passes_only_where_a_range_allows_it_and_has_no_bounds():
    assert math.isnan(coerce(float("nan"), Annotated[float, Range(finite=False)]))
    with pytest.raises(CoercionError, match="in \\(0, inf\\), got nan"):
        coerce(float("nan"), Annotated[float, Range(gt=0, finite=False)])


def test_type_name_shows_the_range():
    assert type_name(Prob) == "float in [0, 1]"
    assert type_name(Annotated[int, Range(1, 64)] | None) == "int in [1, 64] | None"
    assert type_name(Annotated[float | int, Range(gt=0)]) == "(float | int) in (0, inf)"
    assert type_name(list[Annotated[float, Range(0)]]) == "list[float in [0, inf)]"
    assert type_name(tuple[int, ...]) == "tuple[int, ...]"
    assert limits(dict[str, list[Prob]] | None) == [Range(0, 1)]


def ranged(sample_rate: int, prob: Prob = 0.5, widths: Annotated[list[int], Range(1, 8)] = (2,)):
    """A component whose signature states its ranges."""


def test_parameters_keep_ranges_and_bind_reports_them_with_their_path():
    params = {p.name: p for p in parameters(ranged)}
    assert params["prob"].describe() == "prob: float in [0, 1] = 0.5"
    assert params["widths"].describe() == "widths: list[int] in [1, 8] = (2,)"
    args, problems = bind(parameters(ranged), {"prob": "0.25", "widths": [4, 9]}, engine=("sample_rate",))
    assert args == {"prob": 0.25}
    assert problems == [("widths.1", "expected an integer in [1, 8], got 9")]


@dataclass
class Bounded:
    steps: Annotated[int, Range(1, 100)] = 1


def test_a_dataclass_schema_keeps_its_ranges():
    assert coerce({"steps": "7"}, Bounded) == Bounded(7)
    with pytest.raises(CoercionError) as info:
        coerce({"steps": 0}, Bounded)
    assert (str(info.value), info.value.path) == ("expected an integer in [1, 100], got 0", ("steps",))


@dataclass
class Rising:
    start: float = 0.0
    final: float = 1.0

    def __post_init__(self) -> None:
        if self.final < self.start:
            raise ValueError(f"final must be >= start ({self.start}), got {self.final}")


def test_a_nested_schema_refusing_its_values_is_a_problem_at_its_path():
    _, problems = bind([Param("schedule", Rising | None, None)], {"schedule": {"start": 2}})
    assert problems == [("schedule", "final must be >= start (2.0), got 1.0")]
