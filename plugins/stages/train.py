"""``train``: speaker-embedding training under a launcher (single device, DataParallel, DDP).

Batches come from the sampler; crops are read and waveform augmentors applied in the loader workers; the
frontend, feature augmentors (``specaug``), model and loss run on the device. Checkpoints go to
``checkpoints/`` (``last.pt`` each epoch, ``epoch_N.pt`` for the last ``keep``, ``best.pt`` by validation EER,
``avg.pt`` when averaging); ``--resume`` continues exactly where ``last.pt`` left off, and a finished run resumed
with a larger ``trainer.epochs`` trains the added epochs (its scheduler rebuilt for the new length). A batch with a
non-finite loss, or a step with non-finite gradients, is skipped leaving the model, its buffers and the optimizer
exactly as they were.
"""

from __future__ import annotations

import logging
import math
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from vvframe import Component, RunContext, VvframeError
from vvframe.core.atomic import atomic_path
from vvframe.core.run import latest_run
from vvframe.data.audio import read, utterance_info
from vvframe.data.dataset import AugmentingCollate, CropDataset
from vvframe.data.lists import ListError, check_files, read_trials, read_utterances, speaker_labels, trial_files
from vvframe.scoring.metrics import eer, min_dcf
from vvframe.training import checkpoint as ckpt
from vvframe.training.launch import (
    Dist,
    auto_precision,
    keep_freed_memory,
    launch,
    setup_rank_logging,
    unwrap,
    wrap_model,
)
from vvframe_plugins.stages.settings import DataSettings, TrainerSettings

log = logging.getLogger(__name__)


class TrainingError(VvframeError, RuntimeError):
    """Training cannot go on: too many non-finite losses in a row, nothing to train on, ..."""


