"""Metric speed: EER and minDCF(0.01) of 1,000,000 and 10,000,000 scores with `vvframe.scoring.metrics`, against the
threshold sweep people write by hand in numpy (argsort the scores, cumulative sums of the labels, the point
where the miss and false-alarm rates are closest; no tie grouping, no interpolation, no input checks).

Scores are float32 like real cosine scores, 1 % targets, target scores shifted up by 2 (quick mode: 100,000
and 1,000,000 scores). Each time is the best of three calls (two at 10,000,000). The comparison notes how far the
hand-written values are from vvframe's.
"""

from __future__ import annotations

import numpy as np
from common import Row, best_seconds, standalone, versus

from vvframe.scoring.metrics import eer, min_dcf

P_TARGET = 0.01


def sweep(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The hand-written ``(p_miss, p_fa)`` with the threshold just above each sorted score."""
    order = np.argsort(scores)
    is_target = labels[order]
    n_tgt = int(is_target.sum())
    n_non = is_target.size - n_tgt
    p_miss = np.cumsum(is_target) / n_tgt
    p_fa = 1.0 - np.cumsum(~is_target) / n_non
    return p_miss, p_fa


def sweep_eer(scores: np.ndarray, labels: np.ndarray) -> float:
    """The hand-written EER: the mean of the two rates where they are closest."""
    p_miss, p_fa = sweep(scores, labels)
    i = int(np.argmin(np.abs(p_miss - p_fa)))
    return float(p_miss[i] + p_fa[i]) / 2


def sweep_min_dcf(scores: np.ndarray, labels: np.ndarray) -> float:
    """The hand-written normalised minDCF at ``P_TARGET`` (unit costs)."""
    p_miss, p_fa = sweep(scores, labels)
    cost = P_TARGET * p_miss + (1 - P_TARGET) * p_fa
    return float(cost.min()) / min(P_TARGET, 1 - P_TARGET)


def run(quick: bool = False) -> list[Row]:
    """Rows: seconds for vvframe's EER and minDCF against the hand-written sweep, at two sizes."""
    rng = np.random.default_rng(0)
    rows = []
    for size in (100_000, 1_000_000) if quick else (1_000_000, 10_000_000):
        labels = rng.random(size) < 0.01
        scores = (rng.standard_normal(size) + 2.0 * labels).astype(np.float32)  # cosine scores are float32
        repeat = 3 if size <= 1_000_000 else 2
        for name, ours, theirs in (("EER", eer, sweep_eer), ("minDCF(0.01)", min_dcf, sweep_min_dcf)):
            values = {}
            seconds = best_seconds(lambda: values.update(ours=ours(scores, labels)[0]), repeat, warmup=0)
            by_hand = best_seconds(lambda: values.update(theirs=theirs(scores, labels)), repeat, warmup=0)
            diff = abs(values["ours"] - values["theirs"])
            rows.append(
                Row(
                    f"{name} of {size:,} scores, vvframe.scoring.metrics",
                    seconds,
                    "s",
                    versus("numpy argsort + cumsum sweep", by_hand, "s", seconds, False) + f"; |diff| {diff:.1e}",
                )
            )
    return rows


if __name__ == "__main__":
    standalone("metrics", run, __doc__)
