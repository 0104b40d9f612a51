"""Recipes: YAML with ``base:`` inheritance and line numbers, ``a.b.c=value`` overrides, validation, snapshots."""

import copy
import dataclasses
import enum
import importlib.metadata as metadata
import os
import re
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from vvframe.core import registry
from vvframe.core.errors import BadValue, Problem, RecipeError, VvframeError, did_you_mean
from vvframe.core.schema import UNIONS, Param, bind, coerce, is_schema, parameters

KERNEL_KEYS = ("base", "name", "seed", "stages", "plugins")  # every other section is declared by a stage reading it


@dataclasses.dataclass
class Recipe:
    """A merged recipe mapping plus, for each dot path, where its value came from (``file:line`` or an override)."""

    data: dict[str, Any]
    origins: dict[str, str] = dataclasses.field(default_factory=dict)
    source: str = "<recipe>"

    def origin(self, path: str) -> str:
        """Where the value at ``path`` (or its nearest written parent) came from."""
        while path and path not in self.origins:
            path = path.rpartition(".")[0]
        return self.origins[path] if path else self.source


def load(path: str | Path, overrides: Sequence[str] = ()) -> Recipe:
    """Read ``path`` with its ``base:`` chain and apply ``overrides``; a ``RecipeError`` lists what is wrong."""
    path, problems = Path(path), []
    recipe = Recipe(*_load_file(path, (), problems), str(path))
    for i, text in enumerate(overrides, 1):
        problems += filter(None, [apply_override(recipe, text, f"command-line override {i} ({text})")])
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
    if (bases := data.pop("base", None)) is None:
        return data, origins
    base_origin = origins.pop("base", str(path))
    bases = [bases] if isinstance(bases, str) else bases
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        problems.append(Problem("base", base_origin, f"expected a file name or a list of them, got {bases!r}"))
        return data, origins
    merged: tuple[dict, dict] = ({}, {})
    for base_path in [Path(os.path.normpath(path.parent / base)) for base in bases]:
        if base_path.is_file():
            merged = merge(*merged, *_load_file(base_path, (*chain, real), problems))
        else:
            problems.append(Problem("base", base_origin, _missing_file(base_path)))
    return merge(*merged, data, origins)


def _missing_file(path: Path) -> str:
    if path.is_dir():
        names = sorted(p.name for p in path.iterdir() if p.suffix in (".yaml", ".yml"))
        inside = f" (recipes in it: {', '.join(names[:5])})" if names else ""
        return f"{path} is a directory; give a recipe file (.yaml){inside}"
    names = [p.name for p in path.parent.iterdir() if p.suffix in (".yaml", ".yml")] if path.parent.is_dir() else []
    return f"recipe file {path} does not exist{did_you_mean(path.name, names)}"


def _read_yaml(path: Path, problems: list[Problem]) -> tuple[dict, dict]:
    text = path.read_text(encoding="utf-8")
    try:
        node, data = yaml.compose(text, Loader=yaml.SafeLoader), yaml.safe_load(text)
    except yaml.YAMLError as exc:  # a MarkedYAMLError says where and what; a ReaderError only what
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        what = " ".join(filter(None, [getattr(exc, "context", None), getattr(exc, "problem", None)])) or str(exc)
        raise RecipeError(str(path), [Problem("", "", f"{where}: YAML syntax error: {what}")]) from None
    if data is not None and not isinstance(data, dict):
        got = f"a recipe is a mapping of sections, got a {type(data).__name__}"
        raise RecipeError(str(path), [Problem("", "", f"{path}: {got}")])
    origins: dict[str, str] = {}
    _walk(node, "", path, origins, problems)
    return data or {}, origins


def _walk(node: yaml.Node | None, prefix: str, path: Path, origins: dict, problems: list[Problem]) -> None:
    items = [(str(k.value), k, v) for k, v in node.value] if isinstance(node, yaml.MappingNode) else []
    if isinstance(node, yaml.SequenceNode):
        items = [(str(i), v, v) for i, v in enumerate(node.value)]
    seen = set()
    for name, marked, child in items:  # marked: the node whose line the key is on
        key, where = _join(prefix, name), f"{path}:{marked.start_mark.line + 1}"
        if key in seen:
            problems.append(Problem(key, where, "duplicate key (the later value would silently win)"))
        seen.add(key)
        origins[key] = where
        _walk(child, key, path, origins, problems)


