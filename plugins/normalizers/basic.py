"""Cohort score normalizers ``none``, ``znorm``, ``tnorm`` and ``snorm``; the contract is in ``common.py``."""

from __future__ import annotations

import torch

from .common import Side, check, normalized, symmetric


class Identity:
    """No score normalization: the raw scores unchanged."""

    def __init__(self) -> None:
        pass

    def __call__(self, scores: torch.Tensor, enroll: Side, test: Side, cohort: torch.Tensor | None) -> torch.Tensor:
        return scores


class ZNorm:
    """Z-norm, zero normalization (Li & Porter 1988; Auckenthaler et al. 2000): enrollment-side cohort statistics."""

    def __init__(self) -> None:
        pass

    def __call__(self, scores: torch.Tensor, enroll: Side, test: Side, cohort: torch.Tensor | None) -> torch.Tensor:
        check("znorm", scores, enroll, test, cohort)
        return normalized(scores, enroll, cohort)


class TNorm:
    """T-norm, test normalization (Auckenthaler et al. 2000): test-side cohort statistics."""

    def __init__(self) -> None:
        pass

    def __call__(self, scores: torch.Tensor, enroll: Side, test: Side, cohort: torch.Tensor | None) -> torch.Tensor:
        check("tnorm", scores, enroll, test, cohort)
        return normalized(scores, test, cohort)


class SNorm:
    """S-norm, symmetric normalization (Kenny 2010): the mean of the z- and t-normalized scores."""

    def __init__(self) -> None:
        pass

    def __call__(self, scores: torch.Tensor, enroll: Side, test: Side, cohort: torch.Tensor | None) -> torch.Tensor:
        check("snorm", scores, enroll, test, cohort)
        return symmetric(scores, enroll, test, cohort)
