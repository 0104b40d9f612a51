"""What the losses share: checking a batch, float32 computation, top-1 accuracy, and the class-weight head.

Conventions of every first-party loss:

* ``forward(embeddings (B, P, D), labels (B,))`` returns ``(loss, accuracy)``; ``loss`` is a 0-dim tensor,
  ``accuracy`` a detached 0-dim float tensor holding a **fraction in [0, 1]** (``float(acc)`` to log it; no
  host-device sync happens inside the loss) or ``None``.
* Classification losses flatten the batch to ``(B * P, D)`` and repeat each label ``P`` times.
* The arithmetic runs in float32 with autocast switched off, so margins and cosines keep their precision under
  mixed-precision training.
* A classification head keeps its class weights in the ``nn.Parameter`` ``weight`` (``rows_per_class`` rows per
  class, class-major) and can be rebuilt for another label set with ``resize_classes``; loading a state dict whose
  head has another number of classes fails with an error that says so.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from typing import Annotated

import torch
import torch.nn.functional as F
from torch import nn

from vvframe import BadValue
from vvframe.core.schema import Range

# what the losses' signatures accept (checked by `vvframe check`, before anything is built)
Scale = Annotated[float, Range(gt=0)]  # a logit scale, or the initial one of a learnt scale
AngularMargin = Annotated[float, Range(0, lt=math.pi / 2)]  # radians


def check_batch(
    name: str,
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    min_per_speaker: int,
    embed_dim: int | None = None,
    min_speakers: int = 1,
) -> tuple[int, int, int]:
    """``(B, P, D)`` of a valid batch; a ``BadValue`` naming loss ``name`` and what it needs otherwise.

    Labels are range-checked only where that costs nothing (on the CPU); elsewhere CUDA's own check applies.
    """
    if embeddings.dim() != 3:
        raise BadValue(
            f"loss '{name}' takes embeddings shaped (B, P, D) (speakers, utterances per speaker, "
            f"embedding size), got shape {tuple(embeddings.shape)}"
        )
    B, P, D = embeddings.shape
    if labels.shape != (B,):
        raise BadValue(
            f"loss '{name}' takes one label per row of embeddings (B,) = ({B},), "
            f"got labels of shape {tuple(labels.shape)}"
        )
    if P < min_per_speaker:
        raise BadValue(
            f"loss '{name}' needs at least {min_per_speaker} utterances per speaker in a batch "
            f"(embeddings (B, P, D) with P >= {min_per_speaker}), got P = {P}; "
            f"give the sampler at least {min_per_speaker} utterances per speaker"
        )
    if B < min_speakers:
        raise BadValue(f"loss '{name}' needs at least {min_speakers} speakers in a batch, got B = {B}")
    if embed_dim is not None and D != embed_dim:
        raise BadValue(f"loss '{name}' was built for embed_dim = {embed_dim}, got embeddings of size D = {D}")
    return B, P, D


def check_labels(name: str, labels: torch.Tensor, num_classes: int) -> None:
    """Labels within ``[0, num_classes)`` when they are on the CPU (a check without a device sync)."""
    if labels.device.type == "cpu" and labels.numel():
        low, high = int(labels.min()), int(labels.max())
        if low < 0 or high >= num_classes:
            raise BadValue(
                f"loss '{name}' has {num_classes} classes (labels 0 .. {num_classes - 1}), "
                f"got labels from {low} to {high}"
            )


@contextlib.contextmanager
def full_precision(device: torch.device) -> Iterator[None]:
    """Switch autocast off on ``device`` (where autocast knows the device type)."""
    try:
        context = torch.autocast(device_type=device.type, enabled=False)
    except RuntimeError:  # a device type autocast does not know: nothing to switch off
        context = contextlib.nullcontext()
    with context:
        yield


def top1(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The fraction of rows whose largest score is the target's, detached."""
    with torch.no_grad():
        return (scores.argmax(dim=1) == targets).float().mean()


