"""The back-end stages end to end: prepare (cohort), eval (scores, AS-norm, metrics, DET, thresholds), test."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
from conftest import vvframe_cli


@pytest.fixture(scope="module")
def runs(trained_run) -> dict[str, Path]:
    """The shared trained run (conftest's ``trained_run``: train, prepare, eval, test on a synthetic corpus).
    That training lowers the error is test_quickstart's point, with a margin this tiny run would not have."""
    return {"work": trained_run["work"], "trained": trained_run["run"]}


def test_every_output_file_is_written(runs):
    run = runs["trained"]
    assert (run / "cohort" / "embeddings.pt").is_file() and (run / "cohort" / "mean.pt").is_file()
    lines = (run / "eval" / "trials.scores").read_text().splitlines()
    trials = (runs["work"] / "c" / "trials.txt").read_text().splitlines()
    assert len(lines) == len(trials)
    enroll, test, score, label = lines[0].split()
    assert (label, enroll, test) == tuple(trials[0].split()) and -10 < float(score) < 10
    assert (run / "eval" / "trials_det.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    metrics = json.loads((run / "eval" / "metrics.json").read_text())["trials"]
    assert set(metrics["raw"]) == {"eer", "eer_threshold", "cllr", "min_dcf"}
    assert set(metrics["raw"]["min_dcf"]) == {"0.01", "0.05"} and "normalized" in metrics
    thresholds = json.loads((run / "eval" / "thresholds.json").read_text())
    assert {"eer", "mindcf@0.01", "mindcf@0.05", "far@0.001", "tuned_on"} <= set(thresholds)
    with open(run / "test" / "decisions.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(trials) and set(rows[0]) == {"enroll", "test", "score", "decision"}
    accepted = [r for r in rows if r["decision"] == "1"]
    assert all(float(r["score"]) >= thresholds["eer"] - 1e-6 for r in accepted) and 0 < len(accepted) < len(rows)
    log = (run / "log.txt").read_text()
    assert re.search(r"embedding with the weights of run/checkpoints/(avg|best|last)\.pt", log)


def test_csv_pairs_and_a_numeric_threshold_with_another_runs_weights(runs, tmp_path):
    work = runs["work"]
    pairs = tmp_path / "pairs.csv"
    pairs.write_text(
        "audio_1,audio_2\n"
        + "".join(",".join(line.split()) + "\n" for line in (work / "c" / "pairs.txt").read_text().splitlines()[:10])
    )
    result = vvframe_cli(
        "run",
        "r.yaml",
        "--run-dir",
        str(tmp_path / "run"),
        "stages=[test]",
        f"embed.checkpoint={runs['trained']}",
        f"test.pairs={pairs}",
        "test.threshold=0.5",
        "normalizer=null",
        cwd=work,
    )
    assert result.returncode == 0, result.stderr
    rows = (tmp_path / "run" / "test" / "decisions.csv").read_text().splitlines()
    assert len(rows) == 11 and all(r.endswith(",1") == (float(r.split(",")[2]) >= 0.5) for r in rows[1:])


@pytest.mark.parametrize(
    "line, message",
    [
        ("maybe eval0000/0000.wav eval0001/0000.wav", "expected '<0|1|target|nontarget> <enroll> <test>'"),
        ("1 eval0000/0000.wav ghost/0.wav", "1 file missing"),
    ],
)
def test_bad_trials_are_recipe_errors_before_extraction(runs, tmp_path, line, message):
    trials = tmp_path / "trials.txt"
    trials.write_text((runs["work"] / "c" / "trials.txt").read_text() + line + "\n")
    result = vvframe_cli(
        "run",
        "r.yaml",
        "--run-dir",
        str(tmp_path / "run"),
        "stages=[eval]",
        f"embed.checkpoint={runs['trained']}",
        f"eval.trials=[{trials}]",
        cwd=runs["work"],
    )
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "run" / "eval").exists()
