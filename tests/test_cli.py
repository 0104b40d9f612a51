"""The vvframe command end to end, in subprocesses, with a real third-party distribution installed."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, TESTS, vvframe_cli, write_distribution
from test_recipe import GOOD

# the recipe tests' demo, with a second stage that fails once and an optimizer
DEMO = GOOD.replace("stages: [write]", "stages: [write, fail]") + "optimizer: {name: sgd, lr: 0.1}\n"


@pytest.fixture
def demo(tmp_path) -> Path:
    path = tmp_path / "demo.yaml"
    path.write_text(DEMO)
    return path


def no_traceback(result) -> None:
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout


def test_version():
    result = vvframe_cli("--version")
    assert result.returncode == 0 and result.stdout.startswith("vvframe 0.")


def test_plugins_lists_every_kind_and_each_component_with_its_distribution(third_party):
    result = vvframe_cli("plugins", env=third_party)
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines()[1:] if line.strip() and not line.startswith("`")]
    assert {r[0] for r in rows} == {
        "frontends",
        "models",
        "losses",
        "augmentors",
        "samplers",
        "normalizers",
        "optimizers",
        "schedulers",
        "stages",
    }
    assert ["models", "tiny", "fake_components:Model", "vvframe-fakes", "0.1"] in rows
    assert ["optimizers", "sgd", "torch.optim:SGD", "vvframe"] == rows[[r[1] for r in rows].index("sgd")][:4]


def test_plugins_kind_name_describes_every_listed_component(third_party):
    listed = vvframe_cli("plugins", env=third_party).stdout.splitlines()[1:]
    pairs = [line.split()[:2] for line in listed if line.strip() and not line.startswith("`")]
    pairs = [(k, n) for k, n in pairs if n != "-"]
    assert len(pairs) >= 10
    # every component through the API in one process (fast), one through the command (each start imports torch)
    check = (
        "import sys\nfrom vvframe.cli.plugins import describe\nfor line in sys.stdin:\n    kind, name = line.split()\n"
        "    text = describe(kind, name)\n    assert text.startswith(f\"{kind} '{name}'\"), text\n"
        "    assert 'supplied by vvframe:' in text\n"
    )
    described = subprocess.run(
        [sys.executable, "-c", check],
        input="".join(f"{k} {n}\n" for k, n in pairs),
        capture_output=True,
        text=True,
        env=third_party,
    )
    assert described.returncode == 0, described.stderr
    for kind, name in [("models", "tiny")]:
        result = vvframe_cli("plugins", kind, name, env=third_party)
        assert result.returncode == 0, (kind, name, result.stderr)
        assert result.stdout.startswith(f"{kind} '{name}'") and "supplied by vvframe:" in result.stdout


def test_plugins_with_an_unknown_kind_or_name(third_party):
    result = vvframe_cli("plugins", "model", env=third_party)
    assert result.returncode == 2 and "unknown kind 'model' (did you mean 'models'?)" in result.stderr
    result = vvframe_cli("plugins", "models", "tinny", env=third_party)
    assert result.returncode == 2 and "(did you mean 'tiny'?)" in result.stderr
    no_traceback(result)


def test_plugins_check_passes_for_what_is_installed():
    result = vvframe_cli("plugins", "--check")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok: ")


def test_a_plugin_that_fails_to_import_is_named_and_the_rest_still_listed(third_party, tmp_path):
    site = Path(third_party["PYTHONPATH"].split(":")[0])
    write_distribution(
        site, "broken-plugin", {"models": {"broken": "broken_plugin:Net"}}, [TESTS / "broken_plugin.py"], version="2.0"
    )
    listed = vvframe_cli("plugins", "models", env=third_party)
    assert listed.returncode == 0 and "broken" in listed.stdout and "tiny" in listed.stdout
    checked = vvframe_cli("plugins", "--check", env=third_party)
    assert checked.returncode == 1
    assert (
        "models 'broken' (broken_plugin:Net, from broken-plugin==2.0) failed to import: ImportError:"
        " No module named 'missing_dependency'"
    ) in checked.stderr
    no_traceback(checked)
    (tmp_path / "r.yaml").write_text("stages: [write]\ndata: {root: /x}\nmodel: broken\n")
    used = vvframe_cli("check", str(tmp_path / "r.yaml"), env=third_party)
    assert used.returncode == 2 and "failed to import" in used.stderr
    no_traceback(used)


def test_check_and_show(third_party, demo):
    result = vvframe_cli("check", str(demo), "trainer.epochs=4", env=third_party)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"ok: {demo}: stages write, fail;")
    shown = vvframe_cli("show", str(demo), "trainer.epochs=4", env=third_party)
    data = yaml.safe_load(shown.stdout)
    assert data["trainer"] == {"epochs": 4, "batch_size": 8, "precision": "fp32"}
    assert data["model"]["dropout"] == 0.0 and data["plugins"]["stages.0"]["distribution"] == "vvframe-fakes==0.1"


def test_a_misspelled_component_and_argument_are_both_reported_with_exit_2(third_party, demo, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(DEMO.replace("name: tiny,", "name: tinny,").replace("margin: 0.3", "margn: 0.3"))
    result = vvframe_cli("run", str(bad), env=third_party, cwd=tmp_path)
    assert result.returncode == 2
    assert re.sub(r"lists all \d+", "lists all N", result.stderr).splitlines() == [
        f"error: {bad}: 2 problems",
        f"  model.name ({bad}:7): no models component named 'tinny' is installed (did you mean 'tiny'?)"
        " (`vvframe plugins models` lists all N)",
        f"  loss.margn ({bad}:8): unknown argument 'margn' for losses 'margin_loss' (did you mean 'margin'?);"
        " it accepts: margin=0.2, scale=30.0",
    ]
    assert not (tmp_path / "runs").exists()  # nothing was started


def test_recipe_mistakes_print_no_traceback_unless_asked(third_party, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nmodel: {name: tiny\n")
    result = vvframe_cli("check", str(bad), env=third_party)
    assert result.returncode == 2 and result.stderr.startswith(f"error: {bad}: 1 problem\n  {bad}:3:1: YAML syntax")
    no_traceback(result)
    result = vvframe_cli("--traceback", "check", str(bad), env=third_party)
    assert result.returncode == 2 and "Traceback" in result.stderr


def test_missing_recipe_file_and_bad_override(third_party, demo):
    result = vvframe_cli("run", "nothere.yaml", env=third_party)
    assert result.returncode == 2 and "recipe file nothere.yaml does not exist" in result.stderr
    result = vvframe_cli("check", str(demo), "trainer.epochz=3", env=third_party)
    assert result.returncode == 2
    assert "trainer.epochz (command-line override 1 (trainer.epochz=3)): unknown argument 'epochz'" in result.stderr
    assert "(did you mean 'epochs'?)" in result.stderr
    no_traceback(result)


def test_a_run_writes_its_directory_and_a_failing_stage_exits_1_keeping_it(third_party, demo, tmp_path):
    result = vvframe_cli("run", str(demo), env=third_party, cwd=tmp_path)
    assert result.returncode == 1
    (run_dir,) = (tmp_path / "runs" / "demo").iterdir()
    assert result.stderr.splitlines()[-1] == (
        f"error: stage 'fail' failed: RuntimeError: boom in the stage (traceback in runs/demo/{run_dir.name}/log.txt)"
    )
    no_traceback(result)
    log = (run_dir / "log.txt").read_text()
    assert "Traceback (most recent call last)" in log and "RuntimeError: boom in the stage" in log
    status = json.loads((run_dir / "run.json").read_text())["stages"]
    assert status["write"]["status"] == "done" and status["fail"]["status"] == "failed"
    assert list(run_dir.glob("events.out.tfevents.*")), "no TensorBoard events in the run directory"
    snapshot = yaml.safe_load((run_dir / "recipe.yaml").read_text())
    assert snapshot["model"] == {"name": "tiny", "embed_dim": 12, "dropout": 0.0, "widths": [8]}
    written = json.loads((run_dir / "written.json").read_text())
    assert written == {
        "epochs": 2,
        "precision": "fp32",
        "root": "/data/demo",
        "in_dim": 24,
        "embed_dim": 12,
        "widths": [8],
        "margin": 0.3,
        "augment": [0.4],
        "resumed": False,
    }

    # resume: the finished stage is skipped, the failed one runs again, the recipe comes from the run
    resumed = vvframe_cli("run", "--resume", str(run_dir), env=third_party, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "stage write: finished already, skipped" in resumed.stderr
    assert len((run_dir / "written.json").read_text().splitlines()) == 1
    assert sorted(p.name for p in run_dir.glob("recipe*.yaml")) == ["recipe.yaml"]
    assert json.loads((run_dir / "run.json").read_text())["stages"]["fail"]["status"] == "done"

    # --stage runs a finished stage again; a changed recipe is saved beside the original, never over it
    again = vvframe_cli(
        "run", "--resume", str(run_dir), "--stage", "write", "trainer.epochs=5", env=third_party, cwd=tmp_path
    )
    assert again.returncode == 0, again.stderr
    lines = (run_dir / "written.json").read_text().splitlines()
    assert json.loads(lines[-1])["epochs"] == 5 and json.loads(lines[-1])["resumed"] is True
    assert len(list(run_dir.glob("recipe.*.yaml"))) == 1  # recipe.<time>.yaml beside recipe.yaml
    assert yaml.safe_load((run_dir / "recipe.yaml").read_text())["trainer"]["epochs"] == 2


def test_each_run_gets_a_new_directory_and_run_dir_must_be_new(third_party, demo, tmp_path):
    one_stage = ["stages=[write]"]
    first = vvframe_cli("run", str(demo), *one_stage, env=third_party, cwd=tmp_path)
    second = vvframe_cli("run", str(demo), *one_stage, env=third_party, cwd=tmp_path)
    assert first.returncode == 0 and second.returncode == 0, second.stderr
    assert len(list((tmp_path / "runs" / "demo").iterdir())) == 2
    target = tmp_path / "mine"
    ok = vvframe_cli("run", str(demo), *one_stage, "--run-dir", str(target), env=third_party, cwd=tmp_path)
    assert ok.returncode == 0 and (target / "recipe.yaml").is_file()
    refused = vvframe_cli("run", str(demo), *one_stage, "--run-dir", str(target), env=third_party, cwd=tmp_path)
    assert refused.returncode == 2 and "exists and is not empty" in refused.stderr
    unknown = vvframe_cli("run", str(demo), "--stage", "trian", env=third_party, cwd=tmp_path)
    assert (
        unknown.returncode == 2
        and "--stage trian: not a stage of this recipe (its stages: write, fail)" in unknown.stderr
    )


def test_quickstart_without_its_corpus_stops_before_any_work(tmp_path):
    result = vvframe_cli("run", str(ROOT / "recipes" / "quickstart.yaml"), cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    installed = vvframe_cli("plugins", "stages").stdout
    missing = [s for s in ("train", "prepare", "eval", "test") if f"stages  {s} " not in installed]
    if not missing:  # every stage is there: the corpus (made by `make quickstart`) is what is missing
        assert "data/quickstart/train.txt: no such list file" in result.stderr
        return
    for stage in missing:
        assert f"no stages component named '{stage}'" in result.stderr
    assert not (tmp_path / "runs").exists()
