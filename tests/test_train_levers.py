"""The train stage's speed levers: the memory format, the fused optimizer, torch.compile, and what they leave alone.

Each Trainer here is assembled in this process from a recipe resolved as a run resolves it; the batches are made in
memory, so the training list's files are never read.
"""

from __future__ import annotations

import importlib.metadata as md
import logging
import os
from pathlib import Path

import pytest
import torch
import yaml

from vvframe.core.registry import Component

SPEAKERS, RATE, SECONDS, BATCH = 6, 16000, 0.5, 4
TINY_RESNET = {"name": "resnet34", "embed_dim": 16, "base_width": 4}
SE34L = {"name": "resnet_se34l", "embed_dim": 32}
XVECTOR = {"name": "xvector", "channels": 16, "stats_channels": 32, "embed_dim": 16}


def make_trainer(folder: Path, model: dict, optimizer: dict | None = None, **trainer):
    """One rank's Trainer on the CPU (fp32, no workers) for ``model``, with the recipe's trainer settings."""
    from vvframe.core import recipe as recipes
    from vvframe.core.run import RunContext
    from vvframe.training.launch import Dist
    from vvframe_plugins.stages.train import Job, Trainer

    folder.mkdir(parents=True, exist_ok=True)
    train_list = folder / "train.txt"
    train_list.write_text("".join(f"spk{s} spk{s}/{u}.wav\n" for s in range(SPEAKERS) for u in range(2)))
    data = {
        "name": "levers",
        "seed": 3,
        "stages": ["train"],
        "data": {"root": str(folder), "train_list": str(train_list), "crop_seconds": SECONDS},
        "frontend": {"name": "fbank", "n_mels": 24},
        "model": model,
        "loss": {"name": "aamsoftmax", "margin": 0.1, "scale": 16},
        "optimizer": optimizer or {"name": "adam", "lr": 1e-3},
        "trainer": {"epochs": 1, "batch_size": BATCH, "workers": 0, "device": "cpu", **trainer},
    }
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(data))
    resolved = recipes.check(path, [])
    (stage,) = resolved.stages
    return Trainer(Dist(), Job(RunContext(resolved, folder / "run"), **resolved.stage_arguments(stage)))


def batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    waves = 0.1 * torch.randn(BATCH, int(SECONDS * RATE), generator=g)
    return waves, torch.arange(BATCH) % SPEAKERS, torch.arange(BATCH)


def conv_weights(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p for p in model.parameters() if p.dim() == 4]


def fused_adam_on_cpu() -> bool:
    try:
        torch.optim.Adam([torch.zeros(2, requires_grad=True)], fused=True)
    except (RuntimeError, ValueError, TypeError):
        return False
    return True


# ---- memory format -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("model", [TINY_RESNET, SE34L], ids=["resnet34", "resnet_se34l"])
def test_memory_format_auto_puts_the_2d_resnets_in_channels_last(tmp_path, caplog, model):
    from vvframe_plugins.stages.assembly import use_channels_last

    with caplog.at_level(logging.INFO):
        auto = make_trainer(tmp_path / "auto", model)  # on the CPU, auto keeps them contiguous (see use_channels_last)
        forced = make_trainer(tmp_path / "forced", model, memory_format="channels_last")
    assert all(w.is_contiguous() for w in conv_weights(auto.parts.inner.model))
    assert use_channels_last("auto", auto.parts.inner.model, "cuda")  # what auto does on a GPU
    assert not use_channels_last("auto", auto.parts.inner.model, "cpu")
    weights = conv_weights(forced.parts.inner.model)
    assert weights and all(w.is_contiguous(memory_format=torch.channels_last) for w in weights)
    assert not all(w.is_contiguous() for w in weights)  # the first conv's 1 input channel is both; the rest are not
    assert "memory format: channels_last (trainer.memory_format channels_last)" in caplog.text
    plain = make_trainer(tmp_path / "plain", model, memory_format="contiguous")
    assert all(w.is_contiguous() for w in conv_weights(plain.parts.inner.model))


def test_memory_format_auto_leaves_other_models_as_they_are(tmp_path, caplog):
    with caplog.at_level(logging.INFO):
        t = make_trainer(tmp_path, XVECTOR)
    assert all(p.is_contiguous() for p in t.parts.inner.parameters())
    assert "memory format" not in caplog.text
    campplus = {"name": "campplus", "embed_dim": 16, "growth_rate": 8, "init_channels": 16, "config": [1, 1, 1]}
    default = make_trainer(tmp_path / "campplus", campplus)  # its 2-D head does not ask for channels_last
    assert all(w.is_contiguous() for w in conv_weights(default.parts.inner.model))
    forced = make_trainer(tmp_path / "forced", campplus, memory_format="channels_last")
    weights = conv_weights(forced.parts.inner.model)
    assert weights and all(w.is_contiguous(memory_format=torch.channels_last) for w in weights)


def test_channels_last_trains_as_contiguous_does(tmp_path):
    """The same seed and batch: the same loss, and the same step (SGD: the gradient itself) to float32 rounding."""
    sgd = {"name": "sgd", "lr": 0.01}
    sides = [make_trainer(tmp_path / f, TINY_RESNET, sgd, memory_format=f) for f in ("channels_last", "contiguous")]
    start = {k: v.clone() for k, v in sides[1].parts.inner.state_dict().items()}
    assert all(torch.equal(v, start[k]) for k, v in sides[0].parts.inner.state_dict().items())  # the same init
    losses = [side.train_batch(*batch())[0] for side in sides]
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
    first, second = (side.parts.inner.state_dict() for side in sides)
    for key in (k for k in first if first[k].is_floating_point()):
        step_a, step_b = first[key] - start[key], second[key] - start[key]
        assert (step_a - step_b).norm() <= 1e-3 * step_b.norm() + 1e-7, key