def merge(base: dict, base_origins: dict, top: dict, top_origins: dict) -> tuple[dict, dict]:
    """``top`` deep-merged over ``base``; a component mapping whose ``name`` changes replaces the old one whole."""
    out, origins = copy.deepcopy(base), dict(base_origins)

    def go(dst: dict, src: dict, prefix: str) -> None:
        for key, value in src.items():
            path, old = _join(prefix, str(key)), dst.get(key)
            both = isinstance(old, dict) and isinstance(value, dict)
            if both and old.get("name", value.get("name")) == value.get("name", old.get("name")):
                go(old, value, path)
            else:
                _forget(origins, path)
                dst[key] = copy.deepcopy(value)

    go(out, top, "")
    origins.update(top_origins)
    return out, origins


def apply_override(recipe: Recipe, text: str, origin: str) -> Problem | None:
    """Set ``a.b.c=value`` (value read as YAML) in ``recipe``; a ``Problem`` if the path cannot be set."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not re.fullmatch(r"[\w-]+(\.[\w-]+)*", key):
        return Problem("", origin, "an override is key.path=value (e.g. trainer.epochs=2)")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        return Problem(key, origin, f"the value is not valid YAML: {exc}".replace("\n", " "))
    parts = key.split(".")
    node: Any = recipe.data
    for depth, part in enumerate(parts):
        here, slot = ".".join(parts[: depth + 1]), part
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                size = f"{len(node)}-item list"
                which = f"the {size} at '{'.'.join(parts[:depth])}'" if here == key else f"this {size}"
                return Problem(here, origin, f"'{part}' is not an index of {which} (0..{len(node) - 1})")
            slot = int(part)
        if here == key:
            break
        nxt = node[slot] if isinstance(node, list) else node.get(slot)
        if nxt is None or isinstance(nxt, str) and not parts[depth + 1].isdigit():
            # a section not written yet, a disabled component, or a name shorthand: make it a mapping
            node[slot] = nxt = {} if nxt is None else {"name": nxt}
            recipe.origins.setdefault(here, origin)
        elif not isinstance(nxt, (dict, list)):
            return Problem(here, origin, f"'{here}' is a value ({nxt!r}), not a section; set it with {here}=...")
        node = nxt
    node[slot] = value
    _forget(recipe.origins, key)
    recipe.origins[key] = origin
    return None


def _forget(origins: dict[str, str], key: str) -> None:  # drop the origins under ``key``, its value replaced whole
    for stale in [k for k in origins if k.startswith(key + ".")]:
        del origins[stale]


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix and key else prefix or key


def section_kind(annotation: Any) -> tuple[str, bool] | None:
    """``(kind, many)`` if ``annotation`` declares a component section (``Annotated[list[Component], kind(...)]``)."""
    if typing.get_origin(annotation) in UNIONS:
        return next(filter(None, map(section_kind, typing.get_args(annotation))), None)
    marks = [m for m in getattr(annotation, "__metadata__", ()) if isinstance(m, registry.Kind)]
    base = typing.get_origin(typing.get_args(annotation)[0]) if marks else None
    return (marks[0].name, base in (list, tuple, Sequence)) if marks else None


class Section(typing.NamedTuple):
    """A settings section's value (its schema's object) and what it looks like in the resolved recipe."""

    value: Any
    resolved: dict[str, Any]


@dataclasses.dataclass
class Stage:
    """A stage of the recipe: its entry point, factory parameters, and the sections it reads."""

    name: str
    path: str
    entry_point: metadata.EntryPoint
    params: list[Param]

    factory = property(lambda self: registry.load(self.entry_point), doc="The stage's factory, imported.")

    def sections(self) -> list[Param]:
        """The parameters that name recipe sections (all but ``ctx``)."""
        return [p for p in self.params if p.name != "ctx"]


@dataclasses.dataclass
class Resolved:
    """A validated recipe: kernel values, built-nothing components, settings objects, stages in order."""

    recipe: Recipe
    name: str
    seed: int
    stages: list[Stage]
    components: dict[str, Any]  # section -> Component | list[Component] | None
    settings: dict[tuple[str, Any], Section]  # (section, schema) -> Section

    def stage_arguments(self, stage: Stage) -> dict[str, Any]:
        """The section values ``stage``'s factory asks for (components and settings objects)."""
        args = {p.name: self.components[p.name] for p in stage.sections() if p.name in self.components}
        keys = [(p.name, p.annotation) for p in stage.sections() if (p.name, p.annotation) in self.settings]
        return args | {key[0]: self.settings[key].value for key in keys}

    def to_dict(self) -> dict[str, Any]:
        """The fully resolved recipe with defaults filled in and a ``plugins:`` block: it alone reproduces the run."""
        out: dict[str, Any] = {"name": self.name, "seed": self.seed, "stages": [s.name for s in self.stages]}
        plugins: dict[str, dict[str, str]] = {}
        for section, comp in self.components.items():
            entries = [c for c in (comp if isinstance(comp, list) else [comp]) if c is not None]
            plugins |= {c.path: _provenance(c.entry_point) for c in entries}
            out[section] = [_filled(c) for c in entries] if isinstance(comp, list) else _filled(comp) if comp else None
        for (section, _), sec in self.settings.items():
            out.setdefault(section, {}).update(sec.resolved)
        return {**out, "plugins": plugins | {stage.path: _provenance(stage.entry_point) for stage in self.stages}}


