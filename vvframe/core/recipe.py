"""Recipes: load YAML (``base:`` inheritance, line numbers), apply ``a.b.c=value`` overrides, validate, snapshot.

A recipe has kernel keys (``name``, ``seed``, ``stages``, ``base``, ``plugins``), component sections (``model:``
etc., each ``name`` plus arguments) and settings sections (``trainer:``, ``data:``...). A settings section
belongs to the stages that read it: a stage's parameter that is not ``ctx`` and not a component section
names a settings section, and its annotation (a dataclass or any class with an explicit signature) is that
section's schema. So the recipe format grows with the stages installed, and the kernel names none of them.
"""

from __future__ import annotations

import copy
import dataclasses
import enum
import importlib.metadata as metadata
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from vvframe.core import registry
from vvframe.core.errors import (
    BadValue,
    ComponentNotFound,
    ContractError,
    PluginImportError,
    Problem,
    RecipeError,
    did_you_mean,
)
from vvframe.core.schema import Param, bind, coerce, parameters

KERNEL_KEYS = ("base", "name", "seed", "stages", "plugins")
# recipe section -> kind; a section that is a list holds several components of the kind
COMPONENT_SECTIONS: dict[str, str] = {
    "frontend": "frontends",
    "model": "models",
    "loss": "losses",
    "augment": "augmentors",
    "sampler": "samplers",
    "normalizer": "normalizers",
    "optimizer": "optimizers",
    "scheduler": "schedulers",
}
LIST_SECTIONS = ("augment",)


@dataclass
class Recipe:
    """A merged recipe mapping plus, for each dot path, where its value came from (``file:line`` or an override)."""

    data: dict[str, Any]
    origins: dict[str, str] = field(default_factory=dict)
    source: str = "<recipe>"

    def origin(self, path: str) -> str:
        """Where the value at ``path`` (or its nearest written parent) came from."""
        while path:
            if path in self.origins:
                return self.origins[path]
            path = path.rpartition(".")[0]
        return self.source


# --- loading ----------------------------------------------------------------------------------------------


def load(path: str | Path, overrides: Sequence[str] = ()) -> Recipe:
    """Read ``path`` with its ``base:`` chain and apply ``overrides``; a ``RecipeError`` lists what is wrong."""
    path = Path(path)
    problems: list[Problem] = []
    data, origins = _load_file(path, (), problems)
    recipe = Recipe(data, origins, str(path))
    for i, text in enumerate(overrides, 1):
        problem = apply_override(recipe, text, f"command-line override {i} ({text})")
        if problem:
            problems.append(problem)
    if problems:
        raise RecipeError(str(path), problems)
    return recipe


def _load_file(path: Path, chain: tuple[Path, ...], problems: list[Problem]) -> tuple[dict, dict]:
    if not path.is_file():
        raise RecipeError(str(path), [Problem("", "", _missing_file(path))])
    real = path.resolve()
    if real in chain:
        cycle = " -> ".join(str(p) for p in (*chain, real)[list(chain).index(real) :])
        raise RecipeError(str(chain[0]), [Problem("base", "", f"base cycle: {cycle}")])
    data, origins = _read_yaml(path, problems)
    bases = data.pop("base", None)
    if bases is None:
        return data, origins
    base_origin = origins.pop("base", str(path))
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        problems.append(Problem("base", base_origin, f"expected a file name or a list of them, got {bases!r}"))
        return data, origins
    merged: dict = {}
    merged_origins: dict = {}
    for base in bases:
        base_path = Path(os.path.normpath(path.parent / base))
        if not base_path.is_file():
            problems.append(Problem("base", base_origin, _missing_file(base_path)))
            continue
        base_data, base_origins = _load_file(base_path, (*chain, real), problems)
        merged, merged_origins = merge(merged, merged_origins, base_data, base_origins)
    return merge(merged, merged_origins, data, origins)


