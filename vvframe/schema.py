"""A component's signature as its schema: read parameters, coerce YAML values by annotation, bind arguments."""
from __future__ import annotations

import collections.abc as cabc
import dataclasses
import enum
import inspect
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .errors import BadValue, ContractError, did_you_mean

EMPTY = inspect.Parameter.empty


@dataclass(frozen=True)
class Param:
    """One keyword parameter of a component: its name, its annotation (or ``EMPTY``) and its default (or ``EMPTY``)."""

    name: str
    annotation: Any = EMPTY
    default: Any = EMPTY

    @property
    def required(self) -> bool:
        return self.default is EMPTY

    def describe(self) -> str:
        """``name: type = default`` as a reader of ``vvframe plugins KIND NAME`` sees it."""
        text = self.name
        if self.annotation is not EMPTY:
            text += f": {type_name(self.annotation)}"
        if self.default is not EMPTY:
            text += f" = {self.default!r}"
        return text


def parameters(factory: Callable) -> list[Param]:
    """The keyword parameters of ``factory``; a ``ContractError`` if it has no explicit signature."""
    what = getattr(factory, "__qualname__", repr(factory))
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError) as exc:
        raise ContractError(f"{what} has no readable signature ({exc}); a component needs explicit keyword parameters") from exc
    hints = _hints(factory)
    params = []
    for p in sig.parameters.values():
        if p.kind is p.VAR_KEYWORD:
            raise ContractError(f"{what} takes **{p.name}; a component lists its parameters explicitly so recipes can be checked")
        if p.kind is p.VAR_POSITIONAL:
            raise ContractError(f"{what} takes *{p.name}; a component lists its parameters explicitly")
        if p.kind is p.POSITIONAL_ONLY:
            raise ContractError(f"{what} has positional-only parameter '{p.name}'; recipes pass arguments by name")
        annotation = hints.get(p.name, p.annotation)
        if isinstance(annotation, str):  # an unresolvable forward reference: treat as unannotated
            annotation = EMPTY
        params.append(Param(p.name, annotation, p.default))
    return params


def _hints(factory: Callable) -> dict[str, Any]:
    targets = [factory.__init__, factory] if inspect.isclass(factory) else [factory]
    for target in targets:
        try:
            hints = typing.get_type_hints(target)
        except Exception:  # noqa: BLE001 - annotations a plugin wrote may not resolve; fall back to raw ones
            continue
        if hints:
            return hints
    return {}


def type_name(annotation: Any) -> str:
    """A short readable name for an annotation (``float``, ``list[int]``, ``'fp32' | 'bf16'``)."""
    if annotation is EMPTY:
        return "any"
    if isinstance(annotation, type) and not typing.get_args(annotation):
        return annotation.__name__
    if typing.get_origin(annotation) is typing.Literal:
        return " | ".join(repr(a) for a in typing.get_args(annotation))
    return str(annotation).replace("typing.", "").replace("collections.abc.", "")


def bind(params: list[Param], args: dict[str, Any], *, engine: cabc.Collection[str] = (), owner: str = "") \
        -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """Check ``args`` against ``params`` and coerce each value.

    Returns the coerced arguments and a list of problems ``(relative path, message)``: unknown keys (with
    suggestions and the accepted parameters), missing required ones, keys the engine supplies itself, values
    of the wrong type. ``engine`` names the values vvframe passes by parameter name; ``owner`` reads like
    ``losses 'aamsoftmax'``.
    """
    by_name = {p.name: p for p in params}
    accepted = [p for p in params if p.name not in engine]
    out: dict[str, Any] = {}
    problems: list[tuple[str, str]] = []
    for key, value in args.items():
        key = str(key)
        if key in engine and key in by_name:
            problems.append((key, f"'{key}' is set by vvframe for {owner.split(' ')[0] or 'this kind'}; remove it"))
            continue
        param = by_name.get(key)
        if param is None:
            listing = ", ".join(p.name + ("" if p.required else f"={p.default!r}") for p in accepted) or "nothing"
            problems.append((key, f"unknown argument '{key}' for {owner}{did_you_mean(key, [p.name for p in accepted])};"
                                  f" it accepts: {listing}"))
            continue
        try:
            out[key] = coerce(value, param.annotation, param.default)
        except CoercionError as exc:
            problems.append((".".join([key, *exc.path]), str(exc)))
    for p in accepted:
        if p.required and p.name not in args:
            problems.append((p.name, f"missing required argument '{p.name}' for {owner}"
                                     + (f" ({type_name(p.annotation)})" if p.annotation is not EMPTY else "")))
    return out, problems


class CoercionError(BadValue):
    """A value that does not fit an annotation; ``path`` is where inside a nested value the misfit is."""

    def __init__(self, message: str, path: tuple[str, ...] = ()):
        super().__init__(message)
        self.path = path


