"""`vvframe data convert` as a library: a mixed tree to 16 kHz mono, mirrored, failures reported, reruns skip."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from vvframe import BadValue
from vvframe.tools.convert import ConvertReport, convert_tree, find_audio


def sine(seconds: float, rate: int, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    return np.sin(2 * np.pi * freq * t)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """src/: a stereo 44.1 kHz wav, a nested 8 kHz flac, a 16 kHz wav, a corrupt wav, an m4a, a text file."""
    src = tmp_path / "src"
    (src / "spk1" / "sub").mkdir(parents=True)
    (src / "spk2").mkdir()
    s = sine(1.0, 44100)
    sf.write(src / "spk1" / "a.wav", np.stack([0.5 * s, 0.1 * s], axis=1), 44100, subtype="PCM_16")
    sf.write(src / "spk1" / "sub" / "b.flac", 0.4 * sine(0.5, 8000, 300), 8000, subtype="PCM_16")
    rng = np.random.default_rng(0)
    sf.write(src / "spk2" / "c.wav", rng.integers(-20000, 20000, 4000).astype(np.int16), 16000, subtype="PCM_16")
    (src / "spk2" / "bad.wav").write_bytes(rng.integers(0, 256, 3000).astype(np.uint8).tobytes())
    sf.write(src / "spk2" / "d.m4a", 0.3 * sine(0.75, 16000), 16000, format="WAV", subtype="PCM_16")  # fake m4a
    (src / "notes.txt").write_text("not audio\n")
    return src


def snapshot(root: Path) -> dict[str, tuple[str, int]]:
    return {
        p.relative_to(root).as_posix(): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def outputs(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def no_ffmpeg(tmp_path, monkeypatch):
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))


def test_converts_tree_and_reports_failures(tree, tmp_path, no_ffmpeg):
    before = snapshot(tree)
    dst = tmp_path / "dst"
    ticks = []
    report = convert_tree(tree, dst, progress=ticks.append)

    assert sum(ticks) == len(find_audio(tree)) == 5
    assert (report.converted, report.skipped) == (3, 0)
    assert [f[0] for f in report.failures] == ["spk2/bad.wav", "spk2/d.m4a"]
    reasons = dict(report.failures)
    assert "unreadable" in reasons["spk2/bad.wav"]
    assert reasons["spk2/d.m4a"] == "m4a needs ffmpeg, which is not on PATH (install it, e.g. apt install ffmpeg)"
    assert snapshot(tree) == before  # sources untouched
    assert sorted(outputs(dst)) == ["spk1/a.wav", "spk1/sub/b.wav", "spk2/c.wav"]  # no temp files, no .txt

    for rel, seconds in [("spk1/a.wav", 1.0), ("spk1/sub/b.wav", 0.5), ("spk2/c.wav", 0.25)]:
        meta = sf.info(dst / rel)
        assert (meta.samplerate, meta.channels, meta.format, meta.subtype) == (16000, 1, "WAV", "PCM_16")
        assert abs(meta.frames - seconds * 16000) <= 1, rel
    mixed, _ = sf.read(dst / "spk1/a.wav")
    assert abs(np.abs(mixed[100:-100]).max() - 0.3) < 0.01  # the mean of 0.5 and 0.1 times the sine
    same, _ = sf.read(dst / "spk2/c.wav", dtype="int16")
    assert np.array_equal(same, sf.read(tree / "spk2/c.wav", dtype="int16")[0])  # 16 kHz 16-bit: exact

    report.write(tmp_path / "report.txt")
    text = (tmp_path / "report.txt").read_text()
    assert "converted: 3" in text and "failed: 2" in text
    assert "spk2/d.m4a: m4a needs ffmpeg" in text and "spk2/bad.wav: unreadable" in text


def test_rerun_skips_up_to_date_files(tree, tmp_path, no_ffmpeg):
    dst = tmp_path / "dst"
    convert_tree(tree, dst)
    first = snapshot(dst)
    again = convert_tree(tree, dst)
    assert (again.converted, again.skipped, len(again.failures)) == (0, 3, 2)
    assert snapshot(dst) == first
    newer = (dst / "spk1/a.wav").stat().st_mtime_ns + 10**9
    os.utime(tree / "spk1/a.wav", ns=(newer, newer))  # the source changed after its conversion
    stale = convert_tree(tree, dst)
    assert (stale.converted, stale.skipped) == (1, 2)
    assert (convert_tree(tree, dst, overwrite=True).converted) == 3
    other_rate = convert_tree(tree, dst, sample_rate=8000)  # other parameters are not up to date
    assert other_rate.converted == 3 and sf.info(dst / "spk2/c.wav").samplerate == 8000


def test_two_jobs_give_the_same_outputs(tree, tmp_path, no_ffmpeg):
    one = convert_tree(tree, tmp_path / "one", fmt="flac")
    ticks = []
    two = convert_tree(tree, tmp_path / "two", fmt="flac", jobs=2, progress=ticks.append)
    assert (one.converted, one.failures) == (two.converted, two.failures) and sum(ticks) == 5
    assert outputs(tmp_path / "one") == outputs(tmp_path / "two")
    assert sorted(outputs(tmp_path / "two")) == ["spk1/a.flac", "spk1/sub/b.flac", "spk2/c.flac"]
    assert sf.info(tmp_path / "two" / "spk1/a.flac").format == "FLAC"


FAKE_FFMPEG = """#!{python}
# a stand-in for ffmpeg: reads the input with soundfile and writes a wav to stdout the way a pipe gets it
import io, json, sys
import soundfile as sf
args = sys.argv[1:]
with open({log!r}, "a") as f:
    f.write(json.dumps(args) + "\\n")
