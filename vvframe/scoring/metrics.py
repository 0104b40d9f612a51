"""Verification metrics: miss and false-alarm rates at every threshold, the EER, the minimum and actual DCF, Cllr,
the threshold at a false-alarm rate and a DET plot.

Conventions:

* ``scores`` are higher for "same speaker"; ``labels`` are 1 for a target trial, 0 for a non-target. Both may be
  numpy arrays, torch tensors (any device) or sequences, of any shape with the same number of elements.
* A trial is accepted when ``score >= threshold``. The operating points are the distinct scores in increasing
  order, then ``+inf`` (accept nothing), so the curves run from ``(miss, fa) = (0, 1)`` to ``(1, 0)``; trials with
  equal scores are always accepted or rejected together.
* Everything comes from one sort of the scores, in float64; 1 M trials take a fraction of a second on a CPU.

Imports numpy only (never torch); ``det_plot`` imports matplotlib (Agg canvas, no pyplot) when called.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np

from vvframe.core.errors import BadValue


def _as_array(values: Any, what: str) -> np.ndarray:
    if hasattr(values, "detach") and hasattr(values, "cpu"):  # a torch tensor, without importing torch
        values = values.detach().cpu()
        if str(getattr(values, "dtype", "")) == "torch.bfloat16":
            values = values.float()
        values = values.numpy()
    try:
        array = np.asarray(values)
    except (TypeError, ValueError) as exc:
        raise BadValue(f"{what} must be an array of numbers: {exc}") from exc
    if array.dtype == object or not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise BadValue(f"{what} must be an array of numbers, got dtype {array.dtype}")
    return array.reshape(-1)


def _check(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(scores float64, labels bool)`` after checking them; a ``BadValue`` saying what is wrong otherwise."""
    s = _as_array(scores, "scores")
    s = s if s.dtype in (np.float32, np.float64) else s.astype(np.float64)  # float32 stays: it sorts faster
    y = _as_array(labels, "labels")
    if s.size == 0:
        raise BadValue("no trials: scores is empty")
    if s.size != y.size:
        raise BadValue(f"scores and labels differ in length: {s.size} scores, {y.size} labels")
    if not np.isfinite(s).all():
        bad = np.flatnonzero(~np.isfinite(s))
        raise BadValue(f"{bad.size} of the {s.size} scores are NaN or infinite (the first at index {bad[0]})")
    target = y == 1
    if not (target | (y == 0)).all():
        bad = np.flatnonzero(~(target | (y == 0)))
        raise BadValue(f"labels must be 1 (target) or 0 (non-target); index {bad[0]} holds {y[bad[0]]!r}")
    n_tgt = int(target.sum())
    if n_tgt == 0 or n_tgt == s.size:
        which = "target" if n_tgt == 0 else "non-target"
        raise BadValue(
            f"the {s.size} trials have no {which} trial: the error rates need both targets (label 1) "
            f"and non-targets (label 0)"
        )
    return s, target


