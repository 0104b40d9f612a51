"""The train stage's assembly: what a rank trains from (``Job``) and the parts built from it (``Parts``).

:func:`assemble` builds, in an order that fixes each rank's random initialisation: the augmentors, the training
utterances with their crops and collate (``Corpus``), the frontend, model and loss, the sampler, the network as one
module (``Net``, started from ``trainer.init_from`` when set, in the memory format ``trainer.memory_format``
chooses, its model's training forward compiled when ``trainer.compile`` asks, then wrapped for DP or DDP), the
optimizer (fused where torch has a fused kernel for it on the device), the scheduler, and the precision with its
gradient scaler.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vvframe import Component, RunContext, VvframeError
from vvframe.data.dataset import AugmentingCollate, CropDataset
from vvframe.data.lists import Utterance, read_utterances, speaker_labels
from vvframe.training import checkpoint as ckpt
from vvframe.training.launch import (
    Dist,
    auto_precision,
    keep_freed_memory,
    release_freed_memory,
    unwrap,
    wrap_model,
)
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
        self.compiled: Callable[[torch.Tensor], torch.Tensor] | None = None  # the model's forward, trainer.compile

    def forward(self, waves: torch.Tensor, labels: torch.Tensor, seed: int):
        """``(loss, accuracy or None)`` of a batch of waveforms; ``seed`` draws the feature augmentors' randomness."""
        with torch.autocast(waves.device.type, enabled=False):
            feats = self.frontend(waves.float())
        if self.feature_augmentors:
            gen = torch.Generator().manual_seed(seed)
            for aug in self.feature_augmentors:
                feats = aug(feats, gen)
        emb = self.compiled(feats) if self.training and self.compiled is not None else self.model(feats)
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
            # forked workers hand back what malloc keeps free in their copy: see release_freed_memory
            worker_init_fn=_release_in_worker if device.type == "cpu" else None,
            batch_sampler=self.sampler,
            num_workers=workers,
            collate_fn=self.corpus.collate,
            pin_memory=device.type == "cuda",
        )


def _release_in_worker(worker_id: int) -> None:
    """A loader worker's start: :func:`release_freed_memory` in the forked copy of the training process."""
    release_freed_memory()


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
    if use_channels_last(cfg.memory_format, model, dist.device):
        model.to(memory_format=torch.channels_last)  # its 4-D weights; the activations follow them
        if dist.is_main:
            log.info("memory format: channels_last (trainer.memory_format %s)", cfg.memory_format)
    if cfg.compile:
        compile_model(inner, cfg.launcher, dist)
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
        folder = path / ckpt.FOLDER
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
    """The optimizer over ``params``, fused where it can be (:func:`fused_optimizer`); with ``trainer.scale_lr`` its
    lr times the global batch / 64 (WeSpeaker)."""
    optimizer = fused_optimizer(entry, params)
    if cfg.scale_lr:
        for group in optimizer.param_groups:
            group["lr"] *= cfg.batch_size / 64
            group["initial_lr"] = group["lr"]
    return optimizer


def fused_optimizer(entry: Component, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    """The optimizer of ``entry`` with ``fused=True`` where its factory takes ``fused``, the recipe sets neither
    ``fused`` nor ``foreach``, and torch has the fused kernel for these parameters on their device; else as the
    recipe says. A fused step is one pass over each tensor instead of one per operation (same update, rounding
    aside): measured on 2 CPU cores, Adam over voxceleb_trainer's ResNetSE34L and a 5,994-speaker head, see
    ``bench/train_vs_plain.py``."""
    try:
        accepts = "fused" in inspect.signature(entry.factory).parameters
    except (TypeError, ValueError):  # a callable without a signature that inspect can read
        accepts = False
    if accepts and not {"fused", "foreach"} & set(entry.args):
        try:
            optimizer = dataclasses.replace(entry, args={**entry.args, "fused": True}).build(params=params)
        except (RuntimeError, ValueError, TypeError) as exc:  # no fused kernel for this device or dtype
            log.debug("optimizers '%s': not fused (%s)", entry.name, exc)
        else:
            log.debug("optimizers '%s': fused", entry.name)
            return optimizer
    return entry.build(params=params)


def use_channels_last(memory_format: str, model: nn.Module, device: torch.device | str = "cpu") -> bool:
    """Whether ``trainer.memory_format`` puts ``model`` in channels_last: always for ``channels_last``, never for
    ``contiguous``; ``auto`` on a CUDA device where the model asks for it with a true ``channels_last`` attribute
    (not on a CPU: with torch 2.14.1 a channels_last ResNet34 crashed in backward on an AVX-512 CPU)."""
    if memory_format == "auto":
        return torch.device(device).type == "cuda" and bool(getattr(model, "channels_last", False))
    return memory_format == "channels_last"


def compile_model(net: Net, launcher: str, dist: Dist) -> None:
    """``trainer.compile``: the model's forward through ``torch.compile`` while training; validation, the
    checkpoints and the loss (whose margin the schedule changes) use the modules as they are. The first steps
    take the compilation. Not under DataParallel, whose replicas would call the original model's forward."""
    if launcher == "dp":
        log.warning("trainer.compile: not with launcher dp (its replicas are copied every step); ddp compiles")
        return
    if dist.is_main:
        log.info("trainer.compile: the model's training forward through torch.compile (the first steps compile it)")
    net.compiled = torch.compile(net.model.forward)


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
