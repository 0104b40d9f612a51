"""The back end across DDP ranks: prepare, eval, test and `vvframe embed` with 2 gloo processes on the CPU give
what one process gives; crops are embedded in batches of many files, as each file alone would be."""

from __future__ import annotations

import csv
import json
import logging
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from vvframe.cli.infer import embed as embed_command
from vvframe.core import recipe as recipes
from vvframe.core import run as runs
from vvframe.core.registry import build
from vvframe.inference.card import CARD_FILE
from vvframe.scoring.embed import Extractor
from vvframe.scoring.ranks import deal
from vvframe.training import checkpoint as ckpt
from vvframe.training.launch import Dist, launch, setup_logging

RATE = 16000
TOLERANCE = 1e-6  # what "the same" means between 1 and 2 ranks (they are bit for bit the same with one thread each)
HANG_GUARD_S = 600  # every collective of the launched ranks: a hang fails, it never waits for ever (quiet: ~10 s)
# equal lengths recur, so that the files sharing a batch differ between one process and two ranks
LENGTHS = [8000, 8000, 12000, 8000, 12000, 16000, 8000, 12000, 8000, 16000, 12000, 8000]
FRONTEND = {"name": "fbank", "n_mels": 24}
MODEL = {"name": "xvector", "channels": 32, "stats_channels": 64, "embed_dim": 16}


