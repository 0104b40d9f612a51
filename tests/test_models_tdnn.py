"""The TDNN-family models (ECAPA-TDNN, CAM++, x-vector): sizes as their papers give them, any length, batch
independence, gradients to every parameter, and building and checking through the registry."""

from __future__ import annotations

import pytest
import torch

from vvframe import BadValue, RecipeError
from vvframe.cli.plugins import describe
from vvframe.core import registry

NAMES = ["ecapa_tdnn", "campplus", "xvector"]
EMBED_DIM = {"ecapa_tdnn": 192, "campplus": 512, "xvector": 512}


def build(name: str, in_dim: int = 80, **args) -> torch.nn.Module:
    torch.manual_seed(0)
    return registry.build("models", {"name": name, **args}, in_dim=in_dim, sample_rate=16000)


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def features(batch: int, frames: int, in_dim: int = 80, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, in_dim, frames, generator=torch.Generator().manual_seed(seed))


# (model, recipe arguments, in_dim, exact count, the published size it reproduces)
SIZES = [
    ("ecapa_tdnn", {}, 80, 6_191_360, 6.2e6),  # C=512, 192-d (paper: 6.2 M)
    ("ecapa_tdnn", {"channels": 1024}, 80, 14_657_728, 14.7e6),  # C=1024, 192-d (paper: 14.7 M)
    ("campplus", {}, 80, 7_176_224, 7.18e6),  # the paper's 7.18 M: a 512-d embedding
    ("campplus", {"embed_dim": 192}, 80, 6_848_544, 6.85e6),  # 192-d: 327,680 fewer
    ("xvector", {}, 24, 4_211_604, 4.3e6),  # 24-d filterbanks, as in the paper
    ("xvector", {}, 30, 4_226_964, 4.3e6),  # Kaldi's 30-d MFCC
    ("xvector", {}, 80, 4_354_964, 4.3e6),  # 80-d fbank
]


@pytest.mark.parametrize(
    "name, args, in_dim, exact, published",
    SIZES,
    ids=[f"{s[0]}-{s[2]}-{'-'.join(f'{k}{v}' for k, v in s[1].items()) or 'default'}" for s in SIZES],
)
def test_parameter_count_matches_the_paper(name, args, in_dim, exact, published):
    n = count(build(name, in_dim, **args))
    assert n == exact
    assert abs(n - published) <= 0.03 * published, (n, published)


@pytest.mark.parametrize("name", NAMES)
def test_any_length_gives_finite_embeddings(name):
    model = build(name).eval()
    assert model.embed_dim == EMBED_DIM[name]
    with torch.no_grad():
        for frames in (100, 200, 600):
            out = model(features(2, frames))
            assert out.shape == (2, EMBED_DIM[name]) and torch.isfinite(out).all(), frames
        assert model(features(1, 137)).shape == (1, EMBED_DIM[name])  # B=1 in eval mode, an odd length


@pytest.mark.parametrize("name", NAMES)
def test_an_utterance_alone_equals_it_in_a_batch(name):
    model = build(name).eval()
    batch = features(3, 230, seed=1)
    with torch.no_grad():
        together = model(batch)
        for i in range(3):
            alone = model(batch[i : i + 1])[0]
            assert torch.allclose(alone, together[i], atol=1e-5, rtol=1e-5), (alone - together[i]).abs().max()


@pytest.mark.parametrize("name", NAMES)
def test_gradients_reach_every_parameter(name):
    """Train mode. The embedding ends in batch norm (CAM++'s without affine parameters), whose outputs sum to
    a constant over the batch, so the test backpropagates a random projection of the output instead of its
    sum; four utterances, since batch norm over two maps each channel to about +-1 and passes ~no gradient."""
    model = build(name).train()
    out = model(features(4, 120, seed=2))
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(3))
    (out * weights).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, missing
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_campplus_segments_include_a_last_partial_one():
    from vvframe_plugins.models.campplus import segment_mean

    x = torch.randn(2, 3, 250)
    means = segment_mean(x, 100)
    assert means.shape == x.shape
    for start, stop in ((0, 100), (100, 200), (200, 250)):
        expected = x[..., start:stop].mean(dim=-1, keepdim=True).expand(-1, -1, stop - start)
        assert torch.allclose(means[..., start:stop], expected, atol=1e-6)
    assert torch.allclose(segment_mean(x[..., :7], 100), x[..., :7].mean(dim=-1, keepdim=True).expand(-1, -1, 7))


def test_registry_builds_with_arguments_and_reports_bad_ones():
    model = registry.build("models", {"name": "ecapa_tdnn", "channels": 1024}, in_dim=80)
    assert model.embed_dim == 192 and model.stem.conv.out_channels == 1024
    assert (
        registry.build("models", {"name": "xvector", "embed_dim": 256, "pooling": "astp"}, in_dim=30).embed_dim == 256
    )
    assert registry.build("models", {"name": "campplus", "config": [2, 2, 2]}, in_dim=40).embed_dim == 512

    component, problems = registry.resolve("models", {"name": "ecapa_tdnn", "chanels": 1024}, "model")
    assert len(problems) == 1
    path, message = problems[0]
    assert path == "model.chanels" and "did you mean 'channels'" in message
    for valid in ("embed_dim", "channels", "scale", "se_bottleneck", "attention_bottleneck", "pooling"):
        assert valid in message, (valid, message)
    assert "in_dim" not in message.split("accepts:")[1]  # supplied by vvframe, not a recipe argument

    _, problems = registry.resolve("models", {"name": "xvector", "pooling": "mean"}, "model")
    assert [p for p, _ in problems] == ["model.pooling"] and "'tstp'" in problems[0][1]
    _, problems = registry.resolve("models", {"name": "campplus", "config": [12, 24]}, "model")
    assert [p for p, _ in problems] == ["model.config"]
    with pytest.raises(RecipeError):
        registry.build("models", {"name": "campplus", "growth": 32}, in_dim=80)
    with pytest.raises(BadValue, match="multiple of scale"):
        registry.build("models", {"name": "ecapa_tdnn", "channels": 500}, in_dim=80)


@pytest.mark.parametrize("name", NAMES)
def test_described_with_the_paper(name):
    text = describe("models", name)
    assert {"ecapa_tdnn": "Desplanques", "campplus": "Wang", "xvector": "Snyder"}[name] in text.splitlines()[1]
    assert "supplied by vvframe: in_dim" in text
