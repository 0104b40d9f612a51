"""A component's signature as its schema: parameters read, YAML values coerced by annotation, arguments bound."""

import collections.abc as cabc
import contextlib
import dataclasses
import enum
import inspect
import math
import typing
from pathlib import Path
from typing import Any

from vvframe.core.errors import BadValue, ContractError, did_you_mean

EMPTY = inspect.Parameter.empty
INT64 = (-(2**63), 2**63 - 1)
UNIONS = (typing.Union, type(int | str))
NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string", Path: "a path"}  # in messages
SEQUENCES = (list, cabc.Sequence, cabc.Iterable, cabc.MutableSequence, set, frozenset, cabc.Collection)


@dataclasses.dataclass(frozen=True)
class Range:
    """The numbers a parameter (or each in a container) accepts: bounds ``ge``/``le``/``gt``/``lt``; ``finite``."""

    ge: float | None = None
    le: float | None = None
    _: dataclasses.KW_ONLY
    gt: float | None = None
    lt: float | None = None
    finite: bool = True

    def __post_init__(self) -> None:
        if None not in (self.ge, self.gt) or None not in (self.le, self.lt):
            raise ContractError(f"{self!r}: give each bound once (ge or gt, le or lt)")
        if None not in (self.low, self.high) and self.low > self.high:
            raise ContractError(f"{self!r}: the lower bound is above the upper one")

    low = property(lambda self: self.gt if self.ge is None else self.ge, doc="The lower bound, closed or open.")
    high = property(lambda self: self.lt if self.le is None else self.le, doc="The upper bound, closed or open.")

    def admits(self, value: float) -> bool:
        """Whether ``value`` lies within the bounds (and is finite, unless ``finite=False``)."""
        above = self.low is None or (value >= self.low if self.ge is not None else value > self.low)
        below = self.high is None or (value <= self.high if self.le is not None else value < self.high)
        return above and below and (math.isfinite(value) or not self.finite)

    def __str__(self) -> str:
        """``in [0, 1]``, ``in (0, 1]``, ``in (0, inf)`` (empty when only finiteness is asked for)."""
        if self.low is None and self.high is None:
            return ""
        low = "(-inf" if self.low is None else f"{'[' if self.ge is not None else '('}{_number(self.low)}"
        high = "inf)" if self.high is None else f"{_number(self.high)}{']' if self.le is not None else ')'}"
        return f"in {low}, {high}"


def _number(x: float) -> str:
    return str(x) if isinstance(x, int) else f"{x:.10g}"


@dataclasses.dataclass(frozen=True)
class Param:
    """One keyword parameter of a component: its name, its annotation (or ``EMPTY``) and its default (or ``EMPTY``)."""

    name: str
    annotation: Any = EMPTY
    default: Any = EMPTY

    required = property(lambda self: self.default is EMPTY, doc="Whether the parameter has no default.")

    def describe(self) -> str:
        """``name: type = default`` as a reader of ``vvframe plugins KIND NAME`` sees it."""
        typed = f": {type_name(self.annotation)}" if self.annotation is not EMPTY else ""
        return self.name + typed + (f" = {self.default!r}" if self.default is not EMPTY else "")


REFUSED = {
    inspect.Parameter.VAR_KEYWORD: "takes **{}; a component lists its parameters explicitly so recipes can be checked",
    inspect.Parameter.VAR_POSITIONAL: "takes *{}; a component lists its parameters explicitly",
    inspect.Parameter.POSITIONAL_ONLY: "has positional-only parameter '{}'; recipes pass arguments by name",
}


def parameters(factory: cabc.Callable) -> list[Param]:
    """The keyword parameters of ``factory``; a ``ContractError`` if it has no explicit signature."""
    what = getattr(factory, "__qualname__", repr(factory))
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError) as exc:
        why = "a component needs explicit keyword parameters"
        raise ContractError(f"{what} has no readable signature ({exc}); {why}") from exc
    if refused := [REFUSED[p.kind].format(p.name) for p in sig.parameters.values() if p.kind in REFUSED]:
        raise ContractError(f"{what} {refused[0]}")
    hints = _hints(factory)  # an annotation left a string is a forward reference that did not resolve
    annotations = {n: hints.get(n, p.annotation) for n, p in sig.parameters.items()}
    return [Param(n, EMPTY if isinstance(a, str) else a, sig.parameters[n].default) for n, a in annotations.items()]


def _hints(factory: cabc.Callable) -> dict[str, Any]:
    for target in [factory.__init__, factory] if inspect.isclass(factory) else [factory]:
        try:
            if hints := typing.get_type_hints(target, include_extras=True):
                return hints
        except Exception:  # noqa: BLE001 - annotations a plugin wrote may not resolve; fall back to raw ones
            continue
    return {}


