"""One rank's training: the epoch loop over the assembled parts, with its checkpoints, validation and reports.

Each epoch trains batch by batch (``steps``; the margin schedule set before each), saves ``last.pt`` on the way
when ``trainer.save_every_minutes`` asks, then validates when due (``best.pt``; early stopping) and saves
``epoch_N.pt`` and ``last.pt``. A finished run goes on only when ``trainer.epochs`` asks for more epochs.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import torch

from vvframe.training import checkpoint as ckpt
from vvframe.training.launch import Dist
from vvframe_plugins.stages.assembly import Job, assemble
from vvframe_plugins.stages.checkpoints import Checkpoints, Progress
from vvframe_plugins.stages.steps import Steps
from vvframe_plugins.stages.trainlog import EpochMeter, TrainLog
from vvframe_plugins.stages.validation import Validation, validate

log = logging.getLogger(__name__)


class Trainer:
    """One rank's training loop; ``job.ctx`` is this rank's run context (its writer and progress bars)."""

    def __init__(self, dist: Dist, job: Job):
        self.dist, self.job, self.cfg, ctx = dist, job, job.trainer, job.ctx
        self.parts = assemble(dist, job)
        self.progress = Progress()
        self.out = TrainLog(ctx, self.cfg.epochs, self.cfg.log_every)
        self.steps = Steps(self.parts, self.cfg, self.progress, dist, ctx.seed, self.out)
        self.checkpoints = Checkpoints(
            ctx.run_dir / ckpt.FOLDER,
            dist,
            self.parts,
            self.progress,
            self.cfg,
            ctx.recipe,
            job.scheduler.name if job.scheduler else None,
        )
        if ctx.resumed:
            self.checkpoints.restore()

    # shortcuts to what a step works with (the tests look at them)
    @property
    def params(self) -> list[torch.nn.Parameter]:
        """The parameters the optimizer steps."""
        return self.parts.params

    @property
    def scaler(self) -> torch.amp.GradScaler:
        """fp16's gradient scaler (disabled at other precisions)."""
        return self.parts.scaler

    @property
    def precision(self) -> str:
        """``trainer.precision``, ``auto`` decided."""
        return self.parts.precision

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """The dtype the forward runs in under autocast; None at fp32."""
        return self.parts.autocast_dtype

    @property
    def iteration(self) -> int:
        """Optimizer steps taken in the run."""
        return self.progress.iteration

    @property
    def skipped(self) -> int:
        """Non-finite steps skipped in the run."""
        return self.progress.skipped

    @property
    def bad_in_row(self) -> int:
        """Non-finite steps skipped in a row (``trainer.max_bad_steps``)."""
        return self.steps.in_row

    def train_batch(self, waves: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor) -> tuple[float, Any]:
        """One batch (see :class:`Steps`): ``(loss, accuracy or None)``."""
        return self.steps(waves, labels, indices)

    # --- the loop -------------------------------------------------------------------------------------

    def fit(self) -> None:
        """Train the epochs ``trainer.epochs`` asks for that the run has not trained yet."""
        p, cfg = self.progress, self.cfg
        if p.finished and not self.extend():
            return
        if p.epoch > cfg.epochs:
            log.info(
                "train: %d epochs trained already, %d asked (trainer.epochs): the run ends at epoch %d",
                p.epoch,
                cfg.epochs,
                p.epoch,
            )
        last_save = time.monotonic()
        while p.epoch < cfg.epochs:
            last_save = self.run_epoch(last_save)
            p.epoch += 1
            p.batch_in_epoch = 0
            due = self.job.data.val_trials and (p.epoch % cfg.val_every == 0 or p.epoch == cfg.epochs)
            stop = self.validate() if due else False
            self.checkpoints.save(ckpt.epoch_name(p.epoch), ckpt.LAST)
            last_save = time.monotonic()
            if stop:
                log.info("early stop: no better validation EER for %d validations", p.bad_validations)
                p.stopped_early = True
                break
        if cfg.average_last and self.dist.is_main:
            self.checkpoints.average(self.evaluate if self.job.data.val_trials else None)
        p.finished = True
        self.checkpoints.save(ckpt.LAST)
        self.dist.barrier()

    def extend(self) -> bool:
        """For a finished run: whether trainer.epochs (or a raised early_stop_patience) asks for more epochs; says
        what it found either way."""
        p = self.progress
        done, asked, patience = p.epoch, self.cfg.epochs, self.cfg.early_stop_patience
        epochs = f"{done} epoch{'s' if done != 1 else ''} trained, {asked} asked (trainer.epochs)"
        if p.stopped_early and patience and p.bad_validations >= patience:
            log.info(
                "train: this run stopped early: %s, and no better validation EER for %d validations"
                " (trainer.early_stop_patience %d); nothing to do (raise trainer.early_stop_patience, or set it"
                " to null, to train on)",
                epochs,
                p.bad_validations,
                patience,
            )
            return False
        if done >= asked:
            log.info(
                "train: this run finished already: %s; nothing to do%s",
                epochs,
                " (raise trainer.epochs to train on)" if done == asked else "",
            )
            return False
        log.info(
            "train: extending the finished run from %d to %d epochs (trainer.epochs), from its last checkpoint",
            done,
            asked,
        )
        p.finished = p.stopped_early = False
        return True

    def run_epoch(self, last_save: float) -> float:
        """Train the rest of the current epoch; returns when ``last.pt`` was last saved (``time.monotonic()``)."""
        p, cfg, parts = self.progress, self.cfg, self.parts
        loader = parts.loader(p.epoch, p.batch_in_epoch, cfg.workers, self.dist.device)
        parts.net.train()
        self.steps.start_epoch()
        meter = EpochMeter(self.dist.world_size)
        with self.out.bar(p.epoch, p.batch_in_epoch, len(parts.sampler)) as bar:
            for waves, labels, indices in meter.timed(loader):
                if cfg.margin_schedule is not None:
                    parts.inner.set_margin(cfg.margin_schedule.value(p.iteration, parts.steps_per_epoch))
                meter.last_loss, acc = self.steps(waves, labels, indices)
                p.batch_in_epoch += 1
                meter.seen += waves.shape[0]
                bar.update(1)
                bar.set_postfix(loss=f"{meter.last_loss:.3f}", acc=f"{float(acc):.3f}" if acc is not None else "-")
                lr = parts.optimizer.param_groups[0]["lr"]
                self.out.batch(p.iteration, meter, acc, lr, parts.inner.margin())
                if cfg.save_every_minutes and time.monotonic() - last_save > 60 * cfg.save_every_minutes:
                    self.checkpoints.save(ckpt.LAST)
                    last_save = time.monotonic()
        self.out.epoch_done(p.epoch, meter, self.steps.in_epoch)
        return last_save

    # --- validation -----------------------------------------------------------------------------------

    def evaluate(self) -> Validation:
        """Validate the network as it is now (on this rank), its score histograms reported."""
        result = validate(self.parts.inner, self.job.data, self.dist.device)
        self.out.scores(result, self.progress.epoch)
        return result

    def validate(self) -> bool:
        """Validation EER on rank 0 (the others wait); saves best.pt; True when early stopping says stop."""
        p, value = self.progress, None
        if self.dist.is_main:
            result = self.evaluate()
            value = result.eer
            self.out.validation(result, p.epoch)
            if value < p.best_eer:
                p.best_eer, p.bad_validations = value, 0
                self.checkpoints.save(ckpt.BEST)
            else:
                p.bad_validations += 1
        value = self.dist.broadcast_object(value)
        scheduler = self.parts.scheduler
        if scheduler is not None and hasattr(scheduler, "report"):
            scheduler.report(value)
        patience = self.cfg.early_stop_patience
        return bool(patience) and self.dist.broadcast_object(p.bad_validations) >= patience
