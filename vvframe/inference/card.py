"""The model card: a small JSON file in a run directory that says how to rebuild and use its model.

Stages write it (:func:`update`); loading a run (``vvframe.load``, ``export``, ``serve``, ``verify``, ``embed``)
reads only it (:func:`read`), never the recipe. It holds entry-point names and arguments, never Python objects:
a run directory is data, and an entry naming ``module:attr`` is refused on loading unless the user trusts it.

Its fields, and the first-party stage that writes each::

    format, version, vvframe  every update              "vvframe-card", 1, the writing vvframe's version
    frontend, model           train (and the back end)  the entries the network was built from: {name, ...args}
    sample_rate               train (and the back end)  the rate the network takes, in Hz
    embed                     prepare, eval, test       {crops, crop_seconds, max_seconds, mean_subtract, vad}
    weights                   prepare, eval, test       a checkpoint to use instead of the run's avg/best/last
    cohort                    prepare                   {embeddings, mean}: files relative to the run directory
    normalizer                eval                      the score normalizer's entry, or null
    thresholds, tuned_on      eval                      {name: value} (eer, mindcf@P, far@F) and the trial list
    calibration               calibrate                 the score calibration (vvframe.scoring.calibration), or null

Only ``frontend``, ``model`` and ``sample_rate`` are required; a missing ``embed`` setting takes the default of
:class:`vvframe.scoring.embed.EmbedSettings`. Paths are relative to the run directory unless absolute.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from vvframe.core.atomic import atomic_json
from vvframe.core.errors import VvframeError, did_you_mean

CARD_FILE = "card.json"
FORMAT = "vvframe-card"  # the card's "format" field
VERSION = 1  # its "version": what update() writes and the newest read() accepts
EMBED_KEYS = ("crops", "crop_seconds", "max_seconds", "mean_subtract", "vad")


class ModelError(VvframeError, ValueError):
    """A run directory or file that cannot be loaded as a speaker model; names it and says why."""


class CardError(ModelError):
    """A card that is missing, unreadable or holds a field of the wrong shape; names the file and the field."""


# ---- the fields: each checked the same way when written and when read -------------------------------------
def _entry(value: Any, optional: bool = False) -> dict[str, Any] | None:
    if value is None and optional:
        return None
    if not isinstance(value, Mapping) or not isinstance(value.get("name"), str) or not value["name"]:
        raise ValueError("expected an entry {name: <entry point>, ...arguments}" + (" or null" if optional else ""))
    return dict(value)


def _positive_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"expected a positive whole number, got {value!r}")
    return value


def _text(value: Any, optional: bool = True) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value:
        raise ValueError(f"expected a non-empty string{' or null' if optional else ''}, got {value!r}")
    return value


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{what}: expected a finite number, got {value!r}")
    return float(value)


def _embed(value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ValueError(f"expected a mapping of {', '.join(EMBED_KEYS)}, got {value!r}")
    unknown = [k for k in value if k not in EMBED_KEYS]
    if unknown:
        raise ValueError(
            f"unknown setting {unknown[0]!r}{did_you_mean(str(unknown[0]), EMBED_KEYS)};"
            f" it takes {', '.join(EMBED_KEYS)}"
        )
    out = dict(value)
    if "crops" in out and (isinstance(out["crops"], bool) or not isinstance(out["crops"], int) or out["crops"] < 0):
        raise ValueError(f"crops: expected a whole number >= 0, got {out['crops']!r}")
    for key in ("crop_seconds", "max_seconds"):
        if key in out and not (key == "max_seconds" and out[key] is None):
            if _number(out[key], key) <= 0:
                raise ValueError(f"{key}: expected a number > 0, got {out[key]!r}")
    if "mean_subtract" in out and not isinstance(out["mean_subtract"], bool):
        raise ValueError(f"mean_subtract: expected true or false, got {out['mean_subtract']!r}")
    if "vad" in out and not (isinstance(out["vad"], bool) or out["vad"] in ("energy", "silero")):
        raise ValueError(f"vad: expected true, false, 'energy' or 'silero', got {out['vad']!r}")
    return out


def _cohort(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping) or set(value) - {"embeddings", "mean"} or "embeddings" not in value:
        raise ValueError(f"expected {{embeddings: FILE, mean: FILE or null}} or null, got {value!r}")
    return {"embeddings": _text(value["embeddings"], optional=False), "mean": _text(value.get("mean"))}


def _thresholds(value: Any) -> dict[str, float]:
    if not isinstance(value, Mapping):
        raise ValueError(f"expected a mapping of threshold names to numbers, got {value!r}")
    return {str(k): _number(v, str(k)) for k, v in value.items()}


def _calibration(value: Any) -> dict[str, Any] | None:
    from vvframe.scoring.calibration import Calibration

    return None if value is None else Calibration.from_dict(value, "expected a calibration").to_dict()


def _format(value: Any) -> str:
    if value != FORMAT:
        raise ValueError(f"expected {FORMAT!r}, got {value!r}: not a vvframe model card")
    return value


FIELDS: dict[str, Callable[[Any], Any]] = {
    "format": _format,
    "version": _positive_int,
    "vvframe": _text,
    "frontend": _entry,
    "model": _entry,
    "sample_rate": _positive_int,
    "embed": _embed,
    "weights": _text,
    "cohort": _cohort,
    "normalizer": lambda v: _entry(v, optional=True),
    "thresholds": _thresholds,
    "tuned_on": _text,
    "calibration": _calibration,
}
REQUIRED = {
    "frontend": "the frontend entry the network was trained with",
    "model": "the model entry the network was trained with",
    "sample_rate": "the rate in Hz the network takes",
}


def _check(path: Path, key: str, value: Any) -> Any:
    if key not in FIELDS:
        raise CardError(f"{path}: unknown field {key!r}{did_you_mean(key, FIELDS)}; a card has {', '.join(FIELDS)}")
    try:
        return FIELDS[key](value)
    except ValueError as exc:
        raise CardError(f"{path}: field {key!r}: {exc}") from None


def _plain(value: Any, where: str) -> Any:
    """``value`` as JSON data: tuples as lists, paths as strings; a ValueError for anything else."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{where}.{i}") for i, v in enumerate(value)]
    raise ValueError(f"{where}: a {type(value).__name__} is not JSON data")


