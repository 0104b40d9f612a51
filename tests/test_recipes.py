"""The shipped recipes: the VoxCeleb ones carry their published hyperparameters and run end to end on a tiny
VoxCeleb-shaped tree prepared by `vvframe data voxceleb` (the quickstart has its own test in test_quickstart.py)."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import soundfile as sf
from conftest import ROOT, vvframe_cli

from vvframe.core import recipe, registry
from vvframe.core.errors import RecipeError
from vvframe.data import lists
from vvframe.tools.synth import synthesize

RECIPES = ROOT / "recipes"


def resolved(name: str, *overrides: str) -> dict:
    return recipe.check(RECIPES / name, overrides).to_dict()


def test_the_resnet_recipe_is_wespeakers_resnet34():
    r = resolved("voxceleb_resnet.yaml")
    assert r["stages"] == ["train", "prepare", "eval"]
    assert (r["frontend"]["name"], r["frontend"]["n_mels"]) == ("fbank", 80)
    assert r["frontend"]["mean_norm"] is True and r["data"]["crop_seconds"] == 2.0
    assert (r["model"]["name"], r["model"]["embed_dim"]) == ("resnet34", 256)
    assert (r["loss"]["name"], r["loss"]["scale"]) == ("aamsoftmax", 32.0)
    assert r["trainer"]["margin_schedule"] == {
        "start": 0.0,
        "final": 0.2,
        "start_epoch": 19,
        "end_epoch": 39,
        "kind": "exponential",
    }
    opt = r["optimizer"]
    assert (opt["name"], opt["lr"], opt["momentum"], opt["nesterov"], opt["weight_decay"]) == (
        "sgd",
        0.1,
        0.9,
        True,
        1e-4,
    )
    assert (r["scheduler"]["name"], r["scheduler"]["warmup_epochs"], r["scheduler"]["final_lr"]) == (
        "warmup_exponential",
        6,
        5e-5,
    )
    t = r["trainer"]
    assert (t["epochs"], t["average_last"], t["launcher"]) == (150, 10, "ddp")
    speed, choice = r["augment"]
    assert speed["name"] == "speed" and speed["new_speakers"] and list(speed["factors"]) == [0.9, 1.0, 1.1]
    assert choice["name"] == "choice" and choice["prob"] == 0.6
    assert [o["name"] for o in choice["options"]] == ["reverb", "noise"]
    assert r["normalizer"] == {"name": "asnorm", "top_k": 300}
    assert [p.rsplit("/", 1)[1] for p in r["eval"]["trials"]] == ["vox1_O.txt", "vox1_E.txt", "vox1_H.txt"]
    assert r["cohort"]["per_speaker"] == "mean"


def test_the_large_margin_recipe_fine_tunes_the_first_run():
    r = resolved("voxceleb_resnet_lm.yaml")
    assert r["loss"]["margin"] == 0.5 and r["trainer"]["margin_schedule"] is None
    assert r["data"]["crop_seconds"] == 6.0 and r["trainer"]["epochs"] == 5
    assert (r["optimizer"]["lr"], r["scheduler"]["final_lr"]) == (1e-4, 2.5e-5)
    assert "speed" not in [a["name"] for a in r["augment"]]
    assert r["trainer"]["init_from"] == "runs/voxceleb_resnet" and r["model"]["name"] == "resnet34"


def test_the_ecapa_and_light_resnet_recipes():
    e = resolved("voxceleb_ecapa.yaml")
    assert (e["model"]["name"], e["model"]["channels"], e["model"]["embed_dim"]) == ("ecapa_tdnn", 1024, 192)
    s = resolved("voxceleb_resnet_se34l.yaml")
    assert (s["model"]["name"], s["loss"]["name"], s["sampler"]["per_speaker"]) == ("resnet_se34l", "angleproto", 2)
    assert s["trainer"]["launcher"] == "single" and s["embed"]["crops"] == 10 and s["augment"] == []


def test_data_root_is_the_one_key_to_set():
    for name in ("voxceleb_resnet.yaml", "voxceleb_ecapa.yaml", "voxceleb_resnet_se34l.yaml"):
        assert resolved(name, "data.root=/somewhere/voxceleb")["data"]["root"] == "/somewhere/voxceleb"


QUICKSTART = RECIPES / "quickstart.yaml"


@pytest.mark.parametrize(
    "override, problem",
    [
        (
            "model=null",
            "model (command-line override 1 (model=null)): section 'model' is null, but stages 'train',"
            " 'prepare', 'calibrate', 'eval', 'test' require it: name a component there, e.g. model: {name: ...}"
            " (`vvframe plugins models` lists choices)",
        ),
        (
            "augment.0.prob=2",
            "augment.0.prob (command-line override 1 (augment.0.prob=2)): expected a number in [0, 1], got 2",
        ),
        (
            "optimizer.lr=.nan",
            "optimizer.lr (command-line override 1 (optimizer.lr=.nan)): expected a finite number in [0, inf), got nan",
        ),
        (
            "trainer.epochs=99999999999999999999999",
            "trainer.epochs (command-line override 1"
            " (trainer.epochs=99999999999999999999999)): expected an integer in [1, 1000000], got 99999999999999999999999",
        ),
        (
            "model.channels=100000000000",
            "model.channels (command-line override 1 (model.channels=100000000000)):"
            " expected an integer in [1, 65536], got 100000000000",
        ),
        (
            "optimizer.lr=-0.1",
            "optimizer.lr (command-line override 1 (optimizer.lr=-0.1)): expected a number in [0, inf), got -0.1",
        ),
        (
            "frontend=null",
            "frontend (command-line override 1 (frontend=null)): section 'frontend' is null, but stages"
            " 'train', 'prepare', 'calibrate', 'eval', 'test' require it: name a component there, e.g. frontend:"
            " {name: ...} (`vvframe plugins frontends` lists choices)",
        ),
    ],
)
def test_check_refuses_what_would_fail_later_naming_key_origin_and_range(override, problem):
    with pytest.raises(RecipeError) as info:
        recipe.check(QUICKSTART, [override])
    assert [str(p) for p in info.value.problems] == [problem]


def test_optional_sections_may_be_null():
    resolved = recipe.check(QUICKSTART, ["normalizer=null", "scheduler=null", "augment=[]", "sampler=null"])
    assert resolved.components["normalizer"] is None and resolved.components["scheduler"] is None


def test_vvframe_check_exits_2_listing_every_range_problem():
    result = vvframe_cli(
        "check", str(QUICKSTART), "augment.1.prob=-0.5", "trainer.workers=1000", "loss.margin=2", "data.crop_seconds=0"
    )
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines() == [
        f"error: {QUICKSTART}: 4 problems",
        "  augment.1.prob (command-line override 1 (augment.1.prob=-0.5)): expected a number in [0, 1], got -0.5",
        "  trainer.workers (command-line override 2 (trainer.workers=1000)): expected an integer in [0, 256], got 1000",
        "  loss.margin (command-line override 3 (loss.margin=2)): expected a number in [0, 1.570796327), got 2",
        "  data.crop_seconds (command-line override 4 (data.crop_seconds=0)): expected a number in (0, 3600], got 0",
    ]


def _fake_voxceleb(root, musan, rirs) -> None:
    """VoxCeleb's official layout with synthetic voices: <id>/<video>/<nnnnn>.wav, trial lists, MUSAN and RIRs."""
    groups = {
        "voxceleb2/dev/aac": [f"id{i:05d}" for i in range(1, 9)],
        "voxceleb1/wav": [f"id{10270 + i}" for i in range(4)],
    }
    made = {}
    for folder, speakers in groups.items():
        tmp = root / "tmp"
        paths = synthesize(tmp, speakers, 4, (1.0, 1.6), seed=3)
        for speaker, files in paths.items():
            for i, rel in enumerate(files):
                dst = root / folder / speaker / f"vid{i % 2}" / f"{i + 1:05d}.wav"
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(tmp / rel, dst)
                made.setdefault(folder, []).append(f"{speaker}/vid{i % 2}/{i + 1:05d}.wav")
        shutil.rmtree(tmp)
    vox1 = made["voxceleb1/wav"]
    utts = [lists.Utterance(p.split("/")[0], p) for p in vox1]
    trials = lists.make_trials(utts, 2, seed=0)
    for name in ("veri_test2.txt", "list_test_all2.txt", "list_test_hard2.txt"):
        lists.write_trials(root / name, trials)
    rng = np.random.default_rng(0)
    for category in ("noise", "music", "speech"):
        (musan / category).mkdir(parents=True)
        sf.write(musan / category / "a.wav", (0.1 * rng.standard_normal(16000)).astype(np.float32), 16000)
    (rirs / "simulated_rirs").mkdir(parents=True)
    decay = np.exp(-np.arange(4000) / 800.0) * rng.standard_normal(4000)
    sf.write(rirs / "simulated_rirs" / "room.wav", decay.astype(np.float32), 16000)


