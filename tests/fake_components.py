"""Small components that tests reach through hand-made entry points (no torch needed to import this)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from vvframe import Component, RunContext, kind


class Frontend:
    """A frontend that only records its settings."""

    def __init__(self, sample_rate: int, n_mels: int = 40, window: Literal["hann", "hamming"] = "hann"):
        self.sample_rate, self.out_dim, self.window = sample_rate, n_mels, window


class Model:
    """A model that only records its settings."""

    def __init__(self, in_dim: int, embed_dim: int = 16, dropout: float = 0.0, widths: list[int] = (8,)):
        self.in_dim, self.embed_dim, self.dropout, self.widths = in_dim, embed_dim, dropout, list(widths)


class Loss:
    """A loss that only records its settings."""

    def __init__(self, embed_dim: int, num_classes: int, margin: float = 0.2, scale: float = 30.0):
        self.embed_dim, self.num_classes, self.margin, self.scale = embed_dim, num_classes, margin, scale


class PairLoss(Loss):
    """A loss that needs two utterances of a speaker per batch."""

    min_per_speaker = 2


class GroupSampler:
    """A sampler stand-in giving groups of ``per_speaker`` utterances."""

    def __init__(self, labels: list[int], batch_size: int, per_speaker: int = 1):
        self.per_speaker = per_speaker


def noise(sample_rate: int, prob: float = 0.5, snr: tuple[float, float] = (0.0, 15.0)) -> dict:
    """An augmentor stand-in: returns its settings."""
    return {"sample_rate": sample_rate, "prob": prob, "snr": snr}


def gain(sample_rate: int, db: float) -> dict:
    """An augmentor stand-in with a required argument."""
    return {"sample_rate": sample_rate, "db": db}


def exploding(sample_rate: int, level: int = 1) -> None:
    """A component whose factory raises."""
    raise ValueError(f"level {level} is too loud")


def with_kwargs(sample_rate: int, **extra) -> None:
    """Breaks the contract: a bag of keyword arguments."""


def needs_embed_dim(sample_rate: int, embed_dim: int) -> None:
    """Breaks the contract: requires a value the engine supplies only to losses."""


@dataclass
class TrainerSettings:
    """Settings of the fake training stage."""

    epochs: int = 3
    batch_size: int = 8
    precision: Literal["fp32", "fp16", "bf16"] = "fp32"


@dataclass
class DataSettings:
    """Where the data is."""

    root: Path
    sample_rate: int = 16000


class WriteStage:
    """A stage that builds the recipe's components and writes what it got into the run directory."""

    def __init__(
        self,
        ctx: RunContext,
        trainer: TrainerSettings,
        data: DataSettings,
        model: Annotated[Component, kind("models")],
        frontend: Annotated[Component, kind("frontends")] | None = None,
        loss: Annotated[Component, kind("losses")] | None = None,
        augment: Annotated[list[Component], kind("augmentors")] = (),
        sampler: Annotated[Component, kind("samplers")] | None = None,
        optimizer: Annotated[Component, kind("optimizers")] | None = None,
    ):
        self.ctx, self.trainer, self.data = ctx, trainer, data
        self.model, self.frontend, self.loss, self.augment = model, frontend, loss, augment

    @staticmethod
    def check(loss: Component | None = None, sampler: Component | None = None) -> list[tuple[str, str]]:
        """The loss's utterances per speaker against the sampler's, as the train stage checks them."""
        from vvframe_plugins.stages.settings import per_speaker_problems

        return per_speaker_problems(loss, sampler)

    def __call__(self) -> None:
        frontend = self.frontend.build(sample_rate=self.data.sample_rate) if self.frontend else None
        model = self.model.build(in_dim=frontend.out_dim if frontend else 40, sample_rate=self.data.sample_rate)
        loss = self.loss.build(embed_dim=model.embed_dim, num_classes=5) if self.loss else None
        self.ctx.log.info("written stage ran: %d epochs", self.trainer.epochs)
        out = {
            "epochs": self.trainer.epochs,
            "precision": self.trainer.precision,
            "root": str(self.data.root),
            "in_dim": model.in_dim,
            "embed_dim": model.embed_dim,
            "widths": model.widths,
            "margin": loss.margin if loss else None,
            "augment": [a.build(sample_rate=self.data.sample_rate)["prob"] for a in self.augment],
            "resumed": self.ctx.resumed,
        }
        with open(self.ctx.path("written.json"), "a", encoding="utf-8") as f:
            f.write(json.dumps(out) + "\n")


def fail_stage(ctx: RunContext, trainer: TrainerSettings):
    """A stage that raises when run."""

    def run() -> None:
        marker = ctx.path("failed-once")
        if not marker.exists():
            marker.write_text("x")
            raise RuntimeError("boom in the stage")
        ctx.log.info("fail stage passed on the second try")

    return run


def wait_stage(ctx: RunContext, trainer: TrainerSettings):
    """A stage that says it is running (a file ``waiting`` in the run directory), then waits to be interrupted."""

    def run() -> None:
        import time

        ctx.path("waiting").write_text("x")
        time.sleep(600)  # a hang guard only: the test interrupts it within seconds

    return run


def picky_stage(ctx: RunContext, data: DataSettings):
    """A stage whose building finds a mistake in the data, as a list naming a missing file would."""
    from vvframe.core.errors import BadValue

    raise BadValue(f"{data.root}/train.txt:3: no such audio file")


def untyped_stage(ctx, settings):
    """Breaks the stage contract: a settings parameter without a schema annotation."""
    return lambda: None


def nan_loss(embed_dim: int, num_classes: int):
    """A loss whose value is always NaN, as in a diverged run."""
    import torch

    class NanLoss(torch.nn.Module):
        min_per_speaker = 1

        def __init__(self):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.ones(()))

        def forward(self, embeddings, labels):
            return embeddings.sum() * float("nan") * self.scale, None

    return NanLoss()
