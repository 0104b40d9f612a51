"""One batch of training: forward and backward, and the optimizer step that ends an accumulation window.

A batch whose loss is not finite leaves no trace (its forward's buffer updates, BatchNorm statistics among them,
are undone; no backward); a step whose gradients are not finite is skipped with its window's buffer updates
undone, so the model and the optimizer stay exactly as they were. ``trainer.max_bad_steps`` of them in a row stop
the run with a ``TrainingError`` naming the last batch's files.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from vvframe.data.dataset import PendingWaves
from vvframe.training.launch import Dist
from vvframe_plugins.stages.assembly import Parts, TrainingError
from vvframe_plugins.stages.checkpoints import Progress
from vvframe_plugins.stages.settings import TrainerSettings
from vvframe_plugins.stages.trainlog import TrainLog

log = logging.getLogger(__name__)

SHOWN_FILES = 20  # files of the last batch that a TrainingError names


class Steps:
    """Trains on one batch at a time (see the module's docstring); counts what it skips."""

    def __init__(self, parts: Parts, cfg: TrainerSettings, progress: Progress, dist: Dist, seed: int, out: TrainLog):
        self.parts, self.cfg, self.progress, self.dist, self.seed, self.out = parts, cfg, progress, dist, seed, out
        self.in_epoch = 0  # steps skipped in this epoch
        self.in_row = 0  # in a row (trainer.max_bad_steps)
        self.kinds: set[str] = set()  # of what the row is made: "loss", "gradients"
        self.window: list[torch.Tensor] | None = None  # the buffers as the current optimizer step found them
        self.pending = False  # gradients of a finite loss wait for the optimizer step

    def start_epoch(self) -> None:
        """Begin an epoch: gradients of a part-filled accumulation window of the last one are not carried over."""
        self.parts.optimizer.zero_grad(set_to_none=True)
        self.window, self.pending, self.in_epoch = None, False, 0

    def __call__(
        self, waves: torch.Tensor | PendingWaves, labels: torch.Tensor, indices: torch.Tensor
    ) -> tuple[float, Any]:
        """Forward and backward one batch, and the optimizer step when it ends an accumulation window: (loss, acc)."""
        parts, cfg, dist, batch = self.parts, self.cfg, self.dist, self.progress.batch_in_epoch
        buffers = list(parts.inner.buffers())
        before = [b.clone() for b in buffers]  # a few vectors per BatchNorm layer: cheap beside the forward
        if self.window is None or batch % cfg.accumulate == 0:
            self.window = before
        # augmentors with `on: device` run here, on the batch moved to the device (a plain batch passes as it is)
        waves = parts.corpus.collate.apply_on_device(waves.to(dist.device, non_blocking=True))
        labels = labels.to(dist.device, non_blocking=True)
        seed = self.batch_seed()
        torch.manual_seed(seed)
        dtype = parts.autocast_dtype
        with torch.autocast(dist.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss, acc = parts.net(waves, labels, seed)
        value = loss.item()
        finite = torch.isfinite(loss.detach())
        if dist.world_size > 1:
            finite = dist.all_reduce_mean(finite.float()) == 1
        if not bool(finite):
            _restore(buffers, before)
            self.skip("loss", indices)
        else:
            parts.scaler.scale(loss / cfg.accumulate).backward()
            self.pending = True
        if self.pending and (batch + 1) % cfg.accumulate == 0:
            self.step(indices)
        return value, acc

    def batch_seed(self) -> int:
        """The seed of the randomness on the device (dither, specaug, dropout) for the current batch: from its place
        in the global order, so DDP ranks, gradient accumulation and a resumed run draw alike for the same batch."""
        p, dist = self.progress, self.dist
        return hash((self.seed, p.epoch, p.batch_in_epoch * dist.world_size + dist.rank)) & 0x7FFF_FFFF

    def step(self, indices: torch.Tensor) -> None:
        """The optimizer step, or, when the gradients are not finite, none (see the module's docstring)."""
        parts, scaler, optimizer = self.parts, self.parts.scaler, self.parts.optimizer
        self.pending = False
        scaler.unscale_(optimizer)  # a no-op without fp16's scaler
        norm = nn.utils.get_total_norm([p.grad for p in parts.params if p.grad is not None])
        if not bool(torch.isfinite(norm)):  # DDP has averaged the gradients: every rank decides alike
            # fp16's scaler skips steps while it finds its scale (from 65536 down): those are not trouble until
            # the gradients overflow even unscaled (scale below 1)
            overflow = scaler.is_enabled() and scaler.get_scale() >= 1.0
            if scaler.is_enabled():
                scaler.update()  # the scaler saw the inf too: it lowers its scale
            optimizer.zero_grad(set_to_none=True)
            _restore(list(parts.inner.buffers()), self.window)
            self.skip("gradients", indices, in_row=not overflow)
            return
        if self.cfg.grad_clip:
            nn.utils.clip_grads_with_norm_(parts.params, self.cfg.grad_clip, norm)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        if parts.scheduler is not None:
            parts.scheduler.step()
        self.progress.iteration += 1
        self.in_row, self.kinds = 0, set()

    def skip(self, kind: str, indices: torch.Tensor, in_row: bool = True) -> None:
        """Count and log a skipped step; a TrainingError naming the batch's files after max_bad_steps in a row
        (an fp16 overflow, ``in_row=False``, is counted and logged but does not join the row)."""
        p, scaler = self.progress, self.parts.scaler
        self.in_row += 1 if in_row else 0
        p.skipped += 1
        self.in_epoch += 1
        self.kinds.add(kind)
        scale = f", fp16 loss scale now {scaler.get_scale():g}" if kind == "gradients" and scaler.is_enabled() else ""
        log.log(
            logging.WARNING if in_row else logging.INFO,
            "non-finite %s at epoch %d batch %d: step skipped, the"
            " model left as it was (%d in a row, %d in this run%s)",
            kind,
            p.epoch + 1,
            p.batch_in_epoch,
            self.in_row,
            p.skipped,
            scale,
        )
        self.out.skipped(p.skipped, p.iteration)
        if self.in_row >= self.cfg.max_bad_steps:
            what = "losses" if self.kinds == {"loss"} else "losses or gradients"
            files = [self.parts.corpus.utterances[i].path for i in indices.tolist()]
            more = len(files) - SHOWN_FILES
            raise TrainingError(
                f"{self.in_row} non-finite {what} in a row (trainer.max_bad_steps); the last"
                f" batch's files: {', '.join(files[:SHOWN_FILES])}" + (f" and {more} more" if more > 0 else "")
            )


def _restore(buffers: list[torch.Tensor], saved: list[torch.Tensor]) -> None:
    """Copy ``saved`` back into ``buffers`` (the module's buffers, in the order ``buffers()`` gives them)."""
    with torch.no_grad():
        for buffer, value in zip(buffers, saved):
            buffer.copy_(value)
