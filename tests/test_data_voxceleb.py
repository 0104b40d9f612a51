"""`vvframe data voxceleb`: lists from a fake tree in the official VoxCeleb layout, through the CLI entry."""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from vvframe.cli import main

VOX1 = {  # speaker -> video -> utterances; id10270 and id10271 are VoxCeleb1 test speakers
    "id10001": {"1zcIwhmdeo4": ["00001", "00002"], "7gWzIy6yIIk": ["00001"]},
    "id10002": {"0_laIeN-Q44": ["00001", "00003"]},
    "id10270": {"5r0dWxy17C8": ["00001", "00002"], "x6uYqmx31kE": ["00001"]},
    "id10271": {"1gtz-CUIygI": ["00001", "00002"]},
}
VOX2 = {  # three, two and four utterances
    "id00012": {"21Uxsk56VDQ": ["00001", "00002"], "2DLq_Kkc1r8": ["00003"]},
    "id00015": {"0fijmz4vTVU": ["00001", "00002"]},
    "id00017": {"01dfn2spqyE": ["00001", "00002", "00003"], "5MkXgwdrmJw": ["00004"]},
}
VERI_TEST2 = """\
1 id10270/x6uYqmx31kE/00001.wav id10270/5r0dWxy17C8/00001.wav
0 id10270/x6uYqmx31kE/00001.wav id10271/1gtz-CUIygI/00002.wav
1 id10271/1gtz-CUIygI/00001.wav id10271/1gtz-CUIygI/00002.wav
0 id10271/1gtz-CUIygI/00001.wav id10270/5r0dWxy17C8/00002.wav
"""
LIST_TEST_ALL2 = """\
1 id10001/1zcIwhmdeo4/00001.wav id10001/7gWzIy6yIIk/00001.wav
0 id10001/1zcIwhmdeo4/00002.wav id10002/0_laIeN-Q44/00003.wav
"""
WAVE = (0.1 * np.random.default_rng(0).standard_normal(1600)).astype("float32")  # 0.1 s at 16 kHz


def make_tree(folder: Path, speakers: dict, suffix: str = ".wav") -> None:
    for speaker, videos in speakers.items():
        for video, names in videos.items():
            (folder / speaker / video).mkdir(parents=True, exist_ok=True)
            for name in names:
                path = folder / speaker / video / f"{name}{suffix}"
                if suffix in (".wav", ".flac"):
                    sf.write(path, WAVE, 16000)
                else:
                    path.write_bytes(b"not audio soundfile can read")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """ROOT: voxceleb1/wav (dev and test merged), voxceleb2/dev/aac as wav, VoxCeleb1-O and -E (no -H)."""
    root = tmp_path / "vox"
    make_tree(root / "voxceleb1" / "wav", VOX1)
    make_tree(root / "voxceleb2" / "dev" / "aac", VOX2)
    (root / "veri_test2.txt").write_text(VERI_TEST2)
    (root / "voxceleb1" / "list_test_all2.txt").write_text(LIST_TEST_ALL2)
    return root


