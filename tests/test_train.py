"""The train stage end to end on a tiny synthetic corpus: runs, validation, checkpoints, resume, DDP, precision."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import HANG_GUARD, vvframe_cli

from vvframe.training import checkpoint as ckpt

SYNTH = [
    "--speakers",
    "6",
    "--utterances",
    "6",
    "--eval-speakers",
    "4",
    "--cohort-speakers",
    "0",
    "--seconds",
    "1-1.5",
    "--seed",
    "3",
]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("corpus")
    made = vvframe_cli("data", "synth", str(out), *SYNTH)
    assert made.returncode == 0, made.stderr
    return out


def recipe(corpus: Path, path: Path, **trainer) -> Path:
    settings = {"epochs": 3, "batch_size": 12, "workers": 0, "log_every": 1, **trainer}
    data = {
        "name": "tiny",
        "seed": 1,
        "stages": ["train"],
        "data": {
            "root": str(corpus / "audio"),
            "train_list": str(corpus / "train.txt"),
            "val_trials": str(corpus / "trials.txt"),
            "crop_seconds": 0.5,
            "val_max_seconds": 1.0,
        },
        "frontend": {"name": "fbank", "n_mels": 24},
        "model": {"name": "xvector", "channels": 32, "stats_channels": 64, "embed_dim": 16},
        "loss": {"name": "aamsoftmax", "margin": 0.1, "scale": 16},
        "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
        "trainer": settings,
    }
    path.write_text(yaml.safe_dump(data))
    return path


def final_parameters(run_dir: Path) -> dict:
    return ckpt.load(run_dir / "checkpoints" / "last.pt")["model"]


def run_dir_of(root: Path) -> Path:
    (run_dir,) = (root / "runs" / "tiny").iterdir()
    return run_dir


def test_training_validates_checkpoints_and_logs(corpus, tmp_path):
    path = recipe(corpus, tmp_path / "r.yaml", keep=2, average_last=2)
    result = vvframe_cli("run", str(path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    run_dir = run_dir_of(tmp_path)
    names = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert names == ["avg.pt", "best.pt", "epoch_2.pt", "epoch_3.pt", "last.pt"]
    last = ckpt.load(run_dir / "checkpoints" / "last.pt")
    assert last["finished"] and last["epoch"] == 3 and last["embed_dim"] == 16 and len(last["speakers"]) == 6
    assert last["recipe"]["model"]["name"] == "xvector"
    log = (run_dir / "log.txt").read_text()
    assert len(re.findall(r"epoch \d: validation EER", log)) == 3 and "average of epochs 2, 3: validation EER" in log

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = set()
    for events in run_dir.glob("events.out.tfevents.*"):
        acc = EventAccumulator(str(events))
        acc.Reload()
        tags |= set(acc.Tags()["scalars"])
    assert {
        "train/loss",
        "train/accuracy",
        "train/lr",
        "train/margin",
        "val/eer",
        "val/min_dcf",
        "train/utterances_per_second",
        "train/data_wait_fraction",
    } <= tags

    # the snapshot records the sampler the stage declares by default; the card, the entries the network was built from
    snapshot = yaml.safe_load((run_dir / "recipe.yaml").read_text())
    assert snapshot["sampler"]["name"] == "random" and "sampler" in snapshot["plugins"]
    card = json.loads((run_dir / "card.json").read_text())
    assert (card["frontend"], card["model"], card["sample_rate"]) == (snapshot["frontend"], snapshot["model"], 16000)

    again = vvframe_cli("run", "--resume", str(run_dir), "--stage", "train", cwd=tmp_path)
    assert again.returncode == 0 and "finished already" in again.stderr


def test_a_killed_run_resumes_to_the_same_parameters(corpus, tmp_path):
    whole = tmp_path / "whole"
    whole.mkdir()
    path = recipe(corpus, whole / "r.yaml", epochs=4)
    assert vvframe_cli("run", str(path), cwd=whole).returncode == 0
    expected = final_parameters(run_dir_of(whole))

    killed = tmp_path / "killed"
    killed.mkdir()
    path = recipe(corpus, killed / "r.yaml", epochs=4)
    command = [str(Path(sys.executable).parent / "vvframe"), "run", str(path)]
    proc = subprocess.Popen(command, cwd=killed, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + HANG_GUARD
    while time.monotonic() < deadline and proc.poll() is None:
        if list(killed.glob("runs/tiny/*/checkpoints/epoch_2.pt")):
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    run_dir = run_dir_of(killed)
    assert not ckpt.load(run_dir / "checkpoints" / "last.pt")["finished"]
    resumed = vvframe_cli("run", "--resume", str(run_dir), cwd=killed)
    assert resumed.returncode == 0, resumed.stderr
    got = final_parameters(run_dir)
    for key, value in expected.items():
        assert torch.allclose(got[key].float(), value.float(), atol=1e-6), key


def test_ddp_with_two_gloo_processes_equals_one_process_on_the_same_global_batch(corpus, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir(), two.mkdir()
    common = {"epochs": 1, "val_every": 5}
    single = vvframe_cli(
        "run",
        str(recipe(corpus, one / "r.yaml", batch_size=6, accumulate=2, **common)),
        "data.val_trials=null",
        cwd=one,
    )
    assert single.returncode == 0, single.stderr
    ddp = vvframe_cli(
        "run",
        str(recipe(corpus, two / "r.yaml", batch_size=12, launcher="ddp", nproc=2, **common)),
        "data.val_trials=null",
        cwd=two,
    )
    assert ddp.returncode == 0, ddp.stderr
    a, b = final_parameters(run_dir_of(one)), final_parameters(run_dir_of(two))
    assert (
        ckpt.load(run_dir_of(one) / "checkpoints" / "last.pt")["iteration"]
        == ckpt.load(run_dir_of(two) / "checkpoints" / "last.pt")["iteration"]
        > 0
    )
    for key in a:
        if "running" in key or "num_batches" in key:
            continue  # BatchNorm statistics: DDP keeps rank 0's, accumulation sees both halves
        assert torch.allclose(a[key], b[key], atol=1e-5), key


@pytest.mark.parametrize("precision, dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_mixed_precision_runs_on_the_cpu_where_torch_supports_it(corpus, tmp_path, precision, dtype):
    try:
        with torch.autocast("cpu", dtype=dtype):
            torch.nn.Conv1d(2, 2, 3)(torch.randn(1, 2, 8))
    except RuntimeError as exc:
        pytest.skip(f"{precision} autocast is not supported on this CPU: {exc}")
    result = vvframe_cli("run", str(recipe(corpus, tmp_path / "r.yaml", epochs=1, precision=precision)), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert all(torch.isfinite(v.float()).all() for v in final_parameters(run_dir_of(tmp_path)).values())


def test_a_recipe_naming_missing_audio_stops_before_training(corpus, tmp_path):
    listing = tmp_path / "train.txt"
    listing.write_text((corpus / "train.txt").read_text() + "ghost ghost/0.wav\n")
    result = vvframe_cli("run", str(recipe(corpus, tmp_path / "r.yaml")), f"data.train_list={listing}", cwd=tmp_path)
    assert result.returncode == 2 and "1 file missing" in result.stderr and "ghost/0.wav" in result.stderr
    assert "Traceback" not in result.stderr
    assert not list(tmp_path.glob("runs/tiny/*"))  # a mistake found before any work leaves no run directory


def test_under_torchrun_every_process_joins_one_run_directory(corpus, tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    path = recipe(corpus, tmp_path / "r.yaml", epochs=1, launcher="ddp")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_port",
            str(port),
            "-m",
            "vvframe",
            "run",
            str(path),
            "--run-dir",
            str(tmp_path / "run"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=HANG_GUARD,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "rank 0 of 2" in (tmp_path / "run" / "log.txt").read_text()
    assert ckpt.load(tmp_path / "run" / "checkpoints" / "last.pt")["finished"]
    assert not (tmp_path / "runs").exists()
    refused = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "1",
            "--master_port",
            str(port),
            "-m",
            "vvframe",
            "run",
            str(path),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=HANG_GUARD,
    )
    assert refused.returncode != 0 and "give every process the same --run-dir" in refused.stderr


def test_dataparallel_without_two_gpus_runs_the_plain_module_and_says_so(corpus, tmp_path):
    if torch.cuda.device_count() >= 2:
        pytest.skip("two GPUs here: DataParallel really runs")
    result = vvframe_cli(
        "run", str(recipe(corpus, tmp_path / "r.yaml", epochs=1, launcher="dp")), "data.val_trials=null", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert "DataParallel needs 2+ GPUs" in (run_dir_of(tmp_path) / "log.txt").read_text()


def test_non_finite_losses_skip_steps_then_stop_the_run_naming_the_files(corpus, tmp_path, third_party):
    path = recipe(corpus, tmp_path / "r.yaml", epochs=1, max_bad_steps=2)
    result = vvframe_cli("run", str(path), "loss=nan_loss", "data.val_trials=null", env=third_party, cwd=tmp_path)
    assert result.returncode == 1
    summary = result.stderr.splitlines()[-1]
    assert "2 non-finite losses in a row (trainer.max_bad_steps); the last batch's files: spk" in summary
    log = (run_dir_of(tmp_path) / "log.txt").read_text()
    assert log.count("step skipped") == 2


def test_early_stopping_on_validation_eer(corpus, tmp_path):
    path = recipe(corpus, tmp_path / "r.yaml", epochs=6, early_stop_patience=1)
    result = vvframe_cli("run", str(path), "optimizer.lr=1e-30", cwd=tmp_path)  # nothing learns: no better EER
    assert result.returncode == 0, result.stderr
    log = (run_dir_of(tmp_path) / "log.txt").read_text()
    assert "early stop: no better validation EER for 1 validations" in log
    last = ckpt.load(run_dir_of(tmp_path) / "checkpoints" / "last.pt")
    assert last["epoch"] == 2 and last["stopped_early"]
    again = vvframe_cli("run", "--resume", str(run_dir_of(tmp_path)), "--stage", "train", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert (
        "train: this run stopped early: 2 epochs trained, 6 asked (trainer.epochs), and no better validation EER"
        " for 1 validations (trainer.early_stop_patience 1); nothing to do (raise trainer.early_stop_patience, or"
        " set it to null, to train on)"
    ) in again.stderr


def test_init_from_keeps_the_head_for_the_same_speakers_and_rebuilds_it_for_others(corpus, tmp_path):
    first = tmp_path / "first"
    first.mkdir()
    assert vvframe_cli("run", str(recipe(corpus, first / "r.yaml", epochs=1)), cwd=first).returncode == 0
    source = run_dir_of(first)
    same = tmp_path / "same"
    same.mkdir()
    result = vvframe_cli("run", str(recipe(corpus, same / "r.yaml", epochs=1, init_from=str(source))), cwd=same)
    assert result.returncode == 0, result.stderr
    assert "network and classifier head (same 6 speakers)" in (run_dir_of(same) / "log.txt").read_text()
    fewer = tmp_path / "fewer"
    fewer.mkdir()
    listing = fewer / "train.txt"
    listing.write_text(
        "".join(
            line + "\n" for line in (corpus / "train.txt").read_text().splitlines() if not line.startswith("spk0005")
        )
    )
    result = vvframe_cli(
        "run",
        str(recipe(corpus, fewer / "r.yaml", epochs=1, init_from=str(source))),
        f"data.train_list={listing}",
        cwd=fewer,
    )
    assert result.returncode == 0, result.stderr
    assert "network only; the classifier head is rebuilt" in (run_dir_of(fewer) / "log.txt").read_text()


def test_init_from_a_speed_perturbed_run_maps_the_head_back(corpus, tmp_path):
    first = tmp_path / "first"
    first.mkdir()
    made = vvframe_cli(
        "run",
        str(recipe(corpus, first / "r.yaml", epochs=1)),
        "augment=[{name: speed, new_speakers: true}]",
        "data.val_trials=null",
        cwd=first,
    )
    assert made.returncode == 0, made.stderr
    source = run_dir_of(first)
    assert ckpt.load(source / "checkpoints" / "last.pt")["num_classes"] == 18
    second = tmp_path / "second"
    second.mkdir()
    result = vvframe_cli(
        "run",
        str(recipe(corpus, second / "r.yaml", epochs=1, init_from=str(source))),
        "data.val_trials=null",
        cwd=second,
    )
    assert result.returncode == 0, result.stderr
    assert "mapped back from 18 speed-perturbed classes (x3)" in (run_dir_of(second) / "log.txt").read_text()
    old = ckpt.load(source / "checkpoints" / "last.pt")["loss"]
    new = ckpt.load(run_dir_of(second) / "checkpoints" / "last.pt")
    assert new["num_classes"] == 6 and new["loss"]["weight"].shape == (6, 16) and old["weight"].shape == (18, 16)


# ---- one rank's Trainer in this process: skipped steps, automatic precision ------------------------------
def make_trainer(corpus: Path, run_dir: Path, overrides: tuple = ("data.val_trials=null",), **trainer):
    """One rank's Trainer in this process, from the tiny recipe resolved as a run resolves it (its ctx in run_dir)."""
    from vvframe.core import recipe as recipes
    from vvframe.core.run import RunContext
    from vvframe.training.launch import Dist
    from vvframe_plugins.stages.train import Job, Trainer

    path = recipe(corpus, run_dir / "r.yaml", **{"epochs": 1, "log_every": 10, **trainer})
    resolved = recipes.check(path, list(overrides))
    (stage,) = resolved.stages
    return Trainer(Dist(), Job(RunContext(resolved, run_dir), **resolved.stage_arguments(stage)))


