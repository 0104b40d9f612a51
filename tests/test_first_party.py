"""First-party components: declared in setup.cfg like any plugin, loadable, explicit, and doing their job."""

from __future__ import annotations

import ast
import configparser
import importlib.metadata as md
import types
import typing
from pathlib import Path

import pytest
from conftest import ROOT, vvframe_cli

from vvframe.cli.plugins import describe
from vvframe.core import registry
from vvframe.core.recipe import check, section_kind
from vvframe.core.schema import Range, parameters, type_name
from vvframe.testing import BEHAVIOUR, check_component, check_entry_points, limits, make_noise_folder, make_rir_folder

CONFIG = configparser.ConfigParser()
CONFIG.read(ROOT / "setup.cfg")


def declared() -> list[md.EntryPoint]:
    """The entry points setup.cfg declares in vvframe.* groups."""
    eps = []
    for group, body in CONFIG["options.entry_points"].items():
        if not group.startswith("vvframe."):
            continue
        for line in filter(None, (line.strip() for line in body.splitlines())):
            name, _, value = (part.strip() for part in line.partition("="))
            eps.append(md.EntryPoint(name, value, group))
    return eps


def test_setup_cfg_declares_only_known_kinds_and_the_install_is_current():
    assert declared(), "setup.cfg declares no first-party component"
    assert {ep.group for ep in declared()} <= {k.group for k in registry.KINDS.values()}
    installed = {
        (ep.group, ep.name, ep.value)
        for ep in md.distribution("vvframe").entry_points
        if ep.group.startswith("vvframe.")
    }
    assert installed == {(ep.group, ep.name, ep.value) for ep in declared()}, (
        "the installed entry points differ from setup.cfg: reinstall (pip install -e .)"
    )


def test_every_plugins_package_is_packaged():
    listed = {p.strip() for p in CONFIG["options"]["packages"].splitlines() if p.strip()}
    on_disk = {
        "vvframe_plugins" + "".join("." + part for part in p.parent.relative_to(ROOT / "plugins").parts)
        for p in (ROOT / "plugins").rglob("__init__.py")
    }
    assert on_disk <= listed, f"add to setup.cfg [options] packages: {sorted(on_disk - listed)}"


@pytest.fixture(scope="module")
def augment_arguments(tmp_path_factory) -> dict[str, dict]:
    """The arguments that build the first-party augmentors which read files: a tiny MUSAN-like folder and a
    folder of impulse responses (the others build from their defaults)."""
    base = tmp_path_factory.mktemp("augment")
    musan, rirs = str(make_noise_folder(base / "musan")), str(make_rir_folder(base / "rirs"))
    return {
        "noise": {"root": musan},
        "reverb": {"root": rirs},
        "choice": {"options": [{"name": "reverb", "root": rirs}, {"name": "noise", "root": musan}]},
    }


@pytest.mark.parametrize("ep", declared(), ids=lambda ep: f"{ep.group}:{ep.name}")
def test_contract_of_each_first_party_component(ep, augment_arguments):
    kind = ep.group.removeprefix("vvframe.")
    assert kind in BEHAVIOUR, f"no behavioural check for kind {kind}: add one to vvframe/testing.py"
    check_component(kind, ep.name, augment_arguments.get(ep.name) if kind == "augmentors" else None)


def test_plugins_check_runs_clean_in_the_suite():
    assert not check_entry_points()
    result = vvframe_cli("plugins", "--check")
    assert result.returncode == 0, result.stderr


# Recipes whose stages later issues install: the failures allowed until then are exactly these missing stages.
# When a stage gets installed this test fails for that entry, and the entry must be removed.
PENDING: dict[str, set[str]] = {}


@pytest.mark.parametrize("path", sorted((ROOT / "recipes").rglob("*.yaml")), ids=lambda p: p.name)
def test_every_recipe_passes_check(path):
    if path.parent.name == "base":
        pytest.skip("a base is checked through the recipes that use it")
    from vvframe.core.errors import RecipeError

    pending = PENDING.get(path.name, set())
    try:
        check(path)
    except RecipeError as exc:
        real = [
            p
            for p in exc.problems
            if p.path and not any(f"named '{s}'" in p.message and p.path.startswith("stages.") for s in pending)
        ]
        assert not real, "\n".join(map(str, real))
        missing = {p.message.split("'")[1] for p in exc.problems if p.path.startswith("stages.")}
        assert missing == pending, f"PENDING for {path.name} is stale: now missing {missing or 'nothing'}"
    else:
        assert not pending, f"{path.name} passes now: remove it from PENDING"