def _missing_file(path: Path) -> str:
    if path.is_dir():
        names = sorted(p.name for p in path.iterdir() if p.suffix in (".yaml", ".yml"))
        inside = f" (recipes in it: {', '.join(names[:5])})" if names else ""
        return f"{path} is a directory; give a recipe file (.yaml){inside}"
    hint = ""
    if path.parent.is_dir():
        names = [p.name for p in path.parent.iterdir() if p.suffix in (".yaml", ".yml")]
        hint = did_you_mean(path.name, names)
    return f"recipe file {path} does not exist{hint}"


def _read_yaml(path: Path, problems: list[Problem]) -> tuple[dict, dict]:
    text = path.read_text(encoding="utf-8")
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        what = " ".join(filter(None, [exc.context, exc.problem]))
        raise RecipeError(str(path), [Problem("", "", f"{where}: YAML syntax error: {what}")]) from None
    except yaml.YAMLError as exc:
        raise RecipeError(str(path), [Problem("", "", f"{path}: YAML error: {exc}")]) from None
    if data is None:
        return {}, {}
    if not isinstance(data, dict):
        raise RecipeError(
            str(path), [Problem("", "", f"{path}: a recipe is a mapping of sections, got a {type(data).__name__}")]
        )
    origins: dict[str, str] = {}
    _walk(node, "", path, origins, problems)
    return data, origins


def _walk(node: yaml.Node, prefix: str, path: Path, origins: dict, problems: list[Problem]) -> None:
    if isinstance(node, yaml.MappingNode):
        seen = set()
        for key_node, value_node in node.value:
            key = _join(prefix, str(key_node.value))
            where = f"{path}:{key_node.start_mark.line + 1}"
            if key in seen:
                problems.append(Problem(key, where, "duplicate key (the later value would silently win)"))
            seen.add(key)
            origins[key] = where
            _walk(value_node, key, path, origins, problems)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            key = _join(prefix, str(i))
            origins[key] = f"{path}:{item.start_mark.line + 1}"
            _walk(item, key, path, origins, problems)


def merge(base: dict, base_origins: dict, top: dict, top_origins: dict) -> tuple[dict, dict]:
    """``top`` deep-merged over ``base``; a component mapping whose ``name`` changes replaces the old one whole."""
    out = copy.deepcopy(base)
    origins = dict(base_origins)

    def drop(prefix: str) -> None:
        for key in [k for k in origins if k.startswith(prefix + ".")]:
            del origins[key]

    def go(dst: dict, src: dict, prefix: str) -> None:
        for key, value in src.items():
            path = _join(prefix, str(key))
            old = dst.get(key)
            if (
                isinstance(old, dict)
                and isinstance(value, dict)
                and old.get("name", value.get("name")) == value.get("name", old.get("name"))
            ):
                go(old, value, path)
            else:
                drop(path)
                dst[key] = copy.deepcopy(value)

    go(out, top, "")
    origins.update(top_origins)
    return out, origins


def apply_override(recipe: Recipe, text: str, origin: str) -> Problem | None:
    """Set ``a.b.c=value`` (value read as YAML) in ``recipe``; a ``Problem`` if the path cannot be set."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or not re.fullmatch(r"[\w-]+(\.[\w-]+)*", key):
        return Problem("", origin, "an override is key.path=value (e.g. trainer.epochs=2)")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        return Problem(key, origin, f"the value is not valid YAML: {exc}".replace("\n", " "))
    parts = key.split(".")
    node: Any = recipe.data
    for depth, part in enumerate(parts[:-1]):
        here = ".".join(parts[: depth + 1])
        nxt = _child(node, part)
        if isinstance(nxt, Problem):
            return Problem(here, origin, nxt.message)
        if nxt is _ABSENT or nxt is None or isinstance(nxt, str) and not parts[depth + 1].isdigit():
            # a section not written yet, a disabled component, or a name shorthand: make it a mapping
            nxt = {} if nxt is _ABSENT or nxt is None else {"name": nxt}
            _set(node, part, nxt)
            recipe.origins.setdefault(here, origin)
        elif not isinstance(nxt, (dict, list)):
            return Problem(here, origin, f"'{here}' is a value ({nxt!r}), not a section; set it with {here}=...")
        node = nxt
    last = parts[-1]
    if isinstance(node, list):
        if not last.isdigit() or int(last) >= len(node):
            return Problem(
                key,
                origin,
                f"'{last}' is not an index of the {len(node)}-item list at"
                f" '{'.'.join(parts[:-1])}' (0..{len(node) - 1})",
            )
    _set(node, last, value)
    for stale in [k for k in recipe.origins if k == key or k.startswith(key + ".")]:
        del recipe.origins[stale]
    recipe.origins[key] = origin
    return None


_ABSENT = object()


def _child(node: Any, part: str) -> Any:
    if isinstance(node, list):
        if not part.isdigit() or int(part) >= len(node):
            return Problem("", "", f"'{part}' is not an index of this {len(node)}-item list (0..{len(node) - 1})")
        return node[int(part)]
    return node.get(part, _ABSENT)


def _set(node: Any, part: str, value: Any) -> None:
    if isinstance(node, list):
        node[int(part)] = value
    else:
        node[part] = value


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix and key else prefix or key


# --- resolving --------------------------------------------------------------------------------------------


@dataclass
class Section:
    """A settings section's value and what it looks like in the resolved recipe (defaults filled in)."""

    value: Any
    resolved: dict[str, Any]