def first_batch(t):
    return next(iter(t.parts.loader(0, 0, workers=0, device=torch.device("cpu"))))


def snapshot(t) -> tuple[dict, dict]:
    import copy

    model = {k: v.clone() for k, v in t.parts.inner.state_dict().items()}
    return model, copy.deepcopy(t.parts.optimizer.state_dict())


def assert_same(a: tuple[dict, dict], b: tuple[dict, dict]) -> None:
    (model_a, opt_a), (model_b, opt_b) = a, b
    assert model_a.keys() == model_b.keys()
    for key in model_a:  # bit-identical, BatchNorm's running_mean, running_var and num_batches_tracked included
        assert torch.equal(model_a[key], model_b[key]), key
    assert opt_a["param_groups"] == opt_b["param_groups"] and opt_a["state"].keys() == opt_b["state"].keys()
    for index, state in opt_a["state"].items():
        for name, value in state.items():
            assert torch.equal(value, opt_b["state"][index][name]), (index, name)


def test_a_non_finite_loss_leaves_the_model_and_optimizer_exactly_as_they_were(corpus, tmp_path, caplog):
    t = make_trainer(corpus, tmp_path)
    waves, labels, indices = first_batch(t)
    t.train_batch(waves, labels, indices)  # a real step first: momentum state and BatchNorm statistics to keep
    assert t.iteration == 1
    before = snapshot(t)
    assert any("running_mean" in k for k in before[0]) and before[1]["state"]
    with caplog.at_level("WARNING"):
        loss, _ = t.train_batch(torch.full_like(waves, float("nan")), labels, indices)
    assert math.isnan(loss) and t.iteration == 1 and (t.skipped, t.bad_in_row) == (1, 1)
    assert_same(before, snapshot(t))
    assert (
        "non-finite loss at epoch 1 batch 0: step skipped, the model left as it was (1 in a row, 1 in this run)"
        in caplog.text
    )
    t.train_batch(waves, labels, indices)  # a finite batch steps again and ends the row
    assert t.iteration == 2 and t.bad_in_row == 0 and t.skipped == 1


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_non_finite_gradients_skip_the_step_and_undo_the_forward(corpus, tmp_path, precision):
    if precision == "fp16":
        try:
            with torch.autocast("cpu", dtype=torch.float16):
                torch.nn.Conv1d(2, 2, 3)(torch.randn(1, 2, 8))
        except RuntimeError as exc:
            pytest.skip(f"fp16 autocast is not supported on this CPU: {exc}")
    t = make_trainer(corpus, tmp_path, precision=precision, max_bad_steps=2, grad_clip=5.0)
    waves, labels, indices = first_batch(t)
    for _ in range(30):  # fp16: the scaler may skip a few steps while it lowers its scale from 65536
        t.train_batch(waves, labels, indices)
        if t.iteration:
            break
    before, scale, skipped = snapshot(t), t.scaler.get_scale(), t.skipped
    hook = t.params[0].register_hook(lambda grad: grad * float("inf"))  # a finite loss, infinite gradients
    loss, _ = t.train_batch(waves, labels, indices)
    assert math.isfinite(loss) and t.iteration == 1 and t.skipped == skipped + 1
    assert_same(before, snapshot(t))
    if precision == "fp16":  # the gradient scaler backs off as it would on its own; a scale >= 1 is no trouble yet
        assert t.scaler.get_scale() == scale / 2 and t.bad_in_row == 0
        return
    from vvframe_plugins.stages.train import TrainingError

    with pytest.raises(
        TrainingError,
        match=r"^2 non-finite losses or gradients in a row \(trainer.max_bad_steps\);"
        r" the last batch's files: spk",
    ):
        t.train_batch(torch.full_like(waves, float("nan")), labels, indices)
    hook.remove()


