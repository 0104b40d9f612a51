"""Embedding extraction: batching by exact length changes nothing, crops mode, the cache, errors, DDP."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import soundfile as sf
import torch
from torch import nn

from vvframe.core import registry
from vvframe.data import audio
from vvframe.data.audio import AudioError
from vvframe.scoring.embed import Extractor, l2_normalize, subtract_mean
from vvframe.training.launch import launch

RATE = 16000
LENGTHS = {
    "a/1.wav": 8000,
    "a/2.wav": 8000,
    "b/1.wav": 8000,
    "b/2.wav": 12000,
    "c/1.wav": 12000,
    "c/2.wav": 5000,
    "d/1.wav": 20000,
}


class TinyFrontend(nn.Module):
    """Waveform (B, T) -> frames (B, 8, T // 80 - 1)."""

    out_dim = 8

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(1, 8, 160, stride=80)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x.unsqueeze(1))


class TinyModel(nn.Module):
    """Features (B, 8, frames) -> (B, 6) with a conv, mean pooling and a linear layer."""

    embed_dim = 6

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(8, 16, 3)
        self.bn = nn.BatchNorm1d(16)
        self.out = nn.Linear(16, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.bn(self.conv(x))).mean(dim=2))


def tiny() -> tuple[nn.Module, nn.Module]:
    """A deterministic tiny frontend and model."""
    torch.manual_seed(0)
    return TinyFrontend(), TinyModel()


def xvector() -> tuple[nn.Module, nn.Module]:
    """The first-party fbank frontend and a small x-vector."""
    torch.manual_seed(0)
    frontend = registry.build("frontends", {"name": "fbank", "n_mels": 24}, sample_rate=RATE)
    model = registry.build(
        "models", {"name": "xvector", "channels": 32, "stats_channels": 64, "embed_dim": 16}, in_dim=24
    )
    return frontend.eval(), model.eval()


def write_corpus(root, lengths=LENGTHS) -> list[str]:
    """Noise files of the given lengths under ``root``."""
    rng = np.random.default_rng(1)
    for name, frames in lengths.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(root / name), rng.uniform(-0.5, 0.5, frames).astype(np.float32), RATE, subtype="PCM_16")
    return list(lengths)


class Calls:
    """Counts forward calls of a module (and can make them fail)."""

    def __init__(self, module: nn.Module, fail: bool = False):
        self.count = 0
        self.items = 0
        self.fail = fail
        module.register_forward_pre_hook(self)

    def __call__(self, module, args):
        self.count += 1
        self.items += len(args[0])
        if self.fail:
            raise AssertionError("the model was called although every embedding is cached")


@pytest.mark.parametrize("build", [tiny, xvector])
def test_batched_equals_one_at_a_time(tmp_path, build):
    paths = write_corpus(tmp_path)
    frontend, model = build()
    calls = Calls(model)
    together = Extractor(frontend, model, tmp_path, RATE, progress=False)(paths)
    assert calls.count == 4  # lengths 5000, 8000 (x3), 12000 (x2), 20000: one batch each
    assert list(together) == paths
    for path in paths:
        alone = Extractor(frontend, model, tmp_path, RATE, progress=False)([path])[path]
        assert alone.dtype == torch.float32 and alone.device.type == "cpu" and alone.shape == (model.embed_dim,)
        torch.testing.assert_close(together[path], alone, atol=1e-5, rtol=0)
    assert not together[paths[0]].is_inference()


def test_batches_are_cut_at_batch_seconds_and_modes_are_restored(tmp_path):
    paths = write_corpus(tmp_path)
    frontend, model = tiny()
    model.train()
    calls = Calls(model)
    small = Extractor(frontend, model, tmp_path, RATE, batch_seconds=1.0, progress=False)(paths)
    assert calls.count == 6  # 8000 x3 -> 2 + 1 (at most 16000 samples a batch), 12000 x2 -> 1 + 1, 5000, 20000
    assert model.training and frontend.training
    large = Extractor(frontend, model, tmp_path, RATE, progress=False)(paths)
    for path in paths:
        torch.testing.assert_close(small[path], large[path], atol=1e-5, rtol=0)