def _python_files(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.py"))


def test_the_kernel_never_imports_the_first_party_plugins():
    for path in _python_files(ROOT / "vvframe"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            assert not [n for n in names if n.split(".")[0] in ("vvframe_plugins", "plugins")], path


def test_the_kernel_names_no_concrete_component():
    names = {ep.name for ep in declared()} | {ep.value.split(":")[-1] for ep in declared()}
    for path in _python_files(ROOT / "vvframe"):
        tree = ast.parse(path.read_text())
        docstrings = {
            id(n.body[0].value)
            for n in ast.walk(tree)
            if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            and n.body
            and isinstance(n.body[0], ast.Expr)
            and isinstance(n.body[0].value, ast.Constant)
        }
        messages = {id(n) for f in ast.walk(tree) if isinstance(f, ast.JoinedStr) for n in ast.walk(f)}
        # the run directory's folders are fixed by DESIGN section 6 (one of them is called eval, like a stage)
        # (so are a data set's: MUSAN has a folder noise/, like the augmentor): *_LAYOUT constants are exempt
        layout = {
            id(n)
            for a in ast.walk(tree)
            if isinstance(a, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id.endswith("_LAYOUT") for t in a.targets)
            for n in ast.walk(a)
        }
        layout |= {
            id(a.slice)
            for a in ast.walk(tree)
            if isinstance(a, ast.Subscript) and isinstance(a.value, ast.Name) and a.value.id.endswith("_LAYOUT")
        }
        messages |= layout
        for node in ast.walk(tree):  # a word inside an f-string is message text, not a reference to a component
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings | messages:
                assert node.value not in names, f"{path}: the kernel names component {node.value!r}"


def test_plugins_use_only_public_vvframe_names():
    for path in _python_files(ROOT / "plugins"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("vvframe"):
                parts = node.module.split(".")
                assert not any(p.startswith("_") for p in parts), f"{path}: imports private module {node.module}"
                assert not [a.name for a in node.names if a.name.startswith("_")], f"{path}: private name"


def test_component_sections_map_to_known_kinds():
    declared_kinds = {
        found[0]
        for ep in declared()
        if ep.group == "vvframe.stages"
        for p in parameters(registry.load(ep))
        if (found := section_kind(p.annotation))
    }
    assert declared_kinds and declared_kinds <= set(registry.KINDS)


def test_every_model_combines_with_every_loss_its_sampler_satisfies():
    from vvframe.core.errors import RecipeError

    losses = [ep.name for ep in declared() if ep.group == "vvframe.losses"]
    models = [ep.name for ep in declared() if ep.group == "vvframe.models"]

    def complaints(model: str, loss: str, per_speaker: int) -> list:
        """The sampler's problems in the quickstart with ``model`` and ``loss``: the train stage, which owns the
        agreement between the loss and the sampler, checks it before anything runs."""
        overrides = [
            f"model={model}",
            f"loss={loss}",
            f"sampler={{name: speaker_balanced, per_speaker: {per_speaker}}}",
            "trainer.margin_schedule=null",
        ]
        try:
            check(ROOT / "recipes" / "quickstart.yaml", overrides)
        except RecipeError as exc:
            return [p for p in exc.problems if p.path == "sampler"]
        return []

    for i, loss in enumerate(losses):
        need = registry.load(registry.find("losses", loss)).min_per_speaker
        model = models[i % len(models)]
        assert complaints(model, loss, need) == [], loss
        if need > 1:
            assert complaints(model, loss, need - 1), f"{loss} with {need - 1} per speaker passed the check"


def _is_int(annotation) -> bool:
    """Whether ``annotation`` is ``int``, perhaps annotated or optional."""
    if typing.get_origin(annotation) is typing.Annotated:
        return _is_int(typing.get_args(annotation)[0])
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return any(_is_int(a) for a in typing.get_args(annotation))
    return annotation is int


def test_first_party_probabilities_and_sizes_state_their_ranges():
    """Every ``prob`` is a probability, and every integer argument of a model or frontend has an upper bound, so
    `vvframe check` refuses ``prob: 2`` or ``channels: 100000000000`` before anything is built."""
    unbounded, seen = [], 0
    for ep in declared():
        kind = ep.group.removeprefix("vvframe.")
        if kind == "stages":
            continue
        for p in registry.signature(kind, registry.load(ep)):
            if p.name in registry.KINDS[kind].supplies:
                continue
            if p.name == "prob":
                assert limits(p.annotation) == [Range(0, 1)], f"{kind} '{ep.name}': prob is {type_name(p.annotation)}"
            if kind in ("models", "frontends") and _is_int(p.annotation):
                seen += 1
                if not any(r.high is not None for r in limits(p.annotation)):
                    unbounded.append(f"{kind} '{ep.name}': {p.describe()}")
    assert not unbounded, "\n".join(unbounded)
    assert seen > 20
    assert "    channels: int in [1, 65536] = 512" in describe("models", "ecapa_tdnn").splitlines()


@pytest.mark.parametrize(
    "section, values",
    [
        (
            "trainer",
            {"epochs": "0", "batch_size": "1000000", "workers": "-1", "grad_clip": "0", "early_stop_patience": "0"},
        ),
        ("data", {"sample_rate": "10", "crop_seconds": ".nan"}),
        ("eval", {"p_target": "[0.01, 1.5]", "target_far": "2"}),
    ],
)
def test_first_party_settings_state_their_ranges(section, values):
    from vvframe.core.errors import RecipeError

    with pytest.raises(RecipeError) as info:
        check(ROOT / "recipes" / "quickstart.yaml", [f"{section}.{k}={v}" for k, v in values.items()])
    assert {p.path.split(".")[1] for p in info.value.problems} == set(values), "\n".join(map(str, info.value.problems))
    assert all(" in [" in p.message or " in (" in p.message for p in info.value.problems)