def vvframe(capsys, *args) -> tuple[int, str, str]:
    code = main(["data", "voxceleb", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def test_writes_every_list_relative_to_root(root, tmp_path, capsys):
    out = tmp_path / "lists"
    code, stdout, err = vvframe(capsys, root, "--out", out, "--vox1-train")
    assert code == 0, err
    v2 = "voxceleb2/dev/aac"
    expected_train = [
        f"{s} {v2}/{s}/{v}/{n}.wav"
        for s, videos in sorted(VOX2.items())
        for v, names in sorted(videos.items())
        for n in names
    ]
    assert lines(out / "train.txt") == expected_train
    assert lines(out / "cohort.txt") == expected_train  # every utterance by default
    v1 = "voxceleb1/wav"
    assert lines(out / "vox1_O.txt") == [
        f"1 {v1}/id10270/x6uYqmx31kE/00001.wav {v1}/id10270/5r0dWxy17C8/00001.wav",
        f"0 {v1}/id10270/x6uYqmx31kE/00001.wav {v1}/id10271/1gtz-CUIygI/00002.wav",
        f"1 {v1}/id10271/1gtz-CUIygI/00001.wav {v1}/id10271/1gtz-CUIygI/00002.wav",
        f"0 {v1}/id10271/1gtz-CUIygI/00001.wav {v1}/id10270/5r0dWxy17C8/00002.wav",
    ]
    assert lines(out / "vox1_E.txt") == [  # found in ROOT/voxceleb1
        f"1 {v1}/id10001/1zcIwhmdeo4/00001.wav {v1}/id10001/7gWzIy6yIIk/00001.wav",
        f"0 {v1}/id10001/1zcIwhmdeo4/00002.wav {v1}/id10002/0_laIeN-Q44/00003.wav",
    ]
    assert not (out / "vox1_H.txt").exists()
    assert "vox1_H.txt: not written: neither list_test_hard2.txt nor list_test_hard.txt" in stdout
    assert lines(out / "train_vox1.txt") == [  # the test speakers id10270 and id10271 are left out
        f"id10001 {v1}/id10001/1zcIwhmdeo4/00001.wav",
        f"id10001 {v1}/id10001/1zcIwhmdeo4/00002.wav",
        f"id10001 {v1}/id10001/7gWzIy6yIIk/00001.wav",
        f"id10002 {v1}/id10002/0_laIeN-Q44/00001.wav",
        f"id10002 {v1}/id10002/0_laIeN-Q44/00003.wav",
    ]
    assert "train.txt       3 speakers, 9 utterances" in stdout
    assert "vox1_O.txt      4 trials (2 target), 2 speakers, 5 files (from veri_test2.txt)" in stdout
    assert f"note: the recipes' augmentors read {out / 'musan'}: pass --musan PATH" in stdout
    assert stdout.rstrip().endswith(f"next: vvframe run recipes/voxceleb_resnet.yaml data.root={root}")

    before = {p.name: p.read_text() for p in out.iterdir()}
    code, _, err = vvframe(capsys, root, "--out", out, "--vox1-train", "--cohort-per-speaker", "2")
    assert code == 0, err  # a rerun replaces the lists; only the cohort changed
    after = {p.name: p.read_text() for p in out.iterdir()}
    assert {n for n in after if before[n] != after[n]} == {"cohort.txt"}
    assert lines(out / "cohort.txt") == [
        f"id00012 {v2}/id00012/21Uxsk56VDQ/00001.wav",
        f"id00012 {v2}/id00012/21Uxsk56VDQ/00002.wav",
        f"id00015 {v2}/id00015/0fijmz4vTVU/00001.wav",
        f"id00015 {v2}/id00015/0fijmz4vTVU/00002.wav",
        f"id00017 {v2}/id00017/01dfn2spqyE/00001.wav",
        f"id00017 {v2}/id00017/01dfn2spqyE/00002.wav",
    ]
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_default_out_and_the_vox1_folders_in_two_parts(tmp_path, capsys, monkeypatch):
    root = tmp_path / "vox"
    make_tree(root / "vox1_dev_wav" / "wav", {s: v for s, v in VOX1.items() if s < "id10270"})
    make_tree(root / "vox1_test_wav" / "wav", {s: v for s, v in VOX1.items() if s >= "id10270"})
    (root / "vox1_test_wav" / "list_test_all2.txt").write_text(LIST_TEST_ALL2)  # the folder's parent is searched
    (root / "veri_test2.txt").write_text(VERI_TEST2)
    monkeypatch.chdir(tmp_path)
    code, stdout, err = vvframe(capsys, root)
    assert code == 0, err
    out = tmp_path / "data" / "voxceleb"
    assert lines(out / "vox1_O.txt")[1] == (
        "0 vox1_test_wav/wav/id10270/x6uYqmx31kE/00001.wav vox1_test_wav/wav/id10271/1gtz-CUIygI/00002.wav"
    )
    assert lines(out / "vox1_E.txt")[1] == (
        "0 vox1_dev_wav/wav/id10001/1zcIwhmdeo4/00002.wav vox1_dev_wav/wav/id10002/0_laIeN-Q44/00003.wav"
    )
    assert not (out / "train.txt").exists() and not (out / "train_vox1.txt").exists()
    assert "train.txt and cohort.txt not written" in stdout and "VoxCeleb2 dev: not found" in stdout


def test_missing_trial_audio_names_the_list_the_lines_and_the_files(root, tmp_path, capsys):
    shutil.rmtree(root / "voxceleb1" / "wav" / "id10271")
    out = tmp_path / "lists"
    code, stdout, err = vvframe(capsys, root, "--out", out)
    assert code == 2 and "Traceback" not in err
    assert f"{root / 'veri_test2.txt'}: 2 of its 5 audio files are missing" in err
    assert "line 2: id10271/1gtz-CUIygI/00002.wav" in err and "line 3: id10271/1gtz-CUIygI/00001.wav" in err
    assert "vox1_test_wav" in err  # the hint for a VoxCeleb1 without its test part
    assert not out.exists()  # everything is checked before anything is written

    (root / "voxceleb1" / "wav" / "id10271").mkdir()
    for i in range(7):
        (root / "veri_test2.txt").open("a").write(f"0 id10001/1zcIwhmdeo4/00001.wav id10271/v/{i:05d}.wav\n")
    code, _, err = vvframe(capsys, root, "--out", out)
    assert code == 2 and "9 of its 13 audio files are missing" in err and "... and 4 more" in err


def test_m4a_only_voxceleb2_asks_for_a_conversion(root, tmp_path, capsys):
    shutil.rmtree(root / "voxceleb2")
    make_tree(root / "voxceleb2" / "dev" / "aac", VOX2, ".m4a")
    code, _, err = vvframe(capsys, root, "--out", tmp_path / "lists")
    assert code == 2 and "Traceback" not in err
    aac, flac = root / "voxceleb2" / "dev" / "aac", root / "voxceleb2" / "dev" / "flac"
    assert "holds 9 .m4a files" in err
    assert f"vvframe data convert {aac} {flac} --format flac" in err and f"--vox2 {flac}" in err

    make_tree(flac, VOX2, ".flac")  # the converted copy is found next to the original
    code, _, err = vvframe(capsys, root, "--out", tmp_path / "lists")
    assert code == 0, err
    assert lines(tmp_path / "lists" / "train.txt")[0] == "id00012 voxceleb2/dev/flac/id00012/21Uxsk56VDQ/00001.flac"


def test_wav_beside_m4a_in_one_tree_is_used_and_unconverted_files_are_reported(root, tmp_path, capsys):
    make_tree(root / "voxceleb2" / "dev" / "aac", VOX2, ".m4a")
    (root / "voxceleb2" / "dev" / "aac" / "id00015" / "0fijmz4vTVU" / "00009.m4a").write_bytes(b"x")
    vox2 = tmp_path / "elsewhere"  # --vox2 outside ROOT: paths with '..'
    shutil.copytree(root / "voxceleb2" / "dev" / "aac", vox2)
    code, _, err = vvframe(capsys, root, "--out", tmp_path / "lists", "--vox2", vox2)
    assert code == 0, err
    train = lines(tmp_path / "lists" / "train.txt")
    assert len(train) == 9 and train[0] == "id00012 ../elsewhere/id00012/21Uxsk56VDQ/00001.wav"
    assert "left out 1 .m4a files that have no .wav/.flac copy" in err and "outside" in err


def test_uncleaned_trial_lists_are_used_with_a_warning(root, tmp_path, capsys):
    (root / "veri_test2.txt").rename(root / "veri_test.txt")
    (root / "list_test_hard.txt").write_text(VERI_TEST2)
    trials = tmp_path / "trials"
    trials.mkdir()
    (trials / "list_test_hard2.txt").write_text(VERI_TEST2)
    code, stdout, err = vvframe(capsys, root, "--out", tmp_path / "lists")
    assert code == 0, err
    assert "the cleaned list veri_test2.txt is the one papers report" in err
    assert (tmp_path / "lists" / "vox1_O.txt").exists() and (tmp_path / "lists" / "vox1_H.txt").exists()
    assert f"vox1_H.txt: from {root / 'list_test_hard.txt'}" in stdout

    code, stdout, err = vvframe(capsys, root, "--out", tmp_path / "only", "--trials-dir", trials)
    assert code == 0, err  # --trials-dir is the only place searched
    assert "vox1_H.txt: from" in stdout and "vox1_O.txt: not written" in stdout
    assert {p.name for p in (tmp_path / "only").iterdir()} == {"train.txt", "cohort.txt", "vox1_H.txt"}


def test_musan_and_rirs_are_validated_and_linked(root, tmp_path, capsys):
    musan, rirs = tmp_path / "musan", tmp_path / "RIRS_NOISES"
    for sub in ("music", "speech", "noise"):
        make_tree(musan / sub, {"a": {"b": ["1"]}})
    make_tree(rirs / "simulated_rirs", {"smallroom": {"Room001": ["Room001-00001"]}})
    out = tmp_path / "lists"
    code, stdout, err = vvframe(capsys, root, "--out", out, "--musan", musan, "--rirs", rirs)
    assert code == 0, err
    assert os.readlink(out / "musan") == str(musan) and os.readlink(out / "rirs") == str(rirs / "simulated_rirs")
    assert (out / "musan" / "speech" / "a" / "b" / "1.wav").is_file() and "the recipes' augmentors" not in stdout

    other = tmp_path / "rirs2"
    make_tree(other, {"room": {"x": ["1"]}})
    code, stdout, err = vvframe(capsys, root, "--out", out, "--rirs", other)
    assert code == 0, err  # a link is replaced; the other one is kept and shown
    assert os.readlink(out / "rirs") == str(other) and "(from an earlier run)" in stdout

    code, _, err = vvframe(capsys, root, "--out", out, "--musan", tmp_path)
    assert code == 2 and "not a MUSAN folder" in err and f"did you mean --musan {musan}?" in err
    shutil.rmtree(musan / "speech" / "a")
    code, _, err = vvframe(capsys, root, "--out", out, "--musan", musan)
    assert code == 2 and "no .wav/.flac files in speech/" in err
    code, _, err = vvframe(capsys, root, "--out", out, "--rirs", tmp_path / "nowhere")
    assert code == 2 and "--rirs" in err and "no such folder" in err
    (tmp_path / "empty").mkdir()
    code, _, err = vvframe(capsys, root, "--out", out, "--rirs", tmp_path / "empty")
    assert code == 2 and "no .wav files in" in err

    real = tmp_path / "real"
    (real / "rirs").mkdir(parents=True)
    code, _, err = vvframe(capsys, root, "--out", real, "--rirs", other)
    assert code == 2 and f"{real / 'rirs'} is a real folder, not a link" in err
    assert (real / "rirs").is_dir() and not (real / "train.txt").exists()


def test_mistakes_are_messages(root, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = vvframe(capsys, empty, "--out", tmp_path / "x")
    assert code == 2 and "no VoxCeleb data under" in err and str(empty / "voxceleb1" / "wav") in err
    assert "pass --vox1 PATH" in err
    code, _, err = vvframe(capsys, root, "--vox1", root / "voxceleb1", "--out", tmp_path / "x")
    assert code == 2 and f"did you mean --vox1 {root / 'voxceleb1' / 'wav'}?" in err
    code, _, err = vvframe(capsys, root, "--vox2", root / "missing", "--out", tmp_path / "x")
    assert code == 2 and "--vox2" in err and "no such folder" in err
    code, _, err = vvframe(capsys, root, "--cohort-per-speaker", "-1", "--out", tmp_path / "x")
    assert code == 2 and "--cohort-per-speaker -1" in err
    (root / "veri_test2.txt").write_text(VERI_TEST2 + "1 id10270/x6uYqmx31kE/00001.wav\n")
    code, _, err = vvframe(capsys, root, "--out", tmp_path / "x")
    assert code == 2 and f"{root / 'veri_test2.txt'}:5: expected '<1|0> <enroll> <test>'" in err

    shutil.rmtree(root / "voxceleb2")
    for name in ("veri_test2.txt", "voxceleb1/list_test_all2.txt"):
        (root / name).unlink()
    code, _, err = vvframe(capsys, root, "--out", tmp_path / "x")
    assert code == 2 and "nothing to write" in err and "--trials-dir" in err
    assert not (tmp_path / "x").exists()


def test_help_lists_the_options(capsys):
    with pytest.raises(SystemExit) as done:
        main(["data", "voxceleb", "-h"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    for option in (
        "ROOT",
        "--out DIR",
        "--vox1 PATH",
        "--vox2 PATH",
        "--trials-dir DIR",
        "--cohort-per-speaker K",
        "--vox1-train",
        "--musan PATH",
        "--rirs PATH",
    ):
        assert option in text
    with pytest.raises(SystemExit):
        main(["data", "-h"])
    assert "voxceleb" in capsys.readouterr().out


def test_progress_counts_speakers_as_they_are_scanned(root, tmp_path):
    from vvframe.tools.voxceleb import prepare

    seen = {}

    @contextlib.contextmanager
    def bar(total, desc, unit):
        seen[desc] = [total, 0]
        yield lambda n: seen[desc].__setitem__(1, seen[desc][1] + n)

    written = prepare(root, tmp_path / "lists", vox1_train=True, bar=bar)
    assert seen == {"scanning VoxCeleb2 dev": [3, 3], "scanning VoxCeleb1": [4, 4]}
    assert [w.name for w in written] == ["train.txt", "cohort.txt", "vox1_O.txt", "vox1_E.txt", "train_vox1.txt"]