def error_rates(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(p_miss, p_fa, thresholds)`` at every operating point, from one sort.

    ``thresholds`` are the distinct scores in increasing order followed by ``+inf``; at threshold ``θ``
    ``p_miss`` is the fraction of targets scoring below ``θ`` and ``p_fa`` the fraction of non-targets scoring
    ``θ`` or above. ``p_miss`` rises from 0 to 1 and ``p_fa`` falls from 1 to 0 (float64 arrays of equal length).
    """
    s, target = _check(scores, labels)
    order = np.argsort(s)  # equal scores are grouped below, so the sort need not be stable (quicksort is faster)
    s, target = s[order], target[order]
    n = s.size
    # index of the first trial of each run of equal scores, then n for +inf
    starts = np.concatenate(([0], np.flatnonzero(s[1:] != s[:-1]) + 1, [n]))
    tgt_below = np.concatenate(([0], np.cumsum(target)))[starts]  # targets strictly below each threshold
    n_tgt = int(tgt_below[-1])
    n_non = n - n_tgt
    non_below = starts - tgt_below
    p_miss = tgt_below / n_tgt
    p_fa = (n_non - non_below) / n_non
    thresholds = np.concatenate((s[starts[:-1]].astype(np.float64), [np.inf]))
    return p_miss, p_fa, thresholds


def eer(scores: Any, labels: Any) -> tuple[float, float]:
    """``(EER as a fraction, threshold)``, interpolated where the miss and false-alarm curves cross.

    As the NIST SRE scorer does: with ``i`` the first operating point where ``p_miss >= p_fa`` and ``j = i - 1``
    the one before it (there ``p_miss < p_fa``), the straight line between the points ``(p_miss, p_fa)`` of ``j``
    and ``i`` meets ``p_miss = p_fa`` at ``a`` of the way from ``i`` to ``j``::

        a   = (p_miss[i] - p_fa[i]) / ((p_fa[j] - p_fa[i]) - (p_miss[j] - p_miss[i]))
        EER = p_miss[i] + a * (p_miss[j] - p_miss[i])

    The threshold is interpolated the same way, ``θ[i] + a * (θ[j] - θ[i])``, or is ``θ[j]`` when ``θ[i]`` is the
    final ``+inf``. Perfectly separated scores give 0 (at the lowest target score), reversed ones 1.
    """
    return _eer_from_rates(*error_rates(scores, labels))


def _eer_from_rates(p_miss: np.ndarray, p_fa: np.ndarray, thresholds: np.ndarray) -> tuple[float, float]:
    diff = p_miss - p_fa  # non-decreasing, from -1 to 1
    i = int(np.searchsorted(diff, 0.0, side="left"))
    j = i - 1  # exists: diff[0] = -1 < 0
    denom = (p_fa[j] - p_fa[i]) - (p_miss[j] - p_miss[i])
    a = float((p_miss[i] - p_fa[i]) / denom)
    value = float(p_miss[i] + a * (p_miss[j] - p_miss[i]))
    if np.isinf(thresholds[i]):
        threshold = float(thresholds[j])
    else:
        threshold = float(thresholds[i] + a * (thresholds[j] - thresholds[i]))
    return value, threshold


def min_dcf(
    scores: Any, labels: Any, p_target: float = 0.01, c_miss: float = 1.0, c_fa: float = 1.0
) -> tuple[float, float]:
    """``(normalised minDCF, threshold)``: the lowest detection cost over all operating points, from one sort.

    ``DCF(θ) = c_miss * p_target * p_miss(θ) + c_fa * (1 - p_target) * p_fa(θ)``, divided by the cost of the
    better trivial system, ``min(c_miss * p_target, c_fa * (1 - p_target))`` (the NIST SRE convention), so the
    result lies in ``[0, 1]``: the operating points include accepting everything and accepting nothing. The
    threshold is that of the minimising point (``+inf`` when rejecting everything is best); on a tie, the lowest.
    """
    _check_costs(p_target, c_miss, c_fa)
    p_miss, p_fa, thresholds = error_rates(scores, labels)
    value, best = _min_dcf_from_rates(p_miss, p_fa, p_target, c_miss, c_fa)
    return value, float(thresholds[best])


def _check_costs(p_target: float, c_miss: float, c_fa: float) -> None:
    for name, value, low, high in (
        ("p_target", p_target, 0.0, 1.0),
        ("c_miss", c_miss, 0.0, np.inf),
        ("c_fa", c_fa, 0.0, np.inf),
    ):
        try:
            ok = low < float(value) < high
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise BadValue(f"{name} must be in ({low:g}, {high:g}), got {value!r}")


def _min_dcf_from_rates(
    p_miss: np.ndarray, p_fa: np.ndarray, p_target: float, c_miss: float, c_fa: float
) -> tuple[float, int]:
    """``(normalised minDCF, index of the minimising operating point)``; the first one on a tie."""
    cost = c_miss * p_target * p_miss + c_fa * (1.0 - p_target) * p_fa
    best = int(np.argmin(cost))
    norm = min(c_miss * p_target, c_fa * (1.0 - p_target))
    return float(cost[best] / norm), best


def actual_dcf(
    scores: Any, labels: Any, threshold: float, p_target: float = 0.01, c_miss: float = 1.0, c_fa: float = 1.0
) -> float:
    """The normalised DCF of deciding "target" when ``score >= threshold`` (same normaliser as ``min_dcf``).

    ``threshold`` may be ``±inf`` (accept everything / nothing). At the threshold ``min_dcf`` returns this equals
    the minDCF; elsewhere it is larger or equal.
    """
    _check_costs(p_target, c_miss, c_fa)
    try:
        threshold = float(threshold)
    except (TypeError, ValueError) as exc:
        raise BadValue(f"threshold must be a number, got {threshold!r}") from exc
    if math.isnan(threshold):
        raise BadValue("threshold is NaN")
    s, target = _check(scores, labels)
    accepted = s.astype(np.float64, copy=False) >= threshold  # compare in float64 whatever the scores were
    p_miss = float(np.count_nonzero(target & ~accepted)) / float(np.count_nonzero(target))
    p_fa = float(np.count_nonzero(~target & accepted)) / float(np.count_nonzero(~target))
    cost = c_miss * p_target * p_miss + c_fa * (1.0 - p_target) * p_fa
    return float(cost / min(c_miss * p_target, c_fa * (1.0 - p_target)))


def cllr(scores: Any, labels: Any) -> float:
    """The log-likelihood-ratio cost (Brümmer), in bits, treating ``scores`` as natural-log likelihood ratios.

    ``Cllr = 0.5 * (mean over targets of log2(1 + e^-s) + mean over non-targets of log2(1 + e^s))``, computed
    with ``np.logaddexp`` so that large scores neither overflow nor lose precision. An uninformative system that
    always says ``s = 0`` scores 1; a perfect, well-calibrated one tends to 0; badly calibrated ones exceed 1.
    """
    s, target = _check(scores, labels)
    s = s.astype(np.float64, copy=False)
    c_tgt = float(np.mean(np.logaddexp(0.0, -s[target])))
    c_non = float(np.mean(np.logaddexp(0.0, s[~target])))
    return 0.5 * (c_tgt + c_non) / math.log(2.0)


def threshold_at_far(scores: Any, labels: Any, far: float) -> float:
    """The lowest threshold whose false-alarm rate (the fraction of non-targets scoring ``>=`` it) is ``<= far``.

    One of the operating points of ``error_rates``: a score, or ``+inf`` when only rejecting everything keeps the
    false-alarm rate that low (``far`` below ``1 / n_non-targets``, or 0 with a non-target at the top score).
    """
    try:
        far_value = float(far)
    except (TypeError, ValueError) as exc:
        raise BadValue(f"far must be a number in [0, 1], got {far!r}") from exc
    if not 0.0 <= far_value <= 1.0:
        raise BadValue(f"far must be a number in [0, 1], got {far!r}")
    _, p_fa, thresholds = error_rates(scores, labels)
    # p_fa falls from 1 to 0: the first point at or under far
    i = int(np.searchsorted(-p_fa, -far_value, side="left"))
    return float(thresholds[i])


_DET_TICKS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4)
_DET_CLIP = 1e-4
_DET_POINTS = 500  # probit-spaced grid values per axis: at most ~2 * 500 + 2 points are drawn


def _probit(p: Any) -> np.ndarray:
    """The normal deviate of each rate, after clipping to ``[1e-4, 1 - 1e-4]``."""
    p = np.clip(np.asarray(p, dtype=np.float64), _DET_CLIP, 1.0 - _DET_CLIP)
    return np.vectorize(NormalDist().inv_cdf, otypes=[np.float64])(p)


def _det_subsample(p_miss: np.ndarray, p_fa: np.ndarray) -> np.ndarray:
    """Indices of at most ~1000 operating points, spread evenly along both probit axes (ends kept)."""
    n = p_miss.size
    if n <= 2 * _DET_POINTS + 2:
        return np.arange(n)
    z = np.linspace(NormalDist().inv_cdf(_DET_CLIP), NormalDist().inv_cdf(1.0 - _DET_CLIP), _DET_POINTS)
    grid = np.vectorize(NormalDist().cdf, otypes=[np.float64])(z)
    i_miss = np.searchsorted(p_miss, grid, side="left")  # p_miss rises
    i_fa = np.searchsorted(-p_fa, -grid, side="left")  # p_fa falls
    idx = np.concatenate(([0, n - 1], i_miss, i_fa))
    return np.unique(np.clip(idx, 0, n - 1))


def det_plot(
    scores: Any, labels: Any, path: str | Path | None = None, title: str = "", p_targets: Sequence[float] = (0.01, 0.05)
) -> np.ndarray:
    """The DET curve on probit (normal deviate) axes, miss rate against false-alarm rate in %, ticks at 0.1, 0.2,
    0.5, 1, 2, 5, 10, 20, 40 %, the EER point and each minDCF point marked and labelled; saved as a PNG at `path`
    when given; returns the image as a (H, W, 3) uint8 array (for TensorBoard's add_image with dataformats='HWC').

    Rates are clipped to ``[1e-4, 1 - 1e-4]`` before the transform; the curve is drawn through at most ~1000
    operating points chosen evenly along both axes, so 1 M trials cost one sort and a fraction of a second more.
    Uses matplotlib's ``Figure`` with an Agg canvas directly (no pyplot, no global state).
    """
    for p in p_targets:
        _check_costs(p, 1.0, 1.0)
    p_miss, p_fa, thresholds = error_rates(scores, labels)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    idx = _det_subsample(p_miss, p_fa)
    x, y = _probit(p_fa[idx]), _probit(p_miss[idx])
    fig = Figure(figsize=(5.5, 5.5), dpi=100)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ticks = _probit(_DET_TICKS)
    tick_labels = [f"{100 * t:g}" for t in _DET_TICKS]
    low, high = float(_probit(0.0005)), float(_probit(0.5))
    ax.plot([low, high], [low, high], color="0.7", linestyle=":", linewidth=1)  # miss = fa
    ax.plot(x, y, color="C0", linewidth=1.5, label="DET")
    eer_value, _ = _eer_from_rates(p_miss, p_fa, thresholds)
    z_eer = float(_probit(eer_value))
    ax.plot([z_eer], [z_eer], "o", color="C3", markersize=6, label=f"EER {100 * eer_value:.2f}%")
    ax.annotate(
        f"EER {100 * eer_value:.2f}%", (z_eer, z_eer), textcoords="offset points", xytext=(6, 6), fontsize=8, color="C3"
    )
    for k, p in enumerate(p_targets):
        value, best = _min_dcf_from_rates(p_miss, p_fa, float(p), 1.0, 1.0)
        zx, zy = float(_probit(p_fa[best])), float(_probit(p_miss[best]))
        text = f"minDCF(p={float(p):g}) {value:.3f}"
        ax.plot([zx], [zy], "s", color=f"C{k + 1 if k + 1 != 3 else 9}", markersize=5, label=text)
        ax.annotate(text, (zx, zy), textcoords="offset points", xytext=(6, -10 - 10 * k), fontsize=8)
    ax.set_xticks(ticks)
    ax.set_xticklabels(tick_labels)
    ax.set_yticks(ticks)
    ax.set_yticklabels(tick_labels)
    ax.set_xlim(low, high)
    ax.set_ylim(low, high)
    ax.set_aspect("equal")
    ax.grid(True, color="0.85", linewidth=0.6)
    ax.set_xlabel("False-alarm rate (%)")
    ax.set_ylabel("Miss rate (%)")
    if title:
        ax.set_title(title)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    canvas.draw()
    image = np.asarray(canvas.buffer_rgba())[..., :3].copy()
    if path is not None:
        fig.savefig(Path(path), format="png")
    fig.clear()
    return image


__all__ = ["error_rates", "eer", "min_dcf", "actual_dcf", "cllr", "threshold_at_far", "det_plot"]
