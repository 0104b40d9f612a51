"""Voice activity detection: where the speech is in a waveform, and the waveform cut down to its speech.

One interface, :func:`detector` ``(name, **options)``, and two detectors behind it:

- ``energy`` (built in): the level of 25 ms frames every 10 ms against thresholds set from the wave's own levels,
  its noise floor (a low percentile of the frame levels) and its loudest frames (a high percentile). A frame is
  speech ``ratio`` of the way in dB from the floor to the loudest frames, and at least ``margin_db`` above the
  floor; a stretch of speech extends over the frames around it above half that height (hysteresis). Every
  threshold is relative, so a change of gain changes nothing; only a wave whose loudest frames are below
  ``min_level_db`` (-80 dBFS) is silence whatever its contrast.
- ``silero`` (``pip install 'vvframe[vad]'``): silero-vad's network, the TorchScript model its wheel ships
  (nothing is downloaded), giving a speech probability for every 32 ms at 16 kHz (other rates are resampled with
  :func:`vvframe.data.audio.resampler`). Speech is above ``threshold`` and extends over the windows around it
  above ``threshold - 0.15``.

Both turn frame decisions into segments the same way: silences shorter than ``min_silence_seconds`` are kept
(between segments and at the ends of the wave), segments shorter than ``min_speech_seconds`` dropped, and the rest
padded by ``pad_seconds`` on each side (within the wave). :meth:`Detector.trim` joins the segments; a wave that
is speech throughout comes back as it was (the same tensor), and a wave without speech is a :class:`NoSpeech`
error that names it and says what was found.

:func:`trim_tree` applies a detector to a tree of audio files (``vvframe data vad``).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import math
import os
import threading
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from torch import Tensor

from vvframe.core.atomic import atomic_path
from vvframe.core.errors import BadValue, VvframeError, did_you_mean
from vvframe.data import audio, lists
from vvframe.data.workers import one_torch_thread, process_pool

log = logging.getLogger(__name__)

DETECTORS = ("energy", "silero")
OFF = ("off", "false")  # the names of "no detection" where a setting is a string (--vad off)
INSTALL_HINT = "pip install 'vvframe[vad]'"
SILERO_RATE = 16000  # the rate silero-vad's network takes here
SILERO_WINDOW = 512  # samples per speech probability at SILERO_RATE (32 ms)
LEVEL_DB = -20.0  # where silero's input has its loudest frames (normalize=True)

Span = tuple[int, int]  # [start, end) in samples


class NoSpeech(audio.AudioError):
    """A wave in which a detector found no speech; the message names it and says what was found."""


class MissingSilero(VvframeError, ImportError):
    """The ``silero`` detector asked for where silero-vad is not installed (``pip install 'vvframe[vad]'``)."""


def choice(vad: bool | str | None) -> str | None:
    """The detector a ``vad`` setting names: None for off (``False``, ``None``, ``"off"``), ``"energy"`` for
    ``True``, else the name itself; a ``BadValue`` naming the detectors for anything else."""
    if vad is None or vad is False:
        return None
    if vad is True:
        return "energy"
    if isinstance(vad, str) and vad.lower() in OFF:
        return None
    if isinstance(vad, str) and vad in DETECTORS:
        return vad
    raise BadValue(
        f"vad={vad!r}: expected true, false or a detector: {', '.join(DETECTORS)}" + did_you_mean(str(vad), DETECTORS)
    )


def detector(name: bool | str = "energy", **options: float) -> Detector:
    """The detector ``name`` (``energy``, ``silero``; ``True`` means ``energy``) built with ``options`` (the
    keyword arguments of :class:`EnergyDetector` or :class:`SileroDetector`). An unknown option is a ``BadValue``
    listing those it takes; ``silero`` without silero-vad installed is a :class:`MissingSilero`."""
    chosen = choice(name)
    if chosen is None:
        raise BadValue(f"detector {name!r}: no detector; choose one of {', '.join(DETECTORS)}")
    cls = EnergyDetector if chosen == "energy" else SileroDetector
    accepted = [p for p in inspect.signature(cls).parameters if p != "self"]
    unknown = [k for k in options if k not in accepted]
    if unknown:
        raise BadValue(
            f"the {chosen} detector has no option {unknown[0]!r}{did_you_mean(unknown[0], accepted)};"
            f" it takes {', '.join(accepted)}"
        )
    return cls(**options)


@functools.cache
def default(name: str) -> Detector:
    """The detector ``name`` with its default options, built once per process (what a ``vad`` setting means)."""
    return detector(name)


# ---- the interface ----------------------------------------------------------------------------------------
class Detector:
    """What both detectors share: frame decisions (``_frames``) made into segments, spans and trimmed waves.

    ``min_speech_seconds``: shorter segments are dropped; ``min_silence_seconds``: shorter silences are kept
    (between segments and at the ends of the wave); ``pad_seconds``: added on each side of a segment, within the
    wave.
    """

    name = ""

    def __init__(self, min_speech_seconds: float, min_silence_seconds: float, pad_seconds: float):
        for key, value in (
            ("min_speech_seconds", min_speech_seconds),
            ("min_silence_seconds", min_silence_seconds),
            ("pad_seconds", pad_seconds),
        ):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise BadValue(f"{self.name} detector: {key}={value!r}: expected a number of seconds >= 0")
        self.min_speech_seconds = float(min_speech_seconds)
        self.min_silence_seconds = float(min_silence_seconds)
        self.pad_seconds = float(pad_seconds)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"

    def _frames(self, wave: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray, float, float]:
        """``(speech, extend, hop_seconds, offset_seconds)``: per frame, whether it is speech and whether a
        stretch of speech extends over it; frame ``i`` stands for ``offset + i * hop`` to ``offset + (i+1) * hop``."""
        raise NotImplementedError

    def _found(self, wave: np.ndarray, sample_rate: int) -> str:
        """What the detector saw in a wave without speech, for :class:`NoSpeech`."""
        raise NotImplementedError

    def spans(self, wave: Tensor | np.ndarray, sample_rate: int) -> list[Span]:
        """The speech of ``(T,)`` samples as ``[start, end)`` sample ranges, in order; empty when none."""
        x = _samples(wave)
        n = len(x)
        if n == 0 or not np.any(x):
            return []
        speech, extend, hop, offset = self._frames(x, int(sample_rate))
        duration = n / sample_rate
        found = []
        for a, b in _runs(speech, extend):
            start = 0.0 if a == 0 else offset + a * hop
            end = duration if b >= len(speech) else min(duration, offset + b * hop)
            found.append((start, end))
        segments = _tidy(found, self.min_speech_seconds, self.min_silence_seconds, self.pad_seconds, duration)
        out = [(max(0, round(s * sample_rate)), min(n, round(e * sample_rate))) for s, e in segments]
        return [(s, e) for s, e in out if e > s]

    def segments(self, wave: Tensor | np.ndarray, sample_rate: int) -> list[tuple[float, float]]:
        """The speech of ``(T,)`` samples as ``(start, end)`` times in seconds, in order; empty when none."""
        return [(s / sample_rate, e / sample_rate) for s, e in self.spans(wave, sample_rate)]

    def speech(self, wave: Tensor | np.ndarray, sample_rate: int, name: str | Path = "the audio") -> list[Span]:
        """:meth:`spans`, never empty: a wave without speech is a :class:`NoSpeech` naming ``name``."""
        found = self.spans(wave, sample_rate)
        if not found:
            raise NoSpeech(
                name, f"no speech found by the {self.name} detector: {self._found(_samples(wave), sample_rate)}"
            )
        return found

    def trim(self, wave: Tensor | np.ndarray, sample_rate: int, name: str | Path = "the audio") -> Tensor:
        """The speech of ``(T,)`` samples joined into one ``(T',)`` tensor (the same tensor when it is all
        speech); a :class:`NoSpeech` naming ``name`` when there is none."""
        wave = torch.as_tensor(wave)
        return cut(wave, self.speech(wave, sample_rate, name))


def cut(wave: Tensor, spans: Sequence[Span]) -> Tensor:
    """The ``spans`` of ``wave`` (``(T,)``) joined; ``wave`` itself when one span covers it whole."""
    if len(spans) == 1 and spans[0][0] <= 0 and spans[0][1] >= len(wave):
        return wave
    return torch.cat([wave[s:e] for s, e in spans]) if spans else wave[:0]


def _samples(wave: Tensor | np.ndarray) -> np.ndarray:
    x = wave.detach().cpu().numpy() if isinstance(wave, Tensor) else np.asarray(wave)
    if x.ndim != 1:
        raise BadValue(f"voice activity detection takes (samples,), got a wave shaped {tuple(x.shape)}")
    return np.ascontiguousarray(x, dtype=np.float32)


def _runs(speech: np.ndarray, extend: np.ndarray) -> list[tuple[int, int]]:
    """``[first, last + 1)`` frame ranges: the runs of ``extend | speech`` that hold a ``speech`` frame."""
    inside = (extend | speech).astype(np.int8)
    edges = np.diff(np.concatenate([[0], inside, [0]]))
    starts, stops = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    if not len(starts):
        return []
    # frames between runs are not speech, so the maximum from one run's start to the next is the run's own
    held = np.maximum.reduceat(speech.astype(np.int8), starts) > 0
    return [(int(a), int(b)) for a, b, h in zip(starts, stops, held) if h]


def _tidy(
    found: list[tuple[float, float]], min_speech: float, min_silence: float, pad: float, duration: float
) -> list[tuple[float, float]]:
    """Gaps under ``min_silence`` bridged (between segments and at the edges), segments under ``min_speech``
    dropped, the rest padded and merged."""
    merged: list[list[float]] = []
    for start, end in found:
        if merged and start - merged[-1][1] < min_silence:
            merged[-1][1] = end
        else:
            merged.append([start, end])
    if merged and merged[0][0] < min_silence:  # a silence too short to cut is kept at the edges too
        merged[0][0] = 0.0
    if merged and duration - merged[-1][1] < min_silence:
        merged[-1][1] = duration
    out: list[list[float]] = []
    for start, end in merged:
        if end - start < min_speech:
            continue
        start, end = max(0.0, start - pad), min(duration, end + pad)
        if out and start <= out[-1][1]:
            out[-1][1] = max(out[-1][1], end)
        else:
            out.append([start, end])
    return [(s, e) for s, e in out]


def frame_levels(wave: np.ndarray, sample_rate: int, frame_seconds: float, hop_seconds: float) -> np.ndarray:
    """The level in dBFS of frames of ``frame_seconds`` every ``hop_seconds`` of ``(T,)`` samples (the last ones
    shorter; -120 for zeros)."""
    x = np.asarray(wave, dtype=np.float64)
    win = max(1, round(frame_seconds * sample_rate))
    hop = max(1, round(hop_seconds * sample_rate))
    count = 1 if len(x) <= win else 1 + math.ceil((len(x) - win) / hop)
    starts = np.arange(count) * hop
    stops = np.minimum(starts + win, len(x))
    energy = np.concatenate([[0.0], np.cumsum(x * x)])
    power = np.maximum(energy[stops] - energy[starts], 0.0) / np.maximum(stops - starts, 1)
    return 10.0 * np.log10(power + 1e-12)


def _dbfs(x: np.ndarray) -> str:
    peak = float(np.abs(x).max()) if len(x) else 0.0
    return "every sample zero" if peak == 0 else f"sample peak {20 * math.log10(peak):.1f} dBFS"


# ---- energy -----------------------------------------------------------------------------------------------
class EnergyDetector(Detector):
    """Speech where the frame level stands out from the wave's own noise floor (see the module docstring).

    ``ratio``: where the speech threshold lies between the floor (the ``floor_percentile`` of the frame levels) and
    the loudest frames (the ``peak_percentile``), in dB; ``margin_db``: the least height of the threshold above
    the floor; ``min_level_db``: loudest frames below this (dBFS) mean silence.
    """

    name = "energy"

    def __init__(
        self,
        ratio: float = 0.3,
        margin_db: float = 6.0,
        floor_percentile: float = 10.0,
        peak_percentile: float = 99.0,
        min_level_db: float = -80.0,
        frame_seconds: float = 0.025,
        hop_seconds: float = 0.010,
        min_speech_seconds: float = 0.15,
        min_silence_seconds: float = 0.3,
        pad_seconds: float = 0.05,
    ):
        super().__init__(min_speech_seconds, min_silence_seconds, pad_seconds)
        if not 0 < ratio < 1:
            raise BadValue(f"energy detector: ratio={ratio!r}: expected a number in (0, 1)")
        if not margin_db > 0:
            raise BadValue(f"energy detector: margin_db={margin_db!r}: expected a number of dB > 0")
        if not 0 <= floor_percentile < peak_percentile <= 100:
            raise BadValue(
                f"energy detector: floor_percentile={floor_percentile!r}, peak_percentile={peak_percentile!r}:"
                " expected 0 <= floor_percentile < peak_percentile <= 100"
            )
        if not 0 < hop_seconds <= frame_seconds:
            raise BadValue(
                f"energy detector: frame_seconds={frame_seconds!r}, hop_seconds={hop_seconds!r}: expected"
                " 0 < hop_seconds <= frame_seconds"
            )
        self.ratio = float(ratio)
        self.margin_db = float(margin_db)
        self.floor_percentile = float(floor_percentile)
        self.peak_percentile = float(peak_percentile)
        self.min_level_db = float(min_level_db)
        self.frame_seconds = float(frame_seconds)
        self.hop_seconds = float(hop_seconds)

    def levels(self, wave: Tensor | np.ndarray, sample_rate: int) -> np.ndarray:
        """The level of every frame in dBFS (a frame of ``frame_seconds`` every ``hop_seconds``; -120 for zeros)."""
        return frame_levels(_samples(wave), sample_rate, self.frame_seconds, self.hop_seconds)

    def _thresholds(self, level: np.ndarray) -> tuple[float, float, float]:
        """``(floor, loudest, threshold)`` in dB."""
        floor = float(np.percentile(level, self.floor_percentile))
        loudest = float(np.percentile(level, self.peak_percentile))
        return floor, loudest, floor + max(self.margin_db, self.ratio * (loudest - floor))

    def _frames(self, wave: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray, float, float]:
        level = self.levels(wave, sample_rate)
        floor, loudest, high = self._thresholds(level)
        if loudest < self.min_level_db:
            none = np.zeros(len(level), dtype=bool)
            return none, none, self.hop_seconds, 0.0
        low = floor + 0.5 * (high - floor)
        hop = max(1, round(self.hop_seconds * sample_rate)) / sample_rate
        win = max(1, round(self.frame_seconds * sample_rate)) / sample_rate
        return level >= high, level >= low, hop, (win - hop) / 2  # a frame stands for the hop around its centre

    def _found(self, wave: np.ndarray, sample_rate: int) -> str:
        said = f"{len(wave) / sample_rate:.2f} s, {_dbfs(wave)}"
        if not np.any(wave):
            return said
        floor, loudest, high = self._thresholds(self.levels(wave, sample_rate))
        if loudest < self.min_level_db:
            return f"{said}; its loudest frames are at {loudest:.1f} dBFS, below min_level_db={self.min_level_db:g}"
        return (
            f"{said}; frame levels from {floor:.1f} dBFS (the noise floor) to {loudest:.1f} dBFS (the loudest"
            f" frames): {loudest - floor:.1f} dB of contrast, where speech needs frames {high - floor:.1f} dB above"
            f" the floor for at least {self.min_speech_seconds:g} s"
        )


# ---- silero -----------------------------------------------------------------------------------------------
_silero_lock = threading.Lock()  # the network keeps state between windows: one wave at a time


@functools.lru_cache(maxsize=1)
def _silero_model() -> torch.nn.Module:
    """silero-vad's TorchScript network from its wheel, loaded once per process."""
    threads = torch.get_num_threads()
    try:
        import silero_vad
    except ImportError as exc:
        raise MissingSilero(
            f"the silero detector needs the silero-vad package ({INSTALL_HINT}); or use the built-in"
            f" energy detector ({exc})"
        ) from exc
    finally:
        torch.set_num_threads(threads)  # importing silero_vad sets torch to one thread for the whole process
    with warnings.catch_warnings():
        # torch.jit.load and importlib.resources.path are deprecated; the wheel ships TorchScript and uses both
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        model = silero_vad.load_silero_vad(onnx=False)
    log.debug("loaded silero-vad %s (TorchScript, from its wheel)", getattr(silero_vad, "__version__", "?"))
    return model


