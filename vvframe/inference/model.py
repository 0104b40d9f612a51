"""The model type: :class:`SpeakerModel` (embeddings, scores, decisions, enrollment, identification) and what its
methods return (:class:`Verification`, :class:`Identification`). ``vvframe.load`` builds one from a run directory
(:mod:`vvframe.inference.api`) or an exported file (:mod:`vvframe.inference.exported`).

Embeddings are scoring-ready: the mean vector subtracted (when the run uses one) and L2-normalised, so the
score of two of them is their dot product before normalization. A run with a score calibration (the calibrate
stage) also gives each trial's log-likelihood ratio and posterior, and the threshold ``bayes@P``.
"""

from __future__ import annotations

import logging
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
from vvframe.data import vad as activity
from vvframe.data.audio import MIN_SECONDS
from vvframe.inference.card import ModelError
from vvframe.scoring.calibration import Calibration, pair_quality, utterance_quality
from vvframe.scoring.embed import Embedder, EmbedSettings, Extractor, l2_normalize, score_pairs
from vvframe.scoring.thresholds import bayes_prior, pick_threshold
from vvframe.training.launch import Dist

log = logging.getLogger(__name__)

__all__ = ["Audio", "FORMAT", "FORMAT_VERSION", "Identification", "ModelError", "SpeakerModel", "Verification"]

Audio = Union[str, Path, np.ndarray, Tensor]
FORMAT = "vvframe-model"  # the metadata's "format" field in an exported file
FORMAT_VERSION = 1  # its "version": what metadata() writes and the newest an exported file may carry
_SPEECH_CHUNK = 64  # utterances read and trimmed at a time by embed_many(vad=...)


