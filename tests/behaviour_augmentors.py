"""Behaviour of an augmentor component: built with minimal arguments, it keeps the shape, stays finite,
is deterministic for a seed, and works the same after a round trip through pickle."""

from __future__ import annotations

import inspect
import pickle
import tempfile
from pathlib import Path

from vvframe.core import registry

SAMPLE_RATE = 16000


def _audio_folders(base: Path) -> tuple[Path, Path]:
    """A tiny MUSAN-like folder (noise/, music/, speech/) and a folder of decaying impulse responses."""
    import numpy as np
    import soundfile as sf

    rng = np.random.default_rng(0)
    musan, rirs = base / "musan", base / "rirs"
    for category in ("noise", "music", "speech"):
        for i in range(2):
            path = musan / category / "part" / f"{category}{i}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, (0.1 * rng.standard_normal(6000 + 3000 * i)).astype("float32"), SAMPLE_RATE)
    rirs.mkdir(parents=True)
    for i in range(2):
        rir = np.zeros(1600, dtype="float32")
        rir[20 + i] = 1.0
        rir[21 + i :] += 0.2 * rng.standard_normal(1579 - i).astype("float32") * np.exp(-np.arange(1579 - i) / 200)
        sf.write(rirs / f"rir{i}.wav", rir, SAMPLE_RATE)
    return musan, rirs


def _arguments(name: str, factory, musan: Path, rirs: Path) -> dict:
    """The fewest arguments that build ``name``: folders for those that read files, defaults for the rest."""
    params = inspect.signature(factory).parameters
    known = {
        "noise": {"root": str(musan)},
        "reverb": {"root": str(rirs)},
        "choice": {"options": [{"name": "reverb", "root": str(rirs)}, {"name": "noise", "root": str(musan)}]},
    }
    args = dict(known.get(name, {}))
    if "root" in params and params["root"].default is inspect.Parameter.empty:
        args.setdefault("root", str(musan))
    if "prob" in params:
        args["prob"] = 1.0
    return args


def behaves(name: str, factory) -> None:
    import torch

    assert "prob" in inspect.signature(factory).parameters, f"augmentor {name} takes no prob"
    with tempfile.TemporaryDirectory() as tmp:
        musan, rirs = _audio_folders(Path(tmp))
        aug = registry.build(
            "augmentors", {"name": name, **_arguments(name, factory, musan, rirs)}, sample_rate=SAMPLE_RATE
        )
        assert aug.on in ("waveform", "features"), (name, aug.on)
        multiplier = aug.label_multiplier
        assert isinstance(multiplier, int) and multiplier >= 1, (name, multiplier)
        x = torch.randn(2, 8000) * 0.1 if aug.on == "waveform" else torch.randn(2, 40, 50)

        def run(augmentor, seed: int):
            result = augmentor(x.clone(), torch.Generator().manual_seed(seed))
            if multiplier > 1:
                assert isinstance(result, tuple) and len(result) == 2, name
                y, k = result
                assert k.shape == (2,) and k.dtype == torch.long and 0 <= int(k.min()) and int(k.max()) < multiplier
            else:
                y = result
            assert isinstance(y, torch.Tensor) and y.shape == x.shape and y.dtype == x.dtype, (name, y.shape)
            assert torch.isfinite(y).all(), name
            return y

        first = run(aug, 0)
        assert torch.equal(first, run(aug, 0)), f"augmentor {name}: the same seed gave another batch"
        again = pickle.loads(pickle.dumps(aug))
        assert torch.equal(first, run(again, 0)), f"augmentor {name} behaves differently after pickling"
