"""The train stage's checkpoints: where a run is (``Progress``), what a checkpoint holds, saving on rank 0,
resuming exactly where ``last.pt`` left off, and averaging the last epochs into ``avg.pt``.

The folder (``checkpoints/`` of the run) holds ``last.pt`` (every epoch, and every ``trainer.save_every_minutes``),
``epoch_N.pt`` for the last ``trainer.keep`` (or ``average_last``) epochs, ``best.pt`` by validation EER and
``avg.pt`` when averaging.
"""

from __future__ import annotations

import logging
import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vvframe.core.atomic import atomic_path
from vvframe.training import checkpoint as ckpt
from vvframe.training.launch import Dist
from vvframe_plugins.stages.assembly import Parts
from vvframe_plugins.stages.settings import TrainerSettings

if TYPE_CHECKING:
    from vvframe_plugins.stages.validation import Validation

log = logging.getLogger(__name__)


@dataclass
class Progress:
    """Where a run is: the counters every checkpoint saves and a resumed run goes on from."""

    epoch: int = 0  # epochs finished
    batch_in_epoch: int = 0  # batches of the current epoch done
    iteration: int = 0  # optimizer steps taken
    best_eer: float = math.inf
    bad_validations: int = 0  # validations since the best EER (trainer.early_stop_patience)
    finished: bool = False
    stopped_early: bool = False
    skipped: int = 0  # non-finite steps skipped in the run

    def state(self) -> dict[str, Any]:
        """The counters as a checkpoint stores them."""
        return {
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "iteration": self.iteration,
            "best_eer": self.best_eer,
            "bad_validations": self.bad_validations,
            "finished": self.finished,
            "stopped_early": self.stopped_early,
            "skipped_steps": self.skipped,
        }

    def load(self, state: dict[str, Any]) -> None:
        """Take the counters of a checkpoint's state (checkpoints older than some of them lack those)."""
        self.epoch, self.batch_in_epoch, self.iteration = state["epoch"], state["batch_in_epoch"], state["iteration"]
        self.best_eer, self.bad_validations = state["best_eer"], state["bad_validations"]
        self.finished = state["finished"]
        self.stopped_early = state.get("stopped_early", False)
        self.skipped = state.get("skipped_steps", 0)


class Checkpoints:
    """One rank's view of the run's checkpoint folder: rank 0 writes it, every rank resumes from it."""

    def __init__(
        self,
        folder: Path,
        dist: Dist,
        parts: Parts,
        progress: Progress,
        cfg: TrainerSettings,
        recipe: dict[str, Any],
        scheduler_name: str | None,
    ):
        self.folder, self.dist, self.parts, self.progress, self.cfg = folder, dist, parts, progress, cfg
        self.recipe, self.scheduler_name = recipe, scheduler_name
        if dist.is_main:
            folder.mkdir(parents=True, exist_ok=True)

    def state(self) -> dict[str, Any]:
        """Everything a resumed run needs, and what loading the weights needs (speakers, classes, embed_dim)."""
        parts, inner = self.parts, self.parts.inner
        return {
            "model": inner.model.state_dict(),
            "loss": inner.loss.state_dict(),
            "optimizer": parts.optimizer.state_dict(),
            "scheduler": parts.scheduler.state_dict() if parts.scheduler else None,
            "scaler": parts.scaler.state_dict(),
            **self.progress.state(),
            "epochs": self.cfg.epochs,
            "margin": inner.margin(),
            "rng": ckpt.rng_state(),
            "recipe": self.recipe,
            "speakers": list(parts.corpus.speakers),
            "num_classes": parts.corpus.num_classes,
            "embed_dim": inner.model.embed_dim,
        }

    def save(self, *names: str) -> None:
        """Save the state as each of ``names`` (rank 0 only), then prune the oldest epoch checkpoints."""
        if not self.dist.is_main:
            return
        first, *others = names
        ckpt.save(self.folder / first, self.state())
        for name in others:  # the same state again: copy the file rather than serialise it twice
            with atomic_path(self.folder / name) as tmp:
                shutil.copyfile(self.folder / first, tmp)
        ckpt.prune(self.folder, max(self.cfg.keep, self.cfg.average_last))

    def restore(self) -> None:
        """Go on from the newest usable checkpoint: weights, optimizer, scheduler, scaler, counters and RNG."""
        found = ckpt.load_latest(self.folder)
        if found is None:
            log.info("no checkpoint in %s: training from the start", self.folder)
            return
        state, path = found
        parts, inner, progress, epochs = self.parts, self.parts.inner, self.progress, self.cfg.epochs
        ckpt.load_state(inner.model, state["model"], f"{path} (model)")
        ckpt.load_state(inner.loss, state["loss"], f"{path} (loss)")
        parts.optimizer.load_state_dict(state["optimizer"])
        if parts.scheduler and state["scheduler"] is not None:
            parts.scheduler.load_state_dict(state["scheduler"])
        parts.scaler.load_state_dict(state["scaler"])
        progress.load(state)
        planned = state.get("epochs") or state.get("recipe", {}).get("trainer", {}).get("epochs", epochs)
        if state["margin"] is not None:
            inner.set_margin(state["margin"])
        ckpt.set_rng_state(state["rng"])
        log.info(
            "resumed from %s: epoch %d, batch %d, iteration %d",
            path,
            progress.epoch,
            progress.batch_in_epoch,
            progress.iteration,
        )
        if parts.scheduler is not None and planned != epochs:
            log.info(
                "the run was planned for %d epochs, trainer.epochs is now %d: scheduler '%s' is rebuilt for %d"
                " epochs (%d iterations) and goes on from iteration %d, the lr of the %d-epoch schedule from"
                " there (a schedule that depends on the run's length, such as warmup_cosine, moves to the lr"
                " the longer run has at that iteration)",
                planned,
                epochs,
                self.scheduler_name,
                epochs,
                parts.steps_per_epoch * epochs,
                progress.iteration,
                epochs,
            )

    def average(self, evaluate: Callable[[], Validation] | None) -> None:
        """Average the model of the last ``trainer.average_last`` epoch checkpoints into ``avg.pt`` (rank 0), with
        its validation EER when ``evaluate`` is given; the network keeps its own weights."""
        chosen = ckpt.epoch_files(self.folder)[-self.cfg.average_last :]  # (epoch, path), oldest first
        if not chosen:
            return
        model = self.parts.inner.model
        current = {key: value.clone() for key, value in model.state_dict().items()}  # loading overwrites in place
        model.load_state_dict(ckpt.average([path for _, path in chosen], "model"))
        state = self.state()
        if evaluate is not None:
            result = evaluate()
            state["val_eer"] = result.eer
            log.info(
                "average of epochs %s: validation EER %.2f%%, minDCF(0.01) %.4f",
                ", ".join(str(epoch) for epoch, _ in chosen),
                100 * result.eer,
                result.min_dcf,
            )
        ckpt.save(self.folder / ckpt.AVERAGE, state)
        model.load_state_dict(current)
