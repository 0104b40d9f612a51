"""The settings sections the first-party stages read: ``data:`` and ``trainer:`` (their fields are the schema)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from vvframe import BadValue
from vvframe.core.schema import Range
from vvframe_plugins.stages.margin import MarginSchedule

# what `vvframe check` accepts: at least 1 (0 for workers and average_last), and nothing absurd
Count = Annotated[int, Range(1, 1_000_000)]
Seconds = Annotated[float, Range(gt=0, le=3600)]


@dataclass
class DataSettings:
    """``data:``: where the audio is and how it is read. Every list's paths are relative to ``root``."""

    root: str
    sample_rate: Annotated[int, Range(1000, 1_000_000)] = 16000
    train_list: str | None = None  # <speaker> <path> lines, relative to the recipe's working directory
    val_trials: str | None = None  # <0|1> <enroll> <test> lines, for validation during training
    crop_seconds: Seconds = 2.0  # training crops
    val_max_seconds: Seconds = 20.0  # validation utterances are cut to this length
    max_skipped: Annotated[int, Range(0)] = 100  # unreadable training files tolerated before the run stops

    def __post_init__(self) -> None:
        if self.sample_rate < 1000:
            raise BadValue(f"data.sample_rate {self.sample_rate}: expected a rate in Hz such as 16000")
        if self.crop_seconds <= 0:
            raise BadValue(f"data.crop_seconds {self.crop_seconds}: expected a positive duration")


@dataclass
class TrainerSettings:
    """``trainer:``: how the train stage runs (launcher, precision, batches, checkpoints, validation)."""

    epochs: Count = 10
    batch_size: Annotated[int, Range(1, 65536)] = 128  # the global batch: divided among DDP ranks
    launcher: Literal["single", "dp", "ddp"] = "single"
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    nproc: Annotated[int, Range(1, 1024)] = 2  # DDP processes spawned locally (torchrun decides its own)
    precision: Literal["fp32", "fp16", "bf16", "auto"] = "fp32"  # auto: vvframe.training.launch.auto_precision
    workers: Annotated[int, Range(0, 256)] = 2  # loader worker processes per rank
    accumulate: Count = 1  # batches per optimizer step
    grad_clip: Annotated[float, Range(gt=0)] | None = None  # max gradient norm
    scale_lr: bool = False  # multiply the optimizer's lr by global batch / 64 (WeSpeaker)
    margin_schedule: MarginSchedule | None = None
    val_every: Count = 1  # epochs between validations (needs data.val_trials)
    early_stop_patience: Count | None = None  # validations without a better EER before stopping
    save_every_minutes: Annotated[float, Range(gt=0)] | None = None
    keep: Count = 3  # epoch_N.pt checkpoints kept
    average_last: Annotated[int, Range(0, 1_000_000)] = 0  # average the last N epoch checkpoints into avg.pt
    init_from: str | None = None  # a run directory or a checkpoint to start the network from
    max_bad_steps: Count = 10  # NaN/inf losses or gradients in a row before the run stops
    log_every: Count = 10  # iterations between TensorBoard scalars

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "nproc", "accumulate", "val_every", "keep", "max_bad_steps", "log_every"):
            if getattr(self, name) < 1:
                raise BadValue(f"trainer.{name} {getattr(self, name)}: expected at least 1")
        if self.workers < 0 or self.average_last < 0:
            raise BadValue("trainer.workers and trainer.average_last must be >= 0")
