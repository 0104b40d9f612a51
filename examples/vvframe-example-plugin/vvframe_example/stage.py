"""A stage that builds the recipe's model, checks its output shape and records its size."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated

import torch

from vvframe import Component, RunContext, kind


@dataclass
class CountSettings:
    """The ``count:`` section of a recipe."""

    in_dim: int = 80
    frames: int = 200
    batch: int = 2


def count_params(ctx: RunContext, model: Annotated[Component, kind("models")], count: CountSettings):
    """Build ``model``, run one batch through it and write ``params.json`` into the run directory."""

    def run() -> None:
        net = model.build(in_dim=count.in_dim).eval()
        with torch.no_grad():
            out = net(torch.randn(count.batch, count.in_dim, count.frames))
        if tuple(out.shape) != (count.batch, net.embed_dim):
            raise RuntimeError(f"{model.name} gave {tuple(out.shape)}, expected {(count.batch, net.embed_dim)}")
        params = sum(p.numel() for p in net.parameters())
        ctx.log.info("%s: %d parameters, embedding size %d", model.name, params, net.embed_dim)
        if ctx.writer is not None:
            ctx.writer.add_scalar("model/parameters", params)
        ctx.path("params.json").write_text(
            json.dumps({"model": model.name, "parameters": params, "embed_dim": net.embed_dim}) + "\n"
        )

    return run