def _filled(comp: registry.Component) -> dict[str, Any]:
    supplies = registry.KINDS[comp.kind].supplies
    defaults = _defaults(p for p in parameters(comp.factory) if p.name not in supplies)
    return plain({"name": comp.name, **defaults, **comp.args})


def _defaults(params: typing.Iterable[Param]) -> dict[str, Any]:  # those YAML can hold, typed: momentum=0 is 0.0
    out = {}
    for p in [p for p in params if not p.required and _representable(p.default)]:
        try:
            out[p.name] = coerce(p.default, p.annotation, p.default)
        except BadValue:
            out[p.name] = p.default
    return out


def _representable(value: Any) -> bool:
    if isinstance(value, (list, tuple, dict)):
        return all(map(_representable, value.values() if isinstance(value, dict) else value))
    return value is None or isinstance(value, (bool, int, float, str))


def _provenance(ep: metadata.EntryPoint) -> dict[str, str]:
    return {"entry_point": f"{ep.group}: {ep.name} = {ep.value}", "distribution": registry.where(ep)}


def plain(value: Any) -> Any:
    """A coerced value back as plain YAML data (paths as strings, tuples as lists, enums as values)."""
    if isinstance(value, (Path, enum.Enum)):
        return str(value) if isinstance(value, Path) else value.value
    if isinstance(value, (list, tuple, set, frozenset)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    return value


Readers = dict[str, list[tuple[Stage, Param]]]  # section -> the stages reading it and their parameter for it


def resolve(recipe: Recipe, *, references: bool = True) -> Resolved:
    """Validate the whole recipe (every problem at once, with path and origin) and resolve it, building nothing."""
    data = recipe.data
    problems: dict[Problem, None] = {}  # in order, without repeats (two stages may find the same mistake)

    def report(path: str, message: str) -> None:
        problems[Problem(path, recipe.origin(path) if path else "", message)] = None

    name = data.get("name", Path(recipe.source).stem)
    if not isinstance(name, str) or not re.fullmatch(r"[\w.-]+", name):
        report("name", f"expected a name usable as a directory (letters, digits, _ . -), got {name!r}")
    seed = data.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        report("seed", f"expected an integer, got {seed!r}")
    stage_names = [data["stages"]] if isinstance(data.get("stages"), str) else data.get("stages")
    if not isinstance(stage_names, list) or not stage_names:
        stage_names = []
        say = "expected a non-empty list of stages to run, e.g. stages: [train, eval]"
        report("stages", say + " (`vvframe plugins stages` lists them)")
    stages = [s for i, entry in enumerate(stage_names) if (s := _stage(entry, f"stages.{i}", references, report))]
    readers = _readers(stages)
    if "plugins" in data and not isinstance(data["plugins"], dict):
        report("plugins", "expected the mapping a run's recipe.yaml records; remove it from a hand-written recipe")
    unknown = [k for k in data if k not in KERNEL_KEYS and k not in readers]
    if unknown and len(stages) < len(stage_names):
        why = "a stage above could not be resolved, and stages define the settings sections they read"
        report("", f"section(s) {', '.join(unknown)} not checked: {why}")
    elif unknown:  # a section read by an installed stage this recipe does not run is checked all the same
        others = _installed_readers()
        readers |= {key: others[key] for key in unknown if key in others}
        for key in [key for key in unknown if key not in others]:
            known = [*KERNEL_KEYS, *readers, *others]
            report(key, f"unknown section '{key}'{did_you_mean(key, known)}; no installed stage reads it")
    resolved = Resolved(recipe, name, seed, stages, {}, {})
    for key, readers_of in readers.items():
        kinds = {section_kind(p.annotation) for _, p in readers_of}
        if len(kinds) > 1:
            by = "; ".join(f"stage '{s.name}' as {section_kind(p.annotation) or 'settings'}" for s, p in readers_of)
            report(key, f"section '{key}' is read in different ways: {by}")
        elif None in kinds:
            _settings(key, data, readers_of, resolved.settings, report)
        else:
            _component_section(key, data, readers_of, resolved.components, report, references)
    for stage in stages:  # the agreements between a stage's components, which only the stage knows
        if (check := getattr(stage.factory, "check", None)) is not None:
            wanted = {p.name for p in parameters(check)}
            for path, message in check(**{k: v for k, v in resolved.stage_arguments(stage).items() if k in wanted}):
                report(path, message)
    if problems:
        raise RecipeError(recipe.source, sorted(problems, key=_reading_order))
    return resolved


def _readers(stages: typing.Iterable[Stage]) -> Readers:
    found: Readers = {}
    for reader in [(stage, p) for stage in stages for p in stage.sections()]:
        found.setdefault(reader[1].name, []).append(reader)
    return found


def _component_section(key: str, data: dict, readers_of: list, out: dict, report, references: bool) -> None:
    kind_name, many = section_kind(readers_of[0][1].annotation)
    needed_by = [repr(s.name) for s, p in readers_of if p.required and s.path]
    by = f"stage{'s' if len(needed_by) > 1 else ''} {', '.join(needed_by)}"
    choices = f"`vvframe plugins {kind_name}` lists choices"
    entry = data.get(key, next((p.default for _, p in readers_of if not p.required), None))
    if key not in data and not isinstance(entry, (str, Mapping)):  # the stage keeps its own default
        if needed_by:
            report(key, f"missing section '{key}' ({kind_name}), required by {by} ({choices})")
    elif entry is None and needed_by:
        verb = "require" if len(needed_by) > 1 else "requires"
        fix = f"name a component there, e.g. {key}: {{name: ...}} ({choices})"
        report(key, f"section '{key}' is null, but {by} {verb} it: {fix}")
    elif many:
        items = [] if entry is None else entry if isinstance(entry, list) else [entry]
        found = [_component(kind_name, item, f"{key}.{j}", report, references) for j, item in enumerate(items)]
        out[key] = [c for c in found if c is not None]
    else:
        out[key] = _component(kind_name, entry, key, report, references)


def _component(kind_name: str, entry: Any, path: str, report, references: bool) -> registry.Component | None:
    comp, problems = registry.resolve(kind_name, entry, path, references=references)
    for where, message in problems:
        report(where, message)
    return comp


def _reading_order(problem: Problem) -> tuple:
    # in the order a reader meets them: by file and line, then the overrides in order, then the rest
    file, _, line = problem.origin.rpartition(":")
    override = re.match(r"command-line override (\d+)", problem.origin)
    return (0, file, int(line)) if line.isdigit() else (1, "", int(override.group(1))) if override else (2, "", 0)


def _stage(entry: Any, path: str, references: bool, report) -> Stage | None:
    if not isinstance(entry, str):
        return report(path, f"expected a stage name, got {entry!r}")
    try:
        ep = registry.find("stages", entry, references=references)
        params = parameters(registry.load(ep))
    except VvframeError as exc:  # not installed, failed to import, no readable signature
        return report(path, str(exc))
    for message in (problems := stage_contract(params)):
        report(path, f"stage '{entry}': {message}")
    return None if problems else Stage(entry, path, ep, params)


def stage_contract(params: list[Param]) -> list[str]:
    """What is wrong with a stage's parameters: each must be ``ctx``, a declared component section, or a schema."""
    problems = []
    for p in [p for p in params if p.name != "ctx" and not section_kind(p.annotation)]:
        if p.name in KERNEL_KEYS:
            problems.append(f"parameter '{p.name}' is a kernel key, not a section a stage can read")
        elif registry.Component in (p.annotation, *typing.get_args(p.annotation)):
            declare = f"{p.name}: Annotated[Component, kind(KIND)] with KIND one of {', '.join(registry.KINDS)}"
            problems.append(f"parameter '{p.name}' is a component: declare its kind, {declare}")
        elif not is_schema(p.annotation):
            schema = "a schema annotation (a dataclass or a class with explicit keyword parameters)"
            problems.append(f"parameter '{p.name}' names a settings section, so it needs {schema}")
    return problems


def _installed_readers() -> Readers:  # the sections of every installed stage that loads and keeps the contract
    stages = (_stage(ep.name, "", True, lambda *_: None) for ep in registry.entry_points("stages"))
    return _readers(filter(None, stages))


def _settings(key: str, data: dict, readers: list, out: dict, report) -> None:
    if data.get(key) is not None and not isinstance(data[key], dict):
        return report(key, f"expected a mapping of settings, got {data[key]!r}")
    given, schemas = data.get(key) or {}, {}
    for stage, p in readers:
        schemas.setdefault(p.annotation, []).append(repr(stage.name))
    accepted = {p.name for schema in schemas for p in parameters(schema)}
    for schema, by in schemas.items():
        params = parameters(schema)
        mine = {k: v for k, v in given.items() if len(schemas) == 1 or k in {p.name for p in params}}
        coerced, found = bind(params, mine, owner=f"section '{key}' (read by stage {', '.join(by)})")
        for path, message in found:
            if message.startswith("missing required") and key not in data:
                message, path = f"missing section '{key}', required by stage {', '.join(by)} (it needs {path})", ""
            report(_join(key, path), message)
        try:
            if not found:
                out[(key, schema)] = Section(schema(**coerced), plain({**_defaults(params), **coerced}))
        except (TypeError, ValueError) as exc:
            report(key, f"invalid settings: {exc}")
    for k in [k for k in given if k not in accepted] if len(schemas) > 1 else ():
        close, names = did_you_mean(str(k), sorted(accepted)), ", ".join(sorted(accepted))
        report(_join(key, str(k)), f"unknown key '{k}' in section '{key}'{close}; it accepts: {names}")


def check(path: str | Path, overrides: Sequence[str] = ()) -> Resolved:
    """Load and resolve: what ``vvframe check`` does (builds nothing)."""
    return resolve(load(path, overrides))


def snapshot(path: Path) -> dict[str, Any]:
    """The recipe a run started with (its ``recipe.yaml``) as plain data, or ``{}`` when it cannot be read."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def dump(data: Mapping[str, Any]) -> str:
    """A resolved recipe as YAML, keys in recipe order."""
    return yaml.safe_dump(plain(dict(data)), sort_keys=False, default_flow_style=None, width=100)
