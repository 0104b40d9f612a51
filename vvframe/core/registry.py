"""Component kinds, discovery from entry-point metadata (listing imports nothing), lookup and building."""

import contextlib
import dataclasses
import functools
import importlib.metadata as metadata
import re
from collections.abc import Callable, Mapping
from typing import Annotated, Any

from vvframe.core import errors
from vvframe.core.errors import ArgumentError, ComponentNotFound, ContractError, PluginImportError, did_you_mean
from vvframe.core.schema import Param, Range, bind, parameters

GROUP_PREFIX = "vvframe."


@dataclasses.dataclass(frozen=True)
class Kind:
    """A kind: what vvframe supplies (by parameter name), what components return, bounds signatures omit (SGD's lr)."""

    name: str
    supplies: tuple[str, ...]
    returns: str
    limits: tuple[tuple[str, Range], ...] = ()

    group = property(lambda self: GROUP_PREFIX + self.name, doc="Its entry-point group, ``vvframe.<name>``.")


# fmt: off
KINDS: dict[str, Kind] = {k.name: k for k in [
    Kind("frontends", ("sample_rate",), "nn.Module: waveform (B, T) -> features (B, n_feats, frames); attribute out_dim"),
    Kind("models", ("in_dim", "sample_rate"), "nn.Module: features (B, in_dim, frames) -> embeddings (B, embed_dim)"),
    Kind("losses", ("embed_dim", "num_classes"), "nn.Module: embeddings (B, P, D), labels (B,) -> (loss, accuracy)"),
    Kind("augmentors", ("sample_rate",), "picklable callable on a waveform batch (B, T) with a torch.Generator"
         " (and labels= when its call names labels); in the loader workers, or on the device (runs_on)"),
    Kind("samplers", ("labels", "batch_size", "rank", "world_size", "seed"), "yields lists of indices; set_epoch(e)"),
    Kind("normalizers", (), "N(scores, enroll, test, cohort) -> normalized scores"),
    Kind("optimizers", ("params",), "a torch.optim.Optimizer",  # torch checks these only when it is built
         (("lr", Range(0)), ("momentum", Range(0)), ("weight_decay", Range(0)), ("eps", Range(0)),
          ("betas", Range(0, lt=1)))),
    Kind("schedulers", ("optimizer", "steps_per_epoch", "epochs"), "a scheduler stepped once per iteration"),
    Kind("stages", ("ctx",), "a callable run against the run context"),
]}
# fmt: on


def kind(name: str) -> Kind:
    """The ``Kind`` called ``name``; a ``ComponentNotFound`` suggesting the closest kinds otherwise."""
    if name in KINDS:
        return KINDS[name]
    close = did_you_mean(name, KINDS) or did_you_mean(name + "s", KINDS)
    raise ComponentNotFound(f"unknown kind '{name}'{close}; the kinds are: {', '.join(KINDS)}")


def _entry_points() -> list[metadata.EntryPoint]:
    """Every ``vvframe.*`` entry point (of a distribution installed twice, the first copy): the seam tests replace."""
    eps = metadata.entry_points()
    return [ep for group in sorted(eps.groups) if group.startswith(GROUP_PREFIX) for ep in eps.select(group=group)]


@functools.cache
def _discovered() -> tuple[metadata.EntryPoint, ...]:
    return tuple(_entry_points())


def refresh() -> None:
    """Forget what was discovered and loaded (after installing a plugin in-process, or in tests)."""
    for cached in (_discovered, _packages, load):
        cached.cache_clear()


def entry_points(kind_name: str | None = None) -> list[metadata.EntryPoint]:
    """The entry points of one kind, or of every ``vvframe.*`` group; imports nothing."""
    return [ep for ep in _discovered() if kind_name is None or ep.group == GROUP_PREFIX + kind_name]


def distribution(ep: metadata.EntryPoint) -> tuple[str, str]:
    """``(name, version)`` of the distribution that declares ``ep`` (or provides its module), or ``('-', '')``."""
    if ep.dist is not None:
        return ep.dist.metadata["Name"], ep.dist.version
    name = (_packages().get(ep.value.split(":")[0].split(".")[0]) or ["-"])[0]
    with contextlib.suppress(metadata.PackageNotFoundError):
        return name, metadata.version(name)
    return name, ""


_packages = functools.cache(metadata.packages_distributions)


def where(ep: metadata.EntryPoint) -> str:
    """``name==version`` of the distribution that provides ``ep``."""
    return "==".join(filter(None, distribution(ep)))


def is_reference(name: str) -> bool:
    """Whether a recipe's ``name`` is a direct ``package.module:Attr`` reference rather than an entry-point name."""
    return ":" in name


