"""Behaviour of a loss component: built with the engine's ``embed_dim`` and ``num_classes``, it takes a batch of 5
speakers with ``min_per_speaker`` utterances each ``(5, P, 16)`` and labels ``arange(5)`` to a finite scalar loss
whose gradient reaches the embeddings, and an accuracy that is ``None`` or a fraction in [0, 1]."""

from __future__ import annotations

import math

from vvframe.core import registry


def behaves(name: str, factory) -> None:
    import torch

    loss_fn = registry.build("losses", {"name": name}, embed_dim=16, num_classes=5)
    assert isinstance(loss_fn, torch.nn.Module), (name, type(loss_fn))
    per_speaker = loss_fn.min_per_speaker
    assert isinstance(per_speaker, int) and per_speaker >= 1, (name, per_speaker)
    assert getattr(factory, "min_per_speaker", per_speaker) == per_speaker, f"{name}: class and instance disagree"
    gen = torch.Generator().manual_seed(0)
    embeddings = torch.randn(5, per_speaker, 16, generator=gen, requires_grad=True)
    result = loss_fn(embeddings, torch.arange(5))
    assert isinstance(result, tuple) and len(result) == 2, f"{name}: forward must return (loss, accuracy or None)"
    loss, accuracy = result
    assert isinstance(loss, torch.Tensor) and loss.dim() == 0 and torch.isfinite(loss), (name, loss)
    loss.backward()
    assert embeddings.grad is not None and torch.isfinite(embeddings.grad).all(), f"{name}: no finite gradient"
    assert embeddings.grad.abs().sum() > 0, f"{name}: the gradient does not reach the embeddings"
    if accuracy is not None:
        value = float(accuracy)
        assert math.isfinite(value) and 0.0 <= value <= 1.0, f"{name}: accuracy {value} is not a fraction in [0, 1]"