class Net(nn.Module):
    """Frontend, feature augmentors, model and loss as one module, so DDP synchronises the loss's head too."""

    def __init__(
        self, frontend: nn.Module, model: nn.Module, loss: nn.Module, feature_augmentors: Sequence, per_speaker: int
    ):
        super().__init__()
        self.frontend, self.model, self.loss = frontend, model, loss
        self.feature_augmentors = list(feature_augmentors)
        self.per_speaker = per_speaker

    def forward(self, waves: torch.Tensor, labels: torch.Tensor, seed: int):
        with torch.autocast(waves.device.type, enabled=False):
            feats = self.frontend(waves.float())
        if self.feature_augmentors:
            gen = torch.Generator().manual_seed(seed)
            for aug in self.feature_augmentors:
                feats = aug(feats, gen)
        emb = self.model(feats)
        p = self.per_speaker
        emb = emb.reshape(emb.shape[0] // p, p, -1)
        return self.loss(emb.float(), labels[::p])


@dataclass
class Job:
    """Everything a rank needs to train, picklable for spawned processes."""

    run_dir: Path
    recipe: dict
    seed: int
    resumed: bool
    data: DataSettings
    trainer: TrainerSettings
    frontend: Component
    model: Component
    loss: Component
    optimizer: Component
    sampler: Component | None
    scheduler: Component | None
    augment: list = field(default_factory=list)


def train(
    ctx: RunContext,
    data: DataSettings,
    trainer: TrainerSettings,
    frontend: Component,
    model: Component,
    loss: Component,
    optimizer: Component,
    sampler: Component | None = None,
    scheduler: Component | None = None,
    augment: list[Component] = (),
):
    """Train a speaker-embedding model; validation EER picks ``best.pt``."""
    if not data.train_list:
        raise TrainingError("data.train_list is not set: the train stage needs a list of <speaker> <path> lines")
    utterances = read_utterances(data.train_list)
    check_files([u.path for u in utterances], data.root, data.train_list)
    if data.val_trials:
        check_validation_trials(data.val_trials, data.root)
    if trainer.batch_size % (trainer.nproc if trainer.launcher == "ddp" else 1):
        raise TrainingError(
            f"trainer.batch_size {trainer.batch_size} does not divide among {trainer.nproc} DDP processes"
        )
    job = Job(
        ctx.run_dir,
        ctx.recipe,
        ctx.seed,
        ctx.resumed,
        data,
        trainer,
        frontend,
        model,
        loss,
        optimizer,
        sampler,
        scheduler,
        list(augment),
    )

    def run() -> None:
        ctx.close()  # the ranks write TensorBoard events themselves
        launch(_train_rank, (job,), trainer.launcher, trainer.device, trainer.nproc)

    return run


def check_validation_trials(path: str, root: str) -> None:
    """A ``ListError`` before any training if ``data.val_trials`` is malformed, names missing audio, or lacks target
    or non-target trials (the validation EER needs both)."""
    trials = read_trials(path, labelled=True)
    check_files(trial_files(trials), root, path)
    for name in trial_files(trials):  # one minimum duration everywhere: a too-short file is named before training
        utterance_info(Path(root) / name)
    labels = {t.label for t in trials}
    lacking = [what for label, what in ((1, "target (label 1)"), (0, "non-target (label 0)")) if label not in labels]
    if lacking:
        raise ListError(
            f"data.val_trials {path}: no {' and no '.join(lacking)} trial among its {len(trials)}"
            f" trial{'s' if len(trials) != 1 else ''}; the validation EER needs both: add the missing"
            " kind (`vvframe data trials` makes balanced ones), or set data.val_trials=null"
        )


def _train_rank(dist: Dist, job: Job) -> None:
    if dist.world_size > 1:  # a spawned or torchrun rank: rank 0 logs to the run's log.txt, the others warn only
        setup_rank_logging(dist, Path(job.run_dir) / "log.txt")
    Trainer(dist, job).fit()


class Trainer:
    """One rank's training loop."""

    def __init__(self, dist: Dist, job: Job):
        self.dist, self.job = dist, job
        self.data, self.cfg = job.data, job.trainer
        self.dir = Path(job.run_dir) / "checkpoints"
        if dist.is_main:
            self.dir.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(job.seed + dist.rank)
        if dist.device.type == "cpu" and keep_freed_memory():
            log.debug("malloc keeps freed memory for the next iteration (vvframe.training.launch.keep_freed_memory)")
        rate = self.data.sample_rate
        self.utterances = read_utterances(self.data.train_list)
        self.labels, self.speakers = speaker_labels(self.utterances)
        augmentors = [a.build(sample_rate=rate) for a in job.augment]
        waveform_augs = [a for a in augmentors if getattr(a, "on", "waveform") == "waveform"]
        feature_augs = [a for a in augmentors if getattr(a, "on", "waveform") == "features"]
        self.collate = AugmentingCollate(waveform_augs, len(self.speakers), job.seed)
        self.num_classes = self.collate.num_classes
        self.dataset = CropDataset(
            self.utterances, self.data.root, rate, self.data.crop_seconds, self.data.max_skipped, job.seed
        )
        frontend = job.frontend.build(sample_rate=rate)
        model = job.model.build(in_dim=frontend.out_dim, sample_rate=rate)
        loss = job.loss.build(embed_dim=model.embed_dim, num_classes=self.num_classes)
        per_rank = self.cfg.batch_size // dist.world_size
        sampler_entry = job.sampler or Component("samplers", "random")
        self.sampler = sampler_entry.build(
            labels=self.labels, batch_size=per_rank, rank=dist.rank, world_size=dist.world_size, seed=job.seed
        )
        per_speaker = getattr(self.sampler, "per_speaker", 1)
        if per_speaker < getattr(loss, "min_per_speaker", 1):
            raise TrainingError(
                f"the loss needs {loss.min_per_speaker} utterances per speaker in a batch; the"
                f" sampler gives {per_speaker}"
            )
        self.net = Net(frontend, model, loss, feature_augs, per_speaker)
        if dist.is_main:
            extra = (
                ""
                if self.num_classes == len(self.speakers)
                else f" ({self.num_classes} classes with speed perturbation)"
            )
            log.info(
                "train: %d utterances of %d speakers%s; %s with %.2f M parameters",
                len(self.utterances),
                len(self.speakers),
                extra,
                job.model.name,
                sum(p.numel() for p in model.parameters()) / 1e6,
            )
        self.init_from(self.net)
        self.net = wrap_model(self.net, self.cfg.launcher, dist)
        self.inner: Net = unwrap(self.net)
        self.params = [p for p in self.inner.parameters() if p.requires_grad]
        self.optimizer = job.optimizer.build(params=self.params)
        if self.cfg.scale_lr:
            for group in self.optimizer.param_groups:
                group["lr"] *= self.cfg.batch_size / 64
                group["initial_lr"] = group["lr"]
        self.steps_per_epoch = max(1, len(self.sampler) // self.cfg.accumulate)
        self.scheduler = (
            job.scheduler.build(optimizer=self.optimizer, steps_per_epoch=self.steps_per_epoch, epochs=self.cfg.epochs)
            if job.scheduler
            else None
        )
        self.precision = self.cfg.precision
        if self.precision == "auto":
            self.precision, why = auto_precision(dist.device)
            if dist.is_main:
                log.info("precision auto: %s (%s)", self.precision, why)
        self.autocast_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(self.precision)
        self.scaler = torch.amp.GradScaler(dist.device.type, enabled=self.precision == "fp16")
        self.epoch, self.batch_in_epoch, self.iteration = 0, 0, 0
        self.best_eer, self.bad_validations, self.finished, self.stopped_early = math.inf, 0, False, False
        # skipped (non-finite) steps: in the run, in this epoch, in a row (trainer.max_bad_steps), and of what kind
        self.skipped, self.skipped_in_epoch, self.bad_in_row, self.bad_kinds = 0, 0, 0, set()
        self.window: list[torch.Tensor] | None = None  # the buffers as the current optimizer step found them
        self.pending = False  # gradients of a finite loss wait for the optimizer step
        self.planned_epochs = self.cfg.epochs
        self.writer = None
        if dist.is_main:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(job.run_dir))
        if job.resumed:
            self.restore()

    # --- checkpoints ------------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        return {
            "model": self.inner.model.state_dict(),
            "loss": self.inner.loss.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler else None,
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "iteration": self.iteration,
            "best_eer": self.best_eer,
            "bad_validations": self.bad_validations,
            "finished": self.finished,
            "stopped_early": self.stopped_early,
            "epochs": self.cfg.epochs,
            "skipped_steps": self.skipped,
            "margin": self.margin(),
            "rng": ckpt.rng_state(),
            "recipe": self.job.recipe,
            "speakers": list(self.speakers),
            "num_classes": self.num_classes,
            "embed_dim": self.inner.model.embed_dim,
        }

    def save(self, *names: str) -> None:
        if not self.dist.is_main:
            return
        first, *others = names
        ckpt.save(self.dir / first, self.state())
        for name in others:  # the same state again: copy the file rather than serialise it twice
            with atomic_path(self.dir / name) as tmp:
                shutil.copyfile(self.dir / first, tmp)
        ckpt.prune(self.dir, max(self.cfg.keep, self.cfg.average_last))

    def restore(self) -> None:
        found = ckpt.load_latest(self.dir)
        if found is None:
            log.info("no checkpoint in %s: training from the start", self.dir)
            return
        state, path = found
        ckpt.load_state(self.inner.model, state["model"], f"{path} (model)")
        ckpt.load_state(self.inner.loss, state["loss"], f"{path} (loss)")
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler and state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.batch_in_epoch, self.iteration = state["epoch"], state["batch_in_epoch"], state["iteration"]
        self.best_eer, self.bad_validations = state["best_eer"], state["bad_validations"]
        self.finished = state["finished"]
        self.stopped_early = state.get("stopped_early", False)
        self.skipped = state.get("skipped_steps", 0)
        recipe_epochs = state.get("recipe", {}).get("trainer", {}).get("epochs", self.cfg.epochs)
        self.planned_epochs = state.get("epochs") or recipe_epochs  # checkpoints before "epochs" was saved
        if state["margin"] is not None:
            self.set_margin(state["margin"])
        ckpt.set_rng_state(state["rng"])
        log.info(
            "resumed from %s: epoch %d, batch %d, iteration %d", path, self.epoch, self.batch_in_epoch, self.iteration
        )
        if self.scheduler is not None and self.planned_epochs != self.cfg.epochs:
            log.info(
                "the run was planned for %d epochs, trainer.epochs is now %d: scheduler '%s' is rebuilt for %d"
                " epochs (%d iterations) and goes on from iteration %d, the lr of the %d-epoch schedule from"
                " there (a schedule that depends on the run's length, such as warmup_cosine, moves to the lr"
                " the longer run has at that iteration)",
                self.planned_epochs,
                self.cfg.epochs,
                self.job.scheduler.name,
                self.cfg.epochs,
                self.steps_per_epoch * self.cfg.epochs,
                self.iteration,
                self.cfg.epochs,
            )

    def init_from(self, net: Net) -> None:
        source = self.cfg.init_from
        if not source:
            return
        path = Path(source)
        if path.is_dir():  # a run directory (or runs/<name>: its newest run): averaged, else best, else latest
            path = latest_run(path) or path
            folder = path / "checkpoints"
            named = [folder / n for n in (ckpt.AVERAGE, ckpt.BEST) if (folder / n).is_file()]
            found = (ckpt.load(named[0]), named[0]) if named else ckpt.load_latest(folder)
            if found is None:
                raise TrainingError(f"trainer.init_from {source}: no checkpoint in {folder}")
            state, path = found
        else:
            state = ckpt.load(path)
        ckpt.load_state(net.model, state["model"], f"{path} (model)")
        head = state["loss"]
        old_speakers = state.get("speakers", [])
        if list(old_speakers) == list(self.speakers) and state.get("num_classes") == self.num_classes:
            ckpt.load_state(net.loss, head, f"{path} (loss)")
            log.info("init_from %s: network and classifier head (same %d speakers)", path, len(self.speakers))
        elif (
            list(old_speakers) == list(self.speakers)
            and hasattr(net.loss, "resize_classes")
            and state.get("num_classes", 0) % max(len(self.speakers), 1) == 0
        ):
            # the earlier run had speed-perturbed copies of each speaker: rows [0, N) are the originals
            factor = state["num_classes"] // len(self.speakers)
            net.loss.resize_classes(state["num_classes"])
            ckpt.load_state(net.loss, head, f"{path} (loss)")
            net.loss.resize_classes(self.num_classes, keep=list(range(min(self.num_classes, len(self.speakers)))))
            log.info(
                "init_from %s: network, and the head mapped back from %d speed-perturbed classes (x%d)",
                path,
                state["num_classes"],
                factor,
            )
        else:
            log.info("init_from %s: network only; the classifier head is rebuilt (the speakers differ)", path)

    # --- the loop ---------------------------------------------------------------------------------------

    def margin(self) -> float | None:
        return float(self.inner.loss.margin) if hasattr(self.inner.loss, "margin") else None

    def set_margin(self, value: float) -> None:
        if hasattr(self.inner.loss, "margin"):
            self.inner.loss.margin = value

    def fit(self) -> None:
        if self.finished and not self.extend():
            return
        if self.epoch > self.cfg.epochs:
            log.info(
                "train: %d epochs trained already, %d asked (trainer.epochs): the run ends at epoch %d",
                self.epoch,
                self.cfg.epochs,
                self.epoch,
            )
        last_save = time.monotonic()
        while self.epoch < self.cfg.epochs:
            last_save = self.run_epoch(last_save)
            self.epoch += 1
            self.batch_in_epoch = 0
            stop = False
            if self.job.data.val_trials and (self.epoch % self.cfg.val_every == 0 or self.epoch == self.cfg.epochs):
                stop = self.validate()
            self.save(f"epoch_{self.epoch}.pt", "last.pt")
            last_save = time.monotonic()
            if stop:
                log.info("early stop: no better validation EER for %d validations", self.bad_validations)
                self.stopped_early = True
                break
        if self.cfg.average_last and self.dist.is_main:
            self.average()
        self.finished = True
        self.save("last.pt")
        self.dist.barrier()
        if self.writer:
            self.writer.close()

    def extend(self) -> bool:
        """For a finished run: whether trainer.epochs (or a raised early_stop_patience) asks for more epochs; says
        what it found either way."""
        done, asked = self.epoch, self.cfg.epochs
        patience = self.cfg.early_stop_patience
        epochs = f"{done} epoch{'s' if done != 1 else ''} trained, {asked} asked (trainer.epochs)"
        if self.stopped_early and patience and self.bad_validations >= patience:
            log.info(
                "train: this run stopped early: %s, and no better validation EER for %d validations"
                " (trainer.early_stop_patience %d); nothing to do (raise trainer.early_stop_patience, or set it"
                " to null, to train on)",
                epochs,
                self.bad_validations,
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
        self.finished = self.stopped_early = False
        return True

    def run_epoch(self, last_save: float) -> float:
        cfg, dist = self.cfg, self.dist
        self.sampler.set_epoch(self.epoch, start=self.batch_in_epoch)
        self.dataset.set_epoch(self.epoch)
        self.collate.set_epoch(self.epoch)
        loader = torch.utils.data.DataLoader(
            self.dataset,
            batch_sampler=self.sampler,
            num_workers=cfg.workers,
            collate_fn=self.collate,
            pin_memory=dist.device.type == "cuda",
        )
        self.net.train()
        # gradients of a part-filled accumulation window of the last epoch are not carried over (nor saved)
        self.optimizer.zero_grad(set_to_none=True)
        self.window, self.pending, self.skipped_in_epoch = None, False, 0
        seen, waited, last_loss = 0, 0.0, math.nan
        epoch_start = tick = time.monotonic()
        total = len(self.sampler)
        bar = None
        if dist.is_main:
            bar = tqdm(
                total=total,
                initial=self.batch_in_epoch,
                desc=f"epoch {self.epoch + 1}/{cfg.epochs}",
                disable=not sys.stderr.isatty(),
                dynamic_ncols=True,
                leave=False,
            )
        for waves, labels, indices in loader:
            waited += time.monotonic() - tick
            if cfg.margin_schedule is not None:
                self.set_margin(cfg.margin_schedule.value(self.iteration, self.steps_per_epoch))
            last_loss, acc = self.train_batch(waves, labels, indices)
            self.batch_in_epoch += 1
            seen += waves.shape[0]
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{last_loss:.3f}", acc=f"{float(acc):.3f}" if acc is not None else "-")
            if self.writer and self.iteration % cfg.log_every == 0:
                elapsed = time.monotonic() - epoch_start
                self.writer.add_scalar("train/loss", last_loss, self.iteration)
                if acc is not None:
                    self.writer.add_scalar("train/accuracy", float(acc), self.iteration)
                self.writer.add_scalar("train/lr", self.optimizer.param_groups[0]["lr"], self.iteration)
                if self.margin() is not None:
                    self.writer.add_scalar("train/margin", self.margin(), self.iteration)
                self.writer.add_scalar(
                    "train/utterances_per_second", seen * dist.world_size / max(elapsed, 1e-9), self.iteration
                )
                self.writer.add_scalar("train/data_wait_fraction", waited / max(elapsed, 1e-9), self.iteration)
            if cfg.save_every_minutes and time.monotonic() - last_save > 60 * cfg.save_every_minutes:
                self.save("last.pt")
                last_save = time.monotonic()
            tick = time.monotonic()
        if bar is not None:
            bar.close()
        elapsed = time.monotonic() - epoch_start
        if dist.is_main:
            skipped = f", {self.skipped_in_epoch} steps skipped (non-finite)" if self.skipped_in_epoch else ""
            log.info(
                "epoch %d/%d: loss %.4f, %d utterances/s, waiting for data %.0f%%%s",
                self.epoch + 1,
                cfg.epochs,
                last_loss,
                seen * dist.world_size / max(elapsed, 1e-9),
                100 * waited / max(elapsed, 1e-9),
                skipped,
            )
        return last_save

    def train_batch(self, waves: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor) -> tuple[float, Any]:
        """Forward and backward one batch, and the optimizer step when it ends an accumulation window: (loss, acc).

        A batch whose loss is not finite leaves no trace (its forward's buffer updates, BatchNorm statistics
        among them, are undone; no backward); a step whose gradients are not finite is skipped with its window's
        buffer updates undone, so the model and the optimizer stay exactly as they were.
        """
        cfg, dist = self.cfg, self.dist
        buffers = list(self.inner.buffers())
        before = [b.clone() for b in buffers]  # a few vectors per BatchNorm layer: cheap beside the forward
        if self.window is None or self.batch_in_epoch % cfg.accumulate == 0:
            self.window = before
        waves = waves.to(dist.device, non_blocking=True)
        labels = labels.to(dist.device, non_blocking=True)
        # randomness on the device (dither, specaug, dropout) from the batch's place in the global order, so
        # DDP ranks, gradient accumulation and a resumed run all draw the same numbers for the same batch
        seed = hash((self.job.seed, self.epoch, self.batch_in_epoch * dist.world_size + dist.rank)) & 0x7FFF_FFFF
        torch.manual_seed(seed)
        with torch.autocast(
            dist.device.type, dtype=self.autocast_dtype or torch.float32, enabled=self.autocast_dtype is not None
        ):
            loss, acc = self.net(waves, labels, seed)
        value = loss.item()
        finite = torch.isfinite(loss.detach())
        if dist.world_size > 1:
            finite = dist.all_reduce_mean(finite.float()) == 1
        if not bool(finite):
            _restore(buffers, before)
            self.skip("loss", indices)
        else:
            self.scaler.scale(loss / cfg.accumulate).backward()
            self.pending = True
        if self.pending and (self.batch_in_epoch + 1) % cfg.accumulate == 0:
            self.step(indices)
        return value, acc

    def step(self, indices: torch.Tensor) -> None:
        """The optimizer step, or, when the gradients are not finite, none (see :meth:`train_batch`)."""
        self.pending = False
        self.scaler.unscale_(self.optimizer)  # a no-op without fp16's scaler
        norm = nn.utils.get_total_norm([p.grad for p in self.params if p.grad is not None])
        if not bool(torch.isfinite(norm)):  # DDP has averaged the gradients: every rank decides alike
            # fp16's scaler skips steps while it finds its scale (from 65536 down): those are not trouble until
            # the gradients overflow even unscaled (scale below 1)
            overflow = self.scaler.is_enabled() and self.scaler.get_scale() >= 1.0
            if self.scaler.is_enabled():
                self.scaler.update()  # the scaler saw the inf too: it lowers its scale
            self.optimizer.zero_grad(set_to_none=True)
            _restore(list(self.inner.buffers()), self.window)
            self.skip("gradients", indices, in_row=not overflow)
            return
        if self.cfg.grad_clip:
            nn.utils.clip_grads_with_norm_(self.params, self.cfg.grad_clip, norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if self.scheduler is not None:
            self.scheduler.step()
        self.iteration += 1
        self.bad_in_row, self.bad_kinds = 0, set()

    def skip(self, kind: str, indices: torch.Tensor, in_row: bool = True) -> None:
        """Count and log a skipped step; a TrainingError naming the batch's files after max_bad_steps in a row
        (an fp16 overflow, ``in_row=False``, is counted and logged but does not join the row)."""
        self.bad_in_row += 1 if in_row else 0
        self.skipped += 1
        self.skipped_in_epoch += 1
        self.bad_kinds.add(kind)
        scale = (
            f", fp16 loss scale now {self.scaler.get_scale():g}"
            if kind == "gradients" and self.scaler.is_enabled()
            else ""
        )
        log.log(
            logging.WARNING if in_row else logging.INFO,
            "non-finite %s at epoch %d batch %d: step skipped, the"
            " model left as it was (%d in a row, %d in this run%s)",
            kind,
            self.epoch + 1,
            self.batch_in_epoch,
            self.bad_in_row,
            self.skipped,
            scale,
        )
        if self.writer:
            self.writer.add_scalar("train/skipped_steps", self.skipped, self.iteration)
        if self.bad_in_row >= self.cfg.max_bad_steps:
            what = "losses" if self.bad_kinds == {"loss"} else "losses or gradients"
            files = [self.utterances[i].path for i in indices.tolist()]
            raise TrainingError(
                f"{self.bad_in_row} non-finite {what} in a row (trainer.max_bad_steps); the last"
                f" batch's files: {', '.join(files[:20])}" + (f" and {len(files) - 20} more" if len(files) > 20 else "")
            )

    # --- validation -------------------------------------------------------------------------------------

    def validate(self) -> bool:
        """Validation EER on rank 0 (the others wait); saves best.pt; True when early stopping says stop."""
        result = [None]
        if self.dist.is_main:
            value, dcf = self.evaluate(self.inner)
            result = [value]
            log.info("epoch %d: validation EER %.2f%%, minDCF(0.01) %.4f", self.epoch, 100 * value, dcf)
            if self.writer:
                self.writer.add_scalar("val/eer", value, self.epoch)
                self.writer.add_scalar("val/min_dcf", dcf, self.epoch)
            if value < self.best_eer:
                self.best_eer, self.bad_validations = value, 0
                self.save("best.pt")
            else:
                self.bad_validations += 1
        value = self.dist.broadcast_object(result[0])
        if self.scheduler is not None and hasattr(self.scheduler, "report"):
            self.scheduler.report(value)
        patience = self.cfg.early_stop_patience
        return bool(patience) and self.dist.broadcast_object(self.bad_validations) >= patience

    @torch.no_grad()
    def evaluate(self, net: Net) -> tuple[float, float]:
        trials = read_trials(self.data.val_trials)
        files = trial_files(trials)
        net.eval()
        limit = int(self.data.val_max_seconds * self.data.sample_rate)
        device = self.dist.device
        embeddings = {}
        for path in files:
            wave = read(Path(self.data.root) / path, self.data.sample_rate)[:limit].to(device)
            emb = net.model(net.frontend(wave.unsqueeze(0)))
            embeddings[path] = torch.nn.functional.normalize(emb.float(), dim=-1)[0]
        scores = torch.stack([embeddings[t.enroll] @ embeddings[t.test] for t in trials]).cpu()
        labels = torch.tensor([t.label for t in trials])
        if self.writer:
            for name, chosen in (("target", labels == 1), ("nontarget", labels == 0)):
                shown = scores[chosen & torch.isfinite(scores)]
                if shown.numel():  # add_histogram refuses an empty (or all-NaN) tensor
                    self.writer.add_histogram(f"val/{name}_scores", shown, self.epoch)
        net.train()
        return eer(scores, labels)[0], min_dcf(scores, labels, 0.01)[0]

    def average(self) -> None:
        epochs = sorted(int(p.stem.split("_")[1]) for p in self.dir.glob("epoch_*.pt"))
        chosen = [self.dir / f"epoch_{e}.pt" for e in epochs[-self.cfg.average_last :]]
        if not chosen:
            return
        averaged = ckpt.average(chosen, "model")
        current = self.inner.model.state_dict()
        self.inner.model.load_state_dict(averaged)
        state = self.state()
        if self.job.data.val_trials:
            value, dcf = self.evaluate(self.inner)
            state["val_eer"] = value
            log.info(
                "average of epochs %s: validation EER %.2f%%, minDCF(0.01) %.4f",
                ", ".join(p.stem.split("_")[1] for p in chosen),
                100 * value,
                dcf,
            )
        ckpt.save(self.dir / "avg.pt", state)
        self.inner.model.load_state_dict(current)


def _restore(buffers: list[torch.Tensor], saved: list[torch.Tensor]) -> None:
    """Copy ``saved`` back into ``buffers`` (the module's buffers, in the order ``buffers()`` gives them)."""
    with torch.no_grad():
        for buffer, value in zip(buffers, saved):
            buffer.copy_(value)
