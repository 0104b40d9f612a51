"""Using a trained model from Python: ``vvframe.load(RUN_DIR or MODEL_FILE)`` -> :class:`SpeakerModel`.

    import vvframe
    model = vvframe.load("runs/quickstart/2026-11-25_12-31-59")
    model.verify("a.wav", "b.wav")                   # Verification(score=0.71, accepted=True, threshold='eer', ...)
    model.embed(samples, sample_rate=8000)           # (D,) unit-length embedding; resampled and mixed to mono
    model.enroll("alice", ["a1.wav", "a2.wav"]); model.identify("x.wav")

A run directory is read through its own snapshot (``recipe.yaml``): the frontend and network it trained, the
weights the back-end stages use (``embed.checkpoint``, else ``checkpoints/avg.pt``, ``best.pt``, ``last.pt``),
the cohort and mean vector from ``prepare``, the score normalizer, and the thresholds ``eval`` tuned. Nothing
in the recipe's data paths needs to exist. An exported file (``vvframe export``: TorchScript or ONNX) carries the
same things in its metadata and loads the same way.

Embeddings are scoring-ready: the mean vector subtracted (when the run uses one) and L2-normalised, so the
score of two of them is their dot product before normalization.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch
from torch import Tensor, nn

from vvframe import __version__
from vvframe.core.errors import BadValue, VvframeError
from vvframe.data import audio
from vvframe.data.audio import MIN_SECONDS
from vvframe.scoring.embed import Embedder, Extractor, l2_normalize, load_cohort, score_pairs, thresholds_file
from vvframe.training import checkpoint as ckpt

log = logging.getLogger(__name__)

Audio = Union[str, Path, np.ndarray, Tensor]
FORMAT = "vvframe-model"  # the metadata's "format" field in an exported file
FORMAT_VERSION = 1  # its "version": what metadata() writes and the newest an exported file may carry


class ModelError(VvframeError, ValueError):
    """A run directory or file that cannot be loaded as a speaker model; names it and says why."""


@dataclass
class Verification:
    """The outcome of :meth:`SpeakerModel.verify`."""

    score: float
    accepted: bool
    threshold: str  # the threshold's name (eer, mindcf@0.01, far@0.001, ...) or the number as given
    threshold_value: float
    normalized: bool  # whether the score went through the run's score normalizer


@dataclass
class Identification:
    """The outcome of :meth:`SpeakerModel.identify`: the best enrolled speaker (None when it is below the
    threshold) and every enrolled speaker with its score, best first."""

    speaker: str | None
    score: float
    ranking: list[tuple[str, float]] = field(default_factory=list)


class SpeakerModel:
    """A speaker-verification model: embeddings, scores, decisions, enrollment and identification.

    Built by :func:`load`. ``net`` maps ``(B, T)`` float32 waveforms at ``sample_rate`` to ``(B, D)`` embeddings
    with the mean already subtracted (normalisation happens here). ``meta`` holds ``sample_rate``, ``embed_dim``,
    ``thresholds`` (name -> value), ``crops``/``crop_seconds``/``max_seconds`` (how utterances are cut) and
    ``normalizer`` (the recipe entry, or None). ``cohort``: ``(C, D)`` unit-length cohort embeddings for the
    normalizer; ``normalizer``: the built normalizer or None.
    """

    def __init__(
        self,
        net: nn.Module,
        meta: dict[str, Any],
        *,
        cohort: Tensor | None = None,
        normalizer=None,
        device: torch.device | str = "cpu",
        source: str = "",
    ):
        self.net = net.eval()
        self.meta = dict(meta)
        self.sample_rate = int(meta["sample_rate"])
        self.embed_dim = int(meta["embed_dim"])
        self.thresholds: dict[str, float] = {k: float(v) for k, v in (meta.get("thresholds") or {}).items()}
        self.cohort = None if cohort is None else cohort.float().cpu()
        self.normalizer = normalizer if self.cohort is not None else None
        self.device = torch.device(device)
        self.source = source
        self.speakers: dict[str, Tensor] = {}

    def __repr__(self) -> str:
        norm = (self.meta.get("normalizer") or {}).get("name") if self.normalizer else None
        return (
            f"SpeakerModel({self.source!r}, sample_rate={self.sample_rate}, embed_dim={self.embed_dim},"
            f" normalizer={norm}, thresholds={sorted(self.thresholds)})"
        )

    # ---- embeddings ----------------------------------------------------------------------------------------
    def _extractor(self, progress: bool = False) -> Extractor:
        m = self.meta
        return Extractor(
            nn.Identity(),
            self.net,
            ".",
            self.sample_rate,
            device=self.device,
            max_seconds=m.get("max_seconds"),
            crops=int(m.get("crops") or 0),
            crop_seconds=float(m.get("crop_seconds") or 3.0),
            progress=progress,
        )

    def samples(self, x: Audio, sample_rate: int | None = None) -> Tensor:
        """``x`` as ``(T,)`` float32 mono samples at the model's rate.

        ``x``: an audio file path; or samples: 1-D, or 2-D as ``(channels, samples)`` or ``(samples,
        channels)`` (the shorter side is taken for channels), float in [-1, 1] or integer PCM, at ``sample_rate``
        (default: the model's rate).
        """
        if isinstance(x, (str, Path)):
            return audio.read(x, self.sample_rate)
        if isinstance(x, np.ndarray):
            if x.dtype.kind in "iu":
                x = x.astype(np.float32) / float(np.iinfo(x.dtype).max + 1)
            x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        if not isinstance(x, Tensor):
            raise BadValue(f"cannot embed a {type(x).__name__}: give a file path, a numpy array or a tensor")
        x = x.detach().float().cpu()
        if x.dim() == 2:
            x = x.mean(dim=0 if x.shape[0] <= x.shape[1] else 1)
        if x.dim() != 1:
            raise BadValue(f"samples shaped {tuple(x.shape)}: expected (samples,) or (channels, samples)")
        if x.numel() == 0 or not torch.isfinite(x).all() or not bool(x.abs().max() > 0):
            raise BadValue("the samples are empty, silent or not finite: nothing to embed")
        rate = int(sample_rate or self.sample_rate)
        if x.numel() < MIN_SECONDS * rate:
            raise BadValue(
                f"the samples are too short: {x.numel()} at {rate} Hz; an utterance needs at least"
                f" {MIN_SECONDS:g} s (vvframe.data.audio.MIN_SECONDS)"
            )
        if rate != self.sample_rate:
            import torchaudio

            x = torchaudio.functional.resample(x, rate, self.sample_rate)
        return x

    def embed(self, x: Audio, sample_rate: int | None = None) -> Tensor:
        """One utterance's ``(D,)`` unit-length embedding (on the CPU)."""
        if isinstance(x, (str, Path)):
            return self.embed_many([x])[0]
        return l2_normalize(self._extractor().embed_waves([self.samples(x, sample_rate)])[0])

    def embed_many(self, items: Sequence[Audio], sample_rate: int | None = None, progress: bool = False) -> Tensor:
        """``(N, D)`` unit-length embeddings; files are read as needed and batched by length."""
        items = list(items)
        out: list[Tensor | None] = [None] * len(items)
        files = [(i, str(x)) for i, x in enumerate(items) if isinstance(x, (str, Path))]
        if files:
            for path in dict.fromkeys(p for _, p in files):
                audio.utterance_info(path)  # an unreadable or too short file is reported before any work
            found = self._extractor(progress)([p for _, p in files])
            for i, p in files:
                out[i] = found[p]
        arrays = [i for i, x in enumerate(items) if not isinstance(x, (str, Path))]
        if arrays:
            rows = self._extractor(progress).embed_waves([self.samples(items[i], sample_rate) for i in arrays])
            for i, row in zip(arrays, rows):
                out[i] = row
        if not items:
            return torch.empty(0, self.embed_dim)
        return l2_normalize(torch.stack(out))

    # ---- scores and decisions ------------------------------------------------------------------------------
    def pair_scores(self, enroll: Tensor, test: Tensor, pairs: list[tuple[int, int]]) -> tuple[Tensor, bool]:
        """Scores of (row of ``enroll``, row of ``test``) index pairs of embeddings, and whether they are normalized."""
        emb = {f"e{i}": e for i, e in enumerate(enroll)} | {f"t{i}": t for i, t in enumerate(test)}
        raw, normed = score_pairs([(f"e{a}", f"t{b}") for a, b in pairs], emb, self.cohort, self.normalizer)
        return (raw, False) if normed is None else (normed, True)

    def score(self, a: Audio, b: Audio, sample_rate: int | None = None) -> float:
        """The score of ``a`` against ``b``: cosine, normalized with the run's cohort when it has one."""
        e = self.embed_many([a, b], sample_rate)
        return float(self.pair_scores(e[:1], e[1:], [(0, 0)])[0][0])

    def threshold(self, name: str | float = "eer") -> tuple[str, float]:
        """A threshold by name (as ``eval`` tuned it: ``eer``, ``mindcf@P``, ``far@F``) or a number."""
        try:
            value = float(name)
        except ValueError:
            pass
        else:
            if not math.isfinite(value):
                raise BadValue(
                    f"threshold {name!r}: a threshold must be a finite number or one of"
                    f" {', '.join(sorted(self.thresholds)) or 'the tuned names (eer, mindcf@P, far@F)'}"
                )
            return str(name), value
        if name in self.thresholds:
            return name, self.thresholds[name]
        if not self.thresholds:
            raise BadValue(
                f"threshold {name!r}: {self.source} has no tuned thresholds (its eval stage has not run); give a number"
            )
        raise BadValue(f"threshold {name!r} is not one of {', '.join(sorted(self.thresholds))} or a number")

    def verify(
        self, a: Audio, b: Audio, threshold: str | float = "eer", sample_rate: int | None = None
    ) -> Verification:
        """Same speaker? The score and the decision at ``threshold`` (a tuned threshold's name or a number)."""
        name, value = self.threshold(threshold)
        e = self.embed_many([a, b], sample_rate)
        scores, normalized = self.pair_scores(e[:1], e[1:], [(0, 0)])
        s = float(scores[0])
        return Verification(s, s >= value, name, value, normalized)

    # ---- enrollment and identification -------------------------------------------------------------------
    def enroll(self, speaker: str, items: Sequence[Audio], sample_rate: int | None = None) -> Tensor:
        """Enroll (or re-enroll) ``speaker`` from one or more utterances: the mean of their embeddings."""
        items = [items] if isinstance(items, (str, Path)) else list(items)
        if not items:
            raise BadValue(f"enroll {speaker!r}: no utterances given")
        self.speakers[speaker] = l2_normalize(self.embed_many(items, sample_rate).mean(0))
        return self.speakers[speaker]

    def identify(
        self, x: Audio, threshold: str | float | None = "eer", sample_rate: int | None = None
    ) -> Identification:
        """The enrolled speaker who best matches ``x``, with every enrolled speaker's score (best first).
        ``speaker`` is None when the best score is below ``threshold`` (None: always name the best)."""
        if not self.speakers:
            raise BadValue("identify: no speakers enrolled; call enroll(speaker, files) first")
        names = list(self.speakers)
        test = self.embed_many([x], sample_rate)
        scores, _ = self.pair_scores(
            torch.stack([self.speakers[n] for n in names]), test, [(i, 0) for i in range(len(names))]
        )
        ranking = sorted(zip(names, scores.tolist()), key=lambda item: -item[1])
        best, best_score = ranking[0]
        if threshold is not None and best_score < self.threshold(threshold)[1]:
            best = None
        return Identification(best, best_score, ranking)

    def metadata(self) -> dict[str, Any]:
        """What an exported file stores about this model (JSON-able)."""
        return dict(
            self.meta, format=FORMAT, version=FORMAT_VERSION, vvframe=__version__, cohort=self.cohort is not None
        )


# ---- loading ---------------------------------------------------------------------------------------------
def _device(device: str | torch.device) -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def load(
    source: str | Path,
    device: str | torch.device = "auto",
    checkpoint: str | Path | None = None,
    *,
    trust_recipe: bool = False,
) -> SpeakerModel:
    """A run directory (its snapshot, weights, cohort and thresholds) or an exported model file, ready to use.
    A recipe's folder of runs (``runs/quickstart``) means its newest usable run (one with weights).

    ``checkpoint``: other weights for a run directory (a checkpoint file). ``device``: ``auto`` (CUDA when
    there is one), ``cpu``, ``cuda``, ``cuda:N``.

    What is loaded is data: only installed components (entry points) are built from it, and a ``module:attr``
    reference in its files is refused unless ``trust_recipe=True`` (do that only for runs you would run).
    """
    path = Path(source)
    dev = _device(device)
    if path.is_dir():
        from vvframe.core.run import latest_run

        run_dir = latest_run(path) or latest_run(path, "recipe.yaml") or path
        return _from_run(run_dir, dev, checkpoint, trust_recipe)
    if not path.exists():
        raise ModelError(f"{path}: no such run directory or model file")
    from vvframe.inference import export

    return export.load_exported(path, dev, trust_recipe=trust_recipe)


# a component named by its Python object instead of an entry point: ``package.module:attr``
_REFERENCE = re.compile(r"[A-Za-z_][\w]*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


def references(node: Any, path: str = "") -> list[tuple[str, str]]:
    """``(recipe path, value)`` of every ``module:attr`` reference in a loaded recipe or metadata mapping,
    outside its ``plugins:`` block (which only records where installed components came from)."""
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


def _from_run(run_dir: Path, device: torch.device, checkpoint: str | Path | None, trust_recipe: bool) -> SpeakerModel:
    from vvframe.core import recipe as recipes

    snapshot = run_dir / "recipe.yaml"
    if not snapshot.is_file():
        raise ModelError(f"{run_dir}: not a vvframe run directory (it has no recipe.yaml)")
    loaded = recipes.load(snapshot)
    refuse_references(loaded.data, snapshot, trust_recipe)
    resolved = recipes.resolve(loaded, references=trust_recipe)
    for warning in resolved.warnings:
        log.warning(warning)
    spec = resolved.to_dict()
    frontend, model = resolved.components.get("frontend"), resolved.components.get("model")
    if frontend is None or model is None:
        raise ModelError(f"{snapshot}: a speaker model needs both a frontend and a model section")
    data, embed = spec.get("data") or {}, spec.get("embed") or {}
    rate = int(data.get("sample_rate", 16000))
    chosen = checkpoint or embed.get("checkpoint") or run_dir
    try:
        weights = ckpt.for_inference(chosen)
    except ckpt.CheckpointError as exc:
        raise ModelError(f"{run_dir}: {exc}") from None
    state = ckpt.load(weights)
    if "model" not in state:
        raise ModelError(f"{weights}: not a vvframe training checkpoint (it has no 'model' weights)")
    front = frontend.build(sample_rate=rate)
    net = model.build(in_dim=front.out_dim, sample_rate=rate)
    ckpt.load_state(net, state["model"], f"{weights} (model)")

    cohort, mean = load_cohort(run_dir)
    if not embed.get("mean_subtract", True):
        mean = None
    thresholds: dict[str, float] = {}
    tuned_on = None
    if thresholds_file(run_dir).is_file():
        tuned = json.loads(thresholds_file(run_dir).read_text(encoding="utf-8"))
        tuned_on = tuned.pop("tuned_on", None)
        thresholds = {k: float(v) for k, v in tuned.items() if isinstance(v, (int, float)) and math.isfinite(v)}
    norm_entry = resolved.components.get("normalizer")
    normalizer = norm_entry.build() if norm_entry is not None and cohort is not None else None
    meta = {
        "sample_rate": rate,
        "embed_dim": int(net.embed_dim),
        "thresholds": thresholds,
        "tuned_on": tuned_on,
        "crops": int(embed.get("crops") or 0),
        "crop_seconds": float(embed.get("crop_seconds") or 3.0),
        "max_seconds": embed.get("max_seconds"),
        "mean_subtracted": mean is not None,
        "normalizer": spec.get("normalizer") if normalizer is not None else None,
        "recipe": resolved.name,
        "weights": str(weights),
        "frontend": spec.get("frontend"),
        "model": spec.get("model"),
    }
    embedder = Embedder(front, net, mean).to(device).eval()
    log.info(
        "loaded %s: weights %s, %s%s",
        run_dir,
        weights,
        f"cohort of {len(cohort)}, " if cohort is not None else "",
        f"thresholds {', '.join(thresholds)}" if thresholds else "no tuned thresholds",
    )
    return SpeakerModel(
        _Centered(embedder), meta, cohort=cohort, normalizer=normalizer, device=device, source=str(run_dir)
    )


class _Centered(nn.Module):
    """An :class:`Embedder` whose forward gives embeddings before normalisation (crops are averaged first)."""

    def __init__(self, embedder: Embedder):
        super().__init__()
        self.embedder = embedder

    def forward(self, waves: Tensor) -> Tensor:
        return self.embedder.centered(waves)
