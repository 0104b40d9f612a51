"""Behaviour of an optimizer component: built on a small regression, twenty steps lower the loss."""

from __future__ import annotations

from vvframe.core import registry


def behaves(name: str, factory) -> None:
    import torch

    torch.manual_seed(0)
    net = torch.nn.Linear(4, 1)
    x, y = torch.randn(32, 4), torch.randn(32, 1)
    opt = registry.build("optimizers", {"name": name, "lr": 0.05}, params=net.parameters())
    losses = []
    for _ in range(20):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(net(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] * 0.9, (name, losses[0], losses[-1])
