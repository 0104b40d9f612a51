"""The registry: component kinds, discovery from entry points, lookup, building, and what can go wrong.

The entry-point metadata *is* the registry. Nothing registers itself on import; listing imports nothing;
a component's module is imported when it is first built or described.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.metadata as metadata
import inspect
import keyword
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any

from vvframe.core.errors import (
    ArgumentError,
    BadValue,
    ComponentNotFound,
    ContractError,
    PluginImportError,
    Problem,
    RecipeError,
    add_note,
    did_you_mean,
)
from vvframe.core.schema import CoercionError, Param, Range, bind, coerce, limits, parameters, type_name

GROUP_PREFIX = "vvframe."


@dataclass(frozen=True)
class Kind:
    """A kind of component: its entry-point group is ``vvframe.<name>``.

    ``limits``: ``(parameter name, Range)`` pairs that hold for every component of the kind that has such a
    parameter, for callables whose signatures cannot say so themselves (``torch.optim.SGD``'s ``lr``).
    """

    name: str
    supplies: tuple[str, ...]
    returns: str
    limits: tuple[tuple[str, Range], ...] = ()

    @property
    def group(self) -> str:
        return GROUP_PREFIX + self.name


KINDS: dict[str, Kind] = {
    k.name: k
    for k in [
        Kind(
            "frontends",
            ("sample_rate",),
            "nn.Module: waveform (B, T) -> features (B, n_feats, frames); attribute out_dim",
        ),
        Kind(
            "models", ("in_dim", "sample_rate"), "nn.Module: features (B, in_dim, frames) -> embeddings (B, embed_dim)"
        ),
        Kind(
            "losses", ("embed_dim", "num_classes"), "nn.Module: embeddings (B, P, D), labels (B,) -> (loss, accuracy)"
        ),
        Kind("augmentors", ("sample_rate",), "picklable callable on a waveform batch (B, T) with a torch.Generator"),
        Kind(
            "samplers", ("labels", "batch_size", "rank", "world_size", "seed"), "yields lists of indices; set_epoch(e)"
        ),
        Kind("normalizers", (), "N(scores, enroll, test, cohort) -> normalized scores"),
        Kind(
            "optimizers",
            ("params",),
            "a torch.optim.Optimizer",  # torch checks these only when it is built
            (
                ("lr", Range(0)),
                ("momentum", Range(0)),
                ("weight_decay", Range(0)),
                ("eps", Range(0)),
                ("betas", Range(0, lt=1)),
            ),
        ),
        Kind("schedulers", ("optimizer", "steps_per_epoch", "epochs"), "a scheduler stepped once per iteration"),
        Kind("stages", ("ctx",), "a callable run against the run context"),
    ]
}


def kind(name: str) -> Kind:
    """The ``Kind`` called ``name``; a ``ComponentNotFound`` suggesting the closest kinds otherwise."""
    if name in KINDS:
        return KINDS[name]
    raise ComponentNotFound(
        f"unknown kind '{name}'{did_you_mean(name, KINDS) or did_you_mean(name + 's', KINDS)};"
        f" the kinds are: {', '.join(KINDS)}"
    )


# --- discovery --------------------------------------------------------------------------------------------


def _entry_points() -> list[metadata.EntryPoint]:
    """Every ``vvframe.*`` entry point of every installed distribution: the one seam tests replace."""
    found, seen = [], set()
    for dist in metadata.distributions():
        dist_name = (dist.metadata["Name"] or "").lower().replace("_", "-")
        if dist_name in seen:  # the same distribution twice on sys.path: the first one wins, as in importlib
            continue
        seen.add(dist_name)
        found += [ep for ep in dist.entry_points if ep.group.startswith(GROUP_PREFIX)]
    return found


@functools.cache
def _discovered() -> tuple[metadata.EntryPoint, ...]:
    return tuple(_entry_points())


def refresh() -> None:
    """Forget what was discovered and loaded (after installing a plugin in-process, or in tests)."""
    _discovered.cache_clear()
    _packages.cache_clear()
    load.cache_clear()


def entry_points(kind_name: str | None = None) -> list[metadata.EntryPoint]:
    """The entry points of one kind, or of every ``vvframe.*`` group; imports nothing."""
    eps = _discovered()
    if kind_name is None:
        return list(eps)
    return [ep for ep in eps if ep.group == GROUP_PREFIX + kind_name]


def distribution(ep: metadata.EntryPoint) -> tuple[str, str]:
    """``(name, version)`` of the distribution that declares ``ep`` (or provides its module), or ``('-', '')``."""
    dist = getattr(ep, "dist", None)
    if dist is not None:
        return dist.metadata["Name"], dist.version
    top = ep.value.split(":")[0].split(".")[0]
    names = _packages().get(top, [])
    if names:
        try:
            return names[0], metadata.version(names[0])
        except metadata.PackageNotFoundError:
            return names[0], ""
    return "-", ""


@functools.lru_cache(maxsize=1)
def _packages() -> Mapping[str, list[str]]:
    return metadata.packages_distributions()


def _where(ep: metadata.EntryPoint) -> str:
    name, version = distribution(ep)
    return f"{name}=={version}" if version else name


def is_reference(name: str) -> bool:
    """Whether a recipe's ``name`` is a direct ``package.module:Attr`` reference rather than an entry-point name."""
    return ":" in name


_REFERENCE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


def find(kind_name: str, name: str, *, references: bool = True) -> metadata.EntryPoint:
    """The entry point that ``name`` means for ``kind_name`` (a ``module:attr`` reference is made into one).

    ``references=False`` refuses ``module:attr`` references (before importing anything): for entries read from
    data that is loaded (a run directory, a model file), which may name installed entry points only.
    """
    k = kind(kind_name)
    if is_reference(name):
        if not references:
            raise ComponentNotFound(
                f"{kind_name} '{name}' names a Python object directly (module:attr), which is refused here: a run"
                f" directory or model file being loaded is data, not a recipe you run, so only installed {kind_name}"
                f" components are built from it (`vvframe plugins {kind_name}` lists them); load it with"
                " trust_recipe=True (--trust-recipe) only if you trust its author as you trust a recipe you run"
            )
        if not _REFERENCE.match(name):
            raise ComponentNotFound(f"'{name}' is not a valid reference; write package.module:Attr")
        return metadata.EntryPoint(name=name, value=name, group=k.group)
    eps = entry_points(kind_name)
    matches = [ep for ep in eps if ep.name == name]
    if len({ep.value for ep in matches}) > 1:
        where = " and ".join(f"{ep.value} (from {_where(ep)})" for ep in matches)
        raise ComponentNotFound(
            f"two installed {kind_name} components are named '{name}': {where}; name the one"
            f" you mean directly, e.g. name: {matches[0].value}"
        )
    if matches:
        return matches[0]
    if not entry_points():
        raise ComponentNotFound(
            f"no {kind_name} component named '{name}': no vvframe components are installed at all;"
            " vvframe itself is probably not installed (pip install -e .)"
        )
    if not eps:
        raise ComponentNotFound(
            f"no {kind_name} component named '{name}': none of kind {kind_name} is installed"
            f" (`vvframe plugins` lists what is)"
        )
    names = sorted({ep.name for ep in eps})
    return _raise_unknown(kind_name, name, names)


def _raise_unknown(kind_name: str, name: str, names: list[str]):
    raise ComponentNotFound(
        f"no {kind_name} component named '{name}' is installed{did_you_mean(name, names)}"
        f" (`vvframe plugins {kind_name}` lists all {len(names)})"
    )


@functools.cache
def load(ep: metadata.EntryPoint) -> Callable:
    """Import what ``ep`` points at; a ``PluginImportError`` naming the plugin and its distribution if that fails."""
    kind_name = ep.group[len(GROUP_PREFIX) :]
    try:
        obj = ep.load()
    except Exception as exc:  # noqa: BLE001 - any failure inside a plugin's import is reported as the plugin's
        raise PluginImportError(
            f"{kind_name} '{ep.name}' ({ep.value}, from {_where(ep)}) failed to import: {type(exc).__name__}: {exc}"
        ) from exc
    if not callable(obj):
        raise ContractError(f"{kind_name} '{ep.name}' ({ep.value}) is a {type(obj).__name__}, not a callable")
    return obj


def signature(kind_name: str, factory: Callable) -> list[Param]:
    """The parameters of ``factory`` as a component of ``kind_name``: its own annotations, with the kind's
    ``limits`` added to the parameters they name."""
    own = parameters(factory)
    extra = dict(KINDS[kind_name].limits) if kind_name in KINDS else {}
    return [
        dataclasses.replace(p, annotation=Annotated[p.annotation, extra[p.name]]) if p.name in extra else p for p in own
    ]


# --- components -------------------------------------------------------------------------------------------


@dataclass
class Component:
    """A resolved recipe entry: which component, its checked arguments, and where in the recipe it came from."""

    kind: str
    name: str
    args: dict[str, Any] = field(default_factory=dict)
    path: str = ""
    entry_point: metadata.EntryPoint | None = None

    @property
    def factory(self) -> Callable:
        return load(self.entry_point or find(self.kind, self.name))

    def build(self, **supplied: Any) -> Any:
        """Call the factory with the recipe's arguments plus those ``supplied`` values its signature names."""
        params = {p.name: p for p in parameters(self.factory)}
        unknown = set(supplied) - set(KINDS[self.kind].supplies)
        if unknown:
            raise ArgumentError(
                f"{', '.join(sorted(unknown))} not among the values vvframe supplies to {self.kind}"
                f" ({', '.join(KINDS[self.kind].supplies) or 'none'})"
            )
        passed = {k: v for k, v in supplied.items() if k in params}
        missing = [n for n, p in params.items() if p.required and n not in passed and n not in self.args]
        if missing:
            raise ContractError(
                f"{self.kind} '{self.name}' needs {', '.join(missing)}, which the caller did not supply"
                f" ({self.where()})"
            )
        try:
            return self.factory(**self.args, **passed)
        except Exception as exc:
            add_note(exc, f"while building {self.kind} '{self.name}' ({self.where()})")
            raise

    def where(self) -> str:
        return f"recipe path '{self.path}'" if self.path else "built directly"

    def to_recipe(self) -> dict[str, Any]:
        """The entry as a recipe would write it: ``name`` plus arguments."""
        return {"name": self.name, **self.args}


def resolve(
    kind_name: str, entry: Any, path: str = "", *, references: bool = True
) -> tuple[Component | None, list[tuple[str, str]]]:
    """A recipe entry (``None``, a name, or a mapping with ``name``) as a ``Component`` with checked arguments.

    Returns the component (``None`` if disabled or unresolvable) and problems as ``(recipe path, message)``.
    Nothing is called: a ``module:attr`` reference is imported and its signature read. ``references=False``
    refuses such references (see ``find``).
    """
    if entry is None:
        return None, []
    if isinstance(entry, str):
        entry = {"name": entry}
    if not isinstance(entry, Mapping):
        return None, [(path, f"expected a {kind_name} name or a mapping with 'name', got {entry!r}")]
    if "name" not in entry or not isinstance(entry["name"], str) or not entry["name"]:
        return None, [
            (
                _join(path, "name"),
                f"missing 'name': which {kind_name} component (`vvframe plugins {kind_name}` lists them)",
            )
        ]
    name = entry["name"]
    args = {k: v for k, v in entry.items() if k != "name"}
    try:
        ep = find(kind_name, name, references=references)
        params = signature(kind_name, load(ep))
    except (ComponentNotFound, PluginImportError, ContractError) as exc:
        return None, [(_join(path, "name"), str(exc))]
    coerced, problems = bind(params, args, engine=KINDS[kind_name].supplies, owner=f"{kind_name} '{name}'")
    problems = [(_join(path, p), m) for p, m in problems]
    return Component(kind_name, name, coerced, path, ep), problems


class EntryError(RecipeError, BadValue):
    """Everything wrong with one entry given to ``build`` (a ``RecipeError`` and a ``BadValue``)."""


def build(kind_name: str, entry: Any, *, references: bool = True, **supplied: Any) -> Any:
    """Resolve and build a component in one step (the Python API): ``build('optimizers', 'sgd', params=...)``;
    ``references=False`` builds installed entry points only (see ``find``)."""
    comp, problems = resolve(kind_name, entry, kind_name, references=references)
    if problems:
        name = entry if isinstance(entry, str) else entry.get("name") if isinstance(entry, Mapping) else None
        raise EntryError(
            f"{kind_name} '{name}'" if isinstance(name, str) else f"{kind_name} entry",
            [Problem(p, "", m) for p, m in problems],
        )
    if comp is None:
        raise ArgumentError(f"{kind_name} entry is null: nothing to build")
    return comp.build(**supplied)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path and key else path or key


# --- describing and checking ------------------------------------------------------------------------------


def listing(kind_name: str | None = None) -> list[tuple[str, str, str, str, str]]:
    """Rows ``(kind, name, target, distribution, version)`` sorted by kind then name; imports nothing."""
    if kind_name is not None:
        kind(kind_name)
    rows = []
    for ep in entry_points(kind_name):
        dist, version = distribution(ep)
        rows.append((ep.group[len(GROUP_PREFIX) :], ep.name, ep.value, dist, version))
    order = {k: i for i, k in enumerate(KINDS)}
    return sorted(rows, key=lambda r: (order.get(r[0], len(order)), r[0], r[1]))


def describe(kind_name: str, name: str) -> str:
    """The parameters of one component (defaults, annotations), what vvframe supplies, its docstring's first line."""
    ep = find(kind_name, name)
    factory = load(ep)
    params = signature(kind_name, factory)
    supplies = KINDS[kind_name].supplies
    doc = (inspect.getdoc(factory) or "").strip().splitlines()
    lines = [f"{kind_name} '{name}'  ->  {ep.value}  ({_where(ep)})"]
    if doc:
        lines.append(f"  {doc[0]}")
    own = [p for p in params if p.name not in supplies]
    lines.append("  arguments:" if own else "  arguments: none")
    lines += [f"    {p.describe()}" + ("   (required)" if p.required else "") for p in own]
    given = [p.name for p in params if p.name in supplies]
    lines.append(f"  supplied by vvframe: {', '.join(given) if given else 'none'}")
    return "\n".join(lines)


def check_all() -> list[str]:
    """Import and validate every ``vvframe.*`` entry point; the problems found (empty when all is well)."""
    problems = []
    eps = entry_points()
    if not eps:
        return ["no vvframe components are installed; vvframe itself is probably not installed (pip install -e .)"]
    by_key: dict[tuple[str, str], set[str]] = {}
    supplied_elsewhere = {n for k in KINDS.values() for n in k.supplies}
    for ep in eps:
        kind_name = ep.group[len(GROUP_PREFIX) :]
        label = f"{ep.group} '{ep.name}' ({ep.value}, from {_where(ep)})"
        if kind_name not in KINDS:
            problems.append(
                f"{label}: unknown group{did_you_mean(kind_name, KINDS)}; the groups are "
                + ", ".join(k.group for k in KINDS.values())
            )
            continue
        by_key.setdefault((kind_name, ep.name), set()).add(f"{ep.value} (from {_where(ep)})")
        if not re.fullmatch(r"[a-z][a-z0-9_]*", ep.name) or keyword.iskeyword(ep.name):
            problems.append(f"{label}: the name must be lowercase snake_case")
        try:
            params = signature(kind_name, load(ep))
        except (PluginImportError, ContractError) as exc:
            problems.append(str(exc))
            continue
        problems += [f"{label}: {m}" for m in _defaults_outside_limits(params)]
        if kind_name == "stages":
            continue  # a stage's parameters name recipe sections: the recipe module's stage_contract checks them
        own = set(KINDS[kind_name].supplies)
        for p in params:
            if p.required and p.name in supplied_elsewhere - own:
                problems.append(
                    f"{label}: required parameter '{p.name}' is supplied by vvframe only to other kinds,"
                    f" so nothing would pass it here (this kind gets: {', '.join(own) or 'none'})"
                )
    for (kind_name, name), targets in by_key.items():
        if len(targets) > 1:
            problems.append(f"vvframe.{kind_name} '{name}' is declared twice: {' and '.join(sorted(targets))}")
    return problems


def _defaults_outside_limits(params: list[Param]) -> list[str]:
    """A default that its own annotation's ``Range`` refuses (a recipe leaving it out would get it unchecked)."""
    found = []
    for p in params:
        if p.required or p.default is None or not limits(p.annotation):
            continue
        try:
            coerce(p.default, p.annotation, p.default)
        except CoercionError as exc:
            found.append(
                f"the default {p.name}={p.default!r} is outside its own annotation ({type_name(p.annotation)}): {exc}"
            )
    return found


__all__ = [
    "KINDS",
    "Kind",
    "Component",
    "EntryError",
    "Param",
    "Range",
    "build",
    "describe",
    "distribution",
    "entry_points",
    "find",
    "check_all",
    "listing",
    "load",
    "refresh",
    "resolve",
    "signature",
    "type_name",
]