@dataclass
class Verification:
    """The outcome of :meth:`SpeakerModel.verify`."""

    score: float
    accepted: bool
    threshold: str  # the threshold's name (eer, mindcf@0.01, far@0.001, ...) or the number as given
    threshold_value: float
    normalized: bool  # whether the score went through the run's score normalizer
    llr: float | None = None  # the calibrated log-likelihood ratio (None: the model has no calibration)
    posterior: float | None = None  # P(same speaker) for a prior of `prior` of a target trial
    prior: float | None = None


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

    ``vad`` (every method that embeds): cut each utterance to its speech first (:mod:`vvframe.data.vad`): ``True``
    or ``"energy"`` (the built-in detector), ``"silero"``, ``False``; None (the default): ``meta["vad"]``, off
    when the model has none. Audio without speech is then a :class:`~vvframe.data.vad.NoSpeech` error naming it.
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
        self.calibration = self._calibration(meta.get("calibration"))

    def _calibration(self, data: Any) -> Calibration | None:
        """The card's calibration, when it applies to the scores this model gives (else None, with a warning)."""
        if not data:
            return None
        try:
            calibration = Calibration.from_dict(data, f"{self.source}: its calibration")
        except BadValue as exc:
            raise ModelError(str(exc)) from None
        why = calibration.mismatch((self.meta.get("normalizer") or {}).get("name") if self.normalizer else None)
        if why:
            log.warning("%s: its score calibration is not used: %s", self.source, why)
            return None
        return calibration

    def __repr__(self) -> str:
        norm = (self.meta.get("normalizer") or {}).get("name") if self.normalizer else None
        return (
            f"SpeakerModel({self.source!r}, sample_rate={self.sample_rate}, embed_dim={self.embed_dim},"
            f" normalizer={norm}, thresholds={sorted(self.thresholds)})"
        )

    # ---- embeddings ----------------------------------------------------------------------------------------
    def _extractor(self, progress: bool = False, dist: Dist | None = None, vad: bool | str | None = False) -> Extractor:
        """The extractor of this model's settings; ``dist``: the files split over its ranks, rank 0 gathering the
        embeddings; ``vad`` as for :meth:`embed_many` (None: the model's own)."""
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
            dist=dist,
            gather="main",
            vad=m.get("vad") if vad is None else vad,
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

    def embed(self, x: Audio, sample_rate: int | None = None, vad: bool | str | None = None) -> Tensor:
        """One utterance's ``(D,)`` unit-length embedding (on the CPU)."""
        if isinstance(x, (str, Path)) or self._detector(vad) is not None:
            return self.embed_many([x], sample_rate, vad=vad)[0]
        return l2_normalize(self._extractor().embed_waves([self.samples(x, sample_rate)])[0])

    def embed_many(
        self,
        items: Sequence[Audio],
        sample_rate: int | None = None,
        progress: bool = False,
        vad: bool | str | None = None,
        dist: Dist | None = None,
    ) -> Tensor:
        """``(N, D)`` unit-length embeddings; files are read as needed and batched by length. ``dist`` (more than one
        rank, each calling with the same files): the files are split over the ranks and rank 0 gets every
        embedding, the other ranks an empty ``(0, D)``."""
        if dist is not None and dist.world_size > 1:
            return self._embed_split(items, progress, vad, dist)
        return l2_normalize(self._centered(items, sample_rate, progress, vad))

    def _embed_split(self, items: Sequence[Audio], progress: bool, vad: bool | str | None, dist: Dist) -> Tensor:
        """:meth:`embed_many` of files over the ranks of ``dist`` (each embedding as one process computes it)."""
        if not all(isinstance(x, (str, Path)) for x in items):
            raise BadValue("embed_many(dist=...) splits files over the ranks: give file paths, not samples")
        paths = [str(x) for x in items]
        found = self._extractor(progress, dist=dist, vad=vad)(paths)
        if not dist.is_main or not paths:
            return torch.empty(0, self.embed_dim)
        return l2_normalize(torch.stack([found[p] for p in paths]))

    def _centered(
        self,
        items: Sequence[Audio],
        sample_rate: int | None = None,
        progress: bool = False,
        vad: bool | str | None = None,
    ) -> Tensor:
        """``(N, D)`` embeddings before normalisation (the mean subtracted)."""
        items = list(items)
        detector = self._detector(vad)
        if detector is not None:
            return self._embed_speech(items, sample_rate, progress, detector)
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
        return torch.stack(out)

    def _detector(self, vad: bool | str | None) -> activity.Detector | None:
        name = activity.choice(self.meta.get("vad") if vad is None else vad)
        return None if name is None else activity.default(name)

    def _embed_speech(
        self, items: list[Audio], sample_rate: int | None, progress: bool, detector: activity.Detector
    ) -> Tensor:
        """:meth:`_centered` of the utterances cut to their speech: read whole, trimmed, embedded as samples (as
        a file and its samples are), a chunk at a time so that a long list is never all in memory."""
        for path in dict.fromkeys(str(x) for x in items if isinstance(x, (str, Path))):
            audio.utterance_info(path)  # an unreadable or too short file is reported before any work
        extractor = self._extractor(progress)
        rows = []
        for i in range(0, len(items), _SPEECH_CHUNK):
            waves = [
                detector.trim(audio.read(x, self.sample_rate), self.sample_rate, x)
                if isinstance(x, (str, Path))
                else detector.trim(self.samples(x, sample_rate), self.sample_rate, "the samples")
                for x in items[i : i + _SPEECH_CHUNK]
            ]
            rows.append(extractor.embed_waves(waves))
        return torch.cat(rows) if rows else torch.empty(0, self.embed_dim)

    # ---- scores and decisions ------------------------------------------------------------------------------
    def pair_scores(self, enroll: Tensor, test: Tensor, pairs: list[tuple[int, int]]) -> tuple[Tensor, bool]:
        """Scores of (row of ``enroll``, row of ``test``) index pairs of embeddings, and whether they are normalized."""
        emb = {f"e{i}": e for i, e in enumerate(enroll)} | {f"t{i}": t for i, t in enumerate(test)}
        raw, normed = score_pairs([(f"e{a}", f"t{b}") for a, b in pairs], emb, self.cohort, self.normalizer)
        return (raw, False) if normed is None else (normed, True)

    def score(self, a: Audio, b: Audio, sample_rate: int | None = None, vad: bool | str | None = None) -> float:
        """The score of ``a`` against ``b``: cosine, normalized with the run's cohort when it has one."""
        e = self.embed_many([a, b], sample_rate, vad=vad)
        return float(self.pair_scores(e[:1], e[1:], [(0, 0)])[0][0])

    def threshold(self, name: str | float = "eer") -> tuple[str, float]:
        """A threshold by name (as ``eval`` tuned it: ``eer``, ``mindcf@P``, ``far@F``; ``bayes@P`` with a score
        calibration: the score whose calibrated LLR is ``-logit(P)``) or a number."""
        return pick_threshold(
            name,
            self.thresholds,
            untuned=f": {self.source} has no tuned thresholds (its eval stage has not run); give a number",
            bayes=None if self.calibration is None else self.calibration.threshold,
        )

    def verify(
        self,
        a: Audio,
        b: Audio,
        threshold: str | float = "eer",
        sample_rate: int | None = None,
        vad: bool | str | None = None,
        prior: float | None = None,
    ) -> Verification:
        """Same speaker? The score and the decision at ``threshold`` (a tuned threshold's name, ``bayes@P`` or a
        number); with a calibration also the LLR and the posterior for ``prior`` (default: ``bayes@P``'s ``P``,
        else the prior the calibration was fitted at)."""
        return self.verify_pairs([a, b], [(0, 1)], threshold, sample_rate, prior, vad=vad)[0]

    def verify_pairs(
        self,
        items: Sequence[Audio],
        pairs: Sequence[tuple[int, int]],
        threshold: str | float = "eer",
        sample_rate: int | None = None,
        prior: float | None = None,
        progress: bool = False,
        vad: bool | str | None = None,
    ) -> list[Verification]:
        """:meth:`verify` for each ``(i, j)`` index pair of ``items``, each utterance embedded once. With a
        calibration that uses quality measures, ``bayes@P`` decides each trial on its own LLR."""
        cal, pairs, bayes = self.calibration, list(pairs), bayes_prior(threshold)
        per_trial = cal is not None and bool(cal.quality) and bayes is not None
        name, value = (str(threshold), float("nan")) if per_trial else self.threshold(threshold)
        if prior is not None and not 0.0 < float(prior) < 1.0:
            raise BadValue(f"prior {prior!r}: expected the probability of a target trial, in (0, 1)")
        prior = (float(prior) if prior is not None else bayes or cal.prior) if cal is not None else None
        items = list(items)
        centered = self._centered(items, sample_rate, progress, vad)
        emb = l2_normalize(centered)
        scores, normalized = self.pair_scores(emb, emb, pairs)
        s = scores.double().numpy()
        values, llrs, posteriors = np.full(len(s), value), [None] * len(s), [None] * len(s)
        if cal is not None:
            quality = self._quality(items, centered, emb, pairs, sample_rate)
            llrs, posteriors = cal.llr(s, quality).tolist(), cal.posterior(s, prior, quality).tolist()
            if per_trial:
                values = cal.score_thresholds(bayes, quality)
        return [
            Verification(float(x), bool(x >= v), name, float(v), normalized, llr, post, prior)
            for x, v, llr, post in zip(s.tolist(), values.tolist(), llrs, posteriors)
        ]

    def _quality(
        self, items: list[Audio], centered: Tensor, emb: Tensor, pairs: list[tuple[int, int]], sample_rate: int | None
    ) -> np.ndarray | None:
        """The calibration's quality columns of ``pairs`` (None when it uses none), measured as the calibrate
        stage measures them (durations: of the whole file or samples)."""
        cal = self.calibration
        if cal is None or not cal.quality:
            return None
        seconds = None
        if "duration" in cal.quality:
            seconds = [
                audio.info(x).seconds
                if isinstance(x, (str, Path))
                else self.samples(x, sample_rate).numel() / self.sample_rate
                for x in items
            ]
        per = utterance_quality(
            cal.quality, seconds=seconds, centered=centered, finished=emb, cohort=self.cohort, top_k=cal.top_k
        )
        return pair_quality(per, [i for i, _ in pairs], [j for _, j in pairs])

    # ---- enrollment and identification -------------------------------------------------------------------
    def enroll(
        self, speaker: str, items: Sequence[Audio], sample_rate: int | None = None, vad: bool | str | None = None
    ) -> Tensor:
        """Enroll (or re-enroll) ``speaker`` from one or more utterances: the mean of their embeddings."""
        items = [items] if isinstance(items, (str, Path)) else list(items)
        if not items:
            raise BadValue(f"enroll {speaker!r}: no utterances given")
        self.speakers[speaker] = l2_normalize(self.embed_many(items, sample_rate, vad=vad).mean(0))
        return self.speakers[speaker]

    def identify(
        self,
        x: Audio,
        threshold: str | float | None = "eer",
        sample_rate: int | None = None,
        vad: bool | str | None = None,
    ) -> Identification:
        """The enrolled speaker who best matches ``x``, with every enrolled speaker's score (best first).
        ``speaker`` is None when the best score is below ``threshold`` (None: always name the best)."""
        if not self.speakers:
            raise BadValue("identify: no speakers enrolled; call enroll(speaker, files) first")
        names = list(self.speakers)
        test = self.embed_many([x], sample_rate, vad=vad)
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
