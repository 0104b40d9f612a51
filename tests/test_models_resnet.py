"""The ResNet models: parameter counts against the published figures, shapes for any length, batch independence,
gradients, recipe coercion and errors."""

from __future__ import annotations

import functools

import pytest
import torch

from vvframe import BadValue
from vvframe.core import registry

# name -> (in_dim used for the published figure, published parameter count)
PUBLISHED = {
    "resnet_se34l": (40, 1.4e6),  # voxceleb_trainer / Chung et al. 2020: "1.4M"
    "resnet_se34v2": (64, 8.0e6),  # voxceleb_trainer, 64 mel bins
    "resnet34": (80, 6.63e6),  # WeSpeaker, 80 fbank, 256-d
    "resnet221": (80, 23.8e6),
    "resnet293": (80, 28.6e6),
}
SMALL = ["resnet_se34l", "resnet_se34v2", "resnet34"]
# a quick tour of the other options: bottleneck blocks, narrow widths, a second embedding layer, other poolings
VARIANTS = [
    ("resnet", {"depth": 50, "base_width": 8, "pooling": "astp", "two_emb_layer": True}, 80),
    ("resnet", {"depth": 18, "base_width": 8, "pooling": "sap"}, 81),
    ("resnet_se34l", {"pooling": "asp"}, 40),
    ("resnet_se34v2", {"pooling": "tstp"}, 60),
]


@functools.cache
def model(name: str, in_dim: int | None = None, args: tuple = ()) -> torch.nn.Module:
    torch.manual_seed(0)
    return registry.build("models", {"name": name, **dict(args)}, in_dim=in_dim or PUBLISHED[name][0])


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def feats(batch: int, frames: int, in_dim: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, in_dim, frames, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_parameter_count_matches_the_published_figure(name):
    in_dim, target = PUBLISHED[name]
    count = n_params(model(name))
    assert abs(count - target) / target < 0.03, f"{name}: {count:,} parameters, published {target:,.0f}"


@pytest.mark.parametrize("name", ["resnet221", "resnet293"])
def test_the_big_ones_run(name):
    m = model(name).eval()
    with torch.no_grad():
        out = m(feats(1, 100, 80))
    assert out.shape == (1, 256) and torch.isfinite(out).all()


@pytest.mark.parametrize("frames", [100, 200, 600])
@pytest.mark.parametrize("name", SMALL)
def test_any_number_of_frames(name, frames):
    m = model(name).eval()
    in_dim = PUBLISHED[name][0]
    with torch.no_grad():
        out = m(feats(2, frames, in_dim))
    assert out.shape == (2, m.embed_dim) and torch.isfinite(out).all()


@pytest.mark.parametrize("name", SMALL)
def test_an_utterance_embeds_the_same_alone_and_in_a_batch(name):
    m = model(name).eval()
    x = feats(3, 200, PUBLISHED[name][0], seed=1)
    with torch.no_grad():
        together, alone = m(x), m(x[1:2])
    assert torch.allclose(together[1:2], alone, atol=1e-5), (together[1:2] - alone).abs().max()


def _assert_all_gradients(m: torch.nn.Module, loss: torch.Tensor, label: str) -> None:
    m.zero_grad()
    loss.backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"{label}: no gradient reaches {missing}"


@pytest.mark.parametrize("name", SMALL)
def test_gradients_reach_every_parameter(name):
    torch.manual_seed(0)
    m = registry.build("models", {"name": name}, in_dim=PUBLISHED[name][0]).train()
    _assert_all_gradients(m, m(feats(2, 100, PUBLISHED[name][0])).sum(), name)


@pytest.mark.parametrize("name, args, in_dim", VARIANTS, ids=lambda v: str(v))
def test_variants(name, args, in_dim):
    torch.manual_seed(0)
    m = registry.build("models", {"name": name, **args}, in_dim=in_dim).train()
    out = m(feats(2, 60, in_dim))
    assert out.shape == (2, m.embed_dim) and torch.isfinite(out).all()
    # the squared norm: summing the output of a batch norm (two_emb_layer) would give zero gradients upstream
    _assert_all_gradients(m, out.pow(2).sum(), f"{name} {args}")
    m.eval()
    x = feats(3, 80, in_dim, seed=2)
    with torch.no_grad():
        assert torch.allclose(m(x)[2:], m(x[2:]), atol=1e-5)


def test_recipe_values_are_coerced():
    m = registry.build("models", {"name": "resnet34", "embed_dim": "128", "base_width": "8"}, in_dim=80)
    assert m.embed_dim == 128 and isinstance(m.embed_dim, int)
    with torch.no_grad():
        assert m.eval()(feats(1, 100, 80)).shape == (1, 128)


@pytest.mark.parametrize("name", ["resnet", "resnet34", "resnet_se34l", "resnet_se34v2"])
def test_a_bad_pooling_is_a_recipe_problem_listing_the_choices(name):
    comp, problems = registry.resolve("models", {"name": name, "pooling": "xap"}, "model")
    assert [p for p, _ in problems] == ["model.pooling"], problems
    message = problems[0][1]
    assert all(f"'{choice}'" in message for choice in ("tap", "tstp", "sap", "asp", "astp")), message


def test_a_bad_depth_is_a_recipe_problem():
    _, problems = registry.resolve("models", {"name": "resnet", "depth": 35}, "model")
    assert problems and "34" in problems[0][1] and "293" in problems[0][1], problems


@pytest.mark.parametrize("name", ["resnet", "resnet34", "resnet221", "resnet_se34l", "resnet_se34v2"])
def test_too_few_feature_bins_is_a_clear_error(name):
    with pytest.raises(BadValue, match="in_dim 4 is too small.*at least 8"):
        registry.build("models", {"name": name}, in_dim=4)
