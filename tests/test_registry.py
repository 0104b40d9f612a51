"""The registry against hand-made entry points: lookup, messages, building, contracts."""

from __future__ import annotations

import importlib.metadata as md
import sys

import pytest
from ranged_components import marked_module

from vvframe.cli.plugins import describe, listing
from vvframe.core import registry
from vvframe.core.errors import ArgumentError, BadValue, ComponentNotFound, PluginImportError, RecipeError


def test_every_kind_of_the_design_is_known_with_what_the_engine_supplies():
    assert {k: v.supplies for k, v in registry.KINDS.items()} == {
        "frontends": ("sample_rate",),
        "models": ("in_dim", "sample_rate"),
        "losses": ("embed_dim", "num_classes"),
        "augmentors": ("sample_rate",),
        "samplers": ("labels", "batch_size", "rank", "world_size", "seed"),
        "normalizers": (),
        "optimizers": ("params",),
        "schedulers": ("optimizer", "steps_per_epoch", "epochs"),
        "stages": ("ctx",),
    }


def test_unknown_kind_suggests_the_plural():
    with pytest.raises(ComponentNotFound, match=r"unknown kind 'model' \(did you mean 'models'\?\)"):
        registry.kind("model")


def test_unknown_name_suggests_close_names_and_how_to_list(fake_registry):
    with pytest.raises(ComponentNotFound) as info:
        registry.find("models", "tinny")
    assert str(info.value) == (
        "no models component named 'tinny' is installed (did you mean 'tiny'?) (`vvframe plugins models` lists all 2)"
    )
    assert isinstance(info.value, LookupError) and not isinstance(info.value, KeyError)


def test_no_components_at_all_says_vvframe_is_probably_not_installed(fake_registry):
    fake_registry({})
    with pytest.raises(ComponentNotFound, match=r"vvframe itself is probably not installed \(pip install -e \.\)"):
        registry.find("models", "tiny")


def test_none_of_a_kind_installed(fake_registry):
    with pytest.raises(ComponentNotFound, match="none of kind schedulers is installed"):
        registry.find("schedulers", "cosine")


def test_the_same_name_from_two_distributions_is_an_error_naming_both(fake_registry, monkeypatch):
    eps = [
        md.EntryPoint("tiny", "fake_components:Model", "vvframe.models"),
        md.EntryPoint("tiny", "other_pkg.nets:Tiny", "vvframe.models"),
    ]
    monkeypatch.setattr(registry, "_entry_points", lambda: eps)
    registry.refresh()
    with pytest.raises(ComponentNotFound) as info:
        registry.find("models", "tiny")
    message = str(info.value)
    assert "two installed models components are named 'tiny'" in message
    assert "fake_components:Model" in message and "other_pkg.nets:Tiny" in message
    assert "name: fake_components:Model" in message  # how to pick one


def test_a_module_attr_reference_needs_no_entry_point(fake_registry):
    comp, problems = registry.resolve("models", {"name": "fake_components:Model", "embed_dim": "8"}, "model")
    assert problems == []
    assert comp.build(in_dim=3).embed_dim == 8


def test_a_malformed_reference_is_reported(fake_registry):
    with pytest.raises(ComponentNotFound, match="not a valid reference"):
        registry.find("models", "fake components:Model")


