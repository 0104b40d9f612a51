"""A component's signature as its schema: read parameters, coerce YAML values by annotation, bind arguments.

A signature can also say which numbers its code accepts: ``prob: Annotated[float, Range(0, 1)]``. Whatever it
says, a float must be finite and an integer must fit in 64 bits unless a ``Range`` allows otherwise.
"""

from __future__ import annotations

import collections.abc as cabc
import dataclasses
import enum
import inspect
import math
import types
import typing
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass
from pathlib import Path
from typing import Any

from vvframe.core.errors import BadValue, ContractError, did_you_mean

EMPTY = inspect.Parameter.empty
INT64 = (-(2**63), 2**63 - 1)


@dataclass(frozen=True)
class Range:
    """The numbers a parameter accepts, stated in its annotation: ``Annotated[float, Range(0, 1)]``.

    The positional bounds are closed (``ge``, ``le``), ``gt`` and ``lt`` open ones, ``None`` no bound. A float
    must also be finite unless ``finite=False``. vvframe checks it when a recipe value is coerced; on a list,
    tuple or mapping annotation it applies to each number inside.
    """

    ge: float | None = None
    le: float | None = None
    _: KW_ONLY
    gt: float | None = None
    lt: float | None = None
    finite: bool = True

    def __post_init__(self) -> None:
        if (self.ge is not None and self.gt is not None) or (self.le is not None and self.lt is not None):
            raise ContractError(f"{self!r}: give each bound once (ge or gt, le or lt)")
        low, high = self.low, self.high
        if low is not None and high is not None and low > high:
            raise ContractError(f"{self!r}: the lower bound is above the upper one")

    @property
    def low(self) -> float | None:
        return self.ge if self.ge is not None else self.gt

    @property
    def high(self) -> float | None:
        return self.le if self.le is not None else self.lt

    def admits(self, value: float) -> bool:
        """Whether ``value`` lies within the bounds (and is finite, unless ``finite=False``)."""
        if math.isnan(value):
            return not self.finite and self.low is None and self.high is None
        if self.finite and math.isinf(value):
            return False
        return (
            (self.ge is None or value >= self.ge)
            and (self.gt is None or value > self.gt)
            and (self.le is None or value <= self.le)
            and (self.lt is None or value < self.lt)
        )

    def __str__(self) -> str:
        """``in [0, 1]``, ``in (0, 1]``, ``in (0, inf)`` (empty when only finiteness is asked for)."""
        if self.low is None and self.high is None:
            return ""
        low = "(-inf" if self.low is None else f"{'[' if self.ge is not None else '('}{_number(self.low)}"
        high = "inf)" if self.high is None else f"{_number(self.high)}{']' if self.le is not None else ')'}"
        return f"in {low}, {high}"


def _number(x: float) -> str:
    return str(x) if isinstance(x, int) else f"{x:.10g}"


def limits(annotation: Any) -> list[Range]:
    """Every ``Range`` an annotation carries, inside unions and containers too."""
    if typing.get_origin(annotation) is typing.Annotated:
        return [a for a in annotation.__metadata__ if isinstance(a, Range)] + limits(typing.get_args(annotation)[0])
    return [r for arg in typing.get_args(annotation) if arg is not Ellipsis for r in limits(arg)]


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
        raise ContractError(
            f"{what} has no readable signature ({exc}); a component needs explicit keyword parameters"
        ) from exc
    hints = _hints(factory)
    params = []
    for p in sig.parameters.values():
        if p.kind is p.VAR_KEYWORD:
            raise ContractError(
                f"{what} takes **{p.name}; a component lists its parameters explicitly so recipes can be checked"
            )
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
            hints = typing.get_type_hints(target, include_extras=True)
        except Exception:  # noqa: BLE001 - annotations a plugin wrote may not resolve; fall back to raw ones
            continue
        if hints:
            return hints
    return {}