try:
    data, rate = sf.read(args[args.index("-i") + 1], dtype="int16")
except Exception as exc:
    sys.stderr.write("Invalid data found when processing input\\n")
    sys.exit(1)
buf = io.BytesIO()
sf.write(buf, data, rate, format="WAV", subtype="PCM_16")
out = bytearray(buf.getvalue())
out[4:8] = b"\\xff\\xff\\xff\\xff"  # a piped wav has placeholder sizes
sys.stdout.buffer.write(bytes(out))
"""


def test_ffmpeg_path_with_a_fake_ffmpeg(tree, tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "ffmpeg-calls.jsonl"
    fake = bin_dir / "ffmpeg"
    fake.write_text(FAKE_FFMPEG.format(python=sys.executable, log=str(log)))
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    (tree / "spk2" / "broken.mp3").write_bytes(b"\x00garbage" * 50)

    report = convert_tree(tree, tmp_path / "dst")
    assert report.converted == 4
    reasons = dict(report.failures)
    assert sorted(reasons) == ["spk2/bad.wav", "spk2/broken.mp3"]
    assert reasons["spk2/broken.mp3"].startswith("ffmpeg could not decode it (exit status 1): ")
    assert "Invalid data found" in reasons["spk2/broken.mp3"]
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(calls) == 2  # only the m4a and the mp3 go through ffmpeg
    assert all(
        c[:3] == ["-nostdin", "-loglevel", "error"] and c[-7:] == ["-ac", "1", "-ar", "16000", "-f", "wav", "-"]
        for c in calls
    )
    got, rate = sf.read(tmp_path / "dst" / "spk2/d.wav", dtype="int16")
    assert rate == 16000 and np.array_equal(got, sf.read(tree / "spk2/d.m4a", dtype="int16")[0])


def test_refuses_destination_inside_source_and_bad_arguments(tree, tmp_path):
    for dst in (tree, tree / "converted", tree / "spk1"):
        with pytest.raises(BadValue, match="source"):
            convert_tree(tree, dst)
    assert not (tree / "converted").exists()
    with pytest.raises(BadValue, match="format"):
        convert_tree(tree, tmp_path / "dst", fmt="mp3")
    with pytest.raises(BadValue, match="no such directory"):
        convert_tree(tmp_path / "nowhere", tmp_path / "dst")


def test_report_without_failures(tmp_path):
    report = ConvertReport(converted=2, skipped=1, failures=[])
    report.write(tmp_path / "r.txt")
    assert (tmp_path / "r.txt").read_text() == "converted: 2\nskipped (already up to date): 1\nfailed: 0\n"
    assert report.summary() == "2 converted, 1 already up to date, 0 failed"
