"""Signatures as schemas: suggestions, coercion of YAML values by annotation, binding arguments."""
from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import pytest

from vvframe.errors import ContractError, did_you_mean
from vvframe.schema import EMPTY, CoercionError, bind, coerce, parameters


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


@pytest.mark.parametrize("value, annotation, expected", [
    ("1e-3", float, 1e-3),           # PyYAML reads 1e-3 as a string
    (3, float, 3.0),
    ("7", int, 7),
    (4.0, int, 4),
    (16000, str, "16000"),
    ("a/b", Path, Path("a/b")),
    (None, Optional[int], None),
    (5, int | None, 5),
    ("2.5e-1", float | None, 0.25),
    (3, int | float, 3),
    (0.5, list[float], [0.5]),      # a scalar where a list is expected: a one-item list
    ([1, "2"], tuple[int, ...], (1, 2)),
    ([1, 2.5], tuple[int, float], (1, 2.5)),
    ({"a": "1"}, dict[str, int], {"a": 1}),
    ("blue", Color, Color.BLUE),
    ("bf16", Literal["fp32", "bf16"], "bf16"),
    ({"size": "3"}, Inner, Inner(3, 0.5)),
])
def test_coerce_by_annotation(value, annotation, expected):
    assert coerce(value, annotation) == expected


def test_unannotated_parameters_take_the_type_of_their_default():
    assert coerce("0.1", EMPTY, 1.0) == 0.1
    assert coerce("x", EMPTY, None) == "x"


@pytest.mark.parametrize("value, annotation, message", [
    ("abc", float, "expected a number, got 'abc'"),
    ("yes", bool, "expected true or false, got 'yes'"),
    (1.5, int, "expected an integer, got 1.5"),
    (None, int, "expected an integer, got null"),
    ("double", Literal["fp32", "fp16"], "expected one of 'fp32', 'fp16', got 'double'"),
    ("bf61", Literal["fp32", "bf16"], "expected one of 'fp32', 'bf16', got 'bf61' (did you mean 'bf16'?)"),
    ([1, 2, 3], tuple[int, int], "expected a list of 2 values (tuple[int, int]), got [1, 2, 3]"),
    ("green", Color, "expected one of red, blue, got 'green'"),
])
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
    args, problems = bind(params, {"margn": 0.3, "scale": "abc", "num_classes": 3},
                          engine=("embed_dim", "num_classes"), owner="losses 'aamsoftmax'")
    assert problems == [
        ("margn", "unknown argument 'margn' for losses 'aamsoftmax' (did you mean 'margin'?); it accepts:"
                  " margin=0.2, scale=32.0, easy_margin=False"),
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