def test_the_resnet_recipe_and_its_fine_tuning_run_on_a_voxceleb_shaped_tree(tmp_path):
    root, work = tmp_path / "voxceleb", tmp_path / "work"
    work.mkdir()
    _fake_voxceleb(root, tmp_path / "musan", tmp_path / "RIRS_NOISES")
    prepared = vvframe_cli(
        "data",
        "voxceleb",
        str(root),
        "--out",
        "data/voxceleb",
        "--musan",
        str(tmp_path / "musan"),
        "--rirs",
        str(tmp_path / "RIRS_NOISES"),
        cwd=work,
    )
    assert prepared.returncode == 0, prepared.stderr
    small = [
        f"data.root={root}",
        "trainer.launcher=single",
        "trainer.batch_size=8",
        "trainer.workers=0",
        "trainer.epochs=2",
        "trainer.val_every=1",
        "trainer.average_last=2",
        "model.base_width=4",
        "model.embed_dim=16",
        "frontend.n_mels=24",
        "trainer.scale_lr=false",
        "optimizer.lr=0.01",
    ]
    first = vvframe_cli(
        "run", str(RECIPES / "voxceleb_resnet.yaml"), *small, "--run-dir", "runs/voxceleb_resnet/a", cwd=work
    )
    assert first.returncode == 0, first.stderr
    run = work / "runs/voxceleb_resnet/a"
    log = (run / "log.txt").read_text()
    assert "train: 32 utterances of 8 speakers (24 classes with speed perturbation); resnet34" in log
    assert (run / "checkpoints" / "avg.pt").is_file() and (run / "cohort" / "embeddings.pt").is_file()
    metrics = (run / "eval" / "metrics.json").read_text()
    for stem in ("vox1_O", "vox1_E", "vox1_H"):
        assert stem in metrics
    tuned = (run / "eval" / "thresholds.json").read_text()
    assert math.isfinite(json.loads(tuned)["eer"])

    fine = vvframe_cli(
        "run",
        str(RECIPES / "voxceleb_resnet_lm.yaml"),
        *small[:-2],
        "data.crop_seconds=1.5",
        "trainer.epochs=1",
        "trainer.average_last=0",
        "--run-dir",
        "runs/lm",
        cwd=work,
    )
    assert fine.returncode == 0, fine.stderr
    lm_log = (work / "runs/lm/log.txt").read_text()
    assert "init_from" in lm_log and "voxceleb_resnet/a" in lm_log and "speed-perturbed classes" in lm_log


