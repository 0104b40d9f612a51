"""The model type: :class:`SpeakerModel` (embeddings, scores, decisions, enrollment, identification) and what its
methods return (:class:`Verification`, :class:`Identification`). ``vvframe.load`` builds one from a run directory
(:mod:`vvframe.inference.api`) or an exported file (:mod:`vvframe.inference.exported`).

Embeddings are scoring-ready: the mean vector subtracted (when the run uses one) and L2-normalised, so the
score of two of them is their dot product before normalization.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch
from torch import Tensor, nn

from vvframe import __version__
from vvframe.core.errors import BadValue
from vvframe.data import audio
from vvframe.data.audio import MIN_SECONDS
from vvframe.inference.card import ModelError
from vvframe.scoring.embed import Embedder, EmbedSettings, Extractor, l2_normalize, score_pairs
from vvframe.scoring.thresholds import pick_threshold

__all__ = ["Audio", "FORMAT", "FORMAT_VERSION", "Identification", "ModelError", "SpeakerModel", "Verification"]

Audio = Union[str, Path, np.ndarray, Tensor]
FORMAT = "vvframe-model"  # the metadata's "format" field in an exported file
FORMAT_VERSION = 1  # its "version": what metadata() writes and the newest an exported file may carry


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

    Built by ``vvframe.load``. ``net`` maps ``(B, T)`` float32 waveforms at ``sample_rate`` to ``(B, D)`` embeddings
    with the mean already subtracted (normalisation happens here). ``meta`` holds ``sample_rate``, ``embed_dim``,
    ``thresholds`` (name -> value), ``crops``/``crop_seconds``/``max_seconds`` (how utterances are cut) and
    ``normalizer`` (the card's entry, or None). ``cohort``: ``(C, D)`` unit-length cohort embeddings for the
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
            crop_seconds=float(m.get("crop_seconds") or EmbedSettings.crop_seconds),
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
            from vvframe.data.audio import resampler

            x = resampler(rate, self.sample_rate)(x)
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
        return pick_threshold(
            name,
            self.thresholds,
            untuned=f": {self.source} has no tuned thresholds (its eval stage has not run); give a number",
        )

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


class CenteredEmbedder(nn.Module):
    """An :class:`~vvframe.scoring.embed.Embedder` whose forward gives embeddings before normalisation (what
    :class:`SpeakerModel` wants of ``net``: it averages crops first, then normalises)."""

    def __init__(self, embedder: Embedder):
        super().__init__()
        self.embedder = embedder

    def forward(self, waves: Tensor) -> Tensor:
        return self.embedder.centered(waves)
