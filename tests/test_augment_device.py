"""Augmentation on the device (`on: device`): the loader worker only draws and reads (the augmentor's plan), the
train step applies it on the device, and for the same seed the batch is the one the loader workers give; the
augmentor call takes the batch's speaker labels where it asks for them, and augmentors that do not ask keep
working."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from vvframe import BadValue
from vvframe.core import registry
from vvframe.core.errors import ArgumentError, ContractError, RecipeError
from vvframe.data.dataset import AugmentingCollate, PendingWaves, call_augmentor
from vvframe.testing import ComponentCheckFailed, check_component, make_noise_folder, make_rir_folder

SR = 16000
SPEAKERS = 4


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, str]:
    base = tmp_path_factory.mktemp("augment")
    return {"musan": str(make_noise_folder(base / "musan")), "rirs": str(make_rir_folder(base / "rirs"))}


def entries(folders: dict[str, str], on: str) -> dict[str, dict]:
    """A recipe entry of each waveform augmentor, everything drawn (prob 1), placed ``on``."""
    reverb = {"name": "reverb", "root": folders["rirs"], "prob": 1.0, "on": on}
    noise = {"name": "noise", "root": folders["musan"], "prob": 1.0, "on": on}
    return {
        "noise": noise,
        "reverb": reverb,
        "gain": {"name": "gain", "prob": 1.0, "on": on},
        "speed": {"name": "speed", "new_speakers": True, "prob": 1.0, "on": on},
        "channel": {
            "name": "channel",
            "prob": 1.0,
            **{f"{s}_prob": 0.5 for s in ("eq", "highpass", "lowpass", "telephone", "clip", "codec")},
            "on": on,
        },
        "colored_noise": {"name": "colored_noise", "prob": 1.0, "on": on},
        "babble": {"name": "babble", "prob": 1.0, "on": on},
        "choice": {"name": "choice", "options": [reverb, noise]},
    }


def build(entry: dict):
    return registry.build("augmentors", entry, sample_rate=SR)


def items(rows: int = 8, frames: int = 8000) -> list[tuple[torch.Tensor, int, int]]:
    """What CropDataset gives a collate: ``(crop, speaker label, index)``; utterance ``i`` is speaker ``i % 4``."""
    g = torch.Generator().manual_seed(7)
    return [(0.1 * torch.randn(frames, generator=g), i % SPEAKERS, 10 + i) for i in range(rows)]


def collate(augmentors: list) -> AugmentingCollate:
    return AugmentingCollate(augmentors, num_speakers=SPEAKERS, seed=3)


@pytest.mark.parametrize("name", list(entries({"musan": "", "rirs": ""}, "workers")))
def test_each_augmentor_on_the_device_gives_the_batch_of_the_loader_workers(name, folders):
    in_workers = collate([build(entries(folders, "workers")[name])])
    on_device = collate([build(entries(folders, "device")[name])])
    assert on_device.device_augmentors and not in_workers.device_augmentors
    waves, labels, indices = in_workers(items())
    pending, device_labels, device_indices = on_device(items())
    assert isinstance(pending, PendingWaves)
    crops = torch.stack([w for w, _, _ in items()])
    assert torch.equal(pending.waves, crops)  # the worker left the crops alone: it only drew and read
    out = on_device.apply_on_device(pending)
    assert out.shape == waves.shape and not torch.allclose(out, crops)
    assert torch.allclose(out, waves, atol=1e-5, rtol=1e-5), (out - waves).abs().max()
    assert torch.equal(device_labels, labels) and torch.equal(device_indices, indices)


def test_a_chain_on_the_device_equals_the_chain_in_the_workers_labels_included(folders):
    names = ["speed", "babble", "reverb", "noise", "channel", "colored_noise"]
    first = build({"name": "gain", "prob": 1.0})  # in the workers in both cases, ahead of the rest
    in_workers = collate([first, *(build(entries(folders, "workers")[n]) for n in names)])
    on_device = collate([first, *(build(entries(folders, "device")[n]) for n in names)])
    assert in_workers.num_classes == on_device.num_classes == 3 * SPEAKERS
    waves, labels, _ = in_workers(items(12))
    pending, device_labels, _ = on_device(items(12))
    assert len(pending.plans) == len(names)
    assert (
        torch.equal(device_labels, labels) and (labels >= SPEAKERS).any()
    )  # speed's new speakers, drawn in the worker
    assert torch.allclose(on_device.apply_on_device(pending), waves, atol=1e-5, rtol=1e-5)


def test_device_batches_cross_the_worker_boundary_and_move_with_their_plans(folders):
    on_device = collate([build(entries(folders, "device")[n]) for n in ("choice", "babble")])
    loader = torch.utils.data.DataLoader(items(), batch_sampler=[list(range(8))], collate_fn=on_device, num_workers=1)
    ((pending, labels, _),) = list(loader)
    assert isinstance(pending, PendingWaves) and pending.shape == (8, 8000)
    waves, here_labels, _ = on_device(items())
    assert torch.equal(on_device.apply_on_device(pending), on_device.apply_on_device(waves))
    moved = pending.to("meta")  # every tensor of the plans moves, those nested in choice's included
    tensors: list[torch.Tensor] = []

    def collect(obj) -> None:
        if isinstance(obj, torch.Tensor):
            tensors.append(obj)
        elif isinstance(obj, dict):
            list(map(collect, obj.values()))
        elif isinstance(obj, (list, tuple)):
            list(map(collect, obj))

    collect(moved.plans)
    assert len(tensors) > 8 and all(t.device.type == "meta" for t in tensors) and moved.device.type == "meta"
    plain = torch.zeros(2, 3)
    assert on_device.apply_on_device(plain) is plain


class Doubles:
    """A third party's augmentor written before labels were offered: ``__call__(x, generator)``."""

    on = "waveform"
    label_multiplier = 1

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return 2 * x