@dataclass
class Stage:
    """A stage of the recipe: its entry point, factory parameters, and the sections it reads."""

    name: str
    path: str
    entry_point: metadata.EntryPoint
    params: list[Param]


@dataclass
class Resolved:
    """A validated recipe: kernel values, built-nothing components, settings objects, stages in order."""

    recipe: Recipe
    name: str
    seed: int
    stages: list[Stage]
    components: dict[str, Any]  # section -> Component | list[Component] | None
    settings: dict[tuple[str, Any], Section]  # (section, schema) -> Section
    warnings: list[str] = field(default_factory=list)  # worth saying, not worth stopping for

    def stage_arguments(self, stage: Stage) -> dict[str, Any]:
        """The section values ``stage``'s factory asks for (component sections and settings objects)."""
        args = {}
        for p in stage.params:
            if p.name == "ctx":
                continue
            if p.name in COMPONENT_SECTIONS:
                if p.name in self.components:
                    args[p.name] = self.components[p.name]
            elif (p.name, p.annotation) in self.settings:
                args[p.name] = self.settings[(p.name, p.annotation)].value
        return args

    def to_dict(self) -> dict[str, Any]:
        """The fully resolved recipe with defaults filled in and a ``plugins:`` block: it alone reproduces the run."""
        out: dict[str, Any] = {"name": self.name, "seed": self.seed, "stages": [s.name for s in self.stages]}
        plugins: dict[str, dict[str, str]] = {}
        for section, comp in self.components.items():
            comps = comp if isinstance(comp, list) else [comp]
            entries = []
            for c in comps:
                if c is None:
                    continue
                entries.append(_filled(c))
                plugins[c.path] = _provenance(c.entry_point)
            out[section] = entries if isinstance(comp, list) else (entries[0] if entries else None)
        written = {}
        for (section, _), sec in self.settings.items():
            written.setdefault(section, {}).update(sec.resolved)
        out.update(written)
        for stage in self.stages:
            plugins[stage.path] = _provenance(stage.entry_point)
        out["plugins"] = plugins
        return out


def _filled(comp: registry.Component) -> dict[str, Any]:
    params = parameters(comp.factory)
    supplies = registry.KINDS[comp.kind].supplies
    defaults = _defaults([p for p in params if p.name not in supplies])
    return plain({"name": comp.name, **defaults, **comp.args})


def _defaults(params: list[Param]) -> dict[str, Any]:
    """Defaults that a YAML file can hold, in their annotated type (``momentum=0`` under ``float`` is 0.0)."""
    out = {}
    for p in params:
        if p.required or not _representable(p.default):
            continue
        try:
            out[p.name] = coerce(p.default, p.annotation, p.default)
        except BadValue:
            out[p.name] = p.default
    return out


def _provenance(ep: metadata.EntryPoint) -> dict[str, str]:
    dist, version = registry.distribution(ep)
    return {
        "entry_point": f"{ep.group}: {ep.name} = {ep.value}",
        "distribution": f"{dist}=={version}" if version else dist,
    }