# ---- writing ------------------------------------------------------------------------------------------------
def update(run_dir: str | Path, **fields: Any) -> None:
    """Set top-level ``fields`` of ``run_dir``'s card (created if missing), atomically; other fields are kept.

    Each field is checked as :func:`read` checks it (a ``CardError`` naming the card and the field)."""
    from vvframe import __version__

    path = Path(run_dir) / CARD_FILE
    card = _load_json(path) if path.is_file() else {}
    for key, value in fields.items():
        try:
            value = _plain(value, key)
        except ValueError as exc:
            raise CardError(f"{path}: field {key!r}: {exc}") from None
        _check(path, key, value)
        card[key] = value
    card.setdefault("format", FORMAT)
    card.setdefault("version", VERSION)
    card["vvframe"] = __version__
    atomic_json(path, card)


def relative(run_dir: str | Path, file: str | Path) -> str:
    """How a card names ``file``: relative to ``run_dir`` when it lies inside it, else its absolute path."""
    file, run_dir = Path(file).resolve(), Path(run_dir).resolve()
    return str(file.relative_to(run_dir)) if file.is_relative_to(run_dir) else str(file)


# ---- reading ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Card:
    """A run's card, checked: what loading its model needs. Paths are resolved against the run directory."""

    path: Path  # the card file
    frontend: dict[str, Any]
    model: dict[str, Any]
    sample_rate: int
    crops: int
    crop_seconds: float
    max_seconds: float | None
    mean_subtract: bool
    vad: bool | str = False  # the voice activity detector the back end cut utterances with (False: none)
    weights: Path | None = None  # None: the run's checkpoints/avg.pt, else best.pt, else last.pt
    cohort: Path | None = None  # the cohort embeddings file (prepare's)
    mean: Path | None = None  # the mean embedding file (prepare's)
    normalizer: dict[str, Any] | None = None
    thresholds: dict[str, float] = field(default_factory=dict)
    tuned_on: str | None = None
    calibration: dict[str, Any] | None = None  # Calibration.to_dict()
    version: int = VERSION

    @property
    def run_dir(self) -> Path:
        return self.path.parent

    def check_cohort(self) -> None:
        """A ``CardError`` when the cohort files the card names are not there (checked once the weights are)."""
        for file in (self.cohort, self.mean):
            if file is not None and not file.is_file():
                raise CardError(f"{self.path}: field 'cohort' names {file}, which does not exist")

    def entries(self) -> dict[str, Any]:
        """The component entries it names, by field: what the trust check looks at."""
        return {"frontend": self.frontend, "model": self.model, "normalizer": self.normalizer}


