"""Margin softmax losses on cosine scores: ``amsoftmax`` (CosFace), ``aamsoftmax`` (ArcFace) and
``subcenter_aamsoftmax`` (sub-center ArcFace with an optional inter-top-k penalty).

All three score an embedding ``x`` against L2-normalised class weights ``W_j`` by ``cos θ_j``, put a margin on the
target class ``y`` and feed ``scale * logits`` to the cross-entropy. Accuracy is the top-1 fraction of the
margin-free cosines. ``margin`` may be set at any time (the trainer schedules it); the next forward uses it.
"""

from __future__ import annotations

import math
from typing import Annotated

import torch

from vvframe import BadValue
from vvframe.core.schema import Range

from .common import AngularMargin, CosineHead, Scale, check_scale


def _check_margin(name: str, margin: float, limit: float) -> float:
    if not (isinstance(margin, (int, float)) and not isinstance(margin, bool) and 0.0 <= margin < limit):
        raise BadValue(f"loss '{name}': margin must be a number in [0, {limit:g}), got {margin!r}")
    return float(margin)


class AMSoftmax(CosineHead):
    """Additive margin softmax: logits s·(cos θ_y − m) for the target (CosFace / AM-Softmax, Wang et al. 2018).

    Non-target logits are ``s·cos θ_j``. ``margin`` is a cosine offset in [0, 2), settable at any time.
    ``weight (num_classes, D)``; ``resize_classes(num_classes, keep=None)`` rebuilds the head for another label set.
    """

    loss_name = "amsoftmax"

    def __init__(
        self, embed_dim: int, num_classes: int, margin: Annotated[float, Range(0, lt=2)] = 0.2, scale: Scale = 30.0
    ):
        super().__init__()
        self.init_head(embed_dim, num_classes)
        self.margin = margin
        self.scale = check_scale(self.loss_name, scale)

    @property
    def margin(self) -> float:
        return self._margin

    @margin.setter
    def margin(self, value: float) -> None:
        self._margin = _check_margin(self.loss_name, value, 2.0)

    def logits_from_scores(self, scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        target = torch.zeros_like(scores).scatter_(1, targets[:, None], self._margin)
        return self.scale * (scores - target)

    def extra_repr(self) -> str:
        return f"embed_dim={self.embed_dim}, num_classes={self.num_classes}, margin={self.margin}, scale={self.scale}"


class AAMSoftmax(CosineHead):
    """Additive angular margin softmax: logits s·cos(θ_y + m) for the target (ArcFace, Deng et al. 2019).

    Non-target logits are ``s·cos θ_j``. Where ``θ_y + m`` would pass π (``cos θ_y <= cos(π − m)``) the target logit
    falls back to ``s·(cos θ_y − m·sin m)``, which keeps it decreasing in ``θ_y``; with ``easy_margin`` the margin
    applies only where ``cos θ_y > 0`` and the logit is ``s·cos θ_y`` elsewhere. ``margin`` (radians, in
    [0, π/2)) is settable at any time: the setter recomputes cos m, sin m and the fallback constants.
    ``weight (num_classes, D)``; ``resize_classes(num_classes, keep=None)`` rebuilds the head for another label set.
    """

    loss_name = "aamsoftmax"

    def __init__(
        self,
        embed_dim: int,
        num_classes: int,
        margin: AngularMargin = 0.2,
        scale: Scale = 32.0,
        easy_margin: bool = False,
    ):
        super().__init__()
        self.init_head(embed_dim, num_classes)
        self.scale = check_scale(self.loss_name, scale)
        self.easy_margin = bool(easy_margin)
        self.margin = margin

    @property
    def margin(self) -> float:
        return self._margin

    @margin.setter
    def margin(self, value: float) -> None:
        m = _check_margin(self.loss_name, value, math.pi / 2)
        self._margin = m
        self.cos_m, self.sin_m = math.cos(m), math.sin(m)
        self.threshold = math.cos(math.pi - m)  # cos θ above this: θ + m stays below π
        self.fallback = math.sin(math.pi - m) * m  # m·sin m, subtracted from cos θ beyond the threshold
        self.margin_changed(m)

    def margin_changed(self, margin: float) -> None:
        """Hook for subclasses whose other constants follow the margin."""

    def angular_margin(self, cos: torch.Tensor) -> torch.Tensor:
        """``cos(θ + m)`` of cosines ``cos``, with the easy-margin or the past-π fallback."""
        sin = torch.sqrt((1.0 - cos * cos).clamp(min=1e-7))
        phi = cos * self.cos_m - sin * self.sin_m
        if self.easy_margin:
            return torch.where(cos > 0, phi, cos)
        return torch.where(cos > self.threshold, phi, cos - self.fallback)

    def logits_from_scores(self, scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self._margin == 0.0:
            return self.scale * scores
        cos_y = scores.gather(1, targets[:, None])
        return self.scale * scores.scatter(1, targets[:, None], self.angular_margin(cos_y))

    def extra_repr(self) -> str:
        return (
            f"embed_dim={self.embed_dim}, num_classes={self.num_classes}, margin={self.margin}, "
            f"scale={self.scale}, easy_margin={self.easy_margin}"
        )


class SubcenterAAMSoftmax(AAMSoftmax):
    """Sub-center additive angular margin softmax with optional inter-top-k penalty (Deng et al. 2020; WeSpeaker).

    Each class has ``K`` sub-center weights; its cosine is the largest over them (so noisy utterances can gather
    around a non-dominant sub-center), then ArcFace as in ``aamsoftmax``. ``weight`` is ``(num_classes * K, D)``,
    class-major (rows ``c*K .. c*K + K - 1`` belong to class ``c``); ``resize_classes`` keeps whole classes.

    Inter-top-k (``inter_topk > 0``): for each utterance the ``inter_topk`` non-target classes of largest cosine
    get logit ``s·cos(θ_j − m')`` instead of ``s·cos θ_j`` (their angle shrunk by ``m'``, so they push harder;
    ``s`` when ``θ_j < m'``). ``m'`` is ``inter_margin`` at the configured ``margin`` and follows the margin in
    proportion when the trainer schedules it (``m' = inter_margin · margin / configured margin``; a configured
    margin of 0 keeps ``m' = inter_margin``).
    """

    loss_name = "subcenter_aamsoftmax"

    def __init__(
        self,
        embed_dim: int,
        num_classes: int,
        margin: AngularMargin = 0.2,
        scale: Scale = 32.0,
        easy_margin: bool = False,
        K: Annotated[int, Range(1, 1024)] = 3,
        inter_topk: Annotated[int, Range(0)] = 0,
        inter_margin: AngularMargin = 0.06,
    ):
        if isinstance(K, bool) or not isinstance(K, int) or K < 1:
            raise BadValue(f"loss '{self.loss_name}': K (sub-centers per class) must be a positive integer, got {K!r}")
        if isinstance(inter_topk, bool) or not isinstance(inter_topk, int) or inter_topk < 0:
            raise BadValue(f"loss '{self.loss_name}': inter_topk must be an integer >= 0, got {inter_topk!r}")
        self.rows_per_class = K
        self.K, self.inter_topk = K, inter_topk
        self.configured_margin = _check_margin(self.loss_name, margin, math.pi / 2)
        self.inter_margin = _check_margin(self.loss_name, inter_margin, math.pi / 2)
        super().__init__(embed_dim, num_classes, margin, scale, easy_margin)

    def margin_changed(self, margin: float) -> None:
        if "configured_margin" not in self.__dict__:
            return
        ratio = margin / self.configured_margin if self.configured_margin > 0 else 1.0
        self.inter_margin_now = self.inter_margin * ratio

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        cos = self.cosines(x)
        return cos.view(cos.shape[0], self.num_classes, self.K).amax(dim=2)

    def logits_from_scores(self, scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        k = min(self.inter_topk, self.num_classes - 1)
        mp = self.inter_margin_now
        if k == 0 or mp == 0.0:
            return super().logits_from_scores(scores, targets)
        others = scores.scatter(1, targets[:, None], float("-inf"))
        top_cos, top_idx = others.topk(k, dim=1)
        sin = torch.sqrt((1.0 - top_cos * top_cos).clamp(min=1e-7))
        closer = torch.where(
            top_cos < math.cos(mp), top_cos * math.cos(mp) + sin * math.sin(mp), torch.ones_like(top_cos)
        )
        penalised = scores.scatter(1, top_idx, closer)
        cos_y = scores.gather(1, targets[:, None])
        return self.scale * penalised.scatter(1, targets[:, None], self.angular_margin(cos_y))

    def extra_repr(self) -> str:
        return super().extra_repr() + f", K={self.K}, inter_topk={self.inter_topk}, inter_margin={self.inter_margin}"
