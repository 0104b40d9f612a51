"""Audio reading, lists and the training crop dataset, on generated audio; each bad input named in the issue."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import vvframe_cli

from vvframe.data import audio, lists
from vvframe.data.audio import AudioError
from vvframe.data.dataset import CropDataset, TooManySkipped
from vvframe.data.lists import ListError, Trial, Utterance


def tone(seconds: float, rate: int = 16000, freq: float = 220.0, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    x = 0.3 * np.sin(2 * np.pi * freq * t) + 0.05 * np.random.default_rng(0).standard_normal(len(t))
    return np.stack([x, -x], axis=1) if channels == 2 else x


def wav(path, data, rate=16000, subtype="PCM_16"):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), data, rate, subtype=subtype)
    return path


def test_a_crop_is_exactly_that_part_of_the_file(tmp_path):
    data = tone(3.0)
    path = wav(tmp_path / "a.wav", data, subtype="FLOAT")
    crop = audio.read(path, 16000, start=8000, frames=16000)
    assert crop.shape == (16000,) and crop.dtype == torch.float32
    assert torch.allclose(crop, torch.from_numpy(data[8000:24000]).float(), atol=1e-7)
    assert audio.read(path).shape == (48000,)


def test_a_stereo_file_is_mixed_to_mono(tmp_path):
    data = tone(1.0, channels=2)
    data[:, 1] = 0.5 * data[:, 1]
    path = wav(tmp_path / "stereo.wav", data, subtype="FLOAT")
    got = audio.read(path)
    assert torch.allclose(got, torch.from_numpy(data.mean(axis=1)).float(), atol=1e-7)


def test_an_8k_file_in_a_16k_recipe_is_resampled_with_one_warning(tmp_path, caplog):
    audio._warned_rates.clear()
    path = wav(tmp_path / "narrow.flac", tone(2.0, rate=8000, freq=300.0), rate=8000)
    with caplog.at_level(logging.WARNING):
        whole = audio.read(path, 16000)
        crop = audio.read(path, 16000, start=4000, frames=8000)
    assert whole.shape == (32000,)
    assert crop.shape == (8000,)
    assert torch.allclose(crop[100:-100], whole[4100:11900], atol=2e-3)  # the crop is the same stretch
    warnings = [r for r in caplog.records if "8000 Hz" in r.getMessage()]
    assert len(warnings) == 1 and str(path) in warnings[0].getMessage()
    spectrum = torch.fft.rfft(whole).abs()
    assert 290 <= int(spectrum.argmax()) / 2.0 <= 310  # still a 300 Hz tone (bins of 0.5 Hz)


def test_a_file_shorter_than_the_crop_is_repeated(tmp_path):
    data = tone(0.5)
    path = wav(tmp_path / "short.wav", data, subtype="FLOAT")
    crop = audio.read(path, 16000, start=0, frames=20000)
    assert crop.shape == (20000,)
    assert torch.allclose(crop[8000:16000], crop[:8000]) and torch.allclose(crop[16000:], crop[:4000])


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda p: p, "no such file"),
        (lambda p: (p.write_bytes(b""), p)[1], "empty file (0 bytes)"),
        (lambda p: (p.write_bytes(b"not audio at all" * 10), p)[1], "unreadable"),
        (lambda p: (wav(p, np.zeros(16000)), p)[1], "silent"),
        (lambda p: (wav(p, np.zeros((0,))), p)[1], "empty"),
    ],
)
def test_bad_files_are_errors_naming_the_file_and_why(tmp_path, make, reason):
    path = make(tmp_path / "bad.wav")
    with pytest.raises(AudioError) as info:
        audio.read(path, 16000, 0, 8000)
    assert str(info.value).startswith(f"{path}: {reason}"), str(info.value)
    assert isinstance(info.value, OSError)


def test_a_truncated_wav_is_reported_not_silently_shortened(tmp_path):
    path = wav(tmp_path / "full.wav", tone(1.0))
    data = path.read_bytes()
    cut = tmp_path / "cut.wav"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(AudioError, match=r"cut.wav: truncated: the header promises 16000 samples, the file holds"):
        audio.read(cut, 16000)


def test_a_crop_of_a_long_file_decodes_only_the_crop(tmp_path, monkeypatch):
    rate = 16000
    data = tone(10.0)
    data[-10:] = np.nan  # beyond the crop: a crop-only read neither decodes nor checks it
    path = wav(tmp_path / "long.wav", data, subtype="FLOAT")
    decoded = []

    class Counting(sf.SoundFile):
        def read(self, frames=-1, *args, **kwargs):
            out = super().read(frames, *args, **kwargs)
            decoded.append(len(out))
            return out

    monkeypatch.setattr(audio.sf, "SoundFile", Counting)
    crop = audio.read(path, rate, 4 * rate, 2 * rate)
    assert decoded == [2 * rate] and torch.allclose(crop, torch.from_numpy(data[4 * rate : 6 * rate]).float())
    with pytest.raises(AudioError, match="holds NaN/inf samples: 10 of the 32000 read from"):
        audio.read(path, rate, 8 * rate, 2 * rate)


def test_list_formats_and_malformed_lines(tmp_path):
    good = tmp_path / "train.txt"
    good.write_text("# speakers\nid1 a/1.wav\n\nid2 b/1.wav\n")
    assert lists.read_utterances(good) == [Utterance("id1", "a/1.wav"), Utterance("id2", "b/1.wav")]
    bad = tmp_path / "bad.txt"
    bad.write_text("id1 a/1.wav\nid2\n")
    with pytest.raises(ListError, match=r"bad.txt:2: expected '<speaker> <path>', got 1 field: 'id2'"):
        lists.read_utterances(bad)
    trials = tmp_path / "trials.txt"
    trials.write_text("1 a.wav b.wav\nnontarget a.wav c.wav\ntarget c.wav d.wav\n")
    assert lists.read_trials(trials) == [
        Trial("a.wav", "b.wav", 1),
        Trial("a.wav", "c.wav", 0),
        Trial("c.wav", "d.wav", 1),
    ]
    trials.write_text("1 a.wav b.wav\nmaybe a.wav c.wav\n")
    with pytest.raises(ListError, match=r"trials.txt:2: expected '<0\|1\|target\|nontarget> <enroll> <test>'"):
        lists.read_trials(trials)
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("a.wav b.wav\nc.wav d.wav\n")
    assert lists.read_trials(pairs) == [Trial("a.wav", "b.wav"), Trial("c.wav", "d.wav")]
    with pytest.raises(ListError, match="no such list file"):
        lists.read_utterances(tmp_path / "nothere.txt")


def test_missing_audio_is_reported_first_twenty_and_the_count(tmp_path):
    wav(tmp_path / "here.wav", tone(0.1))
    paths = ["here.wav"] + [f"gone/{i}.wav" for i in range(25)]
    with pytest.raises(ListError) as info:
        lists.check_files(paths, tmp_path, "trials.txt")
    message = str(info.value)
    assert message.startswith(f"trials.txt: 25 files missing under {tmp_path}:\n  gone/0.wav\n")
    assert "gone/19.wav" in message and "gone/20.wav" not in message and message.endswith("... and 5 more")
    lists.check_files(["here.wav"], tmp_path, "x")  # nothing missing: no error


def test_scan_split_and_trials(tmp_path):
    for speaker, n in (("a", 10), ("b", 10), ("c", 4), ("d", 1)):
        for i in range(n):
            (tmp_path / speaker / "sess").mkdir(parents=True, exist_ok=True)
            (tmp_path / speaker / "sess" / f"{i}.flac").touch()
    by_speaker = lists.scan(tmp_path)
    assert sorted(by_speaker) == ["a", "b", "c", "d"] and by_speaker["a"][0] == "a/sess/0.flac"
    train, val = lists.split(by_speaker, -1, min_utterances=2, seed=1)
    assert {u.speaker for u in val} == {"a", "b", "c"} and len(val) == 9 and len(train) == 7 + 7 + 1
    assert not {u.path for u in train} & {u.path for u in val}
    train2, val2 = lists.split(by_speaker, 0.2, min_utterances=2, seed=1)
    assert sum(u.speaker == "a" for u in val2) == 2
    assert lists.split(by_speaker, -1, 2, seed=1) == (train, val)  # deterministic
    trials = lists.make_trials(train, per_utterance=2, seed=0)
    targets = [t for t in trials if t.label == 1]
    assert len(targets) == len(trials) - len(targets) > 0
    speaker = {u.path: u.speaker for u in train}
    assert all((speaker[t.enroll] == speaker[t.test]) == bool(t.label) for t in trials)
    assert len({frozenset((t.enroll, t.test)) for t in trials}) == len(trials)


def test_crop_dataset_skips_bad_files_and_stops_past_the_limit(tmp_path, caplog):
    for i in range(3):
        wav(tmp_path / "s1" / f"{i}.wav", tone(1.0, freq=200 + 50 * i))
    (tmp_path / "s1" / "bad.wav").write_bytes(b"garbage" * 100)
    utts = (
        [Utterance("s1", "s1/bad.wav")]
        + [Utterance("s1", f"s1/{i}.wav") for i in range(3)]
        + [Utterance("s2", "s2/missing.wav")]
    )
    data = CropDataset(utts, tmp_path, 16000, crop_seconds=0.5, max_skipped=1, seed=3)
    with caplog.at_level(logging.WARNING):
        wave, label, index = data[0]  # bad.wav: skipped, the speaker's next file is used
    assert (
        wave.shape == (8000,)
        and label == 0
        and index == 0
        and data.skipped[0].startswith(f"{tmp_path / 's1/bad.wav'}:")
    )
    assert any("skipped" in r.getMessage() for r in caplog.records)
    again = data[1][0]
    assert torch.equal(again, data[1][0])  # crops are fixed by (seed, epoch, index)
    data.set_epoch(1)
    assert not torch.equal(again, data[1][0])
    with pytest.raises(TooManySkipped) as info:
        data[4]  # s2 has no readable file and the limit is passed
    assert "missing.wav: no such file" in str(info.value) and "bad.wav" in str(info.value)


def test_data_lists_and_trials_commands(tmp_path):
    root = tmp_path / "corpus"
    for speaker in ("x", "y", "z"):
        for i in range(6):
            wav(root / speaker / f"{i}.wav", tone(0.2, freq=150 + 40 * i))
    result = vvframe_cli("data", "lists", str(root), "--out", str(tmp_path / "lists"))
    assert result.returncode == 0, result.stderr
    train = lists.read_utterances(tmp_path / "lists" / "train.txt")
    val = lists.read_utterances(tmp_path / "lists" / "val.txt")
    assert len(train) == 9 and len(val) == 9
    result = vvframe_cli(
        "data", "trials", str(tmp_path / "lists" / "val.txt"), "--out", str(tmp_path / "t.txt"), "--per-utterance", "1"
    )
    assert result.returncode == 0, result.stderr
    trials = lists.read_trials(tmp_path / "t.txt")
    assert sum(t.label for t in trials) * 2 == len(trials)
    lists.check_files(lists.trial_files(trials), root, "t.txt")
    bad = vvframe_cli("data", "trials", str(tmp_path / "nothere.txt"), "--out", str(tmp_path / "t2.txt"))
    assert bad.returncode == 2 and "no such list file" in bad.stderr and "Traceback" not in bad.stderr


def test_collate_augments_in_the_worker_reproducibly_and_relabels_new_speakers(tmp_path):
    from vvframe.core import registry
    from vvframe.data.dataset import AugmentingCollate

    for i in range(4):
        wav(tmp_path / f"s{i % 2}" / f"{i}.wav", tone(1.0, freq=180 + 30 * i))
    utts = [Utterance(f"s{i % 2}", f"s{i % 2}/{i}.wav") for i in range(4)]
    data = CropDataset(utts, tmp_path, 16000, crop_seconds=0.5)
    speed = registry.build("augmentors", {"name": "speed", "new_speakers": True, "prob": 1.0}, sample_rate=16000)
    gain = registry.build("augmentors", {"name": "gain", "prob": 1.0})
    collate = AugmentingCollate([speed, gain], num_speakers=2, seed=5)
    assert collate.num_classes == 6
    loader = torch.utils.data.DataLoader(data, batch_sampler=[[0, 1, 2, 3]] * 2, collate_fn=collate, num_workers=2)
    (w1, l1, i1), (w2, l2, _) = list(loader)
    assert i1.tolist() == [0, 1, 2, 3]
    assert w1.shape == (4, 8000) and torch.equal(w1, w2) and torch.equal(l1, l2)  # seeded by the batch's indices
    plain = torch.stack([data[i][0] for i in range(4)])
    assert not torch.allclose(w1, plain)
    base = torch.tensor([data.labels[i] for i in range(4)])
    assert set(((l1 - base) % 2).tolist()) == {0} and ((l1 - base) // 2).max() <= 2
