"""Small corpora: the recipe check warns before training when an epoch would use less than half the training list
(the sampler says so again in the run's log, once), and recipes/own_data.yaml trains on a small unequal corpus."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, vvframe_cli

from vvframe.core import recipe
from vvframe.data import lists

QUICKSTART = ROOT / "recipes" / "quickstart.yaml"
OWN_DATA = ROOT / "recipes" / "own_data.yaml"
CHECK_LOG = "vvframe_plugins.stages.train"


def write_list(path: Path, counts) -> Path:
    """An utterance list with ``counts[s]`` clips of speaker ``s`` (no audio: the check reads the labels only)."""
    lists.write_utterances(
        path,
        [lists.Utterance(f"spk{s:02d}", f"spk{s:02d}/{i:04d}.wav") for s, n in enumerate(counts) for i in range(n)],
    )
    return path


def unequal_counts(seed: int = 0) -> list[int]:
    """30 speakers, one with 6 clips, the others 20 to 300: the real corpus of issue 16 in shape."""
    rng = np.random.default_rng(seed)
    return [6, *rng.integers(20, 300, 29).tolist()]


def warnings_of(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == CHECK_LOG and r.levelno == logging.WARNING]


def test_the_check_warns_before_training_naming_the_numbers_and_the_fix(tmp_path, caplog):
    counts = unequal_counts()
    train = write_list(tmp_path / "train.txt", counts)
    with caplog.at_level(logging.INFO):
        resolved = recipe.check(QUICKSTART, [f"data.train_list={train}", "trainer.batch_size=30"])
    assert [s.name for s in resolved.stages] == [
        "train",
        "prepare",
        "calibrate",
        "eval",
        "test",
    ]  # a warning, not a problem
    (message,) = warnings_of(caplog)
    assert message.startswith(f"data.train_list {train}, trainer.batch_size 30, samplers 'speaker_balanced': ")
    assert f"an epoch uses 180 of the {sum(counts)} listed utterances" in message
    assert "every one of the 30, so the smallest speaker's 6 utterances set the epoch at 6 batches" in message
    assert "beyond max_per_speaker 100" in message  # the quickstart's cap is counted too
    batch, used = map(int, re.search(r"batch_size (\d+) \(\d+ speakers a batch\) uses (\d+)", message).groups())
    assert batch < 30 and used >= sum(counts) / 2
    assert "per_speaker: 2 (15 speakers a batch)" in message and "sampler: random" in message
    # the fix it names passes without a word
    caplog.clear()
    with caplog.at_level(logging.INFO):
        recipe.check(QUICKSTART, [f"data.train_list={train}", f"trainer.batch_size={batch}"])
    assert warnings_of(caplog) == []


@pytest.mark.parametrize(
    "counts, overrides",
    [
        ([20] * 30, ["trainer.batch_size=30"]),  # balanced: every batch holds every speaker, and that is fine
        (unequal_counts(), ["trainer.batch_size=16"]),  # unequal, fewer speakers a batch than there are
        (unequal_counts(), ["trainer.batch_size=30", "sampler=random"]),  # every utterance, speakers ignored
    ],
)
def test_a_list_an_epoch_uses_at_least_half_of_says_nothing(tmp_path, caplog, counts, overrides):
    train = write_list(tmp_path / "train.txt", counts)
    with caplog.at_level(logging.INFO):
        recipe.check(QUICKSTART, [f"data.train_list={train}", *overrides])
    assert warnings_of(caplog) == []


def test_without_the_list_or_with_a_batch_the_train_stage_refuses_the_check_says_nothing_more(tmp_path, caplog):
    train = write_list(tmp_path / "train.txt", [10] * 12)
    with caplog.at_level(logging.INFO):
        recipe.check(QUICKSTART, [f"data.train_list={tmp_path / 'none.txt'}", "trainer.batch_size=30"])
        recipe.check(QUICKSTART, [f"data.train_list={train}", "trainer.batch_size=30"])  # 12 speakers, 30 a batch
    assert warnings_of(caplog) == []


def test_under_ddp_the_check_counts_every_rank_and_names_the_global_batch(tmp_path, caplog):
    train = write_list(tmp_path / "train.txt", unequal_counts())
    overrides = [f"data.train_list={train}", "trainer.batch_size=60", "trainer.launcher=ddp", "trainer.nproc=2"]
    with caplog.at_level(logging.INFO):
        recipe.check(QUICKSTART, overrides)
    (message,) = warnings_of(caplog)
    assert "at 3 batches on each of 2 ranks" in message
    assert re.search(r"batch_size \d+ over 2 ranks \(\d+ speakers a batch\)", message)


def test_vvframe_check_prints_the_warning_and_passes(tmp_path):
    train = write_list(tmp_path / "train.txt", unequal_counts())
    result = vvframe_cli("check", str(QUICKSTART), f"data.train_list={train}", "trainer.batch_size=30")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"ok: {QUICKSTART}")
    assert "an epoch uses 180 of the" in result.stderr and "sampler: random" in result.stderr


def test_own_data_trains_on_a_small_unequal_corpus_and_says_once_that_an_epoch_wastes_it(tmp_path):
    """8 speakers, one with 2 clips, at own_data's batch of 8 speakers: the check warns, the run log says it once."""
    corpus = tmp_path / "corpus"
    made = vvframe_cli(
        "data",
        "synth",
        str(corpus),
        "--speakers",
        "8",
        "--utterances",
        "6",
        "--eval-speakers",
        "4",
        "--cohort-speakers",
        "0",
        "--seconds",
        "0.6-1.2",
        "--seed",
        "1",
    )
    assert made.returncode == 0, made.stderr
    utterances = lists.read_utterances(corpus / "train.txt")
    small = [u for u in utterances if u.speaker != "spk0000" or u.path.endswith(("0000.wav", "0001.wav"))]
    lists.write_utterances(corpus / "small.txt", small)
    assert len(small) == 44
    overrides = [
        f"data.root={corpus / 'audio'}",
        f"data.train_list={corpus / 'small.txt'}",
        "data.val_trials=null",
        "data.crop_seconds=0.5",
        f"cohort.list={corpus / 'eval.txt'}",
        f"eval.trials=[{corpus / 'trials.txt'}]",
        "trainer.epochs=2",
        "trainer.workers=0",
        "model.channels=32",
        "model.embed_dim=16",
        "frontend.n_mels=24",
    ]
    result = vvframe_cli("run", str(OWN_DATA), *overrides, "--run-dir", "run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    before = "an epoch uses 16 of the 44 listed utterances"
    assert f"samplers 'speaker_balanced': {before}" in result.stderr  # the check, before training
    log = (tmp_path / "run" / "log.txt").read_text()
    said = [line for line in log.splitlines() if before in line]
    checked = [line for line in said if f"samplers 'speaker_balanced': {before}" in line]
    assert len(checked) == 1 and "WARNING" in checked[0]  # the check's warning is in the run's log too
    (line,) = [line for line in said if line not in checked]  # two epochs, the sampler says it once
    assert (
        "speaker_balanced: an epoch uses 16 of the 44" in line
        and "smallest speaker's 2 utterances set the epoch at 1 batch." in line
    )
    assert (tmp_path / "run" / "eval" / "metrics.json").is_file()
