"""What the first-party stages read: the ``data:`` and ``trainer:`` settings (their fields are the schema), the
declared component sections (``Model``, ``Loss``, ...: a kind for each), and the train stage's agreement between
its loss and its sampler (``per_speaker_problems``)."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Annotated, Literal

from vvframe import BadValue, Component, Range, kind
from vvframe_plugins.stages.margin import MarginSchedule

# the component sections a stage declares in its signature: the kernel reads each one's kind from these
Frontend = Annotated[Component, kind("frontends")]
Model = Annotated[Component, kind("models")]
Loss = Annotated[Component, kind("losses")]
Optimizer = Annotated[Component, kind("optimizers")]
Scheduler = Annotated[Component, kind("schedulers")]
Sampler = Annotated[Component, kind("samplers")]
Augmentors = Annotated[list[Component], kind("augmentors")]
Normalizer = Annotated[Component, kind("normalizers")]

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
    """``trainer:``: how the train stage runs (launcher, precision, memory format, batches, checkpoints, validation)."""

    epochs: Count = 10
    batch_size: Annotated[int, Range(1, 65536)] = 128  # the global batch: divided among DDP ranks
    launcher: Literal["single", "dp", "ddp"] = "single"
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    nproc: Annotated[int, Range(1, 1024)] = 2  # DDP processes spawned locally (torchrun decides its own)
    precision: Literal["fp32", "fp16", "bf16", "auto"] = "fp32"  # auto: vvframe.training.launch.auto_precision
    # auto: channels_last for a model that asks for it (a true `channels_last` attribute: the 2-D ResNets)
    memory_format: Literal["auto", "channels_last", "contiguous"] = "auto"
    compile: bool = False  # torch.compile the training forward (on a CPU compiling takes minutes: see bench/)
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


def per_speaker_problems(loss: Component | None, sampler: Component | None) -> list[tuple[str, str]]:
    """The loss's ``min_per_speaker`` (an attribute of its factory) against the utterances of a speaker that the
    sampler puts in a batch (its ``per_speaker`` argument, else that parameter's default, else its factory's
    attribute, else 1): ``[("sampler", message)]`` when the sampler gives too few, else ``[]``."""
    if loss is None or sampler is None:
        return []
    need = getattr(loss.factory, "min_per_speaker", 1)
    if "per_speaker" in sampler.args:
        have = sampler.args["per_speaker"]
    else:
        parameter = inspect.signature(sampler.factory).parameters.get("per_speaker")
        declared = parameter is not None and parameter.default is not inspect.Parameter.empty
        have = parameter.default if declared else getattr(sampler.factory, "per_speaker", 1)
    if isinstance(need, int) and isinstance(have, int) and have < need:
        return [
            (
                "sampler",
                f"losses '{loss.name}' needs at least {need} utterances of a speaker in a batch"
                f" (its min_per_speaker), and samplers '{sampler.name}' gives {have}"
                f" (per_speaker); give the sampler per_speaker: {need} or more",
            )
        ]
    return []