def _representable(value: Any) -> bool:
    return (
        value is None
        or isinstance(value, (bool, int, float, str))
        or (
            isinstance(value, (list, tuple, dict))
            and all(_representable(v) for v in (value.values() if isinstance(value, dict) else value))
        )
    )


def plain(value: Any) -> Any:
    """A coerced value back as plain YAML data (paths as strings, tuples as lists, enums as values)."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (list, tuple, set, frozenset)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    return value


def resolve(recipe: Recipe, *, references: bool = True) -> Resolved:
    """Validate the whole recipe (every problem at once, each with its path and origin) and resolve it.

    Nothing is built or called. ``references=False`` (for a run directory's recipe being loaded, which is data)
    refuses ``module:attr`` references in component sections and stages; see ``registry.find``.
    """
    data = recipe.data
    problems: list[Problem] = []

    def report(path: str, message: str) -> None:
        problems.append(Problem(path, recipe.origin(path) if path else "", message))

    name = data.get("name", Path(recipe.source).stem)
    if not isinstance(name, str) or not re.fullmatch(r"[\w.-]+", name):
        report("name", f"expected a name usable as a directory (letters, digits, _ . -), got {name!r}")
    seed = data.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        report("seed", f"expected an integer, got {seed!r}")
    stage_names = data.get("stages")
    if isinstance(stage_names, str):
        stage_names = [stage_names]
    if not isinstance(stage_names, list) or not stage_names:
        report(
            "stages",
            "expected a non-empty list of stages to run, e.g. stages: [train, eval]"
            " (`vvframe plugins stages` lists them)",
        )
        stage_names = []
    stages, readers = [], {}
    stage_failed = False
    for i, stage_name in enumerate(stage_names):
        stage, stage_problems = _stage(stage_name, f"stages.{i}", references)
        for path, message in stage_problems:
            report(path, message)
        if stage is None:
            stage_failed = True
            continue
        stages.append(stage)
        for p in stage.params:
            if p.name != "ctx" and p.name not in COMPONENT_SECTIONS:
                readers.setdefault(p.name, []).append((stage, p))
    warnings = []
    if isinstance(data.get("plugins"), dict):
        warnings = _compare_plugins(data["plugins"], recipe.source)
    elif "plugins" in data:
        report("plugins", "expected the mapping a run's recipe.yaml records; remove it from a hand-written recipe")

    components: dict[str, Any] = {}
    for section, kind_name in COMPONENT_SECTIONS.items():
        if section not in data:
            continue
        entry = data[section]
        if section in LIST_SECTIONS:
            entries = [] if entry is None else entry if isinstance(entry, list) else [entry]
            built = []
            for j, item in enumerate(entries):
                comp, comp_problems = registry.resolve(kind_name, item, f"{section}.{j}", references=references)
                for path, message in comp_problems:
                    report(path, message)
                if comp is not None:
                    built.append(comp)
            components[section] = built
        else:
            comp, comp_problems = registry.resolve(kind_name, entry, section, references=references)
            for path, message in comp_problems:
                report(path, message)
            components[section] = comp

    for path, message in _disagreements(components):
        report(path, message)

    settings: dict[tuple[str, Any], Section] = {}
    unknown = [k for k in data if k not in KERNEL_KEYS and k not in COMPONENT_SECTIONS and k not in readers]
    if unknown and not stage_failed:
        others = _other_readers(set(unknown))
        for key in unknown:
            if key in others:  # read by an installed stage this recipe does not run: still checked
                readers[key] = others[key]
            else:
                known = [*KERNEL_KEYS, *COMPONENT_SECTIONS, *readers, *_all_settings_names()]
                report(key, f"unknown section '{key}'{did_you_mean(key, known)}; no installed stage reads it")
    elif unknown:
        report(
            "",
            f"section(s) {', '.join(unknown)} not checked: a stage above could not be resolved, and"
            " stages define the settings sections they read",
        )

    for key, readers_of in readers.items():
        value = data.get(key)
        if value is None and key in data:
            value = {}
        _settings(key, value, readers_of, settings, report)

    needed: dict[str, list[str]] = {}  # a component section that a stage requires (no default) but is absent or null
    for stage in stages:
        for p in stage.params:
            if p.name in COMPONENT_SECTIONS and p.required and data.get(p.name) is None:
                needed.setdefault(p.name, []).append(repr(stage.name))
    for section, by in needed.items():
        kind_name = COMPONENT_SECTIONS[section]
        by_stages = f"stage{'s' if len(by) > 1 else ''} {', '.join(by)}"
        if section in data:
            report(
                section,
                f"section '{section}' is null, but {by_stages} require{'' if len(by) > 1 else 's'} it:"
                f" name a component there, e.g. {section}: {{name: ...}} (`vvframe plugins {kind_name}`"
                " lists choices)",
            )
        else:
            report(
                section,
                f"missing section '{section}' ({kind_name}), required by {by_stages}"
                f" (`vvframe plugins {kind_name}` lists choices)",
            )
    if problems:
        raise RecipeError(recipe.source, sorted(problems, key=_reading_order))
    return Resolved(recipe, name, seed, stages, components, settings, warnings)


def _disagreements(components: dict[str, Any]) -> list[tuple[str, str]]:
    """Contracts between kinds checked before anything is built: a loss's ``min_per_speaker`` (a class
    attribute) against the utterances per speaker the sampler gives (its ``per_speaker`` argument or
    attribute, 1 if it has neither)."""
    loss, sampler = components.get("loss"), components.get("sampler")
    if loss is None or sampler is None:
        return []
    need = getattr(loss.factory, "min_per_speaker", 1)
    if "per_speaker" in sampler.args:
        have = sampler.args["per_speaker"]
    else:
        defaults = {p.name: p.default for p in parameters(sampler.factory) if not p.required}
        have = defaults.get("per_speaker", getattr(sampler.factory, "per_speaker", 1))
    if isinstance(need, int) and isinstance(have, int) and have < need:
        return [
            (
                "sampler",
                f"losses '{loss.name}' needs at least {need} utterances of a speaker in a batch"
                f" (its min_per_speaker), and samplers '{sampler.name}' gives {have}"
                f" (per_speaker); give the sampler per_speaker: {need} or more",
            )
        ]
    return []


def _reading_order(problem: Problem) -> tuple:
    """Problems in the order a reader meets them: by file and line, then the overrides in order, then the rest."""
    file, _, line = problem.origin.rpartition(":")
    if line.isdigit():
        return (0, file, int(line))
    override = re.match(r"command-line override (\d+)", problem.origin)
    return (1, "", int(override.group(1))) if override else (2, "", 0)


def _stage(entry: Any, path: str, references: bool = True) -> tuple[Stage | None, list[tuple[str, str]]]:
    if not isinstance(entry, str):
        return None, [(path, f"expected a stage name, got {entry!r}")]
    try:
        ep = registry.find("stages", entry, references=references)
        params = parameters(registry.load(ep))
    except (ComponentNotFound, PluginImportError, ContractError) as exc:
        return None, [(path, str(exc))]
    problems = stage_contract(params)
    if problems:
        return None, [(path, f"stage '{entry}': {m}") for m in problems]
    return Stage(entry, path, ep, params), []


def stage_contract(params: list[Param]) -> list[str]:
    """What is wrong with a stage factory's parameters: each must be ``ctx``, a component section, or a schema."""
    problems = []
    for p in params:
        if p.name == "ctx" or p.name in COMPONENT_SECTIONS:
            continue
        if p.name in KERNEL_KEYS:
            problems.append(f"parameter '{p.name}' is a kernel key, not a section a stage can read")
        elif not _is_schema(p.annotation):
            problems.append(
                f"parameter '{p.name}' names a settings section, so it needs a schema annotation"
                " (a dataclass or a class with explicit keyword parameters)"
            )
    return problems


