"""Reading audio: whole files or only a crop, mono, at the recipe's sample rate, with errors that name the file.

soundfile seeks in wav and flac, so a 2-second crop of a 10-minute file decodes 2 seconds. A file at another
rate is resampled on the fly (torchaudio's resampler); a file shorter than the crop is repeated to fill it.

What counts as unusable is decided here, once, for every path (training skips and counts such a file; extraction,
the API and the service refuse it naming the file): missing, unreadable, truncated, empty, silent (every sample
read is zero), holding NaN/inf samples, and, for an utterance (:func:`utterance_info`), shorter than
:data:`MIN_SECONDS`. Only the samples actually read are checked, so a training crop stays a crop.
"""

from __future__ import annotations

import functools
import logging
import math
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from vvframe.core.errors import VvframeError

log = logging.getLogger(__name__)

MIN_SECONDS = 0.1  # the shortest utterance vvframe trains on, embeds or scores: less gives no frontend usable frames


class AudioError(VvframeError, OSError):
    """A file that cannot serve as audio: missing, unreadable, empty, silent, NaN/inf or too short; the message
    names it and why."""

    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


@dataclass(frozen=True)
class AudioInfo:
    """What the header says: frames, rate and channels."""

    frames: int
    sample_rate: int
    channels: int

    @property
    def seconds(self) -> float:
        return self.frames / self.sample_rate


def info(path: str | Path) -> AudioInfo:
    """The header of ``path``; an ``AudioError`` if it is missing or not audio libsndfile can read."""
    path = Path(path)
    if not path.is_file():
        raise AudioError(path, "no such file" if not path.exists() else "not a file")
    if path.stat().st_size == 0:
        raise AudioError(path, "empty file (0 bytes)")
    try:
        meta = sf.info(str(path))
    except RuntimeError as exc:  # soundfile's LibsndfileError is a RuntimeError
        raise AudioError(path, f"unreadable ({exc})") from exc
    if meta.frames <= 0:
        raise AudioError(path, "empty (no samples)")
    if path.suffix.lower() == ".wav" and meta.format == "WAV":
        promised = _wav_data_bytes(path)
        block = meta.channels * _SAMPLE_BYTES.get(meta.subtype, 0)
        if promised is not None and block and promised // block > meta.frames:
            raise AudioError(
                path, f"truncated: the header promises {promised // block} samples, the file holds {meta.frames}"
            )
    return AudioInfo(int(meta.frames), int(meta.samplerate), int(meta.channels))


def utterance_info(path: str | Path) -> AudioInfo:
    """:func:`info` of a file used as an utterance (trained on, embedded, scored): also an ``AudioError`` naming
    the file and its length when it is shorter than :data:`MIN_SECONDS`."""
    meta = info(path)
    if meta.frames < MIN_SECONDS * meta.sample_rate:
        shown = math.floor(meta.seconds * 1000) / 1000  # rounded down: 1599 samples at 16 kHz is no "0.100 s"
        raise AudioError(
            path,
            f"too short: {shown:.3f} s ({meta.frames} sample{'s' if meta.frames != 1 else ''} at"
            f" {meta.sample_rate} Hz); an utterance needs at least {MIN_SECONDS:g} s"
            " (vvframe.data.audio.MIN_SECONDS)",
        )
    return meta


_SAMPLE_BYTES = {"PCM_U8": 1, "PCM_S8": 1, "PCM_16": 2, "PCM_24": 3, "PCM_32": 4, "FLOAT": 4, "DOUBLE": 8}


def _wav_data_bytes(path: Path) -> int | None:
    """The size the RIFF header gives the ``data`` chunk (libsndfile quietly clips it to what the file holds)."""
    with open(path, "rb") as f:
        if f.read(4) != b"RIFF" or not f.read(4) or f.read(4) != b"WAVE":
            return None
        while True:
            head = f.read(8)
            if len(head) < 8:
                return None
            size = int.from_bytes(head[4:], "little")
            if head[:4] == b"data":
                return None if size in (0, 0xFFFFFFFF) else size  # 0 / max: streamed or RF64, size unknown
            f.seek(size + (size & 1), 1)


_warned_rates: set[int] = set()
_warn_lock = threading.Lock()


def _note_resample(path: Path, rate: int, target: int) -> None:
    with _warn_lock:
        if rate in _warned_rates:
            return
        _warned_rates.add(rate)
    log.warning(
        "%s is at %d Hz, the recipe at %d Hz: resampling such files on the fly (convert them once with"
        " `vvframe data convert` to save the work)",
        path,
        rate,
        target,
    )


@functools.lru_cache(maxsize=16)
def resampler(orig: int, new: int) -> torch.nn.Module:
    """torchaudio's resampler from ``orig`` to ``new`` Hz for ``(..., time)`` tensors, built once per pair of rates.

    The one filter vvframe resamples with: reading a file at another rate, a shard at another rate and
    ``vvframe data convert``, so converted data trains like unconverted data.
    """
    import torchaudio

    return torchaudio.transforms.Resample(orig, new)