def type_name(annotation: Any) -> str:
    """A short readable name for an annotation (``float``, ``list[int]``, ``'fp32' | 'bf16'``, ``int in [1, 64]``)."""
    if annotation is EMPTY:
        return "any"
    if annotation is type(None):
        return "None"
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        base = type_name(args[0])
        if typing.get_origin(args[0]) in (typing.Union, types.UnionType):
            base = f"({base})"
        return " ".join([base, *(str(r) for r in args[1:] if isinstance(r, Range) and str(r))])
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in args)
    if isinstance(annotation, type) and not args:
        return annotation.__name__
    if origin is not None and args and isinstance(getattr(origin, "__name__", None), str):
        return f"{origin.__name__}[{', '.join('...' if a is Ellipsis else type_name(a) for a in args)}]"
    return str(annotation).replace("typing.", "").replace("collections.abc.", "")


def bind(
    params: list[Param], args: dict[str, Any], *, engine: cabc.Collection[str] = (), owner: str = ""
) -> tuple[dict[str, Any], list[tuple[str, str]]]:
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
            problems.append(
                (
                    key,
                    f"unknown argument '{key}' for {owner}{did_you_mean(key, [p.name for p in accepted])};"
                    f" it accepts: {listing}",
                )
            )
            continue
        try:
            out[key] = coerce(value, param.annotation, param.default)
        except CoercionError as exc:
            problems.append((".".join([key, *exc.path]), str(exc)))
    for p in accepted:
        if p.required and p.name not in args:
            problems.append(
                (
                    p.name,
                    f"missing required argument '{p.name}' for {owner}"
                    + (f" ({type_name(p.annotation)})" if p.annotation is not EMPTY else ""),
                )
            )
    return out, problems


class CoercionError(BadValue):
    """A value that does not fit an annotation; ``path`` is where inside a nested value the misfit is;
    ``out_of_range``: the value has the right type but lies outside what the annotation accepts."""

    def __init__(self, message: str, path: tuple[str, ...] = (), out_of_range: bool = False):
        super().__init__(message)
        self.path = path
        self.out_of_range = out_of_range


def coerce(value: Any, annotation: Any, default: Any = EMPTY) -> Any:
    """``value`` (as YAML read it) converted to ``annotation``, or a ``CoercionError`` saying what was expected.

    Unannotated parameters take the type of a scalar default. Strings such as ``"1e-3"`` become floats,
    integers become floats, a scalar becomes a one-element list, a mapping given for a class becomes an
    instance of it (its own signature checked), a ``Literal`` lists its choices. Numbers are checked against
    the ``Range`` of an ``Annotated`` annotation; a float must be finite and an integer fit in 64 bits unless
    a ``Range`` says otherwise.
    """
    return _coerce(value, annotation, default, ())


def _coerce(value: Any, annotation: Any, default: Any, ranges: tuple[Range, ...]) -> Any:
    if annotation is EMPTY or annotation is Any:
        if default is not EMPTY and default is not None and isinstance(default, (bool, int, float, str, Path)):
            annotation = type(default)
        else:
            return _limit(value, value, ranges) if ranges else value
    if value is None:
        if default is None or _allows_none(annotation):
            return None
        raise CoercionError(f"expected {_expect(annotation)}, got null")
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        own = tuple(a for a in annotation.__metadata__ if isinstance(a, Range))
        return _coerce(value, args[0], default, ranges + own)
    if origin in (typing.Union, types.UnionType):
        return _coerce_union(value, args, ranges)
    if origin is typing.Literal:
        if value in args:
            return value
        choices = ", ".join(repr(a) for a in args)
        raise CoercionError(
            f"expected one of {choices}, got {value!r}" + did_you_mean(str(value), [str(a) for a in args])
        )
    if origin in (list, cabc.Sequence, cabc.Iterable, cabc.MutableSequence, set, frozenset, cabc.Collection):
        items = value if isinstance(value, (list, tuple)) else [value]
        item_type = args[0] if args else EMPTY
        coerced = [_at(i, v, item_type, ranges) for i, v in enumerate(items)]
        return set(coerced) if origin in (set, frozenset) else coerced
    if origin is tuple:
        items = value if isinstance(value, (list, tuple)) else [value]
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_at(i, v, args[0], ranges) for i, v in enumerate(items))
        if args and len(args) != len(items):
            raise CoercionError(f"expected a list of {len(args)} values ({type_name(annotation)}), got {value!r}")
        return tuple(_at(i, v, t, ranges) for i, (v, t) in enumerate(zip(items, args or [EMPTY] * len(items))))
    if origin in (dict, cabc.Mapping, cabc.MutableMapping):
        if not isinstance(value, dict):
            raise CoercionError(f"expected a mapping, got {value!r}")
        kt, vt = args if args else (EMPTY, EMPTY)
        return {coerce(k, kt): _at(str(k), v, vt, ranges) for k, v in value.items()}
    if origin is not None:  # another generic alias: accept as it is
        return value
    return _limit(_coerce_plain(value, annotation), value, ranges)


