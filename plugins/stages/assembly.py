"""The train stage's assembly: what a rank trains from (``Job``) and the parts built from it (``Parts``).

:func:`assemble` builds, in an order that fixes each rank's random initialisation: the augmentors, the training
utterances with their crops and collate (``Corpus``), the frontend, model and loss, the sampler, the network as one
module (``Net``, started from ``trainer.init_from`` when set, then wrapped for DP or DDP), the optimizer, the
scheduler, and the precision with its gradient scaler.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vvframe import Component, RunContext, VvframeError
from vvframe.core.run import RUN_LAYOUT
from vvframe.data.dataset import AugmentingCollate, CropDataset
from vvframe.data.lists import Utterance, read_utterances, speaker_labels
from vvframe.training import checkpoint as ckpt
from vvframe.training.launch import Dist, auto_precision, keep_freed_memory, unwrap, wrap_model
from vvframe_plugins.stages.settings import DataSettings, TrainerSettings

log = logging.getLogger(__name__)


class TrainingError(VvframeError, RuntimeError):
    """Training cannot go on: too many non-finite losses in a row, nothing to train on, ..."""


@dataclass
class Job:
    """The train stage's run context and sections: everything a rank trains from, picklable for spawned ranks."""

    ctx: RunContext
    data: DataSettings
    trainer: TrainerSettings
    frontend: Component
    model: Component
    loss: Component
    optimizer: Component
    sampler: Component
    scheduler: Component | None = None
    augment: list[Component] = field(default_factory=list)


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
        """``(loss, accuracy or None)`` of a batch of waveforms; ``seed`` draws the feature augmentors' randomness."""
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

    def margin(self) -> float | None:
        """The loss's margin, None for a loss without one."""
        return float(self.loss.margin) if hasattr(self.loss, "margin") else None

    def set_margin(self, value: float) -> None:
        """Set the loss's margin (``trainer.margin_schedule``); nothing for a loss without one."""
        if hasattr(self.loss, "margin"):
            self.loss.margin = value


@dataclass
class Corpus:
    """The training utterances: their speakers and labels, the crops read from them, and the loader's collate."""

    utterances: list[Utterance]
    labels: list[int]
    speakers: list[str]
    dataset: CropDataset
    collate: AugmentingCollate

    @property
    def num_classes(self) -> int:
        """The classes the loss tells apart (more than the speakers when speed perturbation makes new ones)."""
        return self.collate.num_classes


@dataclass
class Parts:
    """Everything one rank's loop drives, as :func:`assemble` built it."""

    corpus: Corpus
    sampler: Any
    net: nn.Module  # ``inner``, wrapped for DP or DDP
    inner: Net
    params: list[nn.Parameter]
    optimizer: torch.optim.Optimizer
    scheduler: Any | None
    steps_per_epoch: int
    precision: str
    autocast_dtype: torch.dtype | None
    scaler: torch.amp.GradScaler

    def loader(self, epoch: int, start: int, workers: int, device: torch.device) -> torch.utils.data.DataLoader:
        """The batches of ``epoch`` from its batch ``start`` on (a resumed epoch goes on where it stopped)."""
        self.sampler.set_epoch(epoch, start=start)
        self.corpus.dataset.set_epoch(epoch)
        self.corpus.collate.set_epoch(epoch)
        return torch.utils.data.DataLoader(
            self.corpus.dataset,
            batch_sampler=self.sampler,
            num_workers=workers,
            collate_fn=self.corpus.collate,
            pin_memory=device.type == "cuda",
        )