def _load_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CardError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise CardError(f"{path}: not a JSON model card ({exc})") from None
    if not isinstance(data, dict):
        raise CardError(f"{path}: not a model card (a JSON {type(data).__name__}, expected an object)")
    return data


def read(run_dir: str | Path, *, trust_recipe: bool = False) -> Card:
    """``run_dir``'s card, checked field by field (a ``CardError`` naming the file and the field).

    Entries naming ``module:attr`` are refused unless ``trust_recipe`` (see :func:`refuse_references`)."""
    from vvframe.scoring.embed import EmbedSettings

    run_dir = Path(run_dir)
    path = run_dir / CARD_FILE
    if not path.is_file():
        raise CardError(
            f"{run_dir}: not a vvframe run directory (it has no {CARD_FILE}, the model card: it was not trained"
            " by vvframe's train stage or by another stage that writes one)"
        )
    data = _load_json(path)
    version = data.get("version")
    if isinstance(version, int) and not isinstance(version, bool) and version > VERSION:
        raise CardError(
            f"{path}: written by a newer vvframe ({data.get('vvframe')}, card version {version});"
            f" this one reads version {VERSION}"
        )
    values = {key: _check(path, key, value) for key, value in data.items()}
    for key, what in REQUIRED.items():
        if values.get(key) is None:
            raise CardError(f"{path}: no {key!r} ({what}; the train stage writes it)")
    refuse_references({k: values.get(k) for k in ("frontend", "model", "normalizer")}, path, trust_recipe)
    defaults = {f.name: f.default for f in fields(EmbedSettings) if f.name in EMBED_KEYS}
    embed = {**defaults, **(values.get("embed") or {})}

    def file(name: str | None) -> Path | None:
        return None if name is None else Path(name) if Path(name).is_absolute() else run_dir / name

    weights = file(values.get("weights"))
    if weights is not None and not weights.exists():
        raise CardError(f"{path}: field 'weights' names {values['weights']}, which does not exist")

    cohort = values.get("cohort") or {}
    return Card(
        path=path,
        frontend=values["frontend"],
        model=values["model"],
        sample_rate=values["sample_rate"],
        crops=int(embed["crops"]),
        crop_seconds=float(embed["crop_seconds"]),
        max_seconds=None if embed["max_seconds"] is None else float(embed["max_seconds"]),
        mean_subtract=bool(embed["mean_subtract"]),
        vad=embed["vad"],
        weights=weights,
        cohort=file(cohort.get("embeddings")),
        mean=file(cohort.get("mean")),
        normalizer=values.get("normalizer"),
        thresholds=values.get("thresholds") or {},
        tuned_on=values.get("tuned_on"),
        calibration=values.get("calibration"),
        version=version if isinstance(version, int) else VERSION,
    )


# ---- trust: what a loaded file may name ---------------------------------------------------------------------
# a component named by its Python object instead of an entry point: ``package.module:attr``
_REFERENCE = re.compile(r"[A-Za-z_][\w]*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


def references(node: Any, path: str = "") -> list[tuple[str, str]]:
    """``(path, value)`` of every ``module:attr`` reference in a loaded mapping (a card's entries, an exported
    file's metadata), outside a top-level ``plugins:`` block (which only records where components came from)."""
    found: list[tuple[str, str]] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if not (path == "" and key == "plugins"):
                found += references(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            found += references(value, f"{path}.{i}" if path else str(i))
    elif isinstance(node, str) and _REFERENCE.fullmatch(node.strip()):
        found.append((path, node.strip()))
    return found


def refuse_references(node: Any, source: str | Path, trust_recipe: bool) -> None:
    """Raise ``ModelError`` when a run or model file names Python objects directly and is not trusted."""
    found = [] if trust_recipe else references(node)
    if found:
        listed = ", ".join(f"{p} = {v!r}" for p, v in found[:5]) + (
            f" and {len(found) - 5} more" if len(found) > 5 else ""
        )
        raise ModelError(
            f"{source}: names Python objects directly ({listed}); a run directory or model file you load is"
            " data, so vvframe builds only installed components (entry points) from it. If you trust its"
            " author as you trust a recipe you run, load it with trust_recipe=True (command line:"
            " --trust-recipe)"
        )