def coerce(value: Any, annotation: Any, default: Any = EMPTY) -> Any:
    """``value`` (as YAML read it) converted to ``annotation``, or a ``CoercionError`` saying what was expected.

    Unannotated parameters take the type of a scalar default. Strings such as ``"1e-3"`` become floats,
    integers become floats, a scalar becomes a one-element list, a mapping given for a class becomes an
    instance of it (its own signature checked), a ``Literal`` lists its choices.
    """
    if annotation is EMPTY or annotation is Any:
        if default is not EMPTY and default is not None and isinstance(default, (bool, int, float, str, Path)):
            annotation = type(default)
        else:
            return value
    if value is None:
        if default is None or _allows_none(annotation):
            return None
        raise CoercionError(f"expected {_expect(annotation)}, got null")
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return _coerce_union(value, args)
    if origin is typing.Literal:
        if value in args:
            return value
        choices = ", ".join(repr(a) for a in args)
        raise CoercionError(f"expected one of {choices}, got {value!r}"
                            + did_you_mean(str(value), [str(a) for a in args]))
    if origin is typing.Annotated:
        return coerce(value, args[0])
    if origin in (list, cabc.Sequence, cabc.Iterable, cabc.MutableSequence, set, frozenset, cabc.Collection):
        items = value if isinstance(value, (list, tuple)) else [value]
        item_type = args[0] if args else EMPTY
        coerced = [_at(i, coerce, v, item_type) for i, v in enumerate(items)]
        return set(coerced) if origin in (set, frozenset) else coerced
    if origin is tuple:
        items = value if isinstance(value, (list, tuple)) else [value]
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_at(i, coerce, v, args[0]) for i, v in enumerate(items))
        if args and len(args) != len(items):
            raise CoercionError(f"expected a list of {len(args)} values ({type_name(annotation)}), got {value!r}")
        return tuple(_at(i, coerce, v, t) for i, (v, t) in enumerate(zip(items, args or [EMPTY] * len(items))))
    if origin in (dict, cabc.Mapping, cabc.MutableMapping):
        if not isinstance(value, dict):
            raise CoercionError(f"expected a mapping, got {value!r}")
        kt, vt = args if args else (EMPTY, EMPTY)
        return {coerce(k, kt): _at(str(k), coerce, v, vt) for k, v in value.items()}
    if origin is not None:  # another generic alias: accept as it is
        return value
    return _coerce_plain(value, annotation)


def _at(key: Any, fn: Callable, *args: Any) -> Any:
    try:
        return fn(*args)
    except CoercionError as exc:
        raise CoercionError(str(exc), (str(key), *exc.path)) from None


def _allows_none(annotation: Any) -> bool:
    return annotation is type(None) or (typing.get_origin(annotation) in (typing.Union, types.UnionType)
                                        and type(None) in typing.get_args(annotation))


def _coerce_union(value: Any, arms: tuple) -> Any:
    arms = tuple(a for a in arms if a is not type(None) and not _is_tensor(a))
    for arm in arms:  # an arm the value already is wins (an int stays an int under int | float)
        if isinstance(arm, type) and type(value) is arm:
            return value
    errors = []
    for arm in arms:
        try:
            return coerce(value, arm)
        except CoercionError as exc:
            errors.append(exc)
    if len(errors) == 1:
        raise errors[0]
    raise CoercionError(f"expected {' or '.join(_expect(a) for a in arms)}, got {value!r}")


def _is_tensor(annotation: Any) -> bool:
    return isinstance(annotation, type) and annotation.__name__ == "Tensor"


def _expect(annotation: Any) -> str:
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string", Path: "a path"}
    return names.get(annotation, type_name(annotation))


def _coerce_plain(value: Any, annotation: Any) -> Any:
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise CoercionError(f"expected true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        raise CoercionError(f"expected an integer, got {value!r}")
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value.strip())
            except ValueError:
                pass
        raise CoercionError(f"expected a number, got {value!r}")
    if annotation is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise CoercionError(f"expected a string, got {value!r}")
    if annotation is Path or (isinstance(annotation, type) and issubclass(annotation, Path)):
        if isinstance(value, (str, Path)):
            return Path(value)
        raise CoercionError(f"expected a path, got {value!r}")
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        for member in annotation:
            if value == member.value or value == member.name:
                return member
        choices = [str(m.value) for m in annotation]
        raise CoercionError(f"expected one of {', '.join(choices)}, got {value!r}{did_you_mean(str(value), choices)}")
    if isinstance(annotation, type) and isinstance(value, annotation):
        return value
    if isinstance(annotation, type) and isinstance(value, dict) and _schema_class(annotation):
        return instantiate(annotation, value)
    if isinstance(annotation, type):
        raise CoercionError(f"expected {_expect(annotation)}, got {value!r}")
    return value


def _schema_class(cls: type) -> bool:
    if dataclasses.is_dataclass(cls):
        return True
    try:
        parameters(cls)
    except ContractError:
        return False
    return cls.__init__ is not object.__init__


def instantiate(cls: Callable, value: dict[str, Any]) -> Any:
    """``cls(**value)`` after checking and coercing ``value`` against its signature (nested schemas)."""
    params = [p for p in parameters(cls) if p.name != "self"]
    coerced, problems = bind(params, value, owner=f"'{getattr(cls, '__name__', cls)}'")
    if problems:
        path, message = problems[0]
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise CoercionError(message + more, tuple(path.split(".")))
    return cls(**coerced)