OWN_DATA = RECIPES / "own_data.yaml"


def test_own_data_checks_on_a_small_unequal_corpus_without_a_word_about_wasted_epochs(tmp_path):
    """30 speakers of 6 to 300 short clips: the recipe's batch of 8 speakers uses nearly every clip each epoch."""
    rng = np.random.default_rng(0)
    counts = [6, *rng.integers(20, 300, 29).tolist()]
    train = [lists.Utterance(f"spk{s:02d}", f"spk{s:02d}/{i:04d}.wav") for s, n in enumerate(counts) for i in range(n)]
    held = [lists.Utterance(f"eval{s}", f"eval{s}/{i}.wav") for s in range(4) for i in range(4)]
    lists.write_utterances(tmp_path / "train.txt", train)
    lists.write_utterances(tmp_path / "val.txt", train[::50])
    lists.write_trials(tmp_path / "val_trials.txt", lists.make_trials(train[::50], 1))
    lists.write_trials(tmp_path / "trials.txt", lists.make_trials(held, 1))
    overrides = [
        f"data.root={tmp_path}",
        f"data.train_list={tmp_path / 'train.txt'}",
        f"data.val_trials={tmp_path / 'val_trials.txt'}",
        f"cohort.list={tmp_path / 'val.txt'}",
        f"eval.trials=[{tmp_path / 'trials.txt'}]",
    ]
    result = vvframe_cli("check", str(OWN_DATA), *overrides)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"ok: {OWN_DATA}: stages train, prepare, eval;")
    assert "an epoch uses" not in result.stderr
    r = resolved("own_data.yaml", *overrides)
    sampler = registry.build(
        "samplers",
        r["sampler"],
        labels=np.repeat(np.arange(30), counts).tolist(),
        batch_size=r["trainer"]["batch_size"],
        rank=0,
        world_size=1,
        seed=0,
    )
    assert sampler.used >= 0.9 * sum(counts)
    assert r["trainer"]["precision"] == "auto" and r["trainer"]["launcher"] == "single"
    assert r["sampler"]["name"] == "speaker_balanced" and r["sampler"]["max_per_speaker"] is None
    augment = {a["name"]: a["prob"] for a in r["augment"]}
    assert {"channel", "colored_noise"} <= set(augment) and max(augment["channel"], augment["colored_noise"]) <= 0.5
    frontend = registry.build("frontends", r["frontend"], sample_rate=16000)
    model = registry.build("models", r["model"], in_dim=frontend.out_dim, sample_rate=16000)
    assert sum(p.numel() for p in model.parameters()) < 3_000_000  # small enough to train on a CPU in minutes