def type_name(annotation: Any, spoken: bool = False) -> str:
    """A readable name for an annotation: ``list[int]``, ``int in [1, 64]``, ``'a' | 'b'``; spoken: ``a path``."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is EMPTY or annotation is type(None):
        return "any" if annotation is EMPTY else "None"
    if origin is typing.Annotated:
        base = type_name(args[0], spoken)
        base = f"({base})" if typing.get_origin(args[0]) in UNIONS and not spoken else base
        return " ".join([base, *(str(r) for r in args[1:] if isinstance(r, Range) and str(r))])
    if spoken and annotation in NAMES:
        return NAMES[annotation]
    if origin is typing.Literal or origin in UNIONS:
        return " | ".join(repr(a) if origin is typing.Literal else type_name(a) for a in args)
    if isinstance(annotation, type) and not args:
        return annotation.__name__
    if origin is not None and args and isinstance(getattr(origin, "__name__", None), str):
        return f"{origin.__name__}[{', '.join('...' if a is Ellipsis else type_name(a) for a in args)}]"
    return str(annotation).replace("typing.", "").replace("collections.abc.", "")


def bind(params: list[Param], args: dict[str, Any], *, engine: cabc.Collection[str] = (), owner: str = ""):
    """``(coerced args, [(path, problem)])``; ``engine``: names vvframe supplies; ``owner``: ``losses 'aamsoftmax'``."""
    by_name = {p.name: p for p in params}
    accepted = [p for p in params if p.name not in engine]
    out, problems = {}, []  # coerced arguments; (relative path, message)
    for key, value in args.items():
        key, param = str(key), by_name.get(str(key))
        if key in engine and param is not None:
            problems.append((key, f"'{key}' is set by vvframe for {owner.split(' ')[0] or 'this kind'}; remove it"))
        elif param is None:
            listing = ", ".join(p.name + ("" if p.required else f"={p.default!r}") for p in accepted) or "nothing"
            close = did_you_mean(key, [p.name for p in accepted])
            problems.append((key, f"unknown argument '{key}' for {owner}{close}; it accepts: {listing}"))
        else:
            try:
                out[key] = coerce(value, param.annotation, param.default)
            except CoercionError as exc:
                problems.append((".".join([key, *exc.path]), str(exc)))
    for p in [p for p in accepted if p.required and p.name not in args]:
        typed = f" ({type_name(p.annotation)})" if p.annotation is not EMPTY else ""
        problems.append((p.name, f"missing required argument '{p.name}' for {owner}{typed}"))
    return out, problems


class CoercionError(BadValue):
    """A value that does not fit an annotation, at ``path`` inside a nested value (``out_of_range``: right type)."""

    def __init__(self, message: str, path: tuple[str, ...] = (), out_of_range: bool = False):
        super().__init__(message)
        self.path, self.out_of_range = path, out_of_range


def coerce(value: Any, annotation: Any, default: Any = EMPTY) -> Any:
    """``value`` as YAML read it converted to ``annotation`` (or to a scalar default's type), or a ``CoercionError``."""
    return _coerce(value, annotation, default, ())


def _coerce(value: Any, annotation: Any, default: Any, ranges: tuple[Range, ...]) -> Any:
    if annotation is EMPTY or annotation is Any:
        if default is EMPTY or not isinstance(default, (bool, int, float, str, Path)):
            return _limit(value, value, ranges) if ranges else value
        annotation = type(default)
    if value is None:
        if default is None or annotation is type(None) or type(None) in typing.get_args(annotation):
            return None
        raise CoercionError(f"expected {type_name(annotation, spoken=True)}, got null")
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        marks = tuple(a for a in annotation.__metadata__ if isinstance(a, Range))
        return _coerce(value, args[0], default, ranges + marks)
    if origin in UNIONS:
        return _coerce_union(value, args, ranges)
    if origin is typing.Literal:
        if value in args:
            return value
        choices = ", ".join(repr(a) for a in args)
        raise CoercionError(f"expected one of {choices}, got {value!r}" + did_you_mean(str(value), map(str, args)))
    items = value if isinstance(value, (list, tuple)) else [value]
    if origin in SEQUENCES:
        coerced = [_at(i, v, args[0] if args else EMPTY, ranges) for i, v in enumerate(items)]
        return set(coerced) if origin in (set, frozenset) else coerced
    if origin is tuple:
        each = [args[0]] * len(items) if args[1:] == (Ellipsis,) else list(args) or [EMPTY] * len(items)
        if len(each) != len(items):
            raise CoercionError(f"expected a list of {len(args)} values ({type_name(annotation)}), got {value!r}")
        return tuple(_at(i, v, t, ranges) for i, (v, t) in enumerate(zip(items, each)))
    if origin in (dict, cabc.Mapping, cabc.MutableMapping):
        if not isinstance(value, dict):
            raise CoercionError(f"expected a mapping, got {value!r}")
        kt, vt = args or (EMPTY, EMPTY)
        return {coerce(k, kt): _at(str(k), v, vt, ranges) for k, v in value.items()}
    return value if origin is not None else _limit(_coerce_plain(value, annotation), value, ranges)


def _at(key: Any, value: Any, annotation: Any, ranges: tuple[Range, ...]) -> Any:
    try:
        return _coerce(value, annotation, EMPTY, ranges)
    except CoercionError as exc:
        raise CoercionError(str(exc), (str(key), *exc.path), exc.out_of_range) from None


def _limit(result: Any, value: Any, ranges: tuple[Range, ...]) -> Any:  # result if within ranges, finite, in 64 bits
    if isinstance(result, bool) or not isinstance(result, (int, float)):
        return result
    infinite, said = isinstance(result, float) and not math.isfinite(result), "".join(f" {r}" for r in ranges if str(r))
    if r := next((r for r in ranges if not r.admits(result)), None):  # inf > 0 holds: say why inf is refused
        what = "a finite number" if infinite and r.finite and None in (r.low, r.high) else "a number"
        what = "an integer" if isinstance(result, int) else what
        raise CoercionError(f"expected {what} {r}".rstrip() + f", got {value!r}", out_of_range=True)
    if isinstance(result, int) and not INT64[0] <= result <= INT64[1]:
        fits = "that fits in 64 bits (below 2**63 in size)"
        raise CoercionError(f"expected an integer{said} {fits}, got {value!r}", out_of_range=True)
    if infinite and all(r.finite for r in ranges):
        raise CoercionError(f"expected a finite number{said}, got {value!r}", out_of_range=True)
    return result


def _coerce_union(value: Any, arms: tuple, ranges: tuple[Range, ...]) -> Any:
    arms = tuple(a for a in arms if a is not type(None) and not (isinstance(a, type) and a.__name__ == "Tensor"))
    errors = []
    for arm in sorted(arms, key=lambda a: type(value) is not a):  # the value's own type first: int | float keeps an int
        try:
            return _coerce(value, arm, EMPTY, ranges)
        except CoercionError as exc:
            errors.append(exc)
    outside = [e for e in errors if e.out_of_range]  # the value has the type of an arm, but not its range
    if len(errors) == 1 or outside:
        raise (outside or errors)[0]
    raise CoercionError(f"expected {' or '.join(type_name(a, spoken=True) for a in arms)}, got {value!r}")


def _coerce_plain(value: Any, annotation: Any) -> Any:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is bool and isinstance(value, bool) or annotation is str and isinstance(value, str):
        return value
    if annotation is float and number or annotation is str and number:
        return annotation(value)
    if annotation is int and number and (isinstance(value, int) or value.is_integer()):
        return int(value)
    if annotation in (int, float) and isinstance(value, str):
        with contextlib.suppress(ValueError):
            return annotation(value.strip())
    if isinstance(annotation, type) and issubclass(annotation, Path) and isinstance(value, (str, Path)):
        return Path(value)
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        if (member := next((m for m in annotation if value in (m.value, m.name)), None)) is not None:
            return member
        choices = [str(m.value) for m in annotation]
        raise CoercionError(f"expected one of {', '.join(choices)}, got {value!r}{did_you_mean(str(value), choices)}")
    if isinstance(annotation, type) and isinstance(value, annotation) and annotation not in NAMES:
        return value
    if isinstance(annotation, type) and isinstance(value, dict) and is_schema(annotation):
        return instantiate(annotation, value)
    if isinstance(annotation, type):
        raise CoercionError(f"expected {type_name(annotation, spoken=True)}, got {value!r}")
    return value


def is_schema(cls: Any) -> bool:
    """Whether ``cls`` can hold a recipe mapping: a dataclass, or a class with an explicit ``__init__`` signature."""
    try:  # a class whose signature parameters() refuses is none
        explicit = isinstance(cls, type) and cls.__init__ is not object.__init__ and parameters(cls) is not None
    except ContractError:
        explicit = False
    return isinstance(cls, type) and dataclasses.is_dataclass(cls) or explicit


def instantiate(cls: cabc.Callable, value: dict[str, Any]) -> Any:
    """``cls(**value)`` after checking and coercing ``value`` against its signature (nested schemas)."""
    params = [p for p in parameters(cls) if p.name != "self"]
    coerced, problems = bind(params, value, owner=f"'{getattr(cls, '__name__', cls)}'")
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise CoercionError(problems[0][1] + more, tuple(problems[0][0].split(".")))
    try:
        return cls(**coerced)
    except (TypeError, ValueError) as exc:  # its own checks (a dataclass's __post_init__): a problem at this path
        raise CoercionError(str(exc)) from exc
