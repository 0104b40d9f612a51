"""Shared fixtures: a registry of hand-made entry points, a real third-party distribution, the CLI."""

from __future__ import annotations

import importlib.metadata as md
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from vvframe.core import registry

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent

if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    # pytest-xdist runs several workers on the machine's cores: one torch thread each (the commands they start
    # inherit it), so that workers and their subprocesses never oversubscribe the cores
    os.environ.setdefault("OMP_NUM_THREADS", "1")

FAKE = {
    "frontends": {"fake_fbank": "fake_components:Frontend"},
    "models": {"tiny": "fake_components:Model", "tiny_v2": "fake_components:Model"},
    "losses": {
        "margin_loss": "fake_components:Loss",
        "pair_loss": "fake_components:PairLoss",
        "nan_loss": "fake_components:nan_loss",
    },
    "samplers": {"groups": "fake_components:GroupSampler"},
    "augmentors": {
        "hiss": "fake_components:noise",
        "boost": "fake_components:gain",
        "exploding": "fake_components:exploding",
    },
    "optimizers": {"sgd": "torch.optim:SGD"},
    "stages": {
        "write": "fake_components:WriteStage",
        "fail": "fake_components:fail_stage",
        "wait": "fake_components:wait_stage",
        "picky": "fake_components:picky_stage",
    },
}


def make_entry_points(spec: dict[str, dict[str, str]]) -> list[md.EntryPoint]:
    """Hand-made entry points: ``{kind: {name: 'module:attr'}}``."""
    return [
        md.EntryPoint(name, value, f"vvframe.{kind}") for kind, items in spec.items() for name, value in items.items()
    ]


@pytest.fixture
def fake_registry(monkeypatch):
    """Replace the discovery seam with FAKE; call the fixture's value with another spec to change it."""

    def install(spec: dict[str, dict[str, str]] = FAKE) -> None:
        monkeypatch.setattr(registry, "_entry_points", lambda: make_entry_points(spec))
        registry.refresh()

    install()
    yield install
    registry.refresh()


def write_distribution(
    site: Path, name: str, entry_points: dict[str, dict[str, str]], modules: list[Path] = (), version: str = "0.1"
) -> Path:
    """A real installed distribution in ``site``: a .dist-info with METADATA and entry_points.txt, plus modules."""
    site.mkdir(parents=True, exist_ok=True)
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lines = []
    for kind, items in entry_points.items():
        lines.append(f"[vvframe.{kind}]")
        lines += [f"{n} = {v}" for n, v in items.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    for module in modules:
        shutil.copy(module, site / module.name)
    return site


@pytest.fixture
def third_party(tmp_path):
    """Environment for a subprocess in which a third-party distribution 'vvframe-fakes' is installed."""
    spec = {kind: items for kind, items in FAKE.items() if kind != "optimizers"}  # vvframe declares those
    site = write_distribution(tmp_path / "site", "vvframe-fakes", spec, [TESTS / "fake_components.py"])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), env.get("PYTHONPATH", "")]))
    env.pop("COLUMNS", None)
    return env


# A hang guard, never a speed limit: the longest command a test runs takes about a minute on a quiet 2-core machine,
# and the suite must pass on one slow, busy core too.
HANG_GUARD = 1800


def vvframe_cli(*args: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run the installed ``vvframe`` console script."""
    script = Path(sys.executable).parent / "vvframe"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "vvframe"]
    return subprocess.run([*command, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=HANG_GUARD)


TRAINED_RECIPE = {
    "name": "trained",
    "seed": 3,
    "stages": ["train", "prepare", "eval", "test"],
    "frontend": {"name": "fbank", "n_mels": 24},
    "model": {"name": "ecapa_tdnn", "channels": 32, "embed_dim": 24},
    "loss": {"name": "aamsoftmax", "margin": 0.1, "scale": 16},
    "optimizer": {"name": "adam", "lr": 0.003},
    "trainer": {"epochs": 3, "batch_size": 32, "workers": 0},
    "normalizer": {"name": "asnorm", "top_k": 4},
    "data": {"root": "c/audio", "train_list": "c/train.txt", "crop_seconds": 1.0},
    "cohort": {"list": "c/cohort.txt"},
    "eval": {"trials": ["c/trials.txt"]},
    "test": {"pairs": "c/pairs.txt"},
}


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> dict[str, Path]:
    """A finished small run with every stage (train, prepare with an AS-norm cohort, eval thresholds, test
    decisions) on a synthetic corpus: ``{"work": folder, "run": run directory, "audio": the corpus's audio}``.
    Shared by the tests of the Python API, export and the service; treat it as read-only."""
    import yaml

    work = tmp_path_factory.mktemp("trained")
    made = vvframe_cli(
        "data",
        "synth",
        str(work / "c"),
        "--speakers",
        "12",
        "--utterances",
        "6",
        "--eval-speakers",
        "5",
        "--cohort-speakers",
        "5",
        "--seconds",
        "1-2.5",
        "--seed",
        "11",
    )
    assert made.returncode == 0, made.stderr
    (work / "r.yaml").write_text(yaml.safe_dump(TRAINED_RECIPE))
    done = vvframe_cli("run", "r.yaml", "--run-dir", "run", cwd=work)
    assert done.returncode == 0, done.stderr
    return {"work": work, "run": work / "run", "audio": work / "c" / "audio"}


# The longest files first, so that pytest-xdist (by file) never leaves one of them alone at the end: its own order
# puts files with more tests first, which would leave the reduced quickstart (three tests, two minutes) last.
LONGEST_FIRST = (
    "test_quickstart.py",
    "test_train.py",
    "test_export.py",
    "test_api.py",
    "test_serve.py",
    "test_recipes.py",
    "test_launch.py",
    "test_cli.py",
    "test_bad_input_runs.py",
    "test_synth.py",
)


def _rank(scope: str) -> int:
    name = scope.split("::", 1)[0].rsplit("/", 1)[-1]
    return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)


@pytest.hookimpl(optionalhook=True)  # a pytest-xdist hook: without xdist there is nothing to schedule
def pytest_xdist_make_scheduler(config, log):
    """``--dist loadfile`` handing out the files of LONGEST_FIRST before the others (xdist's order otherwise)."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class LongestFirst(LoadFileScheduling):
        def _assign_work_unit(self, node):
            for scope in reversed(sorted(self.workqueue, key=_rank)):  # stable: ties keep xdist's order
                self.workqueue.move_to_end(scope, last=False)
            super()._assign_work_unit(node)

    return LongestFirst(config, log)