class SileroDetector(Detector):
    """Speech where silero-vad's network says so (see the module docstring); needs ``pip install 'vvframe[vad]'``.

    ``threshold``: the speech probability a window needs; a stretch extends over windows above
    ``threshold - 0.15``. ``normalize``: scale the wave so that its loudest frames are at -20 dBFS (by at most
    +60 dB) before the network sees it, which makes the detector as indifferent to gain as the energy one (the
    network alone misses speech at -60 dBFS that it finds at -20).
    """

    name = "silero"

    def __init__(
        self,
        threshold: float = 0.5,
        normalize: bool = True,
        min_speech_seconds: float = 0.15,
        min_silence_seconds: float = 0.3,
        pad_seconds: float = 0.05,
    ):
        super().__init__(min_speech_seconds, min_silence_seconds, pad_seconds)
        if not 0 < threshold < 1:
            raise BadValue(f"silero detector: threshold={threshold!r}: expected a probability in (0, 1)")
        self.threshold = float(threshold)
        self.normalize = bool(normalize)
        _silero_model()  # a missing package is reported now, before any work

    def probabilities(self, wave: Tensor | np.ndarray, sample_rate: int) -> np.ndarray:
        """silero's speech probability for every 32 ms window of the wave (at 16 kHz)."""
        x = _samples(wave)
        if self.normalize and np.any(x):
            loudest = float(np.percentile(frame_levels(x, sample_rate, 0.025, 0.010), 99))
            x = np.clip(x * 10 ** (min(60.0, LEVEL_DB - loudest) / 20), -1.0, 1.0).astype(np.float32)
        x = torch.from_numpy(x)
        if sample_rate != SILERO_RATE:
            x = audio.resampler(int(sample_rate), SILERO_RATE)(x)
        n = len(x)
        if n < SILERO_WINDOW:  # the network refuses less than one window
            x = torch.nn.functional.pad(x, (0, SILERO_WINDOW - n))
        model = _silero_model()
        with _silero_lock, one_torch_thread(), torch.no_grad():  # threads: 8x slower on 2 busy cores
            probs = model.audio_forward(x.unsqueeze(0), SILERO_RATE)[0]
        return probs.float().numpy()[: max(1, math.ceil(n / SILERO_WINDOW))]

    def _frames(self, wave: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray, float, float]:
        probs = self.probabilities(wave, sample_rate)
        return probs >= self.threshold, probs >= max(0.01, self.threshold - 0.15), SILERO_WINDOW / SILERO_RATE, 0.0

    def _found(self, wave: np.ndarray, sample_rate: int) -> str:
        said = f"{len(wave) / sample_rate:.2f} s, {_dbfs(wave)}"
        if not np.any(wave):
            return said
        best = float(self.probabilities(wave, sample_rate).max())
        return (
            f"{said}; silero's highest speech probability is {best:.2f}, where speech needs {self.threshold:g}"
            f" for at least {self.min_speech_seconds:g} s"
        )


