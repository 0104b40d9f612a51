"""``vvframe data convert``: a tree of audio files to mono at one sample rate, as 16-bit wav or flac, mirrored.

- ``.wav``, ``.flac`` and ``.ogg`` are decoded by libsndfile (soundfile); the other audio suffixes
  (:data:`FFMPEG_SUFFIXES`: ``.m4a`` of VoxCeleb2, ``.mp3``, ...) through ``ffmpeg`` when it is on ``PATH``.
  Without it those files are failures with a reason that says so, and the rest are converted.
- Mixing to mono averages the channels; resampling is torchaudio's (the same filter that reading a file at
  another rate uses on the fly, so converted data trains like unconverted data).
- ``src/a/b.m4a`` becomes ``dst/a/b.wav`` (or ``.flac``); files of other suffixes are ignored. Two sources
  that would land on one output (``x.wav`` and ``x.flac``) are a failure for the second (sorted order).
  ``replace_spaces`` writes each whitespace character of the path as ``_`` (``a b/c.wav`` -> ``a_b/c.wav``), so
  the copy can go into lists, whose lines cannot hold a path with spaces.
- Each output is written to a temporary sibling and renamed, so a killed conversion never leaves half a file;
  a rerun skips an output that exists, is at least as new as its source and has the wanted rate, one channel
  and the wanted format (unless ``overwrite``).
- A source that cannot be decoded, or that holds NaN/inf samples, is a failure entry naming the problem, never a
  crash. Sources are only read.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from vvframe.core.atomic import atomic_path, atomic_write
from vvframe.core.errors import BadValue, short
from vvframe.data import lists
from vvframe.data.workers import one_torch_thread, process_pool

log = logging.getLogger(__name__)

# convert reads more than vvframe does: libsndfile decodes ogg too (vvframe reads only the lists' suffixes, whose
# files seek exactly), ffmpeg the compressed formats such as VoxCeleb2's m4a
SNDFILE_SUFFIXES = (*lists.AUDIO_SUFFIXES, ".ogg")
FFMPEG_SUFFIXES = (".m4a", ".mp3", ".aac", ".opus", ".wma", ".webm", ".mka", ".mp4")
AUDIO_SUFFIXES = SNDFILE_SUFFIXES + FFMPEG_SUFFIXES
NEEDS_CONVERTING = tuple(s for s in AUDIO_SUFFIXES if s not in lists.AUDIO_SUFFIXES)  # audio no list may name
# and writes what vvframe reads: the extension -> libsndfile's format name ({"wav": "WAV", "flac": "FLAC"})
FORMATS = {s[1:]: s[1:].upper() for s in lists.AUDIO_SUFFIXES}


@dataclass
class ConvertReport:
    """What a conversion did: files converted, files skipped as up to date, and each failure with its reason."""

    converted: int = 0
    skipped: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)

    def summary(self) -> str:
        """One line: the three counts."""
        return f"{self.converted} converted, {self.skipped} already up to date, {len(self.failures)} failed"

    def write(self, path: str | Path) -> None:
        """A readable text report at ``path``: the counts, then one ``<source>: <reason>`` line per failure."""
        lines = [
            f"converted: {self.converted}",
            f"skipped (already up to date): {self.skipped}",
            f"failed: {len(self.failures)}",
        ]
        if self.failures:
            lines.append("")
            lines += [f"{source}: {reason}" for source, reason in self.failures]
        atomic_write(path, "".join(line + "\n" for line in lines))


class ConvertError(BadValue):
    """Arguments ``convert_tree`` cannot work with: a missing source folder, a destination inside it, ..."""


def find_audio(src: str | Path) -> list[Path]:
    """The audio files under ``src`` (by suffix, case-insensitive), as paths relative to it, sorted."""
    src = Path(src)
    found = []
    for folder, dirs, files in os.walk(src):
        dirs.sort()
        base = Path(folder)
        found += [(base / name).relative_to(src) for name in files if Path(name).suffix.lower() in AUDIO_SUFFIXES]
    return sorted(found, key=lambda p: p.as_posix())


def convert_tree(
    src: Path,
    dst: Path,
    sample_rate: int = 16000,
    fmt: str = "wav",
    jobs: int = 1,
    overwrite: bool = False,
    progress: Callable[[int], None] | None = None,
    replace_spaces: bool = False,
) -> ConvertReport:
    """Every audio file under src to mono at sample_rate in fmt ('wav' 16-bit PCM or 'flac'), mirrored under dst.

    ``progress(1)`` is called once per audio file, whatever became of it (``len(find_audio(src))`` in all).
    ``jobs > 1`` converts in that many processes; the outputs are the same as with one. ``replace_spaces``: each
    whitespace character of an output path becomes ``_``.
    """
    src, dst = Path(src), Path(dst)
    fmt = fmt.lower().lstrip(".")
    if fmt not in FORMATS:
        raise ConvertError(f"format {fmt!r}: expected one of {', '.join(FORMATS)}")
    if not isinstance(sample_rate, int) or sample_rate <= 0:
        raise ConvertError(f"sample rate {sample_rate!r}: expected a positive integer (Hz)")
    if jobs < 1:
        raise ConvertError(f"jobs={jobs}: expected at least 1")
    if not src.is_dir():
        raise ConvertError(f"{src}: {'not a directory' if src.exists() else 'no such directory'}")
    src_real, dst_real = src.resolve(), dst.resolve()
    if dst_real == src_real or src_real in dst_real.parents:
        where = "the source folder" if dst_real == src_real else "inside the source"
        raise ConvertError(
            f"destination {dst} is {where} {src}: choose a folder outside it (sources are never modified)"
        )
    if dst.exists() and not dst.is_dir():
        raise ConvertError(f"destination {dst} exists and is not a directory")

    ffmpeg = shutil.which("ffmpeg")
    report = ConvertReport()
    tasks: list[tuple[str, str, str]] = []  # (relative source, source, output)
    claimed: dict[str, str] = {}
    for rel in find_audio(src):
        out_rel = rel.with_suffix("." + fmt).as_posix()
        if replace_spaces:
            out_rel = re.sub(r"\s", "_", out_rel)
        if out_rel in claimed:
            report.failures.append(
                (rel.as_posix(), f"its output {out_rel} is also {claimed[out_rel]}'s; not converted")
            )
            if progress is not None:
                progress(1)
            continue
        claimed[out_rel] = rel.as_posix()
        tasks.append((rel.as_posix(), str(src / rel), str(dst / out_rel)))
    log.info(
        "converting %d audio files from %s to %s (%d Hz mono %s, %d job%s)",
        len(tasks),
        src,
        dst,
        sample_rate,
        fmt,
        jobs,
        "s" if jobs != 1 else "",
    )

    work = functools.partial(_convert_one, sample_rate=sample_rate, fmt=fmt, overwrite=overwrite, ffmpeg=ffmpeg)
    args = [(s, o) for _, s, o in tasks]
    if jobs == 1 or len(tasks) <= 1:
        results = (work(a) for a in args)
        pool = None
    else:
        pool = process_pool(min(jobs, len(tasks)))
        results = pool.map(work, args, chunksize=max(1, min(32, len(tasks) // (jobs * 8))))
    try:
        with one_torch_thread() if pool is None else contextlib.nullcontext():
            for (rel, _, _), (status, reason) in zip(tasks, results):
                if status == "converted":
                    report.converted += 1
                elif status == "skipped":
                    report.skipped += 1
                else:
                    report.failures.append((rel, reason))
                    log.warning("%s: %s", rel, reason)
                if progress is not None:
                    progress(1)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    report.failures.sort()
    return report


def _convert_one(
    paths: tuple[str, str], sample_rate: int, fmt: str, overwrite: bool, ffmpeg: str | None
) -> tuple[str, str]:
    """``("converted" | "skipped" | "failed", reason)`` for one file; never raises for a bad source."""
    source, output = Path(paths[0]), Path(paths[1])
    try:
        if not overwrite and _up_to_date(source, output, sample_rate, fmt):
            return "skipped", ""
        wave, rate = _decode(source, sample_rate, ffmpeg)
        if wave.size == 0:
            return "failed", "empty (no samples)"
        if not np.isfinite(wave).all():
            return "failed", (
                f"holds NaN/inf samples ({int(np.count_nonzero(~np.isfinite(wave)))} of {wave.size}); not converted"
            )
        if rate != sample_rate:
            wave = _resample(wave, rate, sample_rate)
        from vvframe.data.audio import pcm16  # (imports torch, which a conversion has loaded already)

        with atomic_path(output) as tmp:
            sf.write(str(tmp), pcm16(wave), sample_rate, format=FORMATS[fmt], subtype="PCM_16")
        return "converted", ""
    except _Failure as exc:
        return "failed", str(exc)
    except (RuntimeError, sf.LibsndfileError) as exc:
        return "failed", f"unreadable ({short(exc, 500)})"  # 500: libsndfile names the whole path before why
    except Exception as exc:  # noqa: BLE001 - OSError and the like: one odd file must not end the conversion
        return "failed", f"{type(exc).__name__}: {exc}"


class _Failure(Exception):
    """A source that cannot be converted; the message is the reason in the report."""


def _up_to_date(source: Path, output: Path, sample_rate: int, fmt: str) -> bool:
    try:
        if output.stat().st_mtime_ns < source.stat().st_mtime_ns:
            return False
        meta = sf.info(str(output))
    except (OSError, RuntimeError):
        return False
    return (
        meta.samplerate == sample_rate
        and meta.channels == 1
        and meta.format == FORMATS[fmt]
        and meta.subtype == "PCM_16"
        and meta.frames > 0
    )


def _decode(source: Path, sample_rate: int, ffmpeg: str | None) -> tuple[np.ndarray, int]:
    """Mono float32 samples and their rate."""
    suffix = source.suffix.lower()
    if suffix in SNDFILE_SUFFIXES:
        data, rate = sf.read(str(source), dtype="float32", always_2d=True)
    else:
        if ffmpeg is None:
            raise _Failure(
                f"{suffix.lstrip('.')} needs ffmpeg, which is not on PATH (install it, e.g. apt install ffmpeg)"
            )
        data, rate = _ffmpeg_decode(ffmpeg, source, sample_rate)
    from vvframe.data.audio import mono  # (imports torch, which a conversion has loaded already)

    return mono(data), int(rate)


def _ffmpeg_decode(ffmpeg: str, source: Path, sample_rate: int) -> tuple[np.ndarray, int]:
    cmd = [
        ffmpeg,
        "-nostdin",
        "-loglevel",
        "error",
        "-i",
        str(source),
        "-ac",
        "1",
        "-ar",
        str(sample_rate),
        "-f",
        "wav",
        "-",
    ]
    try:
        done = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, check=False)
    except OSError as exc:
        raise _Failure(f"ffmpeg ({ffmpeg}) could not be started: {exc}") from exc
    if done.returncode != 0:
        # ffmpeg says why last, after the lines of what it was doing: the end of its messages, as one line
        message = " ".join(done.stderr.decode("utf-8", "replace").split())[-500:] or "no message"
        raise _Failure(f"ffmpeg could not decode it (exit status {done.returncode}): {message}")
    if not done.stdout:
        raise _Failure("ffmpeg decoded no audio")
    # a piped wav carries placeholder sizes; libsndfile reads up to the end of the bytes
    try:
        data, rate = sf.read(io.BytesIO(done.stdout), dtype="float32", always_2d=True)
    except (RuntimeError, sf.LibsndfileError) as exc:
        raise _Failure(f"ffmpeg's output is not readable wav ({short(exc, 500)})") from exc
    return data, rate


def _resample(wave: np.ndarray, rate: int, target: int) -> np.ndarray:
    """The samples at ``target`` Hz, through the resampler that reading at another rate uses."""
    import torch

    from vvframe.data.audio import resampler

    return resampler(rate, target)(torch.from_numpy(wave)).numpy()