class Records:
    """One that asks for the batch's speakers."""

    on = "waveform"
    label_multiplier = 1

    def __init__(self):
        self.seen: list[torch.Tensor] = []

    def __call__(self, x: torch.Tensor, generator: torch.Generator, labels: torch.Tensor) -> torch.Tensor:
        self.seen.append(labels)
        return x


def test_labels_go_only_to_augmentors_that_ask_and_are_the_speakers_as_recorded():
    records = Records()
    speed = build({"name": "speed", "new_speakers": True, "prob": 1.0})
    waves, labels, _ = collate([speed, Doubles(), records])(items())
    recorded = torch.tensor([i % SPEAKERS for i in range(8)])
    assert torch.equal(records.seen[0], recorded) and not torch.equal(labels, recorded)
    x = torch.ones(2, 4)
    assert torch.equal(call_augmentor(Doubles(), x, torch.Generator(), recorded[:2]), 2 * x)
    with pytest.raises(TypeError):  # no labels to give: it is called as before, aug(x, generator)
        call_augmentor(records, x, torch.Generator(), None)
    assert len(records.seen) == 1


class DeviceWithoutPlan(Doubles):
    runs_on = "device"


class Elsewhere(Doubles):
    runs_on = "gpu"


def test_a_device_augmentor_without_plan_and_apply_is_refused_when_the_collate_is_built():
    with pytest.raises(ContractError, match="runs on the device .* no plan and no apply method"):
        collate([DeviceWithoutPlan()])
    with pytest.raises(ContractError, match="runs_on is 'gpu'; expected 'workers' or 'device'"):
        collate([Elsewhere()])


class PlansOtherwise:
    """Broken: its plan draws differently from its call."""

    on = "waveform"
    label_multiplier = 1
    runs_on = "device"

    def __init__(self, prob: float = 0.5):
        self.prob = prob

    def plan(self, x: torch.Tensor, generator: torch.Generator) -> dict:
        return {"gain": 1 + torch.rand(x.shape[0], generator=generator) * self.prob + 0.5}

    def apply(self, x: torch.Tensor, plan: dict) -> torch.Tensor:
        return x * plan["gain"].unsqueeze(1)

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return x * (1 + torch.rand(x.shape[0], generator=generator) * self.prob).unsqueeze(1)