# ---- a tree of files (vvframe data vad) -------------------------------------------------------------------
@dataclass
class TreeReport:
    """What :func:`trim_tree` found: each file's segments (seconds), the seconds in and kept, the files without
    speech and the files that could not be read, each with its reason."""

    segments: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    seconds: float = 0.0
    kept_seconds: float = 0.0
    no_speech: list[tuple[str, str]] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)

    def segment_lines(self) -> str:
        """The segment list: ``<path> <start> <end>`` (seconds, 3 decimals) per segment, files in order."""
        return "".join(f"{path} {s:.3f} {e:.3f}\n" for path, found in self.segments.items() for s, e in found)


def audio_files(src: str | Path) -> list[str]:
    """The audio files vvframe reads (``.wav``, ``.flac``) under ``src``, as sorted posix paths relative to it."""
    src = Path(src)
    if not src.is_dir():
        raise BadValue(f"{src}: {'not a directory' if src.exists() else 'no such directory'}")
    found = []
    for folder, dirs, files in os.walk(src):
        dirs.sort()
        base = Path(folder)
        found += [
            (base / name).relative_to(src).as_posix()
            for name in files
            if Path(name).suffix.lower() in lists.AUDIO_SUFFIXES
        ]
    return sorted(found)


def trim_tree(
    src: str | Path,
    files: Sequence[str],
    dst: str | Path | None,
    name: str = "energy",
    jobs: int = 1,
    progress: Callable[[int], None] | None = None,
) -> TreeReport:
    """Detect the speech of each of ``files`` (relative to ``src``) with the detector ``name``; with ``dst``, write
    each file's speech to the same relative path under it (mono 16-bit, the file's own rate and format).

    A file without speech, or one that cannot be read, is an entry of the report, never an exception;
    ``progress(1)`` is called once per file. ``jobs > 1`` works in that many processes, with the same outputs.
    """
    if jobs < 1:
        raise BadValue(f"jobs={jobs}: expected at least 1")
    default(name)  # an unknown name or a missing package fails here, once
    tasks = [(str(Path(src) / rel), None if dst is None else str(Path(dst) / rel), name) for rel in files]
    report = TreeReport()
    pool = process_pool(min(jobs, len(tasks))) if jobs > 1 and len(tasks) > 1 else None
    results = (
        map(_trim_one, tasks)
        if pool is None
        else pool.map(_trim_one, tasks, chunksize=max(1, min(32, len(tasks) // (jobs * 8))))
    )
    try:
        with one_torch_thread() if pool is None else contextlib.nullcontext():
            for rel, (status, segments, seconds, kept, reason) in zip(files, results):
                if status == "ok":
                    report.segments[rel] = segments
                    report.seconds += seconds
                    report.kept_seconds += kept
                elif status == "no speech":
                    report.no_speech.append((rel, reason))
                    report.seconds += seconds
                else:
                    report.failures.append((rel, reason))
                if progress is not None:
                    progress(1)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return report


def _trim_one(task: tuple[str, str | None, str]) -> tuple[str, list[tuple[float, float]], float, float, str]:
    """``(status, segments, seconds, kept seconds, reason)`` of one file; never raises for a bad file."""
    source, output, name = task
    try:
        rate = audio.info(source).sample_rate
        wave = audio.read(source)
        spans = default(name).spans(wave, rate)
        seconds = len(wave) / rate
        if not spans:
            return "no speech", [], seconds, 0.0, default(name)._found(_samples(wave), rate)
        if output is not None:
            fmt = Path(output).suffix.lower().lstrip(".").upper()
            with atomic_path(output) as tmp:
                sf.write(str(tmp), audio.pcm16(cut(wave, spans).numpy()), rate, format=fmt, subtype="PCM_16")
        kept = sum(e - s for s, e in spans) / rate
        return "ok", [(s / rate, e / rate) for s, e in spans], seconds, kept, ""
    except audio.AudioError as exc:
        if exc.reason.startswith("silent"):  # audio.read refuses an all-zero file: a file without speech here
            return "no speech", [], _seconds(source), 0.0, exc.reason
        return "failed", [], 0.0, 0.0, exc.reason
    except Exception as exc:  # noqa: BLE001 - one odd file must not end the work on a tree
        return "failed", [], 0.0, 0.0, f"{type(exc).__name__}: {exc}"


def _seconds(path: str) -> float:
    with contextlib.suppress(audio.AudioError):
        return audio.info(path).seconds
    return 0.0
