"""Checkpoints: atomic save, clear load errors, falling back past a corrupt one, averaging, pruning, RNG state."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from vvframe.core.errors import BadValue, VvframeError
from vvframe.training import checkpoint
from vvframe.training.checkpoint import CheckpointError


def _net() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))


def _trained_state() -> dict:
    torch.manual_seed(0)
    model = _net()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.98))
    sgd = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
    for _ in range(2):
        loss = model(torch.randn(5, 4)).square().mean()
        loss.backward()
        optimizer.step()
        sgd.step()
        scheduler.step()
    recipe = {
        "name": "quick",
        "seed": 42,
        "stages": ["train", "eval"],
        "data": {"sample_rate": 16000, "crop_seconds": 2.0, "root": "/data", "list": None},
        "model": {"name": "tiny", "embed_dim": 16},
        "augment": [],
        "trainer": {"amp": False},
    }
    return {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "sgd": sgd.state_dict(),
        "scheduler": scheduler.state_dict(),
        "epoch": 3,
        "step": 120,
        "best_eer": 0.0412,
        "recipe": recipe,
        "labels": ["id10001", "id10002", "spk ü"],
        "rng": checkpoint.rng_state(),
    }


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def test_realistic_state_round_trips_weights_only(tmp_path):
    state = _trained_state()
    path = tmp_path / "checkpoints" / "last.pt"
    checkpoint.save(path, state)
    assert _same(torch.load(path, weights_only=True), state)
    loaded = checkpoint.load(path)
    assert _same(loaded, state)
    model = _net()
    checkpoint.load_state(model, loaded["model"], "model of last.pt")
    assert _same(model.state_dict(), state["model"])
    optimizer = torch.optim.Adam(model.parameters())
    optimizer.load_state_dict(loaded["optimizer"])


def test_save_refuses_what_weights_only_loading_would_refuse(tmp_path):
    path = tmp_path / "last.pt"
    with pytest.raises(CheckpointError, match=r"state\['recipe'\]\['root'\] is a pathlib.*PosixPath"):
        checkpoint.save(path, {"recipe": {"root": Path("/data")}})
    with pytest.raises(CheckpointError, match=r"state\['eer'\] is a numpy.*\.item\(\)"):
        checkpoint.save(path, {"eer": np.float64(0.1)})
    assert not path.exists() and list(tmp_path.iterdir()) == []


def test_failing_save_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    checkpoint.save(path, {"epoch": 1})

    def crash(obj, f, *args, **kwargs):
        f.write(b"half a checkp")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save(path, {"epoch": 2})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]
    assert checkpoint.load(path) == {"epoch": 1}


def test_load_missing_truncated_or_foreign_files_names_them(tmp_path):
    with pytest.raises(CheckpointError, match=r"nope\.pt: no such file"):
        checkpoint.load(tmp_path / "nope.pt")
    good = tmp_path / "good.pt"
    checkpoint.save(good, {"model": {"w": torch.zeros(100)}})
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"cannot load checkpoint .*cut\.pt: \w+") as info:
        checkpoint.load(cut)
    assert isinstance(info.value, VvframeError) and isinstance(info.value, RuntimeError)
    listed = tmp_path / "list.pt"
    torch.save([1, 2], listed)
    with pytest.raises(CheckpointError, match="holds a list, not a dict"):
        checkpoint.load(listed)
    foreign = tmp_path / "foreign.pt"
    torch.save({"root": Path("/data")}, foreign)
    with pytest.raises(CheckpointError, match=r"foreign\.pt: it holds what weights-only loading refuses .*PosixPath"):
        checkpoint.load(foreign)


def test_load_latest_skips_a_corrupt_last_with_a_warning(tmp_path, caplog):
    assert checkpoint.load_latest(tmp_path / "missing") is None
    assert checkpoint.load_latest(tmp_path) is None
    for epoch in (1, 2, 10):
        checkpoint.save(tmp_path / f"epoch_{epoch}.pt", {"epoch": epoch})
    checkpoint.save(tmp_path / "best.pt", {"epoch": 99})
    (tmp_path / "last.pt").write_bytes(b"PK\x03\x04 not really")
    with caplog.at_level(logging.WARNING, logger="vvframe.training.checkpoint"):
        state, path = checkpoint.load_latest(tmp_path)
    assert (state, path) == ({"epoch": 10}, tmp_path / "epoch_10.pt")  # 10 sorts after 2 by number
    assert "last.pt" in caplog.text
    checkpoint.save(tmp_path / "last.pt", {"epoch": 11})
    assert checkpoint.load_latest(tmp_path) == ({"epoch": 11}, tmp_path / "last.pt")


def test_load_state_lists_missing_unexpected_and_mismatched(tmp_path):
    saved = _net().state_dict()
    saved["extra.weight"] = torch.zeros(1)
    del saved["3.bias"]
    saved["0.weight"] = torch.zeros(5, 4)
    module = _net()
    before = {k: v.clone() for k, v in module.state_dict().items()}
    with pytest.raises(CheckpointError) as info:
        checkpoint.load_state(module, saved, "model of epoch_3.pt")
    text = str(info.value)
    assert text.startswith("model of epoch_3.pt does not fit the Sequential")
    assert "1 missing key: 3.bias" in text
    assert "1 unexpected key: extra.weight" in text
    assert "1 shape mismatch: 0.weight: checkpoint (5, 4) vs module (8, 4)" in text
    assert _same(module.state_dict(), before)  # nothing half-loaded


def test_load_state_lists_at_most_ten_keys_and_counts():
    saved = {f"w{i}": torch.zeros(1) for i in range(25)}
    with pytest.raises(CheckpointError, match=r"25 unexpected keys: w0, .*w9, \.\.\. \(15 more\)"):
        checkpoint.load_state(nn.Module(), saved, "state")


def test_load_state_strips_wrapper_prefixes():
    source = _net()
    wrapped = nn.DataParallel(source).state_dict()
    assert all(k.startswith("module.") for k in wrapped)
    target = _net()
    checkpoint.load_state(target, wrapped, "model")
    assert _same(target.state_dict(), source.state_dict())
    again = _net()
    checkpoint.load_state(nn.DataParallel(again), source.state_dict(), "model")  # into a wrapped module too
    assert _same(again.state_dict(), source.state_dict())


def test_average_of_three_checkpoints_is_the_mean(tmp_path):
    paths, models = [], []
    for i in range(3):
        torch.manual_seed(i)
        model = _net().to(torch.float32)
        model[1].num_batches_tracked.fill_(i + 5)
        models.append(model.state_dict())
        paths.append(tmp_path / f"epoch_{i}.pt")
        checkpoint.save(paths[-1], {"model": model.state_dict(), "epoch": i})
    averaged = checkpoint.average(paths)
    assert list(averaged) == list(models[0])
    for key, value in averaged.items():
        if key.endswith("num_batches_tracked"):
            assert value.dtype == torch.long and value.item() == 7  # taken from the last
            continue
        expected = (models[0][key].double() + models[1][key].double() + models[2][key].double()) / 3
        assert value.dtype == torch.float32
        torch.testing.assert_close(value, expected.float())
    checkpoint.load_state(_net(), averaged, "average")


def test_average_refuses_different_models(tmp_path):
    checkpoint.save(tmp_path / "a.pt", {"model": {"w": torch.zeros(2), "b": torch.zeros(1)}})
    checkpoint.save(tmp_path / "b.pt", {"model": {"w": torch.zeros(3), "c": torch.zeros(1)}})
    checkpoint.save(tmp_path / "c.pt", {"epoch": 1})
    with pytest.raises(CheckpointError) as info:
        checkpoint.average([tmp_path / "a.pt", tmp_path / "b.pt"])
    text = str(info.value)
    assert "key only in a.pt: b" in text and "key only in b.pt: c" in text and "w: (2,) floating vs (3,)" in text
    with pytest.raises(CheckpointError, match=r"c\.pt has no 'model' state dict"):
        checkpoint.average([tmp_path / "a.pt", tmp_path / "c.pt"])
    with pytest.raises(CheckpointError, match="none given"):
        checkpoint.average([])


def test_prune_keeps_the_newest(tmp_path):
    for name in ["last.pt", "best.pt", "avg.pt", "notes.txt", *(f"epoch_{n}.pt" for n in (1, 2, 3, 9, 10, 11))]:
        (tmp_path / name).write_bytes(b"x")
    deleted = checkpoint.prune(tmp_path, keep=2)
    assert deleted == [tmp_path / f"epoch_{n}.pt" for n in (1, 2, 3, 9)]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["last.pt", "best.pt", "avg.pt", "notes.txt", "epoch_10.pt", "epoch_11.pt"]
    )
    assert checkpoint.prune(tmp_path, keep=5) == []
    assert checkpoint.prune(tmp_path, keep=0) == [tmp_path / "epoch_10.pt", tmp_path / "epoch_11.pt"]
    with pytest.raises(BadValue):
        checkpoint.prune(tmp_path, keep=-1)


def _draws() -> tuple:
    return random.random(), random.gauss(0, 1), np.random.rand(3).tolist(), np.random.randn(), torch.rand(3).tolist()


def test_rng_state_round_trip_reproduces_the_next_draws(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    random.gauss(0, 1)  # leave a cached Gaussian in Python's and numpy's state
    np.random.randn()
    path = tmp_path / "rng.pt"
    checkpoint.save(path, {"rng": checkpoint.rng_state()})
    first = _draws()
    _draws()
    checkpoint.set_rng_state(checkpoint.load(path)["rng"])
    assert _draws() == first


def test_set_rng_state_rejects_garbage():
    with pytest.raises(CheckpointError, match="random number generators"):
        checkpoint.set_rng_state({"python": [3, [1, 2], None], "numpy": [], "torch": torch.zeros(1)})
    assert issubclass(CheckpointError, RuntimeError)
