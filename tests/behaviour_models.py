"""Behaviour of a model component: built with the engine's values (80 feature bins, 16 kHz), it has an integer
``embed_dim`` (the recipe's value) and, in eval mode, maps 0.5 s of features ``(2, 80, 50)`` to finite
``(2, embed_dim)`` embeddings, the same for an utterance alone as in the batch."""

from __future__ import annotations

import inspect

from vvframe.core import registry
from vvframe.core.schema import parameters

IN_DIM, FRAMES = 80, 50


def behaves(name: str, factory) -> None:
    import torch

    doc = (inspect.getdoc(factory) or "").strip()
    assert doc, f"{name}: no docstring; its first line is what `vvframe plugins models {name}` shows"
    params = {p.name: p for p in parameters(factory)}
    assert "in_dim" in params, f"{name}: a model takes in_dim, the feature bins the engine supplies"
    model = registry.build("models", {"name": name}, in_dim=IN_DIM, sample_rate=16000)
    assert isinstance(model, torch.nn.Module), (name, type(model))
    embed_dim = model.embed_dim
    assert isinstance(embed_dim, int) and not isinstance(embed_dim, bool) and embed_dim > 0, (name, embed_dim)
    if "embed_dim" in params and not params["embed_dim"].required:
        assert embed_dim == params["embed_dim"].default, f"{name}: embed_dim {embed_dim} is not the argument's value"
    feats = torch.randn(2, IN_DIM, FRAMES, generator=torch.Generator().manual_seed(0))
    model.eval()
    with torch.no_grad():
        out = model(feats)
        assert out.shape == (2, embed_dim), (
            f"{name}: {tuple(feats.shape)} gave {tuple(out.shape)}, not (2, {embed_dim})"
        )
        assert out.dtype == torch.float32 and torch.isfinite(out).all(), name
        alone = model(feats[1:])
    tolerance = 1e-4 * (1.0 + out.abs().max().item())
    assert (alone[0] - out[1]).abs().max().item() <= tolerance, f"{name}: an utterance depends on its batch"