@pytest.mark.parametrize("native, precision, dtype", [("avx512_bf16", "bf16", torch.bfloat16), (None, "fp32", None)])
def test_precision_auto_on_the_cpu_follows_native_bf16(corpus, tmp_path, monkeypatch, caplog, native, precision, dtype):
    import vvframe.training.launch

    monkeypatch.setattr(vvframe.training.launch, "native_bf16_cpu", lambda: native)
    with caplog.at_level("INFO"):
        t = make_trainer(corpus, tmp_path, precision="auto", device="cpu")
    assert (t.precision, t.autocast_dtype, t.scaler.is_enabled()) == (precision, dtype, False)
    why = "the CPU has native bf16: avx512_bf16" if native else "no native bf16 on this CPU"
    assert caplog.text.count("precision auto:") == 1 and f"precision auto: {precision} ({why})" in caplog.text


# ---- extending a finished run; validation trials checked first ----------------------------------------
def test_resuming_a_finished_run_with_more_epochs_trains_them(corpus, tmp_path):
    path = recipe(corpus, tmp_path / "r.yaml", epochs=1)
    made = vvframe_cli(
        "run", str(path), "data.val_trials=null", "scheduler={name: warmup_cosine, warmup_epochs: 0}", cwd=tmp_path
    )
    assert made.returncode == 0, made.stderr
    run_dir = run_dir_of(tmp_path)
    first = ckpt.load(run_dir / "checkpoints" / "last.pt")
    assert first["finished"] and first["epoch"] == 1 and first["epochs"] == 1

    longer = vvframe_cli("run", "--resume", str(run_dir), "trainer.epochs=2", "--stage", "train", cwd=tmp_path)
    assert longer.returncode == 0, longer.stderr
    log = (run_dir / "log.txt").read_text()
    assert "train: extending the finished run from 1 to 2 epochs (trainer.epochs), from its last checkpoint" in log
    assert (
        f"the run was planned for 1 epochs, trainer.epochs is now 2: scheduler 'warmup_cosine' is rebuilt for 2"
        f" epochs ({2 * first['iteration']} iterations) and goes on from iteration {first['iteration']}"
    ) in log
    assert "epoch 2/2: loss" in log and (run_dir / "checkpoints" / "epoch_2.pt").is_file()
    last = ckpt.load(run_dir / "checkpoints" / "last.pt")
    assert last["finished"] and last["epoch"] == 2 and last["iteration"] == 2 * first["iteration"]
    assert last["scheduler"]["last_epoch"] == last["iteration"]

    again = vvframe_cli("run", "--resume", str(run_dir), "trainer.epochs=2", "--stage", "train", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert (
        "train: this run finished already: 2 epochs trained, 2 asked (trainer.epochs); nothing to do (raise"
        " trainer.epochs to train on)" in again.stderr
    )
    fewer = vvframe_cli("run", "--resume", str(run_dir), "trainer.epochs=1", "--stage", "train", cwd=tmp_path)
    assert "finished already: 2 epochs trained, 1 asked (trainer.epochs); nothing to do\n" in fewer.stderr
    assert ckpt.load(run_dir / "checkpoints" / "last.pt")["epoch"] == 2


@pytest.mark.parametrize("keep, missing", [("1", "non-target (label 0)"), ("0", "target (label 1)")])
def test_validation_trials_without_both_kinds_stop_before_training(corpus, tmp_path, keep, missing):
    trials = tmp_path / "val.txt"
    trials.write_text(
        "".join(line + "\n" for line in (corpus / "trials.txt").read_text().splitlines() if line.split()[0] == keep)
    )
    result = vvframe_cli("run", str(recipe(corpus, tmp_path / "r.yaml")), f"data.val_trials={trials}", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    count = len(trials.read_text().splitlines())
    assert (
        f"data.val_trials {trials}: no {missing} trial among its {count} trials; the validation EER needs both:"
        " add the missing kind (`vvframe data trials` makes balanced ones), or set data.val_trials=null"
        in result.stderr
    )
    assert not list(tmp_path.glob("runs/tiny/*/checkpoints"))


# ---- the loss against the sampler, checked by the stage; validation through the Extractor ---------------
ANGLEPROTO_NEEDS_TWO = (
    "losses 'angleproto' needs at least 2 utterances of a speaker in a batch (its min_per_speaker), and samplers"
    " '{sampler}' gives 1 (per_speaker); give the sampler per_speaker: 2 or more"
)


def test_the_stage_checks_that_the_sampler_gives_the_loss_enough_utterances_of_a_speaker():
    from vvframe import Component
    from vvframe_plugins.stages.train import check, train

    assert train.check is check
    angleproto = Component("losses", "angleproto")
    for sampler in (Component("samplers", "random"), Component("samplers", "speaker_balanced")):
        assert check(angleproto, sampler) == [("sampler", ANGLEPROTO_NEEDS_TWO.format(sampler=sampler.name))]
    assert check(angleproto, Component("samplers", "speaker_balanced", {"per_speaker": 2})) == []
    assert check(Component("losses", "aamsoftmax"), Component("samplers", "random")) == []
    assert check(None, Component("samplers", "random")) == check(angleproto, None) == []


def test_vvframe_check_reports_the_default_sampler_against_a_loss_needing_pairs(corpus, tmp_path):
    path = recipe(corpus, tmp_path / "r.yaml")
    refused = vvframe_cli("check", str(path), "loss=angleproto", cwd=tmp_path)
    assert refused.returncode == 2 and ANGLEPROTO_NEEDS_TWO.format(sampler="random") in refused.stderr
    paired = vvframe_cli(
        "check", str(path), "loss=angleproto", "sampler={name: speaker_balanced, per_speaker: 2}", cwd=tmp_path
    )
    assert paired.returncode == 0, paired.stderr


def test_validation_through_the_extractor_gives_the_eer_of_embedding_each_file_alone(corpus, tmp_path):
    from vvframe.data.audio import read
    from vvframe.data.lists import read_trials, trial_files
    from vvframe.scoring.metrics import eer

    t = make_trainer(corpus, tmp_path, overrides=())
    t.train_batch(*first_batch(t))  # weights a step away from their initial values
    result = t.evaluate()
    # as validation embedded before it used the Extractor: one file at a time, cut to data.val_max_seconds
    data, net = t.job.data, t.parts.inner
    trials = read_trials(data.val_trials)
    limit = int(data.val_max_seconds * data.sample_rate)
    embeddings = {}
    net.eval()
    with torch.no_grad():
        for path in trial_files(trials):
            wave = read(Path(data.root) / path, data.sample_rate)[:limit]
            embeddings[path] = torch.nn.functional.normalize(net.model(net.frontend(wave[None])).float(), dim=-1)[0]
    net.train()
    scores = torch.stack([embeddings[x.enroll] @ embeddings[x.test] for x in trials])
    labels = torch.tensor([x.label for x in trials])
    assert torch.allclose(result.scores, scores, atol=1e-5)
    assert (result.labels == labels).all() and math.isclose(result.eer, eer(scores, labels)[0], abs_tol=1e-6)