def _networks() -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(0)
    frontend = build("frontends", FRONTEND, sample_rate=RATE)
    return frontend, build("models", MODEL, in_dim=frontend.out_dim)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread here and in every rank: a conv's float rounding depends on how its threads split the sums,
    so only with the same threads are two runs comparable bit for bit."""
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OMP_NUM_THREADS", "1")  # what spawned ranks get (the launcher leaves a set value alone)
        torch.set_num_threads(1)
        yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> dict[str, Path]:
    """Generated audio (4 evaluation and 3 cohort speakers), their lists, untrained weights, a recipe running
    prepare, eval and test with them, and that recipe's run in this process (``single``)."""
    root = tmp_path_factory.mktemp("ranks")
    audio = root / "audio"
    rng = np.random.default_rng(5)
    names = [f"s{i % 4}/{i}.wav" for i in range(len(LENGTHS))]
    cohort = [f"c{i % 3}/{i}.wav" for i in range(7)]
    waves = []
    for name, frames in zip(names + cohort, LENGTHS + [8000 + 4000 * (i % 2) for i in range(7)]):
        t = np.arange(frames) / RATE  # a few tones each: spectra far apart, so embeddings are too
        wave = sum(rng.uniform(0.05, 0.3) * np.sin(2 * np.pi * rng.uniform(150, 5000) * t) for _ in range(3))
        (audio / name).parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(audio / name), (wave + rng.normal(0, 0.01, frames)).astype(np.float32), RATE, subtype="PCM_16")
        waves.append(torch.tensor(wave[:8000], dtype=torch.float32))
    (root / "cohort.txt").write_text("".join(f"c{i % 3} c{i % 3}/{i}.wav\n" for i in range(7)))
    trials = [(int(a.split("/")[0] == b.split("/")[0]), a, b) for a in names for b in names if a < b]
    (root / "trials.txt").write_text("".join(f"{label} {a} {b}\n" for label, a, b in trials))
    (root / "pairs.txt").write_text("".join(f"{a} {b}\n" for _, a, b in trials[::5]))
    frontend, model = _networks()
    for module in model.modules():  # untrained batch norms map every file near one point: fit their statistics
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.momentum = None
    with torch.no_grad():
        model.train()(frontend(torch.stack(waves)))
    ckpt.save(root / "weights.pt", {"model": model.state_dict()})
    recipe = {
        "name": "ranks",
        "seed": 1,
        "stages": ["prepare", "eval", "test"],
        "data": {"root": str(audio)},
        "frontend": FRONTEND,
        "model": MODEL,
        "embed": {"checkpoint": str(root / "weights.pt"), "device": "cpu"},
        "cohort": {"list": str(root / "cohort.txt")},
        "normalizer": {"name": "asnorm", "top_k": 3},
        "eval": {"trials": [str(root / "trials.txt")]},
        "test": {"pairs": str(root / "pairs.txt")},
    }
    (root / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    _execute(str(root / "recipe.yaml"), str(root / "single"))
    return {"root": root, "audio": audio, "single": root / "single", "files": [str(audio / n) for n in names]}


def _execute(recipe: str, run_dir: str, overrides: tuple[str, ...] = (), rank: int = 0, world_size: int = 1) -> None:
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    ctx = runs.RunContext(recipes.check(recipe, overrides), run_dir, rank=rank, world_size=world_size)
    try:
        runs.execute(ctx)
    finally:
        ctx.close()


def _as_torchrun(dist: Dist, recipe: str, run_dir: str) -> None:
    """Every rank runs the whole recipe, as every process that torchrun starts does (`vvframe run`'s logging)."""
    setup_logging(Path(run_dir) / runs.LOG_FILE, rank=dist.rank)
    _execute(recipe, run_dir, rank=dist.rank, world_size=dist.world_size)


def _card(run: Path) -> dict:
    return json.loads((run / CARD_FILE).read_text())


def _results(run: Path) -> dict:
    """What the back-end stages leave: cohort tensors, eval scores and metrics, thresholds, test decisions."""
    cohort = torch.load(run / "cohort" / "embeddings.pt", weights_only=True)
    with open(run / "test" / "decisions.csv") as f:
        decisions = list(csv.DictReader(f))
    scores = [line.split() for line in (run / "eval" / "trials.scores").read_text().splitlines()]
    return {
        "speakers": cohort["speakers"],
        "cohort": cohort["embeddings"],
        "mean": torch.load(run / "cohort" / "mean.pt", weights_only=True)["mean"],
        "trials": [s[:2] + s[3:] for s in scores],
        "scores": torch.tensor([float(s[2]) for s in scores]),
        "metrics": json.loads((run / "eval" / "metrics.json").read_text())["trials"],
        "thresholds": json.loads((run / "eval" / "thresholds.json").read_text()),
        "pairs": [(d["enroll"], d["test"]) for d in decisions],
        "decided": torch.tensor([float(d["score"]) for d in decisions]),
        "decisions": [d["decision"] for d in decisions],
    }


def _assert_same(got: dict, want: dict) -> None:
    assert got["speakers"] == want["speakers"] and got["trials"] == want["trials"] and got["pairs"] == want["pairs"]
    for key in ("cohort", "mean", "scores", "decided"):
        torch.testing.assert_close(got[key], want[key], atol=TOLERANCE, rtol=0, msg=key)
    assert got["decisions"] == want["decisions"]
    assert json.dumps(got["metrics"]) == json.dumps(want["metrics"]) or _close(got["metrics"], want["metrics"])
    assert _close(got["thresholds"], want["thresholds"])


def _close(a, b) -> bool:
    """Nested dicts of numbers equal to within TOLERANCE (strings exactly)."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b or abs(a - b) <= TOLERANCE  # inf == inf
    return a == b


def test_stages_on_two_torchrun_ranks_equal_one_process(work):
    root = work["root"]
    launch(_as_torchrun, (str(root / "recipe.yaml"), str(root / "torchrun")), "ddp", "cpu", 2, timeout_s=HANG_GUARD_S)
    got, want = _results(root / "torchrun"), _results(work["single"])
    _assert_same(got, want)
    assert torch.equal(got["cohort"], want["cohort"]) and torch.equal(got["scores"], want["scores"])  # bit for bit
    assert _card(root / "torchrun") == _card(work["single"])
    log = (root / "torchrun" / "log.txt").read_text()
    assert log.count("under torchrun: its 2 processes split the files") == 3
    # each file embedded once, by one rank or the other, and cached by rank 0, so test found all of eval's
    assert len(list((root / "torchrun" / "cache").glob("*/*.pt"))) == 7 + len(LENGTHS)
    before, after = log.split("stage test: started")
    assert "embedded 7 files (0 cached)" in before and "embedded 12 files (0 cached)" in before
    assert "embedded" not in after and "test: 14 pairs" in after


def test_eval_spawned_by_embed_launcher_ddp_uses_the_cache_and_equals_one_process(work, caplog):
    root, single = work["root"], work["single"]
    made = {}
    for name in ("one", "two"):  # the same cohort, and the same cache with a third of its files gone
        run = made[name] = root / f"cached_{name}"
        shutil.copytree(single / "cohort", run / "cohort")
        shutil.copytree(single / "cache", run / "cache")  # the same weights and settings: the same cache folder
        cached = sorted((run / "cache").glob("*/*.pt"))
        for path in cached[::3]:
            path.unlink()
    caplog.set_level(logging.INFO)
    _execute(str(root / "recipe.yaml"), str(made["one"]), ("stages=[eval]",))
    one = caplog.text
    caplog.clear()
    _execute(str(root / "recipe.yaml"), str(made["two"]), ("stages=[eval]", "embed.launcher=ddp", "embed.nproc=2"))
    assert "ddp: starting 2 gloo ranks" in caplog.text
    embedded = re.findall(r"embedded (\d+) files \((\d+) cached\)", (made["two"] / "log.txt").read_text())  # rank 0's
    assert embedded == re.findall(r"embedded (\d+) files \((\d+) cached\)", one)
    assert embedded and 0 < int(embedded[0][0]) < len(LENGTHS) and int(embedded[0][1]) > 0
    for name in ("trials.scores", "metrics.json", "thresholds.json"):  # computed alike, so bit for bit alike
        assert (made["two"] / "eval" / name).read_text() == (made["one"] / "eval" / name).read_text(), name
    stored = [sorted(p.name for p in (made[n] / "cache").glob("*/*.pt")) for n in ("one", "two")]
    assert stored[1] == stored[0] and len(stored[1]) > len(cached) - len(cached[::3])  # rank 0 stored the new ones


def test_embed_command_on_two_ranks_equals_one_process(work, tmp_path, capsys):
    files, run = work["files"], str(work["single"])
    assert embed_command([run, *files, "--out", str(tmp_path / "one.npz"), "--device", "cpu"], "") == 0
    assert embed_command([run, *files, "--out", str(tmp_path / "two.npz"), "--device", "cpu", "--nproc", "2"], "") == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].replace("one.npz", "two.npz") == printed[1]
    one, two = np.load(tmp_path / "one.npz"), np.load(tmp_path / "two.npz")
    assert list(two["paths"]) == list(one["paths"]) == files and two["embeddings"].dtype == np.float32
    np.testing.assert_allclose(two["embeddings"], one["embeddings"], atol=TOLERANCE, rtol=0)
    assert json.loads(str(two["metadata"])) == json.loads(str(one["metadata"]))


class _Counter:
    """Counts a module's forward calls and the rows they get."""

    def __init__(self, module: torch.nn.Module):
        self.calls, self.rows = 0, 0
        module.register_forward_pre_hook(self)

    def __call__(self, module, args) -> None:
        self.calls += 1
        self.rows += len(args[0])


def test_crops_are_embedded_many_files_a_batch_as_each_file_alone(work):
    frontend, model = _networks()
    model.load_state_dict(ckpt.load(work["root"] / "weights.pt")["model"])
    paths = [str(Path(f).relative_to(work["audio"])) for f in work["files"]]
    counted = _Counter(model)
    settings = {"crops": 3, "crop_seconds": 0.6, "progress": False}
    together = Extractor(frontend, model, work["audio"], RATE, **settings)(paths)
    assert counted.calls == 1 and counted.rows == 3 * len(paths)  # every file's crops in one batch
    small = Extractor(frontend, model, work["audio"], RATE, batch_seconds=7.5, **settings)(paths)
    assert counted.calls == 1 + 3  # batch_seconds counts every crop: 4 files (7.2 s) a batch
    for path in paths:
        alone = Extractor(frontend, model, work["audio"], RATE, **settings)([path])[path]
        torch.testing.assert_close(together[path], alone, atol=TOLERANCE, rtol=0)
        torch.testing.assert_close(small[path], alone, atol=TOLERANCE, rtol=0)


def test_whole_batches_are_dealt_out_so_the_ranks_totals_differ_by_at_most_one_batch():
    costs = [len(b) * n for b, n in zip(["a" * (1 + i % 4) for i in range(40)], range(1000, 41000, 1000))]
    for world in (1, 2, 3, 8):
        owners = deal(costs, world)
        assert owners == deal(costs, world) and set(owners) <= set(range(world))
        totals = [sum(c for c, o in zip(costs, owners) if o == r) for r in range(world)]
        assert max(totals) - min(totals) <= max(costs) and sum(totals) == sum(costs)
    assert deal([], 2) == [] and deal([5, 5, 5], 3) == [0, 1, 2]
