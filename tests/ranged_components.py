"""Components whose signatures state the numbers they accept, and a module that records being imported or called
(hand-made entry points and ``module:attr`` references reach them; no torch needed)."""

from __future__ import annotations

import textwrap
import uuid
from pathlib import Path
from typing import Annotated

from vvframe.core.schema import Range

Probability = Annotated[float, Range(0, 1)]


def hiss(
    sample_rate: int,
    prob: Probability = 0.5,
    snr: Annotated[tuple[float, float], Range(-20, 60)] = (0.0, 15.0),
    level: Annotated[float, Range(gt=0, finite=False)] = 1.0,
) -> dict:
    """An augmentor stand-in whose signature says which numbers it accepts."""
    return {"sample_rate": sample_rate, "prob": prob, "snr": snr, "level": level}


class Wide:
    """A model stand-in with a bounded width and an optional bounded depth."""

    def __init__(
        self,
        in_dim: int,
        embed_dim: Annotated[int, Range(1, 65536)] = 16,
        depth: Annotated[int, Range(1)] | None = None,
    ):
        self.in_dim, self.embed_dim, self.depth = in_dim, embed_dim, depth


def bad_default(sample_rate: int, prob: Probability = 2.0) -> None:
    """Breaks the contract: a default that its own range refuses."""


MARKED = '''
"""Writes {folder}/imported when imported and {folder}/called when any of its components is called."""
from dataclasses import dataclass
from pathlib import Path

FOLDER = Path({folder!r})
(FOLDER / "imported").write_text("x")


def _called():
    (FOLDER / "called").write_text("x")


class Model:
    """A model whose construction leaves a mark."""

    def __init__(self, in_dim: int, embed_dim: int = 8):
        _called()


@dataclass
class Settings:
    """A settings section of the stage below."""

    steps: int = 1


def stage(ctx, trainer: Settings):
    """A stage whose factory leaves a mark."""
    _called()
    return lambda: None
'''


def marked_module(folder: Path, monkeypatch) -> str:
    """Write a module of that kind into ``folder``, put it on ``sys.path`` for the test, return its (new) name."""
    name = f"marked_{uuid.uuid4().hex[:12]}"
    (folder / f"{name}.py").write_text(textwrap.dedent(MARKED.format(folder=str(folder))))
    monkeypatch.syspath_prepend(str(folder))
    return name