def _is_schema(annotation: Any) -> bool:
    if not isinstance(annotation, type) or annotation.__init__ is object.__init__:
        return False
    try:
        parameters(annotation)
    except ContractError:
        return False
    return True


def _other_readers(names: set[str]) -> dict[str, list[tuple[Stage, Param]]]:
    found: dict[str, list[tuple[Stage, Param]]] = {}
    for ep in registry.entry_points("stages"):
        try:
            params = parameters(registry.load(ep))
        except (PluginImportError, ContractError):
            continue
        for p in params:
            if p.name in names and _is_schema(p.annotation):
                found.setdefault(p.name, []).append((Stage(ep.name, "", ep, params), p))
    return found


def _all_settings_names() -> list[str]:
    names = []
    for ep in registry.entry_points("stages"):
        try:
            names += [
                p.name for p in parameters(registry.load(ep)) if p.name != "ctx" and p.name not in COMPONENT_SECTIONS
            ]
        except (PluginImportError, ContractError):
            continue
    return names


def _settings(key: str, value: Any, readers: list[tuple[Stage, Param]], out: dict, report) -> None:
    if value is not None and not isinstance(value, dict):
        report(key, f"expected a mapping of settings, got {value!r}")
        return
    given = value or {}
    schemas: dict[Any, list[str]] = {}
    for stage, p in readers:
        schemas.setdefault(p.annotation, []).append(stage.name)
    accepted_by_any = set()
    for schema in schemas:
        accepted_by_any |= {p.name for p in parameters(schema)}
    for schema, stage_names in schemas.items():
        params = parameters(schema)
        names = {p.name for p in params}
        mine = {k: v for k, v in given.items() if k in names or (len(schemas) == 1)}
        owner = f"section '{key}' (read by stage {', '.join(repr(s) for s in stage_names)})"
        coerced, problems = bind(params, mine, owner=owner)
        for path, message in problems:
            if message.startswith("missing required") and value is None:
                message = (
                    f"missing section '{key}', required by stage {', '.join(repr(s) for s in stage_names)}"
                    f" (it needs {path})"
                )
                path = ""
            report(_join(key, path), message)
        if problems:
            continue
        try:
            instance = schema(**coerced)
        except (TypeError, ValueError) as exc:
            report(key, f"invalid settings: {exc}")
            continue
        out[(key, schema)] = Section(instance, plain({**_defaults(params), **coerced}))
    if len(schemas) > 1:
        for k in given:
            if k not in accepted_by_any:
                report(
                    _join(key, str(k)),
                    f"unknown key '{k}' in section '{key}'"
                    f"{did_you_mean(str(k), sorted(accepted_by_any))}; it accepts: "
                    + ", ".join(sorted(accepted_by_any)),
                )


