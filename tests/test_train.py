"""The train stage end to end on a tiny synthetic corpus: runs, validation, checkpoints, resume, DDP, precision."""
from __future__ import annotations

import json
import re
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from conftest import vvframe_cli
from vvframe import checkpoint as ckpt

SYNTH = ["--speakers", "6", "--utterances", "6", "--eval-speakers", "4", "--cohort-speakers", "0",
         "--seconds", "1-1.5", "--seed", "3"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("corpus")
    made = vvframe_cli("data", "synth", str(out), *SYNTH)
    assert made.returncode == 0, made.stderr
    return out


def recipe(corpus: Path, path: Path, **trainer) -> Path:
    settings = {"epochs": 3, "batch_size": 12, "workers": 0, "log_every": 1, **trainer}
    data = {
        "name": "tiny", "seed": 1, "stages": ["train"],
        "data": {"root": str(corpus / "audio"), "train_list": str(corpus / "train.txt"),
                 "val_trials": str(corpus / "trials.txt"), "crop_seconds": 0.5, "val_max_seconds": 1.0},
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
    assert {"train/loss", "train/accuracy", "train/lr", "train/margin", "val/eer", "val/min_dcf",
            "train/utterances_per_second", "train/data_wait_fraction"} <= tags

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
    deadline = time.monotonic() + 240
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
    single = vvframe_cli("run", str(recipe(corpus, one / "r.yaml", batch_size=6, accumulate=2, **common)),
                         "data.val_trials=null", cwd=one)
    assert single.returncode == 0, single.stderr
    ddp = vvframe_cli("run", str(recipe(corpus, two / "r.yaml", batch_size=12, launcher="ddp", nproc=2, **common)),
                      "data.val_trials=null", cwd=two)
    assert ddp.returncode == 0, ddp.stderr
    a, b = final_parameters(run_dir_of(one)), final_parameters(run_dir_of(two))
    assert ckpt.load(run_dir_of(one) / "checkpoints" / "last.pt")["iteration"] == \
        ckpt.load(run_dir_of(two) / "checkpoints" / "last.pt")["iteration"] > 0
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
    result = vvframe_cli("run", str(recipe(corpus, tmp_path / "r.yaml", epochs=1, precision=precision)),
                         cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert all(torch.isfinite(v.float()).all() for v in final_parameters(run_dir_of(tmp_path)).values())


def test_a_recipe_naming_missing_audio_stops_before_training(corpus, tmp_path):
    listing = tmp_path / "train.txt"
    listing.write_text((corpus / "train.txt").read_text() + "ghost ghost/0.wav\n")
    result = vvframe_cli("run", str(recipe(corpus, tmp_path / "r.yaml")), f"data.train_list={listing}",
                         cwd=tmp_path)
    assert result.returncode == 2 and "1 file missing" in result.stderr and "ghost/0.wav" in result.stderr
    assert "Traceback" not in result.stderr
    status = json.loads((run_dir_of(tmp_path) / "run.json").read_text())
    assert status["stages"]["train"]["status"] == "failed"


def test_under_torchrun_every_process_joins_one_run_directory(corpus, tmp_path):
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    path = recipe(corpus, tmp_path / "r.yaml", epochs=1, launcher="ddp")
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                             str(port), "-m", "vvframe", "run", str(path), "--run-dir", str(tmp_path / "run")],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "rank 0 of 2" in (tmp_path / "run" / "log.txt").read_text()
    assert ckpt.load(tmp_path / "run" / "checkpoints" / "last.pt")["finished"]
    assert not (tmp_path / "runs").exists()
    refused = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "1",
                              "--master_port", str(port), "-m", "vvframe", "run", str(path)],
                             cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert refused.returncode != 0 and "give every process the same --run-dir" in refused.stderr


def test_dataparallel_without_two_gpus_runs_the_plain_module_and_says_so(corpus, tmp_path):
    if torch.cuda.device_count() >= 2:
        pytest.skip("two GPUs here: DataParallel really runs")
    result = vvframe_cli("run", str(recipe(corpus, tmp_path / "r.yaml", epochs=1, launcher="dp")),
                         "data.val_trials=null", cwd=tmp_path)
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
    result = vvframe_cli("run", str(path), "optimizer.lr=0.0", cwd=tmp_path)  # nothing learns: no better EER
    assert result.returncode == 0, result.stderr
    log = (run_dir_of(tmp_path) / "log.txt").read_text()
    assert "early stop: no better validation EER for 1 validations" in log
    assert ckpt.load(run_dir_of(tmp_path) / "checkpoints" / "last.pt")["epoch"] == 2


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
    listing.write_text("".join(line + "\n" for line in (corpus / "train.txt").read_text().splitlines()
                               if not line.startswith("spk0005")))
    result = vvframe_cli("run", str(recipe(corpus, fewer / "r.yaml", epochs=1, init_from=str(source))),
                         f"data.train_list={listing}", cwd=fewer)
    assert result.returncode == 0, result.stderr
    assert "network only; the classifier head is rebuilt" in (run_dir_of(fewer) / "log.txt").read_text()


def test_init_from_a_speed_perturbed_run_maps_the_head_back(corpus, tmp_path):
    first = tmp_path / "first"
    first.mkdir()
    made = vvframe_cli("run", str(recipe(corpus, first / "r.yaml", epochs=1)),
                       "augment=[{name: speed, new_speakers: true}]", "data.val_trials=null", cwd=first)
    assert made.returncode == 0, made.stderr
    source = run_dir_of(first)
    assert ckpt.load(source / "checkpoints" / "last.pt")["num_classes"] == 18
    second = tmp_path / "second"
    second.mkdir()
    result = vvframe_cli("run", str(recipe(corpus, second / "r.yaml", epochs=1, init_from=str(source))),
                         "data.val_trials=null", cwd=second)
    assert result.returncode == 0, result.stderr
    assert "mapped back from 18 speed-perturbed classes (x3)" in (run_dir_of(second) / "log.txt").read_text()
    old = ckpt.load(source / "checkpoints" / "last.pt")["loss"]
    new = ckpt.load(run_dir_of(second) / "checkpoints" / "last.pt")
    assert new["num_classes"] == 6 and new["loss"]["weight"].shape == (6, 16) and old["weight"].shape == (18, 16)
