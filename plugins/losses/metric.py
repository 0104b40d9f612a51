"""Metric-learning losses over batches of ``B`` speakers with ``P >= 2`` utterances each: ``angleproto``, ``proto``,
``ge2e`` and ``triplet``. They need no class weights (neither ``embed_dim`` nor ``num_classes``).

Row ``b`` of the embeddings ``(B, P, D)`` is one speaker. The samplers put each speaker in a batch at most once;
should a label still occur twice, the other row of the same speaker is never counted as a negative. The accuracy
(a detached fraction in [0, 1]) is that of picking the right prototype / centroid among the batch's speakers.
"""

from __future__ import annotations

from typing import Annotated

import torch
import torch.nn.functional as F
from torch import nn

from vvframe import BadValue
from vvframe.core.schema import Range

from .common import Scale, check_batch, full_precision, mask_other_same_label, top1


class _MetricLoss(nn.Module):
    """Shared checking: ``P >= min_per_speaker`` and at least two speakers (a single one has no negatives)."""

    min_per_speaker: int = 2
    loss_name: str = "metric"

    def prepare(self, embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_batch(self.loss_name, embeddings, labels, self.min_per_speaker, min_speakers=2)
        return embeddings.float(), labels


class _Scaled(_MetricLoss):
    """A learnable scale ``w`` (kept positive) and offset ``b`` applied to cosine similarities."""

    def __init__(self, init_w: float, init_b: float):
        super().__init__()
        if not init_w > 0:
            raise BadValue(f"loss '{self.loss_name}': init_w must be positive, got {init_w!r}")
        self.w = nn.Parameter(torch.tensor(float(init_w)))
        self.b = nn.Parameter(torch.tensor(float(init_b)))

    def scaled(self, cos: torch.Tensor) -> torch.Tensor:
        return self.w.float().clamp(min=1e-6) * cos + self.b.float()


class AngleProto(_Scaled):
    """Angular prototypical loss: cosine to leave-one-out prototypes, learnable scale (Chung et al. 2020).

    From "In defence of metric learning for speaker recognition": per speaker, the query is its last utterance and
    the prototype the mean of the others; the ``(B, B)`` cosine matrix between queries and prototypes, scaled by
    ``w`` (clamped positive) plus ``b``, is trained with cross-entropy towards the diagonal. Accuracy: fraction of
    queries whose own prototype scores highest. (``b`` shifts every logit alike, so it cancels in the
    cross-entropy; it is kept as in the paper and voxceleb_trainer, and its checkpoints load.)
    """

    loss_name = "angleproto"

    def __init__(self, init_w: Scale = 10.0, init_b: float = -5.0):
        super().__init__(init_w, init_b)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, labels = self.prepare(embeddings, labels)
        with full_precision(x.device):
            query = F.normalize(x[:, -1], dim=1)
            prototype = F.normalize(x[:, :-1].mean(dim=1), dim=1)
            logits = mask_other_same_label(self.scaled(query @ prototype.T), labels)
            target = torch.arange(x.shape[0], device=x.device)
            return F.cross_entropy(logits, target), top1(logits, target)


class Proto(_MetricLoss):
    """Prototypical loss: negative squared Euclidean distance to leave-one-out prototypes (Snell et al. 2017).

    Per speaker, the query is its last utterance and the prototype the mean of the others; the logits are
    ``-||query_i - prototype_j||²`` and the cross-entropy targets the own prototype. Accuracy: fraction of queries
    nearest to their own prototype.
    """

    loss_name = "proto"

    def __init__(self):
        super().__init__()

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, labels = self.prepare(embeddings, labels)
        with full_precision(x.device):
            query, prototype = x[:, -1], x[:, :-1].mean(dim=1)
            squared = (
                (query * query).sum(1, keepdim=True)
                + (prototype * prototype).sum(1)[None, :]
                - 2.0 * query @ prototype.T
            )
            logits = mask_other_same_label(-squared.clamp(min=0.0), labels)
            target = torch.arange(x.shape[0], device=x.device)
            return F.cross_entropy(logits, target), top1(logits, target)


class GE2E(_Scaled):
    """Generalized end-to-end loss, softmax variant, with the exclusive own-speaker centroid (Wan et al. 2018).

    Each utterance ``e_ji`` is compared by cosine with every speaker's centroid, its own speaker's centroid
    computed without it (``(P c_j - e_ji) / (P - 1)``); ``w·cos + b`` (``w`` clamped positive) goes to a
    cross-entropy towards its own speaker, averaged over all ``B * P`` utterances. Accuracy: fraction of
    utterances closest to their own speaker's centroid. (``b``, as in the paper, cancels in the softmax
    cross-entropy.)
    """

    loss_name = "ge2e"

    def __init__(self, init_w: Scale = 10.0, init_b: float = -5.0):
        super().__init__(init_w, init_b)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, labels = self.prepare(embeddings, labels)
        B, P, _ = x.shape
        with full_precision(x.device):
            utterances = F.normalize(x, dim=2)
            total = x.sum(dim=1, keepdim=True)
            centroids = F.normalize(total[:, 0] / P, dim=1)
            exclusive = F.normalize((total - x) / (P - 1), dim=2)
            cos = torch.einsum("bpd,kd->bpk", utterances, centroids)
            own = (utterances * exclusive).sum(dim=2, keepdim=True)
            diagonal = torch.eye(B, dtype=torch.bool, device=x.device)[:, None, :]
            cos = torch.where(diagonal, own, cos).reshape(B * P, B)
            logits = mask_other_same_label(self.scaled(cos), labels)
            target = torch.arange(B, device=x.device).repeat_interleave(P)
            return F.cross_entropy(logits, target), top1(logits, target)


class Triplet(_MetricLoss):
    """Triplet loss with in-batch negative mining on L2-normalised embeddings (Schroff et al. 2015, FaceNet).

    Every ordered pair ``(a, p)`` of different utterances of one speaker is an anchor-positive pair; its loss is
    ``max(0, d(a, p) - d(a, n) + margin)`` with ``d`` the Euclidean distance between unit vectors (in [0, 2]),
    averaged over all pairs. ``hard_negatives=True``: ``n`` is the hardest negative, the other speakers' utterance
    nearest to the anchor. ``False``: semi-hard, the nearest negative farther than the positive
    (``d(a, n) > d(a, p)``), or the farthest negative when there is none. Accuracy: fraction of anchor-positive
    pairs whose positive is nearer than every negative.
    """

    loss_name = "triplet"

    def __init__(self, margin: Annotated[float, Range(0)] = 0.1, hard_negatives: bool = True):
        super().__init__()
        if not margin >= 0:
            raise BadValue(f"loss '{self.loss_name}': margin must be >= 0, got {margin!r}")
        self.margin, self.hard_negatives = float(margin), bool(hard_negatives)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, labels = self.prepare(embeddings, labels)
        B, P, D = x.shape
        with full_precision(x.device):
            unit = F.normalize(x.reshape(B * P, D), dim=1)
            distance = torch.sqrt((2.0 - 2.0 * unit @ unit.T).clamp(min=1e-12))
            speaker = labels.repeat_interleave(P)
            same = speaker[:, None] == speaker[None, :]
            positive = same & ~torch.eye(B * P, dtype=torch.bool, device=x.device)
            anchor, other = positive.nonzero(as_tuple=True)
            d_ap = distance[anchor, other]
            d_a = distance[anchor]  # (pairs, B * P)
            negative = ~same[anchor]
            inf = torch.full_like(d_a, float("inf"))
            hardest = torch.where(negative, d_a, inf).amin(dim=1)
            if self.hard_negatives:
                d_an = hardest
            else:
                farther = negative & (d_a > d_ap[:, None])
                semi_hard = torch.where(farther, d_a, inf).amin(dim=1)
                farthest = torch.where(negative, d_a, -inf).amax(dim=1)
                d_an = torch.where(farther.any(dim=1), semi_hard, farthest)
            d_an = torch.where(negative.any(dim=1), d_an, d_ap + self.margin)  # no negative at all: no loss
            loss = F.relu(d_ap - d_an + self.margin).mean()
            accuracy = (d_ap < hardest).float().mean().detach()
        return loss, accuracy
