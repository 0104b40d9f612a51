"""`vvframe data` end to end: synth, then lists and trials over its audio, then convert and shards."""

from __future__ import annotations

import soundfile as sf
from conftest import vvframe_cli

from vvframe.data import lists
from vvframe.data.shards import ShardDataset


def test_synth_then_lists_and_trials_give_a_trainable_corpus(tmp_path):
    out = tmp_path / "synth"
    made = vvframe_cli(
        "data",
        "synth",
        str(out),
        "--speakers",
        "5",
        "--utterances",
        "4",
        "--eval-speakers",
        "3",
        "--cohort-speakers",
        "2",
        "--val-speakers",
        "2",
        "--seconds",
        "1-1.5",
        "--seed",
        "7",
    )
    assert made.returncode == 0, made.stderr
    train = lists.read_utterances(out / "train.txt")
    evaluation = lists.read_utterances(out / "eval.txt")
    cohort = lists.read_utterances(out / "cohort.txt")
    validation = lists.read_utterances(out / "val.txt")
    assert (len(train), len(evaluation), len(cohort), len(validation)) == (20, 12, 8, 8)
    val_trials = lists.read_trials(out / "val_trials.txt")
    assert {t.label for t in val_trials} == {0, 1}
    assert set(lists.trial_files(val_trials)) <= {u.path for u in validation}
    speakers = [{u.speaker for u in x} for x in (train, evaluation, cohort, validation)]
    assert all(not a & b for i, a in enumerate(speakers) for b in speakers[i + 1 :])  # disjoint voices
    trials = lists.read_trials(out / "trials.txt")
    assert {t.label for t in trials} == {0, 1} and lists.read_trials(out / "pairs.txt")[0].label is None
    audio = out / "audio"
    lists.check_files([u.path for u in train + evaluation + cohort] + lists.trial_files(trials), audio, "synth")
    info = sf.info(str(audio / train[0].path))
    assert info.samplerate == 16000 and info.channels == 1 and 1.0 <= info.duration <= 1.5

    again = vvframe_cli(
        "data",
        "synth",
        str(tmp_path / "again"),
        "--speakers",
        "5",
        "--utterances",
        "4",
        "--eval-speakers",
        "3",
        "--cohort-speakers",
        "2",
        "--seconds",
        "1-1.5",
        "--seed",
        "7",
    )
    assert again.returncode == 0
    assert (tmp_path / "again/audio" / train[3].path).read_bytes() == (audio / train[3].path).read_bytes()

    split = vvframe_cli("data", "lists", str(audio), "--out", str(tmp_path / "lists"), "--split-ratio", "0.5")
    assert split.returncode == 0, split.stderr
    held = lists.read_utterances(tmp_path / "lists" / "val.txt")
    assert len(held) == 24 and len(lists.read_utterances(tmp_path / "lists" / "train.txt")) == 24
    made = vvframe_cli("data", "trials", str(tmp_path / "lists" / "val.txt"), "--out", str(tmp_path / "val.txt"))
    assert made.returncode == 0 and lists.read_trials(tmp_path / "val.txt")

    packed = vvframe_cli(
        "data",
        "shards",
        str(out / "train.txt"),
        "--root",
        str(audio),
        "--out",
        str(tmp_path / "shards"),
        "--per-shard",
        "8",
    )
    assert packed.returncode == 0, packed.stderr
    read = list(ShardDataset(tmp_path / "shards", 16000, shuffle_buffer=4))
    assert sorted(item["speaker"] for item in read) == sorted(u.speaker for u in train)

    converted = vvframe_cli("data", "convert", str(audio), str(tmp_path / "8k"), "--sample-rate", "8000")
    assert converted.returncode == 0, converted.stderr
    assert sf.info(str(tmp_path / "8k" / train[0].path)).samplerate == 8000


def test_data_command_mistakes_are_messages(tmp_path):
    bad = vvframe_cli("data", "synth", str(tmp_path / "x"), "--speakers", "2", "--utterances", "2", "--seconds", "3-1")
    assert bad.returncode == 2 and "--seconds 3-1" in bad.stderr and "Traceback" not in bad.stderr
    (tmp_path / "list.txt").write_text("spk a.wav\n")
    missing = vvframe_cli(
        "data", "shards", str(tmp_path / "list.txt"), "--root", str(tmp_path), "--out", str(tmp_path / "s")
    )
    assert missing.returncode == 2 and "1 file missing" in missing.stderr and "a.wav" in missing.stderr
    (tmp_path / "one.txt").write_text("a a/1.wav\nb b/1.wav\n")
    single = vvframe_cli("data", "trials", str(tmp_path / "one.txt"), "--out", str(tmp_path / "t.txt"))
    assert single.returncode == 2 and "no speaker has two utterances" in single.stderr
    empty = vvframe_cli("data", "lists", str(tmp_path), "--out", str(tmp_path / "l"))
    assert empty.returncode == 2 and "no audio files found" in empty.stderr