def _at(key: Any, value: Any, annotation: Any, ranges: tuple[Range, ...]) -> Any:
    try:
        return _coerce(value, annotation, EMPTY, ranges)
    except CoercionError as exc:
        raise CoercionError(str(exc), (str(key), *exc.path), exc.out_of_range) from None


def _limit(result: Any, value: Any, ranges: tuple[Range, ...]) -> Any:
    """``result`` (``value`` as coerced) if it is within ``ranges``, finite and fits in 64 bits."""
    if isinstance(result, bool) or not isinstance(result, (int, float)):
        return result
    what = "an integer" if isinstance(result, int) else "a number"
    for r in ranges:
        if not r.admits(result):
            if isinstance(result, float) and not math.isfinite(result) and r.finite and None in (r.low, r.high):
                what = "a finite number"  # inf > 0 holds: say why it is refused all the same
            raise CoercionError(f"expected {what} {r}".rstrip() + f", got {value!r}", out_of_range=True)
    said = "".join(f" {r}" for r in ranges if str(r))
    if isinstance(result, int) and not INT64[0] <= result <= INT64[1]:
        raise CoercionError(
            f"expected an integer{said} that fits in 64 bits (below 2**63 in size), got {value!r}", out_of_range=True
        )
    if isinstance(result, float) and not math.isfinite(result) and all(r.finite for r in ranges):
        raise CoercionError(f"expected a finite number{said}, got {value!r}", out_of_range=True)
    return result


def _allows_none(annotation: Any) -> bool:
    return annotation is type(None) or (
        typing.get_origin(annotation) in (typing.Union, types.UnionType) and type(None) in typing.get_args(annotation)
    )


def _coerce_union(value: Any, arms: tuple, ranges: tuple[Range, ...]) -> Any:
    arms = tuple(a for a in arms if a is not type(None) and not _is_tensor(a))
    for arm in arms:  # an arm the value already is wins (an int stays an int under int | float)
        if isinstance(arm, type) and type(value) is arm:
            return _coerce(value, arm, EMPTY, ranges)
    errors = []
    for arm in arms:
        try:
            return _coerce(value, arm, EMPTY, ranges)
        except CoercionError as exc:
            errors.append(exc)
    outside = [e for e in errors if e.out_of_range]  # the value has the type of an arm, but not its range
    if len(errors) == 1 or outside:
        raise (outside or errors)[0]
    raise CoercionError(f"expected {' or '.join(_expect(a) for a in arms)}, got {value!r}")


def _is_tensor(annotation: Any) -> bool:
    return isinstance(annotation, type) and annotation.__name__ == "Tensor"


def _expect(annotation: Any) -> str:
    if typing.get_origin(annotation) is typing.Annotated:
        base = typing.get_args(annotation)[0]
        return " ".join([_expect(base), *(str(r) for r in annotation.__metadata__ if isinstance(r, Range) and str(r))])
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
    try:
        return cls(**coerced)
    except (TypeError, ValueError) as exc:  # its own checks (a dataclass's __post_init__): a problem at this path
        raise CoercionError(str(exc)) from exc
