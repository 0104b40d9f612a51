"""The errors vvframe raises for a user's mistake: one base class, each also a matching builtin."""

import difflib
from collections.abc import Iterable
from dataclasses import dataclass


class VvframeError(Exception):
    """Base of every error that reports a user's mistake (the CLI prints it without a traceback)."""


class ComponentNotFound(VvframeError, LookupError):
    """A name that no installed component of the kind carries, or one carried by two distributions."""


class PluginImportError(VvframeError, ImportError):
    """A plugin module that failed to import; the original exception is its ``__cause__``."""


class ArgumentError(VvframeError, TypeError):
    """An argument that a component's signature does not accept, or a required one that is missing."""


class BadValue(VvframeError, ValueError):
    """A value that cannot be read as the type a signature asks for."""


class ContractError(VvframeError, TypeError):
    """A plugin whose callable cannot serve as a component (no readable signature, ``**kwargs``, ...)."""


@dataclass(frozen=True)
class Problem:
    """One mistake in a recipe: where it is (``loss.margin``), where the value came from, and what is wrong."""

    path: str
    origin: str
    message: str

    def __str__(self) -> str:
        where = f"{self.path} ({self.origin})" if self.path and self.origin else self.path or self.origin
        return f"{where}: {self.message}" if where else self.message


class RecipeError(VvframeError, ValueError):
    """Everything wrong with a recipe, reported at once."""

    def __init__(self, source: str, problems: list[Problem]):
        self.source, self.problems = source, list(problems)
        head = f"{source}: {len(self.problems)} problem{'s' if len(self.problems) != 1 else ''}"
        super().__init__("\n  ".join([head, *map(str, self.problems)]))


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """``" (did you mean 'a' or 'b'?)"`` for up to three near misses (ignoring case and ``-``/``_``), or ``""``."""
    by_norm: dict[str, str] = {}
    for cand in candidates:
        by_norm.setdefault(_norm(cand), cand)
    norm = _norm(word)
    close = [norm] if norm in by_norm else []
    swaps = {norm[:i] + norm[i + 1] + norm[i] + norm[i + 2 :] for i in range(len(norm) - 1)} - {norm}  # sdg: sgd
    close += [c for c in by_norm if c in swaps]
    close += [c for c in difflib.get_close_matches(norm, list(by_norm), n=3, cutoff=0.75) if c not in close]
    quoted = " or ".join(f"'{by_norm[c]}'" for c in close[:3])
    return f" (did you mean {quoted}?)" if close else ""


def _norm(text: str) -> str:
    return text.lower().replace("-", "_")


def short(exc: BaseException | str, limit: int = 200) -> str:
    """The first line of an exception's message (or of a text), cut to ``limit`` characters: for one-line reports."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
