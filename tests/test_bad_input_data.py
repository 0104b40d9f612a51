"""Bad input data, one rule for every path: NaN/inf, silent and too-short audio (training skips and counts such a
file, extraction refuses it naming the file), paths with whitespace in lists, and lists never replaced without
--force."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import vvframe_cli
from test_embed import tiny

from vvframe.cli import OutputExists
from vvframe.cli import data as data_commands
from vvframe.core.errors import BadValue
from vvframe.data import audio, lists
from vvframe.data.audio import MIN_SECONDS, AudioError
from vvframe.data.dataset import CropDataset
from vvframe.data.lists import ListError, Trial, Utterance
from vvframe.scoring.embed import Extractor
from vvframe.tools.convert import convert_tree

RATE = 16000


def noise(frames: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-0.3, 0.3, frames).astype(np.float32)


def write(path, data, subtype="FLOAT", rate=RATE):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), data, rate, subtype=subtype)
    return path


def with_nan(frames: int = 4800, value: float = np.nan) -> np.ndarray:
    data = noise(frames)
    data[100] = value
    return data


# ---- the audio layer -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_nan_or_inf_samples_are_an_unreadable_file_naming_it(tmp_path, value):
    path = write(tmp_path / "spk" / "bad.wav", with_nan(value=value))
    with pytest.raises(AudioError) as info:
        audio.read(path, RATE)
    assert str(info.value) == (
        f"{path}: holds NaN/inf samples: 1 of the 4800 read from [0, 4800), the first at"
        " sample 100; write the file again from its source, or leave it out of the lists"
    )
    stereo = write(tmp_path / "stereo.wav", np.stack([noise(4800), with_nan(value=value)], axis=1))
    with pytest.raises(AudioError, match="stereo.wav: holds NaN/inf samples"):
        audio.read(stereo, 8000)  # resampled too: checked before the resampler smears it


def test_min_seconds_is_one_rule_with_the_length_in_the_message(tmp_path):
    assert MIN_SECONDS == 0.1
    assert audio.utterance_info(write(tmp_path / "ok.wav", noise(1600))).frames == 1600  # exactly 0.1 s
    for frames, shown in ((1599, "0.099 s (1599 samples"), (800, "0.050 s (800 samples"), (1, "0.000 s (1 sample")):
        path = write(tmp_path / f"short{frames}.wav", noise(frames))
        with pytest.raises(AudioError) as info:
            audio.utterance_info(path)
        assert str(info.value) == (
            f"{path}: too short: {shown} at 16000 Hz); an utterance needs at least 0.1 s"
            " (vvframe.data.audio.MIN_SECONDS)"
        )


# ---- training: skipped and counted in the log ----------------------------------------------------------------


def test_training_skips_and_counts_nan_silent_and_too_short_files(tmp_path, caplog):
    write(tmp_path / "s1" / "good.wav", noise(8000))
    write(tmp_path / "s1" / "nan.wav", with_nan(3200))  # shorter than the crop: read whole, so the NaN is read
    write(tmp_path / "s1" / "silent.wav", np.zeros(8000, dtype=np.float32))
    write(tmp_path / "s1" / "blip.wav", noise(800))  # 0.05 s
    write(tmp_path / "s1" / "one.wav", noise(1))  # one sample
    names = ["nan", "silent", "blip", "one", "good"]
    data = CropDataset([Utterance("s1", f"s1/{n}.wav") for n in names], tmp_path, RATE, crop_seconds=0.25, seed=0)
    with caplog.at_level(logging.WARNING, logger="vvframe.data.dataset"):
        for i in range(4):
            wave, label, index = data[i]  # each bad file is replaced by the speaker's next usable one
            assert index == i and torch.isfinite(wave).all() and wave.abs().max() > 0 and wave.shape == (4000,)
    reasons = [line.split(": ", 1)[1] for line in data.skipped]
    assert [line.split(": ")[0] for line in data.skipped[:4]] == [str(tmp_path / f"s1/{n}.wav") for n in names[:4]]
    assert reasons[0].startswith("holds NaN/inf samples") and reasons[1].startswith("silent")
    assert reasons[2].startswith("too short: 0.050 s") and reasons[3].startswith("too short: 0.000 s (1 sample at")
    logged = [r.getMessage() for r in caplog.records]
    assert logged[0].startswith(f"skipped {tmp_path / 's1/nan.wav'}: holds NaN/inf samples")
    assert logged[0].endswith("(1 so far, at most 100 allowed)") and logged[3].endswith(
        "(4 so far, at most 100 allowed)"
    )
    assert len(data.skipped) == len(logged) == 4  # each file counted once, though met again by the later items


# ---- extraction (prepare, eval, test, the API): an error naming the file ----------------------------------------


@pytest.mark.parametrize(
    "data, reason",
    [
        (with_nan(4800), "holds NaN/inf samples"),
        (np.zeros(4800, dtype=np.float32), "silent"),
        (noise(800), "too short: 0.050 s"),
        (noise(1), "too short: 0.000 s"),
    ],
)
@pytest.mark.parametrize("crops", [0, 2])
def test_extraction_refuses_the_file_naming_it(tmp_path, data, reason, crops):
    write(tmp_path / "ok.wav", noise(4800, seed=1))
    path = write(tmp_path / "spk" / "bad.wav", data)
    frontend, model = tiny()
    extract = Extractor(frontend, model, tmp_path, RATE, crops=crops, crop_seconds=0.2, progress=False)
    with pytest.raises(AudioError) as info:
        extract(["ok.wav", "spk/bad.wav"])
    assert str(info.value).startswith(f"{path}: {reason}"), str(info.value)


# ---- lists: paths with whitespace ----------------------------------------------------------------------------


def test_list_writers_refuse_whitespace_and_write_nothing(tmp_path):
    out = tmp_path / "train.txt"
    utts = [Utterance("a", "a/1.wav"), Utterance("a", "a/my file.wav"), Utterance("b b", "b b/1.wav")]
    with pytest.raises(ListError) as info:
        lists.write_utterances(out, utts)
    assert str(info.value) == (
        f"{out}: nothing written: 3 paths (or speaker names) with whitespace, which a list line cannot hold (its"
        " fields are split at whitespace):\n  'a/my file.wav'\n  'b b'\n  'b b/1.wav'\nrename them, or copy the tree"
        " without spaces (`vvframe data convert SRC DST --replace-spaces`), and run again"
    )
    assert not out.exists()
    with pytest.raises(ListError, match=r"trials.txt: nothing written: 1 path \(or speaker name\) with whitespace"):
        lists.write_trials(tmp_path / "trials.txt", [Trial("a/1.wav", "b/x\ty.wav", 0)])
    assert not (tmp_path / "trials.txt").exists()
    with pytest.raises(ListError, match="1 path"), lists.written_together():  # several lists: all or none
        lists.write_utterances(tmp_path / "first.txt", utts[:1])
        lists.write_trials(tmp_path / "second.txt", [Trial("a/1.wav", "a/my file.wav", 1)])
    assert not (tmp_path / "first.txt").exists() and not (tmp_path / "second.txt").exists()
    with lists.written_together():
        lists.write_utterances(tmp_path / "first.txt", utts[:1])
        assert not (tmp_path / "first.txt").exists()  # held until the block ends
    assert lists.read_utterances(tmp_path / "first.txt") == utts[:1]


def test_list_readers_name_the_line_and_say_paths_may_not_contain_spaces(tmp_path):
    hint = (
        "(fields are separated by whitespace, so a speaker name or path may not contain spaces: rename such"
        " files, or copy the tree without them (`vvframe data convert SRC DST --replace-spaces`))"
    )
    utts = tmp_path / "train.txt"
    utts.write_text("a a/1.wav\na a/my file.wav\n")
    with pytest.raises(ListError) as info:
        lists.read_utterances(utts)
    assert str(info.value) == f"{utts}:2: expected '<speaker> <path>', got 3 fields: 'a a/my file.wav' {hint}"
    trials = tmp_path / "trials.txt"
    trials.write_text("1 a/1.wav a/2.wav\n0 a/1.wav b/my file.wav\n")
    with pytest.raises(ListError, match=r"trials.txt:2: expected .* got '0 a/1.wav b/my file.wav' \(fields"):
        lists.read_trials(trials)
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("a/my file.wav b/1.wav\n")  # three fields: taken for a trial, so the hint is given too
    with pytest.raises(ListError, match=r"pairs.txt:1: expected .* \(fields are separated by whitespace"):
        lists.read_trials(pairs)
    trials.write_text("1 a/1.wav a/2.wav\nmaybe a/1.wav b/1.wav\n")
    with pytest.raises(ListError) as info:  # a wrong label is no space problem: no hint
        lists.read_trials(trials)
    assert "whitespace" not in str(info.value)


def test_data_lists_refuses_paths_with_spaces_and_convert_offers_a_copy_without(tmp_path):
    root = tmp_path / "corpus"
    for speaker in ("x", "John Smith"):
        for i in range(4):
            write(
                root / speaker / f"take {i}.wav" if i == 0 else root / speaker / f"{i}.wav",
                noise(1600, i),
                subtype="PCM_16",
            )
    out = tmp_path / "lists"
    result = vvframe_cli("data", "lists", str(root), "--out", str(out))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"{out}: nothing written: 6 paths (or speaker names) with whitespace" in result.stderr  # 5 files, 1 name
    assert "\n  'John Smith'\n" in result.stderr and "... and 1 more" in result.stderr
    assert "--replace-spaces" in result.stderr
    assert not out.exists()
    report = convert_tree(root, tmp_path / "clean", replace_spaces=True)
    assert report.converted == 8 and not report.failures
    assert (tmp_path / "clean" / "John_Smith" / "take_0.wav").is_file()
    data_commands.main(["lists", str(tmp_path / "clean"), "--out", str(out), "--split-ratio", "0"])
    assert {u.speaker for u in lists.read_utterances(out / "train.txt")} == {"x", "John_Smith"}


def test_convert_reports_a_nan_source_instead_of_writing_noise(tmp_path):
    write(tmp_path / "src" / "a" / "nan.wav", with_nan(1600))
    write(tmp_path / "src" / "a" / "ok.wav", noise(1600))
    report = convert_tree(tmp_path / "src", tmp_path / "dst")
    assert report.converted == 1
    assert report.failures == [("a/nan.wav", "holds NaN/inf samples (1 of 1600); not converted")]
    assert not (tmp_path / "dst" / "a" / "nan.wav").exists()


# ---- no list replaced without --force ------------------------------------------------------------------------


def test_data_lists_and_trials_refuse_to_replace_without_force(tmp_path):
    root = tmp_path / "corpus"
    for speaker in ("x", "y"):
        for i in range(5):
            write(root / speaker / f"{i}.wav", noise(1600, i), subtype="PCM_16")
    out = tmp_path / "lists"
    data_commands.main(["lists", str(root), "--out", str(out)])
    before = (out / "train.txt").read_text()
    with pytest.raises(OutputExists) as info:
        data_commands.main(["lists", str(root), "--out", str(out), "--split-ratio", "0.5"])
    assert str(info.value) == f"{out / 'train.txt'} exists; choose another --out or pass --force to replace it"
    assert (out / "train.txt").read_text() == before
    data_commands.main(["lists", str(root), "--out", str(out), "--split-ratio", "0", "--force"])
    assert len(lists.read_utterances(out / "train.txt")) == 10 and not (out / "val.txt").exists()  # none stale

    trials = tmp_path / "trials.txt"
    trials.write_text("kept\n")
    result = vvframe_cli("data", "trials", str(out / "train.txt"), "--out", str(trials))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"{trials} exists; choose another --out or pass --force to replace it" in result.stderr
    assert trials.read_text() == "kept\n"
    data_commands.main(["trials", str(out / "train.txt"), "--out", str(trials), "--force"])
    assert lists.read_trials(trials)


def test_data_synth_refuses_a_folder_with_lists_without_force(tmp_path):
    out = tmp_path / "synth"
    args = [
        "synth",
        str(out),
        "--speakers",
        "2",
        "--utterances",
        "2",
        "--seconds",
        "0.2-0.3",
        "--cohort-speakers",
        "0",
        "--eval-speakers",
        "2",
    ]
    data_commands.main(args)
    assert (out / "trials.txt").is_file()
    before = {p.name: p.read_bytes() for p in out.glob("*.txt")}
    with pytest.raises(OutputExists) as info:
        data_commands.main([*args[:-1], "3"])
    assert str(info.value) == f"{out / 'train.txt'} exists; choose another OUT or pass --force to replace it"
    assert {p.name: p.read_bytes() for p in out.glob("*.txt")} == before
    with pytest.raises(BadValue, match=r"--seconds 0.05-0.3: an utterance needs at least 0.1 s"):
        data_commands.main([*args, "--seconds", "0.05-0.3", "--force"])
    data_commands.main([*args[:-2], "--eval-speakers", "0", "--force"])  # no eval speakers: no trials any more
    assert lists.read_utterances(out / "train.txt") and not (out / "trials.txt").exists()
    assert not (out / "eval.txt").exists()


def test_data_voxceleb_writes_no_list_when_one_of_them_would_hold_a_space(tmp_path):
    from test_data_voxceleb import VERI_TEST2, VOX1, VOX2, make_tree

    from vvframe.tools.voxceleb import prepare

    root = tmp_path / "vox"
    make_tree(root / "voxceleb2" / "dev" / "aac", VOX2)  # train.txt and cohort.txt would be fine
    make_tree(root / "vox one" / "wav", VOX1)  # the trials' paths would start with 'vox one/'
    (root / "veri_test2.txt").write_text(VERI_TEST2)
    out = tmp_path / "lists"
    with pytest.raises(ListError, match=rf"(?s){out / 'vox1_O.txt'}: nothing written: 5 paths .*'vox one/wav/id10270/"):
        prepare(root, out, vox1=[root / "vox one" / "wav"])
    assert not out.exists()


def test_validation_trials_name_a_too_short_file_before_training(tmp_path):
    from vvframe_plugins.stages.train import check_validation_trials

    write(tmp_path / "a.wav", noise(RATE))
    write(tmp_path / "b.wav", noise(RATE, seed=1))
    write(tmp_path / "c.wav", noise(RATE // 50, seed=2))  # 0.02 s
    trials = tmp_path / "val.txt"
    trials.write_text("1 a.wav b.wav\n0 a.wav c.wav\n")
    with pytest.raises(AudioError, match=r"c\.wav: too short: 0\.020 s .* at least 0\.1 s"):
        check_validation_trials(str(trials), str(tmp_path))
