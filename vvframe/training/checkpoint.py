"""Checkpoints: atomic save, weights-only load with clear errors, the newest usable one, averaging, pruning, RNG state.

A checkpoint is a ``dict`` saved with ``torch.save`` that holds only what ``torch.load(weights_only=True)``
accepts: tensors, dicts, lists, tuples, sets, ints, floats, complex numbers, strings, bytes, bools, ``None``,
``torch.Size``, ``torch.dtype`` and ``torch.device``. ``save`` checks this before writing, so a value that
would make the checkpoint unloadable (a numpy scalar, a ``Path``, an object) fails at once, naming where it is,
instead of at ``--resume`` hours later.

Layout inside a run's ``checkpoints/`` folder: ``last.pt`` (the newest), ``epoch_N.pt`` (kept per epoch,
pruned with :func:`prune`), ``best.pt`` and ``avg.pt`` (never pruned).
"""

from __future__ import annotations

import logging
import os
import random
import re
from collections import Counter, OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vvframe.core.atomic import atomic_path
from vvframe.core.errors import BadValue, VvframeError

log = logging.getLogger(__name__)

FOLDER = "checkpoints"  # in a run directory
LAST = "last.pt"
BEST = "best.pt"
AVERAGE = "avg.pt"
_EPOCH = re.compile(r"^epoch_(\d+)\.pt$")
_SHOW = 10  # how many keys of each kind an error lists
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DataParallel/DDP, torch.compile

_SCALARS = (int, float, bool, str, bytes, bytearray, complex, type(None), torch.dtype, torch.device)
_TENSORS = (torch.Tensor, torch.nn.Parameter)
_MAPPINGS = (dict, OrderedDict, Counter)
_SEQUENCES = (list, tuple, set, torch.Size)


class CheckpointError(VvframeError, RuntimeError):
    """A checkpoint that cannot be written, read or applied: names the file (or the state) and why."""


