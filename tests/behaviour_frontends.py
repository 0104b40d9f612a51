"""Behaviour of a frontend component: built with the engine's sample rate, it maps 0.5 s of 16 kHz audio
``(2, 8000)`` to finite ``(2, out_dim, frames)`` features, the same for each utterance alone (eval mode)."""

from __future__ import annotations

from vvframe.core import registry


def behaves(name: str, factory) -> None:
    import torch

    frontend = registry.build("frontends", {"name": name}, sample_rate=16000)
    assert isinstance(frontend, torch.nn.Module), (name, type(frontend))
    assert isinstance(frontend.out_dim, int) and frontend.out_dim > 0, (name, frontend.out_dim)
    gen = torch.Generator().manual_seed(0)
    wave = (torch.rand(2, 8000, generator=gen) * 2 - 1) * 0.5
    feats = frontend.eval()(wave)
    assert feats.dim() == 3 and feats.shape[:2] == (2, frontend.out_dim) and feats.shape[2] > 0, (name, feats.shape)
    assert torch.isfinite(feats).all(), name
    assert torch.allclose(feats[1:], frontend(wave[1:]), atol=1e-4), f"{name}: an utterance depends on its batch"
    frontend.train()(wave)  # training mode works too (dither and the like)
