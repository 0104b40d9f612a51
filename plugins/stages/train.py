"""``train``: speaker-embedding training under a launcher (single device, DataParallel, DDP).

Batches come from the sampler; crops are read and waveform augmentors applied in the loader workers; the
frontend, feature augmentors (``specaug``), model and loss run on the device. Checkpoints go to
``checkpoints/`` (``last.pt`` each epoch, ``epoch_N.pt`` for the last ``keep``, ``best.pt`` by validation EER,
``avg.pt`` when averaging); ``--resume`` continues exactly where ``last.pt`` left off, and a finished run resumed
with a larger ``trainer.epochs`` trains the added epochs (its scheduler rebuilt for the new length). A batch with a
non-finite loss, or a step with non-finite gradients, is skipped leaving the model, its buffers and the optimizer
exactly as they were.

The pieces: this module is the stage (its sections, the checks before any work, the launch);
``assembly`` builds a rank's parts, ``trainer`` runs the epoch loop, ``steps`` trains one batch, ``checkpoints``
saves and resumes, ``validation`` measures the EER, ``trainlog`` reports.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from vvframe import Component, RunContext, VvframeError
from vvframe.core.run import LOG_FILE
from vvframe.data.audio import utterance_info
from vvframe.data.lists import ListError, check_files, read_trials, read_utterances, speaker_labels, trial_files
from vvframe.inference import card
from vvframe.training.launch import Dist, launch, setup_rank_logging
from vvframe_plugins.stages.assembly import Job, Net, TrainingError
from vvframe_plugins.stages.settings import (
    Augmentors,
    DataSettings,
    Frontend,
    Loss,
    Model,
    Optimizer,
    Sampler,
    Scheduler,
    TrainerSettings,
    per_speaker_problems,
)
from vvframe_plugins.stages.trainer import Trainer

__all__ = ["Job", "Net", "Trainer", "TrainingError", "check", "check_validation_trials", "small_epoch_warning", "train"]

log = logging.getLogger(__name__)


def train(
    ctx: RunContext,
    data: DataSettings,
    trainer: TrainerSettings,
    frontend: Frontend,
    model: Model,
    loss: Loss,
    optimizer: Optimizer,
    sampler: Sampler = "random",
    scheduler: Scheduler | None = None,
    augment: Augmentors = (),
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
    job = Job(ctx, data, trainer, frontend, model, loss, optimizer, sampler, scheduler, list(augment))

    def run() -> None:
        if ctx.is_main:  # what loading the trained model needs, written before the first weights
            card.update(
                ctx.run_dir, frontend=ctx.recipe["frontend"], model=ctx.recipe["model"], sample_rate=data.sample_rate
            )
        launch(_train_rank, (job,), trainer.launcher, trainer.device, trainer.nproc)

    return run


def check(
    loss: Component | None = None,
    sampler: Component | None = None,
    data: DataSettings | None = None,
    trainer: TrainerSettings | None = None,
) -> list[tuple[str, str]]:
    """The agreements between the train stage's components, for ``vvframe check``: the sampler gives the loss
    enough utterances of a speaker in a batch. Not a problem but a warning (logged): an epoch that would use less
    than half of ``data.train_list`` (``small_epoch_warning``)."""
    problems = per_speaker_problems(loss, sampler)
    if not problems and (warning := small_epoch_warning(sampler, data, trainer)):
        log.warning("%s", warning)
    return problems


def small_epoch_warning(
    sampler: Component | None, data: DataSettings | None, trainer: TrainerSettings | None
) -> str | None:
    """What the sampler's ``small_epoch`` says of ``data.train_list`` at ``trainer.batch_size``, before training:
    the list's speaker labels only (no audio), for a sampler class that has ``small_epoch``; None when it uses
    half the utterances or more, or when it cannot be told here (no list yet, or a list or batch the train stage
    will refuse with its own message)."""
    if sampler is None or data is None or trainer is None or not data.train_list:
        return None
    if not callable(getattr(sampler.factory, "small_epoch", None)):
        return None
    world_size = trainer.nproc if trainer.launcher == "ddp" else 1
    try:
        labels, _ = speaker_labels(read_utterances(data.train_list))
        built = sampler.build(
            labels=labels, batch_size=trainer.batch_size // world_size, rank=0, world_size=world_size, seed=0
        )
        message = built.small_epoch()
    except (VvframeError, ValueError):  # the train stage reports these before any work
        return None
    if not message:
        return None
    where = f"data.train_list {data.train_list}, trainer.batch_size {trainer.batch_size}, samplers '{sampler.name}'"
    return f"{where}: {message}"


train.check = check


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
    """One rank's training, with this rank's view of the run context (a spawned rank opens its own writer)."""
    ctx = job.ctx.for_rank(dist.rank, dist.world_size)
    if dist.world_size > 1:  # a spawned or torchrun rank: rank 0 logs to the run's log.txt, the others warn only
        setup_rank_logging(dist, Path(ctx.run_dir) / LOG_FILE)
    try:
        Trainer(dist, dataclasses.replace(job, ctx=ctx)).fit()
    finally:
        if ctx is not job.ctx:
            ctx.close()
