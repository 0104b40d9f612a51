"""Adaptive symmetric score normalization ``asnorm``; the contract is in ``common.py``."""

from __future__ import annotations

import logging
import math
from typing import Annotated

import torch

from vvframe import BadValue
from vvframe.core.schema import Range

from .common import Side, check, symmetric

log = logging.getLogger(__name__)

MIN_TOP_K = 50  # fewer scores estimate a side's standard deviation to worse than 1 / sqrt(2 * 50) = 10 %
MIN_COHORT_PER_TOP_K = 5  # a cohort under 5 x top_k: the top k are more than a fifth of it, barely a selection
GOOD_COHORT = (
    "a good cohort is a few thousand speakers unlike the test ones (none of the trials' speakers), one mean"
    " embedding per speaker (cohort.per_speaker: mean), with top_k 5-10 % of it (the VoxCeleb recipes: 300 of"
    " 5,994 speaker means)"
)


def small_cohort(top_k: int, cohort_size: int) -> list[str]:
    """Why a cohort of ``cohort_size`` is too small for top-``top_k`` statistics (empty when it is not)."""
    k = min(top_k, cohort_size)
    problems = []
    if top_k > cohort_size:
        problems.append(f"top_k={top_k} exceeds it, so all {cohort_size} are used (plain s-norm)")
    elif cohort_size < MIN_COHORT_PER_TOP_K * top_k:
        problems.append(
            f"top_k={top_k} selects more than 1/{MIN_COHORT_PER_TOP_K} of it (wanted: a cohort of at least"
            f" {MIN_COHORT_PER_TOP_K * top_k:,}, or a smaller top_k)"
        )
    if k < MIN_TOP_K:
        problems.append(
            f"{k} scores per side estimate its standard deviation only to about {100 / math.sqrt(2 * k):.0f} %"
            f" (wanted: top_k of at least {MIN_TOP_K})"
        )
    return problems


_WARNED: set[tuple[int, int]] = set()  # (cohort size, top_k) said already in this process: once, not once a stage


class ASNorm:
    """Adaptive s-norm over each side's top-k cohort scores (Matejka et al. 2017; Cumani et al. 2011).

    Each side's statistics are the mean and standard deviation of its ``top_k`` highest cohort scores, which needs
    a cohort large enough on two counts, each warned about (once per process for a cohort size and top_k, with what a
    good cohort is) when it fails: ``top_k`` scores must be enough to estimate a standard deviation (from ``k``
    roughly normal values its relative standard error is about ``1 / sqrt(2k)``: 10 % at :data:`MIN_TOP_K` = 50,
    so fewer is warned about), and the top ``top_k`` must be a selection, the cohort entries nearest the
    utterance, not most of the cohort (a cohort under :data:`MIN_COHORT_PER_TOP_K` = 5 times ``top_k`` is warned
    about; ``top_k`` above the cohort size is clamped to all of it, which is plain s-norm). A good cohort is a few
    thousand speakers unlike the test ones, one mean embedding per speaker, ``top_k`` 5-10 % of it (300 of 6,000).
    """

    def __init__(self, top_k: Annotated[int, Range(1)] = 300) -> None:
        if isinstance(top_k, bool) or int(top_k) != top_k or top_k < 1:
            raise BadValue(f"asnorm: top_k={top_k!r} must be a whole number >= 1")
        self.top_k = int(top_k)

    def __call__(self, scores: torch.Tensor, enroll: Side, test: Side, cohort: torch.Tensor | None) -> torch.Tensor:
        check("asnorm", scores, enroll, test, cohort)
        size = cohort.shape[0]
        problems = small_cohort(self.top_k, size)
        if problems and (size, self.top_k) not in _WARNED:
            log.warning(
                "asnorm: a cohort of %d embeddings is too small for top-%d statistics: %s; %s",
                size,
                self.top_k,
                "; ".join(problems),
                GOOD_COHORT,
            )
            _WARNED.add((size, self.top_k))
        return symmetric(scores, enroll, test, cohort, min(self.top_k, size))