def mask_other_same_label(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``logits (R, B)`` whose column ``j`` is the prototype of batch row ``j``, row ``r`` belonging to batch row
    ``r // (R // B)``: columns of *other* rows with the same label are removed (``-inf``), so a speaker drawn twice
    into a batch is never its own negative."""
    B = labels.shape[0]
    per_row = logits.shape[0] // B
    same = labels[:, None] == labels[None, :]
    same &= ~torch.eye(B, dtype=torch.bool, device=labels.device)
    return logits.masked_fill(same.repeat_interleave(per_row, dim=0), float("-inf"))


class ClassHead(nn.Module):
    """Base of the classification losses: ``weight`` of ``num_classes * rows_per_class`` rows (class-major),
    optionally ``bias`` with one entry per row, ``resize_classes``, and a clear error when a state dict's head
    has another number of classes.

    A subclass calls ``init_head`` from its ``__init__``, defines ``fresh_rows`` (freshly initialised values of
    its per-class parameters for a given number of classes), ``scores`` and, for a margin, ``logits_from_scores``.
    """

    min_per_speaker: int = 1
    loss_name: str = "classification"
    rows_per_class: int = 1

    def init_head(self, embed_dim: int, num_classes: int, bias: bool = False) -> None:
        """Check the sizes and create ``weight`` (and ``bias``) with ``fresh_rows``."""
        for what, value in (("embed_dim", embed_dim), ("num_classes", num_classes)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise BadValue(f"loss '{self.loss_name}' needs a positive integer {what}, got {value!r}")
        self.embed_dim, self.num_classes = embed_dim, num_classes
        fresh = self.fresh_rows(num_classes, torch.device("cpu"), torch.float32)
        self.weight = nn.Parameter(fresh["weight"])
        self.register_parameter("bias", nn.Parameter(fresh["bias"]) if bias else None)

    def fresh_rows(self, num_classes: int, device: torch.device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        """Freshly initialised ``weight`` (and ``bias``) for ``num_classes`` classes."""
        raise NotImplementedError

    def class_parameters(self) -> list[str]:
        """Names of the per-class parameters (their first dimension is ``num_classes * rows_per_class``)."""
        return ["weight"] + (["bias"] if getattr(self, "bias", None) is not None else [])

    def resize_classes(self, num_classes: int, keep: Sequence[int] | None = None) -> ClassHead:
        """Rebuild the head for ``num_classes`` classes, to fine-tune a checkpoint on another label set.

        New class ``i`` for ``i < len(keep)`` takes the rows of old class ``keep[i]``; the other new classes are
        initialised afresh. ``keep=None`` keeps old classes ``0 .. min(old, new) - 1`` in place (growing appends
        fresh classes, shrinking drops the last ones). The parameters are replaced, so build the optimizer after
        resizing. Returns the head. A ``BadValue`` for a request that cannot be met: ``num_classes < 1``, more
        kept classes than new ones, a kept class that does not exist, or a class kept twice.
        """
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise BadValue(f"resize_classes: num_classes must be a positive integer, got {num_classes!r}")
        old = self.num_classes
        kept = list(range(min(old, num_classes))) if keep is None else [int(k) for k in keep]
        if len(kept) > num_classes:
            raise BadValue(f"resize_classes: cannot keep {len(kept)} classes in a head of {num_classes}")
        missing = [k for k in kept if not 0 <= k < old]
        if missing:
            raise BadValue(f"resize_classes: the head has classes 0 .. {old - 1}; cannot keep {missing}")
        if len(set(kept)) != len(kept):
            twice = sorted({k for k in kept if kept.count(k) > 1})
            raise BadValue(f"resize_classes: classes {twice} are kept more than once")
        fresh = self.fresh_rows(num_classes, self.weight.device, self.weight.dtype)
        index = torch.tensor(kept, dtype=torch.long, device=self.weight.device)
        R = self.rows_per_class
        with torch.no_grad():
            for name in self.class_parameters():
                current = getattr(self, name)
                new = fresh[name]
                rows = current.reshape(old, R, *current.shape[1:]).index_select(0, index)
                new.view(num_classes, R, *new.shape[1:])[: len(kept)] = rows
                setattr(self, name, nn.Parameter(new, requires_grad=current.requires_grad))
        self.num_classes = num_classes
        return self

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):  # noqa: D401 - torch's hook
        key = prefix + "weight"
        if key in state_dict and tuple(state_dict[key].shape) != tuple(self.weight.shape):
            shape = tuple(state_dict[key].shape)
            theirs = shape[0] / self.rows_per_class
            theirs_text = str(int(theirs)) if theirs == int(theirs) else f"{theirs:g}"
            error_msgs.append(
                f"loss '{self.loss_name}': {key} in the checkpoint has shape {shape} ({theirs_text} classes of size "
                f"{shape[1] if len(shape) > 1 else '?'}) but this head has {tuple(self.weight.shape)} "
                f"({self.num_classes} classes of size {self.embed_dim}); the checkpoint was trained on another label "
                f"set: load it into a head of its size, then call resize_classes(num_classes, keep=...) to fine-tune"
            )
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores ``(N, num_classes)`` of flat embeddings ``(N, D)`` without any margin."""
        raise NotImplementedError

    def logits(self, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """What the cross-entropy sees for flat embeddings ``(N, D)`` with ``targets (N,)``: the scores with the
        margin applied to the target class (and, for some losses, to hard non-targets)."""
        return self.logits_from_scores(self.scores(x.float()), targets.long())

    def flatten(self, embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Checked ``(B * P, D)`` float32 embeddings and their labels repeated ``P`` times."""
        B, P, D = check_batch(self.loss_name, embeddings, labels, self.min_per_speaker, self.embed_dim)
        check_labels(self.loss_name, labels, self.num_classes)
        return embeddings.reshape(B * P, D).float(), labels.long().repeat_interleave(P)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-entropy over the margin logits and top-1 accuracy (fraction) of the margin-free scores."""
        x, y = self.flatten(embeddings, labels)
        with full_precision(x.device):
            scores = self.scores(x)
            loss = F.cross_entropy(self.logits_from_scores(scores, y), y)
        return loss, top1(scores, y)

    def logits_from_scores(self, scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The logits given margin-free ``scores``; the identity unless a margin is applied."""
        return scores


class CosineHead(ClassHead):
    """A head scoring by the cosine between the embedding and each class weight (Xavier-normal initialised)."""

    def fresh_rows(self, num_classes: int, device: torch.device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        weight = torch.empty(num_classes * self.rows_per_class, self.embed_dim, device=device, dtype=dtype)
        nn.init.xavier_normal_(weight, gain=1.0)
        return {"weight": weight}

    def cosines(self, x: torch.Tensor) -> torch.Tensor:
        """Cosines ``(N, num_classes * rows_per_class)`` between ``x (N, D)`` and every row of ``weight``."""
        return F.linear(F.normalize(x, dim=1), F.normalize(self.weight.float(), dim=1)).clamp(-1.0, 1.0)

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        return self.cosines(x)


def check_scale(name: str, scale: float) -> float:
    """``scale`` as a positive finite float, or a ``BadValue``."""
    if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
        raise BadValue(f"loss '{name}': scale must be a positive number, got {scale!r}")
    return float(scale)