def test_max_seconds_cuts_to_the_start(tmp_path):
    write_corpus(tmp_path, {"long.wav": 20000})
    sf.write(
        str(tmp_path / "head.wav"), sf.read(str(tmp_path / "long.wav"), dtype="int16")[0][:8000], RATE, subtype="PCM_16"
    )
    frontend, model = tiny()
    cut = Extractor(frontend, model, tmp_path, RATE, max_seconds=0.5, progress=False)(["long.wav", "head.wav"])
    torch.testing.assert_close(cut["long.wav"], cut["head.wav"], atol=1e-6, rtol=0)


def test_crops_mode_averages_evenly_spaced_crops(tmp_path):
    paths = write_corpus(tmp_path)
    frontend, model = tiny()
    got = Extractor(frontend, model, tmp_path, RATE, crops=3, crop_seconds=0.6, progress=False)(paths)
    frontend.eval(), model.eval()
    frames = int(0.6 * RATE)
    with torch.no_grad():
        for path in paths:
            wave = audio.read(tmp_path / path, RATE)
            if len(wave) < frames:  # repeated to fill the crop
                wave = torch.cat([wave, wave])[:frames]
            starts = np.linspace(0, len(wave) - frames, 3).astype(int)
            crops = torch.stack([wave[s : s + frames] for s in starts])
            want = model(frontend(crops)).mean(dim=0)
            torch.testing.assert_close(got[path], want, atol=1e-5, rtol=0)


def test_cache_is_used_and_keyed_by_model_id(tmp_path):
    root, cache = tmp_path / "data", tmp_path / "cache"
    paths = write_corpus(root)
    frontend, model = tiny()
    first = Extractor(frontend, model, root, RATE, cache_dir=cache, model_id="w1", progress=False)
    want = first(paths)
    assert (cache / "w1" / f"{hashlib.sha1(paths[0].encode()).hexdigest()}.pt").is_file()
    calls = Calls(model)
    assert first(paths[:2])[paths[1]] is want[paths[1]] and calls.count == 0  # in memory

    frontend2, model2 = tiny()
    Calls(model2, fail=True)
    again = Extractor(frontend2, model2, root, RATE, cache_dir=cache, model_id="w1", progress=False)(paths)
    for path in paths:
        torch.testing.assert_close(again[path], want[path], atol=0, rtol=0)

    frontend3, model3 = tiny()
    counted = Calls(model3)
    Extractor(frontend3, model3, root, RATE, cache_dir=cache, model_id="w2", progress=False)(paths)
    assert counted.count == 4 and (cache / "w2").is_dir()

    with pytest.raises(ValueError, match="model_id"):
        Extractor(frontend, model, root, RATE, cache_dir=cache)


def test_missing_file_names_it(tmp_path):
    paths = write_corpus(tmp_path, {"here.wav": 8000})
    frontend, model = tiny()
    with pytest.raises(AudioError, match="gone.wav"):
        Extractor(frontend, model, tmp_path, RATE, progress=False)(paths + ["spk/gone.wav"])


def test_normalisation_helpers():
    x = torch.tensor([[3.0, 4.0], [0.0, 0.0]])
    torch.testing.assert_close(l2_normalize(x), torch.tensor([[0.6, 0.8], [0.0, 0.0]]))
    torch.testing.assert_close(subtract_mean(x, x.mean(dim=0)), torch.tensor([[1.5, 2.0], [-1.5, -2.0]]))


def _ddp_embed(dist, root: str, cache: str, paths: list[str]) -> dict[str, torch.Tensor]:
    """Embed ``paths`` on this rank; every rank must get them all."""
    frontend, model = tiny()
    calls = Calls(model)
    got = Extractor(frontend, model, root, RATE, cache_dir=cache, model_id="m", dist=dist, progress=False)(paths)
    assert list(got) == paths, f"rank {dist.rank} got {sorted(got)}"
    assert calls.items == (4, 3)[dist.rank], f"rank {dist.rank} embedded {calls.items}"  # every 2nd by length
    return got


def test_ddp_two_ranks_match_a_single_process(tmp_path):
    root = tmp_path / "data"
    paths = write_corpus(root)
    frontend, model = tiny()
    want = Extractor(frontend, model, root, RATE, progress=False)(paths)
    got = launch(_ddp_embed, (str(root), str(tmp_path / "cache"), paths), "ddp", "cpu", 2)
    assert list(got) == paths
    for path in paths:
        torch.testing.assert_close(got[path], want[path], atol=1e-5, rtol=0)
    assert len(list((tmp_path / "cache" / "m").glob("*.pt"))) == len(paths)
