"""Score calibration: scores to log-likelihood ratios, and the costs that say how well calibrated they are.

A calibrated score is a natural-log likelihood ratio ``llr = log p(score | same) / p(score | different)``: its
meaning does not depend on the trial list, and for any prior ``P`` of a target trial the posterior is
``sigmoid(llr + logit(P))`` and the cheapest decision (the Bayes decision) accepts when
``llr >= -logit(P) + log(c_fa / c_miss)``.

* :func:`cllr_at`, :func:`min_cllr` (the pool-adjacent-violators optimum), :func:`act_dcf`: the costs. ``Cllr``
  (in bits) is the cost of the LLRs themselves; ``minCllr`` that of the best monotone recalibration of the same
  scores, so ``Cllr - minCllr`` is what calibration loses. ``actDCF`` is the detection cost of the Bayes decisions
  at a prior, normalised as :func:`vvframe.scoring.metrics.min_dcf` is, so ``actDCF - minDCF`` is the same loss at
  one operating point.
* :func:`fit`: a linear logistic-regression calibration ``llr = a * score + b (+ w . quality)`` trained on a
  labelled development list by minimising the prior-weighted Cllr (BOSARIS's objective), with Newton steps in
  float64: deterministic, small L2 regularisation (separable scores stay finite), each class weighted by the prior
  (class imbalance changes nothing). Quality measures (WeSpeaker's QMF: durations, embedding norms, cohort
  means) are optional extra columns; see :func:`utterance_quality` and :func:`pair_quality`.
* :class:`Calibration`: the fitted model, saved as JSON (:meth:`Calibration.to_dict`), applied to scores.

Conventions as in :mod:`vvframe.scoring.metrics`: scores higher for "same speaker", labels 1/0, any array type.
Imports numpy only.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vvframe.core.atomic import atomic_json
from vvframe.core.errors import BadValue, did_you_mean
from vvframe.scoring.metrics import _as_array, _check, _check_costs, actual_dcf, cllr, min_dcf

log = logging.getLogger(__name__)

FORMAT = "vvframe-calibration"  # the JSON's "format" field
VERSION = 1
CALIBRATION_FILE = "calibration.json"
# the quality measures a calibration may use, each giving two columns (the enrollment side's, then the test's)
QUALITY = {
    "duration": "log of the utterance's length in seconds",
    "norm": "the length of the embedding before L2 normalisation (after the mean is subtracted)",
    "cohort_mean": "the mean of the utterance's top-k scores against the cohort",
}
COSINE, NORMALIZED = "cosine", "normalized"  # the kinds of scores a calibration is fitted on ("scores")
SCORE_KINDS = (COSINE, NORMALIZED)
SIDES = ("_enroll", "_test")  # the column suffixes of a quality measure: its value on each side of a trial
DEFAULT_L2 = 1e-5  # on the Cllr objective (1 for a system that knows nothing), standardised coefficients


# ---- the costs ------------------------------------------------------------------------------------------------
def logit(p: float) -> float:
    """``log(p / (1 - p))`` of a probability in (0, 1)."""
    _check_costs(p, 1.0, 1.0)
    return math.log(p) - math.log1p(-p)


def sigmoid(x: Any) -> np.ndarray:
    """``1 / (1 + e^-x)`` elementwise, without overflow."""
    x = np.asarray(x, dtype=np.float64)
    return np.exp(-np.logaddexp(0.0, -x))


def bayes_threshold(p_target: float, c_miss: float = 1.0, c_fa: float = 1.0) -> float:
    """The LLR at or above which the Bayes decision accepts: ``-logit(P) + log(c_fa / c_miss)``."""
    _check_costs(p_target, c_miss, c_fa)
    return -logit(p_target) + math.log(c_fa) - math.log(c_miss)


def _entropy_bits(p: float) -> float:
    return -(p * math.log2(p) + (1.0 - p) * math.log2(1.0 - p))


def cllr_at(llrs: Any, labels: Any, prior: float = 0.5) -> float:
    """The prior-weighted log-likelihood-ratio cost of ``llrs``, in bits, normalised so that ``llr = 0`` scores 1.

    ``(P * mean_t log2(1 + e^-(l + logit P)) + (1 - P) * mean_n log2(1 + e^(l + logit P))) / H(P)`` with ``H`` the
    binary entropy; at ``P = 0.5`` it is :func:`vvframe.scoring.metrics.cllr` (Brümmer's Cllr). ``±inf`` LLRs are
    allowed (a wrong infinite one costs infinity)."""
    _check_costs(prior, 1.0, 1.0)
    s = _as_array(llrs, "llrs").astype(np.float64)
    if np.isnan(s).any():
        raise BadValue(f"{int(np.isnan(s).sum())} of the {s.size} LLRs are NaN")
    finite = np.where(np.isfinite(s), s, 0.0)
    _, target = _check(finite, labels)
    shifted = s + logit(prior)
    with np.errstate(over="ignore"):
        c_tgt = float(np.mean(np.logaddexp(0.0, -shifted[target])))
        c_non = float(np.mean(np.logaddexp(0.0, shifted[~target])))
    return (prior * c_tgt + (1.0 - prior) * c_non) / math.log(2.0) / _entropy_bits(prior)


def _pav(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The weighted least-squares non-decreasing fit of ``values`` (pool adjacent violators), one value per input."""
    means: list[float] = []
    totals: list[float] = []
    sizes: list[int] = []
    for v, w in zip(values.tolist(), weights.tolist()):
        m, t, n = v, w, 1
        while means and means[-1] >= m:  # pool with the block before while it is not below
            t_prev = totals.pop()
            m = (means.pop() * t_prev + m * t) / (t_prev + t)
            t += t_prev
            n += sizes.pop()
        means.append(m)
        totals.append(t)
        sizes.append(n)
    return np.repeat(np.asarray(means, dtype=np.float64), np.asarray(sizes, dtype=np.int64))


def optimal_llrs(scores: Any, labels: Any, prior: float = 0.5) -> np.ndarray:
    """The LLRs of the best non-decreasing function of ``scores`` for ``labels`` (one per trial, in their order).

    Pool adjacent violators on the trials sorted by score (equal scores pooled first: a function of the score
    gives them one value), each target weighted ``P / n_targets`` and each non-target ``(1 - P) / n_non``: the
    fitted values are posteriors at ``P``, returned as ``logit(posterior) - logit(P)`` (``±inf`` where a pool holds
    one class only). They minimise :func:`cllr_at` at ``P`` (and every other proper scoring rule) among
    monotone maps, and their Bayes decisions reach the minDCF at every prior (the ROC convex hull)."""
    _check_costs(prior, 1.0, 1.0)
    s, target = _check(scores, labels)
    order = np.argsort(s, kind="stable")
    sorted_s, sorted_t = s[order], target[order]
    starts = np.concatenate(([0], np.flatnonzero(sorted_s[1:] != sorted_s[:-1]) + 1))
    n_tgt_per = np.add.reduceat(sorted_t.astype(np.float64), starts)
    n_per = np.diff(np.concatenate((starts, [s.size]))).astype(np.float64)
    w_t, w_n = prior / float(target.sum()), (1.0 - prior) / float((~target).sum())
    mass_t, mass = n_tgt_per * w_t, n_tgt_per * w_t + (n_per - n_tgt_per) * w_n
    posterior = np.clip(_pav(mass_t / mass, mass), 0.0, 1.0)
    with np.errstate(divide="ignore"):
        group_llr = np.log(posterior) - np.log1p(-posterior) - logit(prior)
    out = np.empty(s.size, dtype=np.float64)
    out[order] = np.repeat(group_llr, n_per.astype(np.int64))
    return out


def min_cllr(scores: Any, labels: Any, prior: float = 0.5) -> float:
    """The lowest :func:`cllr_at` any non-decreasing recalibration of ``scores`` reaches (bits; PAV optimum)."""
    return cllr_at(optimal_llrs(scores, labels, prior), labels, prior)


def act_dcf(llrs: Any, labels: Any, p_target: float = 0.01, c_miss: float = 1.0, c_fa: float = 1.0) -> float:
    """The normalised DCF of the Bayes decisions on ``llrs`` at ``p_target`` (accept ``llr >= bayes_threshold``),
    normalised as :func:`vvframe.scoring.metrics.min_dcf`; never below the minDCF of the same scores. ``±inf``
    LLRs are allowed (always accepted / rejected)."""
    s = _as_array(llrs, "llrs").astype(np.float64)
    s = np.where(np.isinf(s), np.sign(s) * np.finfo(np.float64).max, s)  # the same decisions, finite
    return actual_dcf(s, labels, bayes_threshold(p_target, c_miss, c_fa), p_target, c_miss, c_fa)


def summary(llrs: Any, labels: Any, p_targets: Sequence[float] = (0.01,)) -> dict[str, Any]:
    """``{cllr, min_cllr, act_dcf: {P: .}, min_dcf: {P: .}}`` of scores read as LLRs (Cllr at 0.5, in bits)."""
    return {
        "cllr": cllr_at(llrs, labels, 0.5),
        "min_cllr": min_cllr(llrs, labels, 0.5),
        "act_dcf": {str(p): act_dcf(llrs, labels, p) for p in p_targets},
        "min_dcf": {str(p): min_dcf(llrs, labels, p)[0] for p in p_targets},
    }


# ---- quality measures -----------------------------------------------------------------------------------------
def quality_columns(quality: Sequence[str]) -> list[str]:
    """The feature columns of quality measures ``quality``: ``<name>_enroll``, ``<name>_test`` for each."""
    return [f"{q}{side}" for q in quality for side in SIDES]


def check_quality(quality: Sequence[str], where: str = "quality") -> list[str]:
    """``quality`` as a list of known measure names (each once); a ``BadValue`` naming the unknown one."""
    out = []
    for q in quality:
        if q not in QUALITY:
            raise BadValue(
                f"{where}: unknown quality measure {q!r}{did_you_mean(str(q), QUALITY)}; known: {', '.join(QUALITY)}"
            )
        if q in out:
            raise BadValue(f"{where}: quality measure {q!r} given twice")
        out.append(q)
    return out


def utterance_quality(
    quality: Sequence[str],
    *,
    seconds: Any = None,
    centered: Any = None,
    finished: Any = None,
    cohort: Any = None,
    top_k: int | None = None,
) -> np.ndarray:
    """``(U, len(quality))`` quality measures of ``U`` utterances, column by measure, from what each needs:

    ``duration``: ``seconds`` ``(U,)``; ``norm``: ``centered`` ``(U, D)`` embeddings before L2 normalisation (the
    mean subtracted when the run subtracts one); ``cohort_mean``: ``finished`` ``(U, D)`` scoring-ready embeddings,
    ``cohort`` ``(C, D)`` and ``top_k`` (at most ``C``)."""
    columns = []
    for q in check_quality(quality):
        if q == "duration":
            if seconds is None:
                raise BadValue("the quality measure 'duration' needs the utterances' lengths")
            sec = _as_array(seconds, "seconds").astype(np.float64)
            if (sec <= 0).any() or not np.isfinite(sec).all():
                raise BadValue("utterance lengths must be positive seconds")
            columns.append(np.log(sec))
        elif q == "norm":
            if centered is None:
                raise BadValue("the quality measure 'norm' needs the embeddings before normalisation")
            columns.append(np.linalg.norm(_rows(centered, "centered"), axis=1))
        else:
            if finished is None or cohort is None:
                raise BadValue(
                    "the quality measure 'cohort_mean' needs cohort embeddings: run the prepare stage first"
                    " (the model has no cohort)"
                )
            emb, coh = _rows(finished, "finished"), _rows(cohort, "cohort")
            k = min(int(top_k or coh.shape[0]), coh.shape[0])
            sims = emb @ coh.T
            top = np.partition(sims, coh.shape[0] - k, axis=1)[:, coh.shape[0] - k :]
            columns.append(top.mean(axis=1))
    n = len(columns[0]) if columns else 0
    return np.stack(columns, axis=1) if columns else np.zeros((n, 0))


def _rows(x: Any, what: str) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().double().numpy()
    array = np.asarray(x, dtype=np.float64)
    if array.ndim != 2:
        raise BadValue(f"{what} must be a (rows, dimensions) array, got shape {array.shape}")
    return array


def pair_quality(per_utterance: np.ndarray, enroll: Sequence[int], test: Sequence[int]) -> np.ndarray:
    """``(N, 2 * k)`` trial quality columns (see :func:`quality_columns`) from ``(U, k)`` utterance measures and
    each trial's enrollment and test row indices."""
    e = per_utterance[np.asarray(enroll, dtype=np.int64)]
    t = per_utterance[np.asarray(test, dtype=np.int64)]
    k = per_utterance.shape[1]
    out = np.empty((e.shape[0], 2 * k), dtype=np.float64)
    out[:, 0::2], out[:, 1::2] = e, t
    return out


# ---- the model ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Calibration:
    """A linear calibration ``llr = weights . [score, quality columns] + offset``, fitted at ``prior``.

    ``features`` names the columns (``score`` first, then :func:`quality_columns` of ``quality``); ``scores`` says
    which scores it was fitted on (``cosine`` scores as they are, or ``normalized`` by the score normalizer named
    ``normalizer``); ``top_k`` the cohort scores averaged for ``cohort_mean``; ``fitted_on`` a summary of the fit
    (trials, targets, costs before and after)."""

    weights: tuple[float, ...]
    offset: float
    prior: float
    features: tuple[str, ...] = ("score",)
    scores: str = COSINE
    normalizer: str | None = None
    top_k: int | None = None
    fitted_on: dict[str, Any] = field(default_factory=dict)

    @property
    def scale(self) -> float:
        """``a``: the weight of the score."""
        return float(self.weights[0])

    @property
    def quality(self) -> list[str]:
        """The quality measures it uses (empty: score only)."""
        return [c[: -len("_enroll")] for c in self.features[1:] if c.endswith("_enroll")]

    @property
    def normalized(self) -> bool:
        """Whether it applies to normalized scores."""
        return self.scores == NORMALIZED

    def matches(self, normalizer: str | None) -> bool:
        """Whether scores normalized by ``normalizer`` (a name; None: cosine scores no normalizer changed) are the
        kind it was fitted on."""
        return _plain_name(normalizer) == _plain_name(self.normalizer)

    def mismatch(self, normalizer: str | None) -> str:
        """Why scores of ``normalizer`` are not its kind (empty when they are)."""
        if self.matches(normalizer):
            return ""
        fitted = f"scores normalized by '{self.normalizer}'" if self.normalizer else "raw cosine scores"
        these = f"normalized by '{normalizer}'" if _plain_name(normalizer) else "raw cosine scores"
        return f"it was fitted on {fitted}, and these are {these}"

    def llr(self, scores: Any, quality: Any = None) -> np.ndarray:
        """The LLRs of ``scores`` ``(N,)``; ``quality``: ``(N, 2 * len(self.quality))`` columns when it uses any."""
        s = _as_array(scores, "scores").astype(np.float64)
        out = self.scale * s + self.offset
        extra = len(self.features) - 1
        if extra:
            if quality is None:
                raise BadValue(f"this calibration uses quality measures ({', '.join(self.quality)}); give them")
            q = np.asarray(quality, dtype=np.float64).reshape(s.size, -1)
            if q.shape[1] != extra:
                raise BadValue(
                    f"quality has {q.shape[1]} columns; this calibration takes {extra} ({', '.join(self.features[1:])})"
                )
            out = out + q @ np.asarray(self.weights[1:], dtype=np.float64)
        return out

    def posterior(self, scores: Any, prior: float | None = None, quality: Any = None) -> np.ndarray:
        """``P(same speaker | trial)`` for a prior ``prior`` of a target trial (default: the fitted prior)."""
        p = self.prior if prior is None else prior
        return sigmoid(self.llr(scores, quality) + logit(p))

    def score_thresholds(self, prior: float, quality: Any = None, c_miss: float = 1.0, c_fa: float = 1.0) -> np.ndarray:
        """Per trial, the score at or above which its Bayes decision at ``prior`` accepts (``quality`` as in
        :meth:`llr`; one value per row)."""
        if len(self.features) == 1:
            n = 1 if quality is None else len(quality)
            return np.full(n, self.threshold(prior, c_miss, c_fa))
        self._check_scale()
        theta = bayes_threshold(prior, c_miss, c_fa)
        q = np.asarray(quality, dtype=np.float64).reshape(-1, len(self.features) - 1)
        return (theta - self.offset - q @ np.asarray(self.weights[1:], dtype=np.float64)) / self.scale

    def threshold(self, prior: float, c_miss: float = 1.0, c_fa: float = 1.0) -> float:
        """The score threshold of the Bayes decision at ``prior``: ``(-logit(P) - b) / a`` (score-only models)."""
        if len(self.features) > 1:
            raise BadValue(
                f"a Bayes threshold on the score depends on each trial's quality measures ({', '.join(self.quality)})"
                " for this calibration; decide on its LLR instead"
            )
        self._check_scale()
        return (bayes_threshold(prior, c_miss, c_fa) - self.offset) / self.scale

    def _check_scale(self) -> None:
        if not self.scale > 0:
            raise BadValue(
                f"the calibration's score weight is {self.scale:g}: higher scores are not more likely the same speaker"
                " on its development trials, so no score threshold means 'accept'"
            )

    # ---- JSON ------------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The JSON form (what :meth:`from_dict` reads, the model card's ``calibration`` field)."""
        return {
            "format": FORMAT,
            "version": VERSION,
            "model": "linear",
            "prior": self.prior,
            "features": list(self.features),
            "weights": list(self.weights),
            "offset": self.offset,
            "scores": self.scores,
            "normalizer": self.normalizer,
            "top_k": self.top_k,
            "fitted_on": dict(self.fitted_on),
        }

    @classmethod
    def from_dict(cls, data: Any, where: str = "calibration") -> Calibration:
        """A calibration from its JSON form; a ``BadValue`` starting ``where`` for anything malformed."""
        if not isinstance(data, Mapping):
            raise BadValue(f"{where}: expected a calibration object, got {type(data).__name__}")
        if data.get("format") != FORMAT:
            raise BadValue(f"{where}: not a vvframe calibration (format {data.get('format')!r}, expected {FORMAT!r})")
        version = data.get("version")
        if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= VERSION:
            raise BadValue(f"{where}: calibration version {version!r}; this vvframe reads version {VERSION}")
        if data.get("model", "linear") != "linear":
            raise BadValue(f"{where}: unknown calibration model {data.get('model')!r} (this vvframe has 'linear')")
        features = data.get("features")
        weights = data.get("weights")
        if not isinstance(features, list) or not features or features[0] != "score":
            raise BadValue(f"{where}: 'features' must be a list starting with 'score', got {features!r}")
        try:
            named = check_quality([str(c).removesuffix("_enroll") for c in features[1::2]], where)
            expected = ["score", *quality_columns(named)]
        except BadValue:
            expected = None
        if features != expected:
            raise BadValue(
                f"{where}: 'features' {features!r} are not 'score' and enroll/test pairs of {', '.join(QUALITY)}"
            )
        if not isinstance(weights, list) or len(weights) != len(features):
            raise BadValue(f"{where}: 'weights' must hold one number per feature ({len(features)})")
        numbers = [*weights, data.get("offset"), data.get("prior")]
        if not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in numbers):
            raise BadValue(f"{where}: 'weights', 'offset' and 'prior' must be finite numbers")
        if not 0.0 < float(data["prior"]) < 1.0:
            raise BadValue(f"{where}: 'prior' must be in (0, 1), got {data['prior']!r}")
        scores = data.get("scores", COSINE)
        if scores not in SCORE_KINDS:
            raise BadValue(f"{where}: 'scores' must be {' or '.join(map(repr, SCORE_KINDS))}, got {scores!r}")
        normalizer, top_k = data.get("normalizer"), data.get("top_k")
        if normalizer is not None and not isinstance(normalizer, str):
            raise BadValue(f"{where}: 'normalizer' must be a name or null, got {normalizer!r}")
        if (scores == NORMALIZED) != (_plain_name(normalizer) is not None):
            raise BadValue(f"{where}: 'scores' {scores!r} disagrees with 'normalizer' {normalizer!r}")
        if top_k is not None and (not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1):
            raise BadValue(f"{where}: 'top_k' must be a whole number >= 1 or null, got {top_k!r}")
        fitted_on = data.get("fitted_on") or {}
        if not isinstance(fitted_on, Mapping):
            raise BadValue(f"{where}: 'fitted_on' must be an object")
        return cls(
            weights=tuple(float(w) for w in weights),
            offset=float(data["offset"]),
            prior=float(data["prior"]),
            features=tuple(features),
            scores=scores,
            normalizer=_plain_name(normalizer),
            top_k=top_k,
            fitted_on=dict(fitted_on),
        )

    def save(self, path: str | Path) -> None:
        """Write :meth:`to_dict` to ``path`` atomically."""
        atomic_json(Path(path), self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> Calibration:
        """Read a file written by :meth:`save`; a ``BadValue`` naming it when it is not one."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise BadValue(f"{path}: cannot read the calibration ({exc.strerror or exc})") from None
        except (UnicodeDecodeError, ValueError) as exc:
            raise BadValue(f"{path}: not a JSON calibration ({exc})") from None
        return cls.from_dict(data, str(path))

    def describe(self) -> str:
        """One line: the model and its coefficients."""
        terms = " ".join(f"{w:+.4g}*{f}" for w, f in zip(self.weights, self.features))
        return f"llr = {terms} {self.offset:+.4g} (fitted at prior {self.prior:g}, {self.scores} scores)"


def _plain_name(normalizer: str | None) -> str | None:
    """A normalizer's name as a calibration records it: None (or empty) for scores that no normalizer changed."""
    return None if normalizer in (None, "") else str(normalizer)


def calibration_file(run_dir: str | Path) -> Path:
    """Where the calibrate stage saves a run's calibration: ``calibration/calibration.json``."""
    return Path(run_dir) / "calibration" / CALIBRATION_FILE


# ---- fitting --------------------------------------------------------------------------------------------------
def fit(
    scores: Any,
    labels: Any,
    prior: float = 0.01,
    quality: Any = None,
    quality_names: Sequence[str] = (),
    *,
    l2: float = DEFAULT_L2,
    max_steps: int = 100,
    normalizer: str | None = None,
    top_k: int | None = None,
) -> Calibration:
    """The linear calibration that minimises the prior-weighted Cllr (:func:`cllr_at` at ``prior``) of
    ``scores`` ``(N,)`` (and ``quality`` ``(N, 2 * len(quality_names))`` columns) on ``labels``, plus
    ``l2 / 2 * |standardised weights|^2``.

    Newton's method with a backtracking line search in float64 on standardised columns (the offset is not
    regularised): the same data gives the same coefficients, separable scores finite ones. ``fitted_on`` holds
    the trial counts, the steps taken and Cllr / minCllr / actDCF at ``prior`` before (the scores read as LLRs)
    and after. ``normalizer``: the name of the score normalizer the scores went through (None: the
    cosines as they are), ``top_k`` the cohort scores ``cohort_mean`` averaged: both recorded, so that the calibration is applied
    only to scores of the same kind (:meth:`Calibration.matches`)."""
    _check_costs(prior, 1.0, 1.0)
    if not (l2 >= 0 and math.isfinite(l2)):
        raise BadValue(f"l2 must be a finite number >= 0, got {l2!r}")
    s, target = _check(scores, labels)
    s = s.astype(np.float64)
    names = check_quality(quality_names)
    columns = ["score", *quality_columns(names)]
    x = s[:, None]
    if names:
        if quality is None:
            raise BadValue(f"quality measures {', '.join(names)} named but no quality columns given")
        q = np.asarray(quality, dtype=np.float64).reshape(s.size, -1)
        if q.shape[1] != len(columns) - 1:
            raise BadValue(f"quality has {q.shape[1]} columns; {', '.join(names)} make {len(columns) - 1}")
        if not np.isfinite(q).all():
            raise BadValue("the quality measures hold NaN or infinite values")
        x = np.concatenate([x, q], axis=1)
    mean, std = x.mean(axis=0), x.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    z = np.concatenate([(x - mean) / std, np.ones((s.size, 1))], axis=1)  # the last column is the offset
    n_t, n_n = int(target.sum()), int((~target).sum())
    # per-trial weights: the prior shares the cost between the classes, whatever their counts; / H(P) in nats
    norm = _entropy_bits(prior) * math.log(2.0)
    w = np.where(target, prior / n_t, (1.0 - prior) / n_n) / norm
    sign = np.where(target, 1.0, -1.0)
    shift = logit(prior)
    reg = np.full(z.shape[1], float(l2))
    reg[-1] = 0.0

    def objective(theta: np.ndarray) -> float:
        return float(np.sum(w * np.logaddexp(0.0, -sign * (z @ theta + shift))) + 0.5 * np.sum(reg * theta**2))

    theta = np.zeros(z.shape[1])  # llr = 0 everywhere: the best constant under prior weighting, cost 1
    value, steps = objective(theta), 0
    while steps < max_steps:
        tau = z @ theta + shift
        p_wrong = sigmoid(-sign * tau)  # the probability given to the wrong class
        grad = z.T @ (w * -sign * p_wrong) + reg * theta
        curvature = w * p_wrong * (1.0 - p_wrong)
        hess = (z * curvature[:, None]).T @ z + np.diag(reg) + 1e-12 * np.eye(z.shape[1])
        step = np.linalg.solve(hess, grad)
        decrease = float(grad @ step)  # the decrease Newton's model predicts, times 2
        if decrease < 1e-14:
            break
        t = 1.0
        while (new := objective(theta - t * step)) > value - 1e-4 * t * decrease and t > 1e-10:
            t *= 0.5  # backtrack until the decrease is a fair share of the predicted one
        if new >= value:
            break  # no step lowers the cost any more (rounding)
        theta, value, steps = theta - t * step, new, steps + 1
    coef = theta[:-1] / std
    offset = float(theta[-1] - np.sum(theta[:-1] * mean / std))
    llrs = x @ coef + offset
    fitted = {
        "trials": int(s.size),
        "targets": n_t,
        "newton_steps": steps,
        "l2": float(l2),
        "before": _costs(s, target, prior),
        "after": _costs(llrs, target, prior),
    }
    cal = Calibration(
        weights=tuple(float(c) for c in coef),
        offset=offset,
        prior=float(prior),
        features=tuple(columns),
        scores=COSINE if _plain_name(normalizer) is None else NORMALIZED,
        normalizer=_plain_name(normalizer),
        top_k=top_k,
        fitted_on=fitted,
    )
    log.debug("calibration fitted in %d Newton steps: %s", steps, cal.describe())
    return cal


def _costs(llrs: np.ndarray, target: np.ndarray, prior: float) -> dict[str, float]:
    return {
        "cllr": cllr_at(llrs, target, 0.5),
        "min_cllr": min_cllr(llrs, target, 0.5),
        f"cllr@{prior:g}": cllr_at(llrs, target, prior),
        f"min_cllr@{prior:g}": min_cllr(llrs, target, prior),
        "act_dcf": act_dcf(llrs, target, prior),
        "min_dcf": min_dcf(llrs, target, prior)[0],
    }


__all__ = [
    "CALIBRATION_FILE",
    "QUALITY",
    "Calibration",
    "act_dcf",
    "bayes_threshold",
    "calibration_file",
    "check_quality",
    "cllr",
    "cllr_at",
    "fit",
    "logit",
    "min_cllr",
    "optimal_llrs",
    "pair_quality",
    "quality_columns",
    "sigmoid",
    "summary",
    "utterance_quality",
]
