"""The shared pooling layers: shapes, any length, batch independence, what each computes."""

from __future__ import annotations

import pytest
import torch

from vvframe import BadValue
from vvframe_plugins.models.pooling import POOLINGS, make_pooling


@pytest.mark.parametrize("name", POOLINGS)
@pytest.mark.parametrize("frames", [1, 7, 600])
def test_any_length_and_the_same_alone_as_in_a_batch(name, frames):
    torch.manual_seed(0)
    pool = make_pooling(name, 16).eval()
    x = torch.randn(3, 16, frames)
    y = pool(x)
    assert y.shape == (3, pool.out_dim) and torch.isfinite(y).all()
    assert torch.allclose(pool(x[1:2]), y[1:2], atol=1e-5)


def test_statistics_pooling_is_mean_and_std():
    x = torch.randn(2, 4, 50)
    y = make_pooling("tstp", 4)(x)
    assert torch.allclose(y[:, :4], x.mean(-1), atol=1e-6)
    assert torch.allclose(y[:, 4:], x.std(-1, unbiased=False), atol=1e-4)
    assert torch.allclose(make_pooling("tap", 4)(x), x.mean(-1))


@pytest.mark.parametrize("name", ["sap", "asp", "astp"])
def test_attentive_pooling_of_a_constant_sequence_is_that_constant(name):
    pool = make_pooling(name, 8).eval()
    x = torch.randn(2, 8, 1).expand(-1, -1, 30)
    y = pool(x)
    assert torch.allclose(y[:, :8], x[:, :, 0], atol=1e-5)  # attention weights sum to one
    if pool.out_dim == 16:
        assert torch.all(y[:, 8:] < 1e-2)  # and the spread of a constant is (about) zero


def test_attention_learns_to_pick_frames():
    torch.manual_seed(0)
    pool = make_pooling("sap", 2, bottleneck=8)
    opt = torch.optim.Adam(pool.parameters(), lr=0.05)
    for _ in range(150):  # frames whose first channel is 1 carry the target in the second channel
        flag = (torch.rand(16, 1, 20) < 0.3).float()
        value = torch.randn(16, 1, 20)
        target = (value * flag).sum(-1) / flag.sum(-1).clamp(min=1)
        x = torch.cat([flag, value * flag], dim=1)
        loss = (pool(x)[:, 1:] - target).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05


def test_an_unknown_pooling_is_a_clear_error():
    with pytest.raises(BadValue, match="pooling 'mean' is not one of tap, tstp, sap, asp, astp"):
        make_pooling("mean", 8)