def assemble(dist: Dist, job: Job) -> Parts:
    """Build one rank's parts from ``job``, seeded by the run's seed and the rank (see the module's docstring)."""
    cfg, rate, seed = job.trainer, job.data.sample_rate, job.ctx.seed
    torch.manual_seed(seed + dist.rank)
    if dist.device.type == "cpu" and keep_freed_memory():
        log.debug("malloc keeps freed memory for the next iteration (vvframe.training.launch.keep_freed_memory)")
    augmentors = [a.build(sample_rate=rate) for a in job.augment]
    corpus = load_corpus(job.data, augmentors, seed)
    frontend = job.frontend.build(sample_rate=rate)
    model = job.model.build(in_dim=frontend.out_dim, sample_rate=rate)
    loss = job.loss.build(embed_dim=model.embed_dim, num_classes=corpus.num_classes)
    sampler = job.sampler.build(
        labels=corpus.labels,
        batch_size=cfg.batch_size // dist.world_size,
        rank=dist.rank,
        world_size=dist.world_size,
        seed=seed,
    )
    features = [a for a in augmentors if getattr(a, "on", "waveform") == "features"]
    inner = Net(frontend, model, loss, features, getattr(sampler, "per_speaker", 1))
    if dist.is_main:
        _describe(corpus, job.model.name, model)
    if cfg.init_from:
        init_from(inner, cfg.init_from, corpus.speakers, corpus.num_classes)
    net = wrap_model(inner, cfg.launcher, dist)
    inner = unwrap(net)
    params = [p for p in inner.parameters() if p.requires_grad]
    optimizer = build_optimizer(job.optimizer, params, cfg)
    steps_per_epoch = max(1, len(sampler) // cfg.accumulate)
    scheduler = (
        job.scheduler.build(optimizer=optimizer, steps_per_epoch=steps_per_epoch, epochs=cfg.epochs)
        if job.scheduler
        else None
    )
    precision, dtype = choose_precision(cfg.precision, dist)
    scaler = torch.amp.GradScaler(dist.device.type, enabled=precision == "fp16")
    return Parts(corpus, sampler, net, inner, params, optimizer, scheduler, steps_per_epoch, precision, dtype, scaler)


def init_from(net: Net, source: str, speakers: list[str], num_classes: int) -> None:
    """Start ``net`` from ``trainer.init_from``: a checkpoint file, or a run directory (``runs/<name>``: its newest
    run) whose averaged, else best, else latest checkpoint is used. The loss's classifier head comes too when the
    speakers are the same (mapped back from speed-perturbed classes when the earlier run had them)."""
    path = Path(source)
    if path.is_dir():
        path = ckpt.latest_run(path) or path
        folder = path / RUN_LAYOUT["checkpoints"]
        named = [folder / n for n in (ckpt.AVERAGE, ckpt.BEST) if (folder / n).is_file()]
        found = (ckpt.load(named[0]), named[0]) if named else ckpt.load_latest(folder)
        if found is None:
            raise TrainingError(f"trainer.init_from {source}: no checkpoint in {folder}")
        state, path = found
    else:
        state = ckpt.load(path)
    ckpt.load_state(net.model, state["model"], f"{path} (model)")
    head, old_classes = state["loss"], state.get("num_classes", 0)
    same_speakers = list(state.get("speakers", [])) == list(speakers)
    if same_speakers and old_classes == num_classes:
        ckpt.load_state(net.loss, head, f"{path} (loss)")
        log.info("init_from %s: network and classifier head (same %d speakers)", path, len(speakers))
    elif (
        same_speakers
        and hasattr(net.loss, "resize_classes")
        and old_classes > 0
        and old_classes % max(len(speakers), 1) == 0
    ):
        # the earlier run had speed-perturbed copies of each speaker: rows [0, N) are the originals
        net.loss.resize_classes(old_classes)
        ckpt.load_state(net.loss, head, f"{path} (loss)")
        net.loss.resize_classes(num_classes, keep=list(range(min(num_classes, len(speakers)))))
        log.info(
            "init_from %s: network, and the head mapped back from %d speed-perturbed classes (x%d)",
            path,
            old_classes,
            old_classes // len(speakers),
        )
    else:
        log.info("init_from %s: network only; the classifier head is rebuilt (the speakers differ)", path)


def load_corpus(data: DataSettings, augmentors: Sequence, seed: int) -> Corpus:
    """The utterances of ``data.train_list``, their crops, and the collate applying the waveform augmentors."""
    utterances = read_utterances(data.train_list)
    labels, speakers = speaker_labels(utterances)
    waveform = [a for a in augmentors if getattr(a, "on", "waveform") == "waveform"]
    collate = AugmentingCollate(waveform, len(speakers), seed)
    dataset = CropDataset(utterances, data.root, data.sample_rate, data.crop_seconds, data.max_skipped, seed)
    return Corpus(utterances, labels, speakers, dataset, collate)


def build_optimizer(entry: Component, params: list[nn.Parameter], cfg: TrainerSettings) -> torch.optim.Optimizer:
    """The optimizer over ``params``; with ``trainer.scale_lr`` its lr times the global batch / 64 (WeSpeaker)."""
    optimizer = entry.build(params=params)
    if cfg.scale_lr:
        for group in optimizer.param_groups:
            group["lr"] *= cfg.batch_size / 64
            group["initial_lr"] = group["lr"]
    return optimizer


def choose_precision(precision: str, dist: Dist) -> tuple[str, torch.dtype | None]:
    """``trainer.precision`` (``auto`` decided for the device, and said on rank 0) and its autocast dtype."""
    if precision == "auto":
        precision, why = auto_precision(dist.device)
        if dist.is_main:
            log.info("precision auto: %s (%s)", precision, why)
    return precision, {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)


def _describe(corpus: Corpus, model_name: str, model: nn.Module) -> None:
    speed = (
        "" if corpus.num_classes == len(corpus.speakers) else f" ({corpus.num_classes} classes with speed perturbation)"
    )
    log.info(
        "train: %d utterances of %d speakers%s; %s with %.2f M parameters",
        len(corpus.utterances),
        len(corpus.speakers),
        speed,
        model_name,
        sum(p.numel() for p in model.parameters()) / 1e6,
    )
