"""A real third-party package, pip-installed, adds a model and a stage that a recipe uses; vvframe is untouched."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from conftest import HANG_GUARD, ROOT, vvframe_cli

EXAMPLE = ROOT / "examples" / "vvframe-example-plugin"


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict:
    """Environment in which examples/vvframe-example-plugin is pip-installed (into a temporary target)."""
    work = tmp_path_factory.mktemp("example")
    source = shutil.copytree(EXAMPLE, work / "src")  # building writes into the source tree: use a copy
    target = work / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--target",
            str(target),
            str(source),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(target), env.get("PYTHONPATH", "")]))
    return env


def test_the_installed_package_is_listed_under_its_own_distribution(installed):
    listed = vvframe_cli("plugins", env=installed)
    assert listed.returncode == 0, listed.stderr
    rows = [line.split() for line in listed.stdout.splitlines()]
    assert ["models", "tiny_tdnn", "vvframe_example.tdnn:TinyTDNN", "vvframe-example-plugin", "0.1.0"] in rows
    assert ["stages", "count_params", "vvframe_example.stage:count_params", "vvframe-example-plugin", "0.1.0"] in rows
    described = vvframe_cli("plugins", "models", "tiny_tdnn", env=installed)
    assert "embed_dim: int = 64" in described.stdout and "supplied by vvframe: in_dim" in described.stdout
    checked = vvframe_cli("plugins", "--check", env=installed)
    assert checked.returncode == 0, checked.stderr


def test_a_recipe_uses_the_third_party_model_and_stage(installed, tmp_path):
    result = vvframe_cli("run", str(EXAMPLE / "recipe.yaml"), "model.embed_dim=24", env=installed, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (run_dir,) = (tmp_path / "runs" / "example").iterdir()
    got = json.loads((run_dir / "params.json").read_text())
    # 3 conv layers (40->64 k5, 64->64 k3, 64->64 k3) with batch norm, then 128 -> 24
    expected = (40 * 64 * 5 + 64) + (64 * 64 * 3 + 64) * 2 + 3 * 2 * 64 + (128 * 24 + 24)
    assert got == {"model": "tiny_tdnn", "parameters": expected, "embed_dim": 24}
    assert "vvframe-example-plugin==0.1.0" in (run_dir / "recipe.yaml").read_text()


def test_a_typo_in_the_third_party_recipe_is_caught_like_any_other(installed):
    result = vvframe_cli("check", str(EXAMPLE / "recipe.yaml"), "model.chanels=3", "count.frame=10", env=installed)
    assert result.returncode == 2
    assert (
        "model.chanels (command-line override 1 (model.chanels=3)): unknown argument 'chanels' for models"
        " 'tiny_tdnn' (did you mean 'channels'?)" in result.stderr
    )
    assert "count.frame (command-line override 2 (count.frame=10)): unknown argument 'frame'" in result.stderr


def test_the_plugin_packages_own_tests_check_its_components_with_vvframe_testing(installed, tmp_path):
    tests = shutil.copytree(EXAMPLE / "tests", tmp_path / "tests")  # pytest writes caches beside what it runs
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tests)],
        capture_output=True,
        text=True,
        env=installed,
        cwd=tmp_path,
        timeout=HANG_GUARD,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 passed" in result.stdout, result.stdout