def mono(samples: np.ndarray) -> np.ndarray:
    """``(frames, channels)`` samples as contiguous float32 ``(frames,)``: the mean of the channels."""
    mixed = samples.mean(axis=1) if samples.shape[1] > 1 else samples[:, 0]
    return np.ascontiguousarray(mixed, dtype=np.float32)


def read(path: str | Path, sample_rate: int | None = None, start: int = 0, frames: int | None = None) -> torch.Tensor:
    """Mono float32 samples of ``path`` as a ``(T,)`` tensor.

    ``sample_rate``: the rate wanted (``None``: the file's own). ``start``/``frames``: a crop in samples at that
    rate; only that part is decoded. A file shorter than ``start + frames`` is repeated to fill the crop.
    Raises ``AudioError`` naming the file for a missing, unreadable or empty file, and for one whose samples read
    are all zero or hold NaN/inf (only the crop is checked). The length is not checked: see :func:`utterance_info`.
    """
    path = Path(path)
    meta = info(path)
    rate = sample_rate or meta.sample_rate
    if start < 0 or (frames is not None and frames <= 0):
        raise ValueError(f"crop start={start}, frames={frames}: start must be >= 0 and frames > 0")
    ratio = meta.sample_rate / rate
    total = math.floor(meta.frames / ratio)  # the file's length at the wanted rate
    if frames is not None and total < start + frames:
        # short file: decode it whole and tile it; a crop that starts past the end wraps around
        wave = _decode(path, meta, 0, meta.frames)
        wave = _to_rate(wave, meta.sample_rate, rate, path)
        reps = math.ceil((start % len(wave) + frames) / len(wave))
        wave = wave.repeat(reps)[start % len(wave) : start % len(wave) + frames]
    elif frames is None:
        wave = _to_rate(_decode(path, meta, 0, meta.frames), meta.sample_rate, rate, path)[start:]
    else:
        if meta.sample_rate == rate:
            wave = _decode(path, meta, start, frames)
        else:  # decode the matching stretch at the file's rate, with a margin for the filter, then trim
            margin = 64
            src_start = max(0, math.floor(start * ratio) - margin)
            src_stop = min(meta.frames, math.ceil((start + frames) * ratio) + margin)
            wave = _to_rate(_decode(path, meta, src_start, src_stop - src_start), meta.sample_rate, rate, path)
            offset = round((start * ratio - src_start) / ratio)
            wave = wave[offset : offset + frames]
            if len(wave) < frames:
                wave = torch.nn.functional.pad(wave, (0, frames - len(wave)))
    if not np.any(wave.numpy()):  # numpy: a torch reduction here costs more than the decoding on a busy CPU
        raise AudioError(path, "silent: every sample of the part read is zero")
    return wave


def _decode(path: Path, meta: AudioInfo, start: int, frames: int) -> torch.Tensor:
    try:
        with sf.SoundFile(str(path)) as f:
            if start:
                f.seek(start)
            data = f.read(frames, dtype="float32", always_2d=True)
    except RuntimeError as exc:
        raise AudioError(path, f"unreadable ({exc})") from exc
    if len(data) < frames:
        raise AudioError(
            path,
            f"truncated: the header promises {meta.frames} samples, reading"
            f" [{start}, {start + frames}) gave {len(data)}",
        )
    if not np.isfinite(data).all():  # a float wav written from a failed computation; one NaN ruins a whole batch
        bad = np.flatnonzero(~np.isfinite(data).all(axis=1))
        raise AudioError(
            path,
            f"holds NaN/inf samples: {len(bad)} of the {len(data)} read from [{start},"
            f" {start + frames}), the first at sample {start + int(bad[0])}; write the file"
            " again from its source, or leave it out of the lists",
        )
    return torch.from_numpy(mono(data))


def _to_rate(wave: torch.Tensor, rate: int, target: int, path: Path) -> torch.Tensor:
    if rate == target:
        return wave
    _note_resample(path, rate, target)
    return resampler(rate, target)(wave)


def random_crop(
    path: str | Path, frames: int, sample_rate: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """A crop of ``frames`` samples at a random position (drawn from ``generator``); short files are repeated."""
    meta = info(path)
    total = math.floor(meta.frames * sample_rate / meta.sample_rate)
    start = int(torch.randint(0, total - frames + 1, (1,), generator=generator)) if total > frames else 0
    return read(path, sample_rate, start, frames)


def write(path: str | Path, wave: torch.Tensor, sample_rate: int) -> None:
    """Write a ``(T,)`` waveform as 16-bit PCM (wav, or flac by suffix), creating parent folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), wave.detach().cpu().numpy(), sample_rate, subtype="PCM_16")


def pcm16(wave: np.ndarray) -> np.ndarray:
    """Float samples in [-1, 1] as int16, clipped (scale 32768, so 16-bit input read as float comes back exact)."""
    return np.clip(np.round(np.asarray(wave, dtype=np.float64) * 32768.0), -32768, 32767).astype(np.int16)