def test_listing_imports_nothing(fake_registry, tmp_path, monkeypatch):
    (tmp_path / "lazy_probe_module.py").write_text("raise RuntimeError('imported!')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    fake_registry({"models": {"probe": "lazy_probe_module:Net"}})
    rows = listing()
    assert rows == [("models", "probe", "lazy_probe_module:Net", "-", "")]
    assert "lazy_probe_module" not in sys.modules


def test_a_plugin_that_fails_to_import_is_named_with_its_cause(fake_registry):
    fake_registry({"models": {"broken": "broken_plugin:Net", "tiny": "fake_components:Model"}})
    with pytest.raises(PluginImportError) as info:
        registry.load(registry.find("models", "broken"))
    assert str(info.value).startswith("models 'broken' (broken_plugin:Net, from -) failed to import: ImportError:")
    assert isinstance(info.value.__cause__, ImportError)
    assert registry.load(registry.find("models", "tiny")) is not None  # the others still work
    assert [r[1] for r in listing("models")] == ["broken", "tiny"]


def test_engine_values_are_passed_by_parameter_name_only_where_asked(fake_registry):
    comp, problems = registry.resolve("models", {"name": "tiny", "embed_dim": 32}, "model")
    assert problems == []
    model = comp.build(in_dim=80, sample_rate=16000)  # Model does not take sample_rate: not passed
    assert (model.in_dim, model.embed_dim) == (80, 32)


def test_a_value_the_engine_supplies_cannot_be_set_in_the_recipe(fake_registry):
    _, problems = registry.resolve("models", {"name": "tiny", "in_dim": 80}, "model")
    assert problems == [("model.in_dim", "'in_dim' is set by vvframe for models; remove it")]


def test_resolve_reports_unknown_argument_with_path_and_accepted_parameters(fake_registry):
    _, problems = registry.resolve("losses", {"name": "margin_loss", "margn": 0.3}, "loss")
    assert problems == [
        (
            "loss.margn",
            "unknown argument 'margn' for losses 'margin_loss' (did you mean 'margin'?);"
            " it accepts: margin=0.2, scale=30.0",
        )
    ]


def test_resolve_shorthand_null_and_missing_name(fake_registry):
    comp, problems = registry.resolve("models", "tiny", "model")
    assert problems == [] and comp.name == "tiny" and comp.args == {}
    assert registry.resolve("models", None, "model") == (None, [])
    _, problems = registry.resolve("models", {"embed_dim": 3}, "model")
    assert problems[0][0] == "model.name" and "missing 'name'" in problems[0][1]


def test_yaml_strings_are_coerced_by_annotation(fake_registry):
    comp, problems = registry.resolve(
        "optimizers", {"name": "sgd", "lr": "1e-3", "nesterov": True, "momentum": 0.9}, "optimizer"
    )
    assert problems == [] and comp.args["lr"] == 1e-3 and isinstance(comp.args["lr"], float)


def test_an_exception_inside_a_component_keeps_its_type_and_gains_a_note(fake_registry):
    comp, _ = registry.resolve("augmentors", {"name": "exploding", "level": 11}, "augment.1")
    with pytest.raises(ValueError, match="level 11 is too loud") as info:
        comp.build(sample_rate=16000)
    assert "while building augmentors 'exploding' (recipe path 'augment.1')" in info.value.__notes__


def test_build_refuses_values_the_kind_is_not_supplied(fake_registry):
    comp, _ = registry.resolve("models", "tiny", "model")
    with pytest.raises(ArgumentError, match="not among the values vvframe supplies to models"):
        comp.build(in_dim=3, num_classes=4)


def test_public_build_in_one_step(fake_registry):
    import torch

    net = torch.nn.Linear(2, 1)
    opt = registry.build("optimizers", {"name": "sgd", "lr": 0.5}, params=net.parameters())
    assert isinstance(opt, torch.optim.SGD) and opt.defaults["lr"] == 0.5
    with pytest.raises(RecipeError, match="optimizers.lrr"):
        registry.build("optimizers", {"name": "sgd", "lrr": 0.5}, params=net.parameters())


def test_describe_shows_parameters_supplied_values_and_docstring(fake_registry):
    text = describe("losses", "margin_loss")
    assert text.splitlines() == [
        "losses 'margin_loss'  ->  fake_components:Loss  (-)",
        "  A loss that only records its settings.",
        "  arguments:",
        "    margin: float = 0.2",
        "    scale: float = 30.0",
        "  supplied by vvframe: embed_dim, num_classes",
    ]


# --- ranges and kind limits -------------------------------------------------------------------------------

RANGED = {
    "augmentors": {"hiss": "ranged_components:hiss"},
    "models": {"wide": "ranged_components:Wide"},
    "optimizers": {"sgd": "torch.optim:SGD"},
}


def test_a_value_outside_its_range_is_a_problem_at_its_path(fake_registry):
    fake_registry(RANGED)
    _, problems = registry.resolve("augmentors", {"name": "hiss", "prob": 2, "snr": [0, 90]}, "augment.0")
    assert problems == [
        ("augment.0.prob", "expected a number in [0, 1], got 2"),
        ("augment.0.snr.1", "expected a number in [-20, 60], got 90"),
    ]
    comp, problems = registry.resolve("models", {"name": "wide", "embed_dim": 192, "depth": None}, "model")
    assert problems == [] and comp.args == {"embed_dim": 192, "depth": None}


def test_the_optimizers_kind_limits_torch_arguments_it_does_not_own(fake_registry):
    fake_registry(RANGED)
    entry = {"name": "sgd", "lr": -0.1, "momentum": -1, "weight_decay": float("nan")}
    _, problems = registry.resolve("optimizers", entry, "optimizer")
    assert problems == [
        ("optimizer.lr", "expected a number in [0, inf), got -0.1"),
        ("optimizer.momentum", "expected a number in [0, inf), got -1"),
        ("optimizer.weight_decay", "expected a finite number in [0, inf), got nan"),
    ]
    assert registry.resolve("optimizers", {"name": "sgd", "lr": "1e-3"}, "optimizer")[0].args == {"lr": 1e-3}
    assert "    lr: (float | Tensor) in [0, inf) = 0.001" in describe("optimizers", "sgd").splitlines()


def test_describe_shows_each_range(fake_registry):
    fake_registry(RANGED)
    assert describe("augmentors", "hiss").splitlines()[3:6] == [
        "    prob: float in [0, 1] = 0.5",
        "    snr: tuple[float, float] in [-20, 60] = (0.0, 15.0)",
        "    level: float in (0, inf) = 1.0",
    ]
    assert "    depth: int in [1, inf) | None = None" in describe("models", "wide").splitlines()


def test_build_with_a_bad_value_is_a_bad_value_naming_the_component(fake_registry):
    fake_registry(RANGED)
    with pytest.raises(BadValue) as info:
        registry.build("augmentors", {"name": "hiss", "prob": 1.5}, sample_rate=8000)
    assert str(info.value) == "augmentors 'hiss': 1 problem\n  augmentors.prob: expected a number in [0, 1], got 1.5"
    assert isinstance(info.value, RecipeError)


# --- references: trusted in a recipe, refused where data is loaded ----------------------------------------


def test_a_reference_is_imported_and_checked_but_never_called(fake_registry, tmp_path, monkeypatch):
    module = marked_module(tmp_path, monkeypatch)
    comp, problems = registry.resolve("models", {"name": f"{module}:Model", "embed_dim": "12"}, "model")
    assert problems == [] and comp.args == {"embed_dim": 12}
    _, problems = registry.resolve("models", {"name": f"{module}:Model", "embed_dims": 12}, "model")
    assert [p for p, _ in problems] == ["model.embed_dims"] and "did you mean 'embed_dim'" in problems[0][1]
    assert "    embed_dim: int = 8" in describe("models", f"{module}:Model").splitlines()
    assert (tmp_path / "imported").exists() and not (tmp_path / "called").exists()


def test_references_false_refuses_a_reference_before_importing_it(fake_registry, tmp_path, monkeypatch):
    module = marked_module(tmp_path, monkeypatch)
    refused = (
        f"models '{module}:Model' names a Python object directly (module:attr), which is refused here: a run"
        " directory or model file being loaded is data, not a recipe you run, so only installed models"
        " components are built from it (`vvframe plugins models` lists them); load it with trust_recipe=True"
        " (--trust-recipe) only if you trust its author as you trust a recipe you run"
    )
    with pytest.raises(ComponentNotFound) as info:
        registry.find("models", f"{module}:Model", references=False)
    assert str(info.value) == refused
    assert registry.resolve("models", f"{module}:Model", "model", references=False) == (None, [("model.name", refused)])
    with pytest.raises(RecipeError, match="refused here"):
        registry.build("models", f"{module}:Model", references=False, in_dim=4)
    assert not (tmp_path / "imported").exists()
    assert registry.resolve("models", "tiny", "model", references=False)[1] == []  # entry points are fine