def find(kind_name: str, name: str, *, references: bool = True) -> metadata.EntryPoint:
    """The entry point ``name`` means; ``references=False`` refuses ``module:attr`` ones (for data being loaded)."""
    group = kind(kind_name).group
    if is_reference(name):
        if not references:
            raise ComponentNotFound(
                f"{kind_name} '{name}' names a Python object directly (module:attr), which is refused here: a run"
                f" directory or model file being loaded is data, not a recipe you run, so only installed {kind_name}"
                f" components are built from it (`vvframe plugins {kind_name}` lists them); load it with"
                " trust_recipe=True (--trust-recipe) only if you trust its author as you trust a recipe you run"
            )
        if not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*", name):
            raise ComponentNotFound(f"'{name}' is not a valid reference; write package.module:Attr")
        return metadata.EntryPoint(name=name, value=name, group=group)
    eps = entry_points(kind_name)
    matches = [ep for ep in eps if ep.name == name]
    if len({ep.value for ep in matches}) > 1:
        both = " and ".join(f"{ep.value} (from {where(ep)})" for ep in matches)
        fix = f"name the one you mean directly, e.g. name: {matches[0].value}"
        raise ComponentNotFound(f"two installed {kind_name} components are named '{name}': {both}; {fix}")
    if matches:
        return matches[0]
    if not entry_points():
        why = "no vvframe components are installed at all; vvframe itself is probably not installed (pip install -e .)"
        raise ComponentNotFound(f"no {kind_name} component named '{name}': {why}")
    names = sorted({ep.name for ep in eps})
    lists = f" (`vvframe plugins {kind_name}` lists all {len(names)})" if names else ""
    why = f": none of kind {kind_name} is installed (`vvframe plugins` lists what is)" if not names else " is installed"
    raise ComponentNotFound(f"no {kind_name} component named '{name}'{why}{did_you_mean(name, names)}{lists}")


@functools.cache
def load(ep: metadata.EntryPoint) -> Callable:
    """Import what ``ep`` points at; a ``PluginImportError`` naming the plugin and its distribution if that fails."""
    kind_name = ep.group[len(GROUP_PREFIX) :]
    try:
        return ep.load()
    except Exception as exc:  # noqa: BLE001 - any failure inside a plugin's import is reported as the plugin's
        what = f"{kind_name} '{ep.name}' ({ep.value}, from {where(ep)})"
        raise PluginImportError(f"{what} failed to import: {type(exc).__name__}: {exc}") from exc


def signature(kind_name: str, factory: Callable) -> list[Param]:
    """The parameters of ``factory`` as a component of ``kind_name``: its annotations plus the kind's ``limits``."""
    extra = dict(KINDS[kind_name].limits) if kind_name in KINDS else {}
    bound = lambda p: dataclasses.replace(p, annotation=Annotated[p.annotation, extra[p.name]])
    return [bound(p) if p.name in extra else p for p in parameters(factory)]


@dataclasses.dataclass
class Component:
    """A resolved recipe entry: which component, its checked arguments, and where in the recipe it came from."""

    kind: str
    name: str
    args: dict[str, Any] = dataclasses.field(default_factory=dict)
    path: str = ""
    entry_point: metadata.EntryPoint | None = None

    factory = property(lambda self: load(self.entry_point or find(self.kind, self.name)), doc="What builds it.")

    def build(self, **supplied: Any) -> Any:
        """Call the factory with the recipe's arguments plus those ``supplied`` values its signature names."""
        supplies = KINDS[self.kind].supplies
        if unknown := sorted(set(supplied) - set(supplies)):
            given = f"{', '.join(supplies) or 'none'}"  # in a message (a normalizer is called none)
            raise ArgumentError(f"{', '.join(unknown)} not among the values vvframe supplies to {self.kind} ({given})")
        takes = {p.name for p in parameters(self.factory)}  # read once: the signature is parsed with its hints
        passed = {k: v for k, v in supplied.items() if k in takes}
        try:
            return self.factory(**self.args, **passed)
        except Exception as exc:
            exc.add_note(f"while building {self.kind} '{self.name}' ({self.where()})")
            raise

    def where(self) -> str:
        return f"recipe path '{self.path}'" if self.path else "built directly"


def resolve(kind_name: str, entry: Any, path: str = "", *, references: bool = True):
    """A recipe entry (``None``, a name, or a mapping) as ``(Component or None, [(path, problem)])``, nothing built."""
    entry = {"name": entry} if isinstance(entry, str) else entry
    if not isinstance(entry, Mapping):
        why = f"expected a {kind_name} name or a mapping with 'name', got {entry!r}"
        return None, [] if entry is None else [(path, why)]
    at_name = f"{path}.name" if path else "name"
    name = entry.get("name")
    if not isinstance(name, str) or not name:
        why = f"missing 'name': which {kind_name} component (`vvframe plugins {kind_name}` lists them)"
        return None, [(at_name, why)]
    try:
        ep = find(kind_name, name, references=references)
        params = signature(kind_name, load(ep))
    except (ComponentNotFound, PluginImportError, ContractError) as exc:
        return None, [(at_name, str(exc))]
    args = {k: v for k, v in entry.items() if k != "name"}
    coerced, problems = bind(params, args, engine=KINDS[kind_name].supplies, owner=f"{kind_name} '{name}'")
    return Component(kind_name, name, coerced, path, ep), [(f"{path}.{p}" if path else p, m) for p, m in problems]


class EntryError(errors.RecipeError, errors.BadValue):
    """Everything wrong with one entry given to ``build`` (a ``RecipeError`` and a ``BadValue``)."""


def build(kind_name: str, entry: Any, *, references: bool = True, **supplied: Any) -> Any:
    """Resolve and build a component in one step (the Python API): ``build('optimizers', 'sgd', params=...)``."""
    comp, problems = resolve(kind_name, entry, kind_name, references=references)
    if problems:
        name = entry if isinstance(entry, str) else entry.get("name") if isinstance(entry, Mapping) else None
        label = f"{kind_name} '{name}'" if isinstance(name, str) else f"{kind_name} entry"
        raise EntryError(label, [errors.Problem(p, "", m) for p, m in problems])
    if comp is None:
        raise ArgumentError(f"{kind_name} entry is null: nothing to build")
    return comp.build(**supplied)
