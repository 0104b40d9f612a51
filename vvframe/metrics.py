"""Verification metrics: miss and false-alarm rates at every threshold, the EER and the minimum DCF.

Conventions:

* ``scores`` are higher for "same speaker"; ``labels`` are 1 for a target trial, 0 for a non-target. Both may be
  numpy arrays, torch tensors (any device) or sequences, of any shape with the same number of elements.
* A trial is accepted when ``score >= threshold``. The operating points are the distinct scores in increasing
  order, then ``+inf`` (accept nothing), so the curves run from ``(miss, fa) = (0, 1)`` to ``(1, 0)``; trials with
  equal scores are always accepted or rejected together.
* Everything comes from one sort of the scores, in float64; 1 M trials take a fraction of a second on a CPU.

Imports numpy only (never torch).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .errors import BadValue


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
    s = _as_array(scores, "scores").astype(np.float64, copy=False)
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
        raise BadValue(f"the {s.size} trials have no {which} trial: the error rates need both targets (label 1) "
                       f"and non-targets (label 0)")
    return s, target


def error_rates(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(p_miss, p_fa, thresholds)`` at every operating point, from one sort.

    ``thresholds`` are the distinct scores in increasing order followed by ``+inf``; at threshold ``θ``
    ``p_miss`` is the fraction of targets scoring below ``θ`` and ``p_fa`` the fraction of non-targets scoring
    ``θ`` or above. ``p_miss`` rises from 0 to 1 and ``p_fa`` falls from 1 to 0 (float64 arrays of equal length).
    """
    s, target = _check(scores, labels)
    order = np.argsort(s, kind="stable")
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
    thresholds = np.concatenate((s[starts[:-1]], [np.inf]))
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
    p_miss, p_fa, thresholds = error_rates(scores, labels)
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


def min_dcf(scores: Any, labels: Any, p_target: float = 0.01, c_miss: float = 1.0, c_fa: float = 1.0) \
        -> tuple[float, float]:
    """``(normalised minDCF, threshold)``: the lowest detection cost over all operating points, from one sort.

    ``DCF(θ) = c_miss * p_target * p_miss(θ) + c_fa * (1 - p_target) * p_fa(θ)``, divided by the cost of the
    better trivial system, ``min(c_miss * p_target, c_fa * (1 - p_target))`` (the NIST SRE convention), so the
    result lies in ``[0, 1]``: the operating points include accepting everything and accepting nothing. The
    threshold is that of the minimising point (``+inf`` when rejecting everything is best); on a tie, the lowest.
    """
    for name, value, low, high in (("p_target", p_target, 0.0, 1.0), ("c_miss", c_miss, 0.0, np.inf),
                                   ("c_fa", c_fa, 0.0, np.inf)):
        if not (low < float(value) < high):
            raise BadValue(f"{name} must be in ({low:g}, {high:g}), got {value!r}")
    p_miss, p_fa, thresholds = error_rates(scores, labels)
    cost = c_miss * p_target * p_miss + c_fa * (1.0 - p_target) * p_fa
    best = int(np.argmin(cost))
    norm = min(c_miss * p_target, c_fa * (1.0 - p_target))
    return float(cost[best] / norm), float(thresholds[best])


__all__ = ["error_rates", "eer", "min_dcf"]