def save(path: str | Path, state: dict) -> None:
    """torch.save to a temporary file beside `path`, then rename (vvframe.core.atomic.atomic_path): a crash never leaves half a checkpoint."""
    path = Path(path)
    if not isinstance(state, dict):
        raise CheckpointError(f"cannot save checkpoint {path}: the state is a {type(state).__name__}, not a dict")
    problem = _unloadable(state, "state")
    if problem:
        raise CheckpointError(f"cannot save checkpoint {path}: {problem}")
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())  # on disk before the rename, so that a power cut cannot leave an empty last.pt
    log.debug("saved checkpoint %s", path)


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """torch.load(..., weights_only=True); a missing, truncated or corrupt file is a CheckpointError naming the file and why."""
    path = Path(path)
    if not path.is_file():
        why = "it is a directory" if path.is_dir() else "no such file"
        raise CheckpointError(f"cannot load checkpoint {path}: {why}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises RuntimeError, UnpicklingError, EOFError, ... for a bad file
        raise CheckpointError(f"cannot load checkpoint {path}: {_why(exc)}") from exc
    if not isinstance(state, dict):
        raise CheckpointError(f"cannot load checkpoint {path}: it holds a {type(state).__name__}, not a dict")
    return state


def for_inference(source: str | Path) -> Path:
    """The weights to embed with: ``source`` itself if it is a file, else a run directory's ``checkpoints/avg.pt``,
    else ``best.pt``, else ``last.pt``; a CheckpointError saying what was looked for if there is none."""
    source = Path(source)
    if source.is_file():
        return source
    folder = source / FOLDER
    for name in (AVERAGE, BEST, LAST):
        if (folder / name).is_file():
            return folder / name
    raise CheckpointError(
        f"no checkpoint in {folder} (looked for {AVERAGE}, {BEST}, {LAST}): train first,"
        " resume the run (--resume RUN_DIR), or name a checkpoint file"
    )


def load_latest(directory: str | Path, map_location: str | torch.device = "cpu") -> tuple[dict, Path] | None:
    """The newest loadable checkpoint among last.pt and epoch_N.pt in `directory` (last.pt first, then epoch_N.pt newest first by N); a corrupt one is skipped with a warning naming it; None if there is none."""
    directory = Path(directory)
    candidates = [directory / LAST] if (directory / LAST).is_file() else []
    candidates += [p for _, p in reversed(epoch_files(directory))]
    for path in candidates:
        try:
            return load(path, map_location), path
        except CheckpointError as exc:
            log.warning("skipping checkpoint %s: %s", path, exc)
    return None


def load_state(module: torch.nn.Module, state_dict: dict, what: str) -> None:
    """module.load_state_dict(strict=True) with a CheckpointError listing missing keys, unexpected keys and shape mismatches (first ~10 of each and counts), naming `what`. Accepts state dicts saved from DataParallel/DDP-wrapped modules ('module.' prefixes) by stripping the prefix."""
    if not isinstance(state_dict, dict):
        raise CheckpointError(f"{what} is a {type(state_dict).__name__}, not a state dict")
    target = _unwrap(module)
    expected = target.state_dict()
    state_dict = _strip_prefixes(state_dict, expected)
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [
        f"{k}: checkpoint {_shape(state_dict[k])} vs module {_shape(v)}"
        for k, v in expected.items()
        if k in state_dict and isinstance(v, torch.Tensor) and _shape(state_dict[k]) != _shape(v)
    ]
    parts = [
        _listing(n, items)
        for n, items in (("missing key", missing), ("unexpected key", unexpected), ("shape mismatch", mismatched))
        if items
    ]
    name = type(target).__name__
    if parts:
        raise CheckpointError(f"{what} does not fit the {name}:\n  " + "\n  ".join(parts))
    try:
        target.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{what} does not fit the {name}: {exc}") from exc


def average(paths: Sequence[str | Path], key: str = "model") -> dict:
    """The element-wise mean of `state[key]` over the checkpoints (floating tensors averaged in float64 then cast back; integer buffers such as BatchNorm's num_batches_tracked taken from the last); CheckpointError if their keys or shapes differ."""
    paths = [Path(p) for p in paths]
    if not paths:
        raise CheckpointError("cannot average checkpoints: none given")
    sums: dict[str, Any] = {}
    first: dict[str, Any] = {}
    last: dict[str, Any] = {}
    for i, path in enumerate(paths):
        state = load(path).get(key)
        if not isinstance(state, dict):
            raise CheckpointError(f"cannot average checkpoints: {path} has no '{key}' state dict")
        if i == 0:
            first = state
        else:
            _same_layout(paths[0], first, path, state)
        for name, value in state.items():
            if isinstance(value, torch.Tensor) and (value.is_floating_point() or value.is_complex()):
                wide = value.detach().to(torch.complex128 if value.is_complex() else torch.float64, copy=True)
                sums[name] = wide if i == 0 else sums[name].add_(wide)
        last = state
    out: OrderedDict[str, Any] = OrderedDict()
    for name, value in last.items():
        out[name] = (sums[name] / len(paths)).to(value.dtype) if name in sums else value
    metadata = getattr(last, "_metadata", None)
    if metadata is not None:
        out._metadata = metadata  # type: ignore[attr-defined]  # module versions, as state_dict() keeps them
    return out


def prune(directory: str | Path, keep: int) -> list[Path]:
    """Delete epoch_N.pt beyond the newest `keep` (never last.pt, best.pt, avg.pt); returns the deleted paths."""
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 0:
        raise BadValue(f"prune: keep must be a whole number >= 0, not {keep!r}")
    epochs = epoch_files(directory)
    doomed = [p for _, p in epochs[: max(0, len(epochs) - keep)]]
    for path in doomed:
        path.unlink(missing_ok=True)
        log.debug("pruned checkpoint %s", path)
    return doomed


def rng_state() -> dict:
    """Python `random`, numpy and torch (CPU and every CUDA device) RNG states in a form that torch.load(weights_only=True) accepts."""
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss_next],
        "numpy": _plain(np.random.get_state()),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def set_rng_state(state: dict) -> None:
    """Restore the Python `random`, numpy and torch (CPU and every CUDA device) RNG states that rng_state() returned."""
    try:
        version, internal, gauss_next = state["python"]
        random.setstate((version, tuple(internal), gauss_next))
        np.random.set_state(_unplain(state["numpy"]))
        torch.set_rng_state(state["torch"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"cannot restore the random number generators: {_why(exc)}") from exc
    saved = state.get("cuda") or []
    if saved and torch.cuda.is_available():
        count = torch.cuda.device_count()
        if len(saved) != count:
            log.warning(
                "the checkpoint holds RNG states of %d CUDA devices, %d are visible: restoring %d",
                len(saved),
                count,
                min(len(saved), count),
            )
        for index, cuda_state in enumerate(saved[:count]):
            torch.cuda.set_rng_state(cuda_state, index)


# ----------------------------------------------------------------------------------------------------------
def _unloadable(value: Any, where: str) -> str:
    """Why ``value`` would not load with weights_only=True (naming where it is), or ``""``."""
    kind = type(value)
    if kind in _TENSORS or kind in _SCALARS:
        return ""
    if kind in _MAPPINGS:
        for k, v in value.items():
            problem = _unloadable(k, f"a key of {where}") or _unloadable(v, f"{where}[{k!r}]")
            if problem:
                return problem
        return ""
    if kind in _SEQUENCES:
        for i, v in enumerate(value):
            problem = _unloadable(v, f"{where}[{i}]")
            if problem:
                return problem
        return ""
    hint = " (convert numpy values with .tolist() or .item())" if kind.__module__.startswith("numpy") else ""
    return (
        f"{where} is a {kind.__module__}.{kind.__qualname__}, which torch.load(weights_only=True) refuses;"
        f" store tensors, dicts, lists, tuples, numbers, strings, bools or None{hint}"
    )


def _why(exc: BaseException) -> str:
    """The telling line of ``exc``: for a weights-only refusal, the object refused, not torch's advice."""
    text = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    refused = [line for line in text if line.startswith("WeightsUnpickler error:")]
    if refused:
        what = refused[0].removeprefix("WeightsUnpickler error:").split(". Please use")[0].strip()
        return f"it holds what weights-only loading refuses ({what})"
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def epoch_name(epoch: int) -> str:
    """The file name of the checkpoint saved after ``epoch`` (counted from 1): ``epoch_N.pt``."""
    return f"epoch_{epoch}.pt"


def epoch_files(directory: str | Path) -> list[tuple[int, Path]]:
    """``(N, path)`` of every ``epoch_N.pt`` in ``directory``, by N."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [
        (int(m.group(1)), path) for path in directory.iterdir() if (m := _EPOCH.match(path.name)) and path.is_file()
    ]
    return sorted(found)


def _unwrap(module: torch.nn.Module) -> torch.nn.Module:
    from vvframe.training.launch import unwrap

    return unwrap(module)


def _strip_prefixes(state_dict: dict, expected: dict) -> dict:
    """``state_dict`` without the ``module.`` (DataParallel/DDP) or ``_orig_mod.`` (compile) prefix of every key."""
    metadata = getattr(state_dict, "_metadata", None)
    changed = True
    while changed and state_dict:
        changed = False
        for prefix in _WRAPPER_PREFIXES:
            if all(k.startswith(prefix) for k in state_dict) and not all(k.startswith(prefix) for k in expected):
                state_dict = OrderedDict((k[len(prefix) :], v) for k, v in state_dict.items())
                if metadata is not None:
                    metadata = OrderedDict((_drop(k, prefix), v) for k, v in metadata.items())
                changed = True
    if metadata is not None:
        state_dict._metadata = metadata  # type: ignore[attr-defined]  # module versions, used by BatchNorm
    return state_dict


def _drop(key: str, prefix: str) -> str:
    if key == prefix.rstrip("."):
        return ""
    return key[len(prefix) :] if key.startswith(prefix) else key


def _shape(value: Any) -> tuple[int, ...] | str:
    return tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__


def _layout(value: Any) -> str:
    """Shape and kind (floating, complex or other) of a state-dict value, for comparing two checkpoints."""
    if not isinstance(value, torch.Tensor):
        return type(value).__name__
    kind = "floating" if value.is_floating_point() else "complex" if value.is_complex() else "integer"
    return f"{tuple(value.shape)} {kind}"


def _listing(noun: str, items: list[str]) -> str:
    plural = "es" if noun.endswith("ch") else "s"
    head = f"{len(items)} {noun}{plural if len(items) != 1 else ''}"
    more = f", ... ({len(items) - _SHOW} more)" if len(items) > _SHOW else ""
    return f"{head}: {', '.join(items[:_SHOW])}{more}"


def _same_layout(path_a: Path, a: dict, path_b: Path, b: dict) -> None:
    only_a = [k for k in a if k not in b]
    only_b = [k for k in b if k not in a]
    shapes = [f"{k}: {_layout(a[k])} vs {_layout(b[k])}" for k in a if k in b and _layout(a[k]) != _layout(b[k])]
    parts = [
        _listing(noun, items)
        for noun, items in (
            (f"key only in {path_a.name}", only_a),
            (f"key only in {path_b.name}", only_b),
            ("shape or type mismatch", shapes),
        )
        if items
    ]
    if parts:
        raise CheckpointError(f"cannot average {path_a} and {path_b}: their models differ:\n  " + "\n  ".join(parts))


def _plain(value: Any) -> Any:
    """numpy's RNG state as lists, ints, floats and strings (an array becomes ``{'ndarray': list, 'dtype': str}``)."""
    if isinstance(value, np.ndarray):
        return {"ndarray": value.tolist(), "dtype": str(value.dtype)}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _unplain(value: Any) -> Any:
    """The inverse of :func:`_plain` (lists become the tuple that ``np.random.set_state`` takes)."""
    if isinstance(value, dict):
        if set(value) == {"ndarray", "dtype"}:
            return np.asarray(value["ndarray"], dtype=value["dtype"])
        return {k: _unplain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return tuple(_unplain(v) for v in value)
    return value


def latest_run(folder: str | Path, needs: str = FOLDER) -> Path | None:
    """The newest usable run directory under ``folder`` (``runs/<recipe name>``: timestamped runs): one that
    holds ``needs`` (for ``checkpoints``: at least one checkpoint file, so a failed or empty attempt never
    counts); ``folder`` itself when it is such a run; None when there is none. The choice is logged."""
    folder = Path(folder)

    def usable(run: Path) -> bool:
        target = run / needs
        if needs == FOLDER:
            return target.is_dir() and any(p.suffix == ".pt" for p in target.iterdir())
        return target.exists()

    if usable(folder):
        return folder
    runs = (
        sorted((p for p in folder.iterdir() if p.is_dir() and usable(p)), key=lambda p: p.name)
        if folder.is_dir()
        else []
    )
    if runs:
        log.info("%s: using its newest usable run, %s", folder, runs[-1])
    return runs[-1] if runs else None