# ---- the fused optimizer -------------------------------------------------------------------------------------
@pytest.mark.skipif(not fused_adam_on_cpu(), reason="this torch has no fused Adam on the CPU")
def test_the_optimizer_is_fused_unless_the_recipe_chooses(tmp_path):
    assert make_trainer(tmp_path / "a", XVECTOR).parts.optimizer.defaults["fused"] is True
    chosen = {"name": "adam", "lr": 1e-3, "fused": False}
    assert not make_trainer(tmp_path / "b", XVECTOR, chosen).parts.optimizer.defaults["fused"]
    foreach = {"name": "adam", "lr": 1e-3, "foreach": True}
    opt = make_trainer(tmp_path / "c", XVECTOR, foreach).parts.optimizer
    assert not opt.defaults["fused"] and opt.defaults["foreach"] is True


@pytest.mark.skipif(not fused_adam_on_cpu(), reason="this torch has no fused Adam on the CPU")
def test_a_fused_optimizer_trains_as_the_unfused_one(tmp_path):
    adam = {"name": "adam", "lr": 1e-2, "weight_decay": 1e-4}
    fused = make_trainer(tmp_path / "fused", XVECTOR, adam)
    plain = make_trainer(tmp_path / "plain", XVECTOR, adam | {"fused": False})
    assert fused.parts.optimizer.defaults["fused"] and not plain.parts.optimizer.defaults["fused"]
    losses = [[side.train_batch(*batch(i))[0] for i in range(4)] for side in (fused, plain)]
    assert losses[0] == pytest.approx(losses[1], rel=1e-4)
    for (key, a), b in zip(fused.parts.inner.state_dict().items(), plain.parts.inner.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-5), key


class NoFusedKernel(torch.optim.SGD):
    """An optimizer that takes ``fused`` but has no fused kernel anywhere (as torch says for a device it lacks)."""

    def __init__(self, params, lr: float = 0.1, fused: bool | None = None):
        if fused:
            raise RuntimeError("fused=True is not supported here")
        super().__init__(params, lr=lr)


def test_an_optimizer_without_a_fused_kernel_is_built_as_the_recipe_says():
    from vvframe_plugins.stages.assembly import fused_optimizer

    params = [torch.nn.Parameter(torch.zeros(3))]
    for value, name in (("test_train_levers:NoFusedKernel", "nofused"), ("torch.optim:Rprop", "rprop")):
        entry = Component("optimizers", name, {"lr": 0.5}, entry_point=md.EntryPoint(name, value, "vvframe.optimizers"))
        optimizer = fused_optimizer(entry, params)
        assert type(optimizer).__name__ == value.split(":")[1] and optimizer.defaults["lr"] == 0.5
        assert not optimizer.defaults.get("fused")


# ---- torch.compile -------------------------------------------------------------------------------------------
@pytest.mark.skipif(
    os.environ.get("VVFRAME_TEST_COMPILE") != "1",
    reason="torch.compile of even a tiny model takes about a minute on 2 CPU cores; VVFRAME_TEST_COMPILE=1 runs it",
)
def test_compile_trains_the_model_as_eager_does_and_leaves_the_modules_alone(tmp_path):
    compiled = make_trainer(tmp_path / "compiled", XVECTOR, compile=True)
    eager = make_trainer(tmp_path / "eager", XVECTOR)
    net = compiled.parts.inner
    assert net.compiled is not None and eager.parts.inner.compiled is None
    assert net.state_dict().keys() == eager.parts.inner.state_dict().keys()  # no wrapper in the checkpoints
    losses = [[side.train_batch(*batch(i))[0] for i in range(2)] for side in (compiled, eager)]
    assert losses[0] == pytest.approx(losses[1], rel=1e-3)
    for (key, a), b in zip(net.state_dict().items(), eager.parts.inner.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-4), key
    calls = []
    net.compiled = lambda feats: calls.append(1) or net.model(feats)
    waves, labels, _ = batch()
    net.eval()  # validation: the modules themselves
    net(waves, labels, 0)
    assert calls == []
    net.train()
    net(waves, labels, 0)
    assert calls == [1]


def test_compile_is_not_used_under_data_parallel(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        t = make_trainer(tmp_path, XVECTOR, launcher="dp", compile=True)
    assert t.parts.inner.compiled is None
    assert "trainer.compile: not with launcher dp (its replicas are copied every step); ddp compiles" in caplog.text


def test_the_loader_workers_hand_back_the_free_memory_they_were_forked_with(tmp_path, monkeypatch):
    import vvframe_plugins.stages.assembly as assembly

    released = []
    monkeypatch.setattr(assembly, "release_freed_memory", lambda: released.append(1) or True)
    parts = make_trainer(tmp_path, XVECTOR).parts
    loader = parts.loader(0, 0, workers=2, device=torch.device("cpu"))
    assert loader.worker_init_fn is not None
    loader.worker_init_fn(0)  # what each worker does first
    assert released == [1]
    assert parts.loader(0, 0, workers=2, device=torch.device("cuda")).worker_init_fn is None  # a GPU's host heap