def test_the_contract_check_compares_a_device_augmentor_with_its_call():
    with pytest.raises(ComponentCheckFailed, match=r"apply\(x, plan\(x, generator\)\) differs from its call"):
        check_component("augmentors", "test_augment_device:PlansOtherwise")


def test_a_choice_runs_where_its_options_run_and_refuses_a_mix(folders):
    device, workers = entries(folders, "device"), entries(folders, "workers")
    assert build(device["choice"]).runs_on == "device" and build(workers["choice"]).runs_on == "workers"
    with pytest.raises(BadValue, match=r"same place .*reverb \(device\), gain \(workers\)"):
        build({"name": "choice", "options": [device["reverb"], workers["gain"]]})


def test_a_workers_augmentor_after_a_device_one_is_said_to_run_first(folders, caplog):
    with caplog.at_level(logging.INFO, logger="vvframe.data.dataset"):
        collate([build(entries(folders, "device")["reverb"]), build({"name": "gain"})])
    assert "run in the loader workers, before the device augmentors listed ahead of them" in caplog.text


def test_on_is_checked_as_a_recipe_value(folders):
    with pytest.raises(
        (RecipeError, ArgumentError), match="augmentors.on: expected one of 'workers', 'device', got 'gpu'"
    ):
        build({"name": "gain", "on": "gpu"})
    assert build({"name": "gain"}).runs_on == "workers"


# --- through the train step ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(0)
    lines = []
    for i in range(8):
        path = root / f"s{i % SPEAKERS}" / f"{i}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        t = np.arange(SR) / SR
        wave = 0.2 * np.sin(2 * np.pi * (150 + 40 * i) * t) + 0.02 * rng.standard_normal(SR)
        sf.write(path, wave.astype("float32"), SR)
        lines.append(f"s{i % SPEAKERS} {path.relative_to(root)}")
    (root / "train.txt").write_text("\n".join(lines) + "\n")
    return root


def trainer(corpus: Path, run_dir: Path, augment: list[dict]):
    from vvframe.core import recipe as recipes
    from vvframe.core.run import RunContext
    from vvframe.training.launch import Dist
    from vvframe_plugins.stages.train import Job, Trainer

    recipe = {
        "name": "device_augment",
        "seed": 1,
        "stages": ["train"],
        "data": {"root": str(corpus), "train_list": str(corpus / "train.txt"), "crop_seconds": 0.5},
        "frontend": {"name": "fbank", "n_mels": 24},
        "model": {"name": "xvector", "channels": 16, "stats_channels": 32, "embed_dim": 8},
        "loss": {"name": "aamsoftmax", "margin": 0.1, "scale": 16},
        "optimizer": {"name": "sgd", "lr": 0.01},
        "augment": augment,
        "trainer": {"epochs": 1, "batch_size": 8, "workers": 0},
    }
    run_dir.mkdir(parents=True)
    path = run_dir / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    resolved = recipes.check(path, [])
    (stage,) = resolved.stages
    return Trainer(Dist(), Job(RunContext(resolved, run_dir), **resolved.stage_arguments(stage)))


def test_the_train_step_applies_device_augmentors_to_what_the_network_sees(corpus, folders, tmp_path):
    def first_batch(t):
        return next(iter(t.parts.loader(0, 0, workers=0, device=torch.device("cpu"))))

    chain = ["speed", "babble", "reverb", "channel"]
    plain = trainer(corpus, tmp_path / "workers", [entries(folders, "workers")[n] for n in chain])
    waves, labels, _ = first_batch(plain)
    device = trainer(corpus, tmp_path / "device", [entries(folders, "device")[n] for n in chain])
    pending, device_labels, indices = first_batch(device)
    assert isinstance(pending, PendingWaves) and torch.equal(device_labels, labels)
    seen = []
    net = device.parts.net

    def recording(w, l, seed):  # noqa: E741
        seen.append(w)
        return net(w, l, seed)

    device.parts.net = recording
    loss, _ = device.train_batch(pending, device_labels, indices)
    assert math.isfinite(loss) and device.iteration == 1
    assert isinstance(seen[0], torch.Tensor) and torch.allclose(seen[0], waves, atol=1e-5, rtol=1e-5)
