"""A classification loss plus the angular prototypical loss, summed (voxceleb_trainer's ``softmaxproto``):
``softmaxproto`` and ``aamsoftmaxproto``.

The classifier sees every utterance of the ``(B, P, D)`` batch, the prototypical part the speakers' groups; the
loss is their sum and the accuracy the classifier's top-1 fraction. ``weight``, ``num_classes`` and
``resize_classes`` are the classifier's (sub-module ``classifier``, its state-dict keys ``classifier.*``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .common import AngularMargin, ClassHead, Scale, check_batch
from .margin import AAMSoftmax
from .metric import AngleProto
from .softmax import Softmax


class _ClassifierPlusProto(nn.Module):
    min_per_speaker: int = 2
    loss_name: str = "combined"
    classifier: ClassHead
    proto: AngleProto

    @property
    def weight(self) -> nn.Parameter:
        """The classifier's class weights ``(num_classes, D)``."""
        return self.classifier.weight

    @property
    def num_classes(self) -> int:
        return self.classifier.num_classes

    @property
    def embed_dim(self) -> int:
        return self.classifier.embed_dim

    def resize_classes(self, num_classes: int, keep: Sequence[int] | None = None) -> _ClassifierPlusProto:
        """The classifier's ``resize_classes`` (see there); returns this loss."""
        self.classifier.resize_classes(num_classes, keep)
        return self

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_batch(self.loss_name, embeddings, labels, self.min_per_speaker, self.embed_dim, min_speakers=2)
        classification, accuracy = self.classifier(embeddings, labels)
        prototypical, _ = self.proto(embeddings, labels)
        return classification + prototypical, accuracy


class SoftmaxProto(_ClassifierPlusProto):
    """Softmax plus angular prototypical loss, summed (voxceleb_trainer; Chung et al. 2020, "In defence of metric learning").

    ``softmax`` over every utterance plus ``angleproto`` (learnable ``w``, ``b`` from ``init_w``, ``init_b``) over
    the speakers; needs 2 utterances per speaker. Accuracy: the softmax's top-1 fraction.
    """

    loss_name = "softmaxproto"

    def __init__(self, embed_dim: int, num_classes: int, init_w: Scale = 10.0, init_b: float = -5.0):
        super().__init__()
        self.classifier = Softmax(embed_dim, num_classes)
        self.proto = AngleProto(init_w, init_b)


class AAMSoftmaxProto(_ClassifierPlusProto):
    """Additive angular margin softmax plus angular prototypical loss, summed (ArcFace, Deng et al. 2019 + Chung et al. 2020).

    ``aamsoftmax`` (``margin``, ``scale``, ``easy_margin``) over every utterance plus ``angleproto`` (``init_w``,
    ``init_b``) over the speakers; needs 2 utterances per speaker. ``margin`` reads and sets the classifier's
    (settable at any time, for margin schedules). Accuracy: the classifier's top-1 fraction.
    """

    loss_name = "aamsoftmaxproto"

    def __init__(
        self,
        embed_dim: int,
        num_classes: int,
        margin: AngularMargin = 0.2,
        scale: Scale = 32.0,
        easy_margin: bool = False,
        init_w: Scale = 10.0,
        init_b: float = -5.0,
    ):
        super().__init__()
        self.classifier = AAMSoftmax(embed_dim, num_classes, margin, scale, easy_margin)
        self.proto = AngleProto(init_w, init_b)

    @property
    def margin(self) -> float:
        return self.classifier.margin

    @margin.setter
    def margin(self, value: float) -> None:
        self.classifier.margin = value
