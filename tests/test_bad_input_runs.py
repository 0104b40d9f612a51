"""Hostile or careless input around runs and loaded models: a run directory is data, outputs are never replaced
without --force, a failed attempt leaves nothing behind, a SIGTERM is an interruption, and every mistake gets a
message that names its culprit."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import HANG_GUARD, vvframe_cli
from test_cli import DEMO

import vvframe
from vvframe.inference.api import ModelError


def _copy_run(trained_run, tmp_path: Path, edit=None) -> Path:
    """A copy of the shared trained run (read-only) under ``tmp_path/runs/trained/<time>``, its model card edited
    (what loading reads)."""
    run = tmp_path / "runs" / "trained" / "2026-01-01_00-00-00"
    shutil.copytree(trained_run["run"], run)
    if edit:
        card = json.loads((run / "card.json").read_text())
        edit(card)
        (run / "card.json").write_text(json.dumps(card))
    return run


def test_a_loaded_run_never_imports_or_calls_what_its_card_names(trained_run, tmp_path):
    marker = tmp_path / "marker"

    def evil(recipe):
        recipe["normalizer"] = {"name": "subprocess:getoutput", "cmd": f"touch {marker}"}

    run = _copy_run(trained_run, tmp_path, evil)
    with pytest.raises(ModelError) as caught:
        vvframe.load(run, device="cpu")
    message = str(caught.value)
    assert f"{run / 'card.json'}: names Python objects directly (normalizer.name = 'subprocess:getoutput')" in message
    assert "builds only installed components (entry points)" in message and "trust_recipe=True" in message
    result = vvframe_cli("verify", str(run), "a.wav", "b.wav")
    assert result.returncode == 2 and "--trust-recipe" in result.stderr and "Traceback" not in result.stderr
    assert not marker.exists()


def test_trust_recipe_allows_a_reference_the_user_vouches_for(trained_run, tmp_path):
    def direct(recipe):
        recipe["normalizer"]["name"] = "vvframe_plugins.normalizers.asnorm:ASNorm"

    run = _copy_run(trained_run, tmp_path, direct)
    with pytest.raises(ModelError, match="names Python objects directly"):
        vvframe.load(run, device="cpu")
    model = vvframe.load(run, device="cpu", trust_recipe=True)
    assert model.normalizer is not None and type(model.normalizer).__name__ == "ASNorm"


def test_an_exported_file_builds_only_an_installed_normalizer(monkeypatch, tmp_path):
    from vvframe.inference import exported

    meta = {
        "format": "vvframe-model",
        "version": 1,
        "sample_rate": 16000,
        "embed_dim": 4,
        "normalizer": {"name": "os:system", "command": "touch x"},
    }
    monkeypatch.setattr(exported, "_contents", lambda path: ("onnx", meta, None))
    with pytest.raises(
        ModelError, match=r"model.onnx: names Python objects directly \(normalizer.name = 'os:system'\)"
    ):
        exported.load_exported(tmp_path / "model.onnx")


def test_embed_and_verify_never_replace_an_output_without_force(trained_run, tmp_path):
    run, audio = trained_run["run"], trained_run["audio"]
    files = [str(p) for p in sorted(audio.rglob("*.wav"))[:2]]
    out = tmp_path / "x.npz"
    out.write_bytes(b"precious")
    refused = vvframe_cli("embed", str(run), *files, "--out", str(out))
    assert refused.returncode == 2, refused.stderr
    assert f"error: {out} exists; choose another --out or pass --force to replace it" in refused.stderr
    assert out.read_bytes() == b"precious"
    assert vvframe_cli("embed", str(run), *files, "--out", str(out), "--force").returncode == 0
    assert out.read_bytes() != b"precious"

    pairs = tmp_path / "pairs.txt"
    pairs.write_text(f"{files[0]} {files[1]}\n")
    csv = tmp_path / "d.csv"
    csv.write_text("precious")
    refused = vvframe_cli("verify", str(run), "--pairs", str(pairs), "--out", str(csv))
    assert refused.returncode == 2 and f"{csv} exists" in refused.stderr and csv.read_text() == "precious"
    done = vvframe_cli("verify", str(run), "--pairs", str(pairs), "--out", str(csv), "--force")
    assert done.returncode == 0, done.stderr
    assert csv.read_text().startswith("enroll,test,score,decision")


def test_a_non_finite_threshold_is_refused(trained_run):
    files = [str(p) for p in sorted(trained_run["audio"].rglob("*.wav"))[:2]]
    for bad in ("nan", "inf", "-inf"):
        result = vvframe_cli("verify", str(trained_run["run"]), *files, f"--threshold={bad}")
        assert result.returncode == 2, (bad, result.stdout)
        assert f"threshold '{bad}': a threshold must be a finite number or one of eer," in result.stderr
        assert "score" not in result.stdout


def test_newest_run_means_newest_usable_and_says_which(trained_run, tmp_path):
    good = _copy_run(trained_run, tmp_path)
    failed = good.parent / "2026-02-02_00-00-00"  # newer, but an attempt that never trained
    failed.mkdir()
    shutil.copy(good / "recipe.yaml", failed / "recipe.yaml")
    (failed / "checkpoints").mkdir()
    assert vvframe.load(good.parent, device="cpu").source == str(good)
    files = [str(p) for p in sorted(trained_run["audio"].rglob("*.wav"))[:2]]
    result = vvframe_cli("verify", str(good.parent), *files)
    assert result.returncode == 0, result.stderr
    assert f"{good.parent}: using its newest usable run, {good}" in result.stderr


def test_a_mistake_found_before_any_work_leaves_no_run_directory(third_party, tmp_path):
    recipe = tmp_path / "demo.yaml"
    recipe.write_text(DEMO.replace("stages: [write, fail]", "stages: [write, picky]"))
    result = vvframe_cli("run", str(recipe), env=third_party, cwd=tmp_path)
    assert result.returncode == 2 and "/data/demo/train.txt:3: no such audio file" in result.stderr
    assert not (tmp_path / "runs").exists()
    mine = tmp_path / "mine"
    mine.mkdir()
    result = vvframe_cli("run", str(recipe), "--run-dir", str(mine), env=third_party, cwd=tmp_path)
    assert result.returncode == 2 and mine.is_dir() and not any(mine.iterdir())


def test_resume_and_recipe_paths_that_are_not_what_they_should_be(third_party, tmp_path):
    result = vvframe_cli("run", "--resume", str(tmp_path / "nosuchdir"), env=third_party)
    assert result.returncode == 2
    assert f"--resume {tmp_path / 'nosuchdir'}: no such directory" in result.stderr
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "a.yaml").write_text(DEMO)
    result = vvframe_cli("run", str(tmp_path / "recipes"), env=third_party)
    assert result.returncode == 2
    assert f"{tmp_path / 'recipes'} is a directory; give a recipe file (.yaml) (recipes in it: a.yaml)" in result.stderr


def test_a_corrupt_run_status_is_named_on_resume(third_party, tmp_path):
    recipe = tmp_path / "demo.yaml"
    recipe.write_text(DEMO)
    run = tmp_path / "run"
    vvframe_cli("run", str(recipe), "stages=[write]", "--run-dir", str(run), env=third_party, cwd=tmp_path)
    (run / "run.json").write_text('{"stages": {"write": ')
    result = vvframe_cli("run", "--resume", str(run), env=third_party, cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"{run / 'run.json'}: unreadable (" in result.stderr and "Move it aside" in result.stderr


def test_sigterm_is_an_interruption_with_the_resume_hint(third_party, tmp_path):
    recipe = tmp_path / "demo.yaml"
    recipe.write_text(DEMO.replace("stages: [write, fail]", "stages: [wait]"))
    run = tmp_path / "run"
    script = Path(sys.executable).parent / "vvframe"
    proc = subprocess.Popen(
        [str(script), "run", str(recipe), "--run-dir", str(run)],
        env=third_party,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + HANG_GUARD
        while not (run / "waiting").exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() else ""
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=HANG_GUARD)
    finally:
        proc.kill()
    assert proc.returncode == 143, err
    assert f"terminated (SIGTERM); continue with: vvframe run --resume {run}" in err
    status = json.loads((run / "run.json").read_text())["stages"]["wait"]
    assert status["status"] == "interrupted"
    assert "stage wait: interrupted while running" in (run / "log.txt").read_text()


def test_a_resumed_run_says_when_a_skipped_or_kept_stage_is_out_of_date(third_party, tmp_path):
    recipe = tmp_path / "demo.yaml"
    recipe.write_text(DEMO.replace("stages: [write, fail]", "stages: [write, fail]"))
    run = tmp_path / "run"
    vvframe_cli("run", str(recipe), "--run-dir", str(run), env=third_party, cwd=tmp_path)  # fail fails once
    vvframe_cli("run", "--resume", str(run), env=third_party, cwd=tmp_path)
    changed = vvframe_cli("run", "--resume", str(run), "trainer.epochs=5", env=third_party, cwd=tmp_path)
    assert changed.returncode == 0, changed.stderr
    assert (
        "stage write: finished already, skipped, although trainer changed since; name it with --stage write to"
        " run it again with the new values"
    ) in changed.stderr
    again = vvframe_cli("run", "--resume", str(run), "--stage", "write", env=third_party, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "stage fail: finished before write runs again, so its results may be out of date" in again.stderr
