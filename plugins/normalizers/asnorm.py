"""Adaptive symmetric score normalization ``asnorm``; the contract is in ``common.py``."""

from __future__ import annotations

import logging
from typing import Annotated

import torch

from vvframe import BadValue
from vvframe.core.schema import Range

from .common import Side, check, normalized

log = logging.getLogger(__name__)


class ASNorm:
    """Adaptive s-norm over each side's top-k cohort scores (Matejka et al. 2017; Cumani et al. 2011)."""

    def __init__(self, top_k: Annotated[int, Range(1)] = 300) -> None:
        if isinstance(top_k, bool) or int(top_k) != top_k or top_k < 1:
            raise BadValue(f"asnorm: top_k={top_k!r} must be a whole number >= 1")
        self.top_k = int(top_k)
        self._clamp_logged = False

    def __call__(self, scores: torch.Tensor, enroll: Side, test: Side, cohort: torch.Tensor | None) -> torch.Tensor:
        check("asnorm", scores, enroll, test, cohort)
        k = self.top_k
        if k > cohort.shape[0]:
            k = cohort.shape[0]
            if not self._clamp_logged:
                log.warning("asnorm: top_k=%d exceeds the cohort of %d; using all %d", self.top_k, k, k)
                self._clamp_logged = True
        return 0.5 * (normalized(scores, enroll, cohort, k) + normalized(scores, test, cohort, k))