def _compare_plugins(recorded: dict, source: str) -> list[str]:
    """Warnings for components recorded in a run's ``plugins:`` block that are installed differently now."""
    warnings = []
    installed = {(ep.group, ep.name, ep.value): ep for ep in registry.entry_points()}
    for path, info in recorded.items():
        if not isinstance(info, dict) or not isinstance(info.get("entry_point"), str):
            continue
        group, _, rest = info["entry_point"].partition(": ")
        ep_name, _, value = rest.partition(" = ")
        ep = installed.get((group, ep_name, value))
        if ep is None and registry.is_reference(ep_name):
            ep = metadata.EntryPoint(ep_name, value, group)
        if ep is None:
            warnings.append(f"{source}: {path} was recorded as {info['entry_point']}, which is not installed now")
            continue
        now = _provenance(ep)["distribution"]
        if now != info.get("distribution"):
            warnings.append(f"{source}: {path} was recorded from {info.get('distribution')}; installed now: {now}")
    return warnings


def check(path: str | Path, overrides: Sequence[str] = ()) -> Resolved:
    """Load and resolve: what ``vvframe check`` does (builds nothing)."""
    return resolve(load(path, overrides))


def dump(data: Mapping[str, Any]) -> str:
    """A resolved recipe as YAML, keys in recipe order."""
    return yaml.safe_dump(plain(dict(data)), sort_keys=False, default_flow_style=None, width=100)


__all__ = [
    "Recipe",
    "Resolved",
    "Stage",
    "COMPONENT_SECTIONS",
    "KERNEL_KEYS",
    "load",
    "resolve",
    "check",
    "dump",
    "apply_override",
    "merge",
    "plain",
    "stage_contract",
]
