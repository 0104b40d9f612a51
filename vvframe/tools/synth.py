"""A deterministic synthetic multi-speaker speech corpus, for tests and the quickstart (nothing to download).

Each speaker is a *voice*: a source-filter model whose parameters are drawn once from a hash of
``(seed, speaker)``. The glottal source has the speaker's mean F0 and intonation range (drawn from one
shared, overlapping distribution), glottal-formant ratio and spectral tilt, jitter, shimmer and
breathiness. The vocal tract is a cascade of second-order resonators (the Klatt cascade) whose formant
frequencies are a shared vowel inventory scaled by the speaker's vocal-tract-length factor, with the
speaker's own per-formant and per-vowel deviations, bandwidths, fixed upper formants (F4-F6), nasal
coupling and a hypopharyngeal anti-resonance. Each utterance draws its own *content* from a hash of
``(seed, speaker, index)``: a random syllable sequence of vowels, glides, nasals, fricatives, stops and
pauses, an intonation contour and a speaking rate; then its own nuisance: background noise at a random
SNR, a random channel EQ and a random loudness over a 20 dB range.

Synthesis is vectorised: the control parameters live on an 8 ms frame grid, the time-varying filters are
applied as per-frame complex frequency responses of the resonators in the short-time Fourier domain, and the
signal is rebuilt by overlap-add. A speaker's files depend only on ``(seed, speaker, index)``, never on the
other speakers generated in the same call or on their order.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from vvframe.core.atomic import atomic_path

__all__ = ["synthesize", "Voice", "make_voice", "synthesize_utterance"]

log = logging.getLogger(__name__)

# A shared vowel and glide inventory: (F1, F2, F3) in Hz for an average adult vocal tract (factor 1.0).
_VOWELS = np.array(
    [
        [270, 2290, 3010],  # i
        [390, 1990, 2550],  # I
        [530, 1840, 2480],  # E
        [660, 1720, 2410],  # ae
        [730, 1090, 2440],  # A
        [570, 840, 2410],  # O
        [440, 1020, 2240],  # U
        [300, 870, 2240],  # u
        [640, 1190, 2390],  # V
        [490, 1350, 1690],  # 3r
        [500, 1500, 2500],  # schwa
        [400, 2100, 2700],  # e
    ],
    dtype=np.float64,
)
_GLIDES = np.array(
    [
        [300, 700, 2200],  # w
        [280, 2200, 3000],  # j
        [360, 1100, 2700],  # l
        [350, 1100, 1600],  # r
    ],
    dtype=np.float64,
)
# Nasal consonants: (F1, F2, F3, nasal anti-resonance) for m, n, ng.
_NASALS = np.array(
    [
        [260, 1100, 2300, 1000],
        [260, 1600, 2600, 1700],
        [260, 2000, 2700, 2900],
    ],
    dtype=np.float64,
)
# Noise sources: (centre Hz, bandwidth Hz, high-pass Hz, flat level, level re vowels, speaker-sibilant?)
_FRICATIVES = {
    "s": (5200.0, 1600.0, 3000.0, 0.05, 0.45, True),
    "sh": (2900.0, 1000.0, 1800.0, 0.10, 0.45, True),
    "f": (4000.0, 6000.0, 900.0, 0.80, 0.13, False),
    "th": (5000.0, 6000.0, 1200.0, 0.80, 0.10, False),
    "x": (1800.0, 900.0, 900.0, 0.20, 0.20, False),
}
_BURSTS = {
    "p": (1200.0, 2000.0, 200.0, 0.50, 0.50, False),
    "t": (4200.0, 2500.0, 2000.0, 0.20, 0.60, False),
    "k": (2200.0, 900.0, 1000.0, 0.20, 0.55, False),
}
_FRIC_KEYS = list(_FRICATIVES) + list(_BURSTS)
_FRIC_TABLE = np.array([_FRICATIVES.get(k, _BURSTS.get(k)) for k in _FRIC_KEYS], dtype=np.float64)
_BASE_BANDWIDTHS = np.array([70.0, 90.0, 130.0, 200.0, 250.0, 300.0])
_HOP_SECONDS = 0.008


def _rng(*key: object) -> np.random.Generator:
    """A generator seeded from a stable hash of ``key`` (never Python's salted ``hash()``)."""
    digest = hashlib.sha256("\x1f".join(map(str, key)).encode("utf-8")).digest()
    return np.random.default_rng(np.random.SeedSequence(int.from_bytes(digest[:16], "little")))


def _log_uniform(rng: np.random.Generator, lo: float, hi: float, size: int | None = None) -> np.ndarray:
    """Log-uniform draws in [lo, hi]."""
    return np.exp(rng.uniform(np.log(lo), np.log(hi), size))


@dataclass(frozen=True, eq=False)
class Voice:
    """One speaker's fixed voice parameters (see the module docstring)."""

    f0: float  # mean F0 in Hz
    f0_range: float  # intonation spread in semitones
    vtl: float  # vocal-tract-length factor; formant frequencies scale by 1/vtl
    formant_dev: np.ndarray  # (3,) speaker factors on F1-F3
    vowel_dev: np.ndarray  # (n_vowels + n_glides, 3) per-vowel idiolect factors
    upper: np.ndarray  # (3,) F4-F6 in Hz
    bandwidths: np.ndarray  # (6,) B1-B6 in Hz
    glottal_ratio: float  # glottal formant / F0 (open quotient: lower ratio = more open, softer voice)
    tilt_hz: float  # corner of the extra first-order spectral tilt of the source
    jitter: float  # period perturbation, fraction of the period
    shimmer: float  # amplitude perturbation, log-std
    breath_db: float  # aspiration noise re voiced level
    nasal_zero: float  # nasal anti-resonance of the speaker's nasal coupling, Hz
    nasality: float  # nasal coupling in vowels, 0..1
    sinus_zero: float  # hypopharyngeal anti-resonance, Hz
    sinus_depth: float  # its depth, 0..1
    sibilant: float  # factor on sibilant noise centres
    rate: float  # speaking-rate factor (>1: faster)


def make_voice(speaker: str, seed: int = 0) -> Voice:
    """The voice of ``speaker`` for ``seed``: a pure function of the two."""
    rng = _rng("voice", seed, speaker)
    vtl = float(rng.uniform(0.85, 1.15))
    scale = 1.0 / vtl
    return Voice(
        f0=float(_log_uniform(rng, 90.0, 250.0)),
        f0_range=float(rng.uniform(1.0, 4.0)),
        vtl=vtl,
        formant_dev=rng.normal(1.0, 0.05, 3),
        vowel_dev=rng.normal(1.0, 0.06, (len(_VOWELS) + len(_GLIDES), 3)),
        upper=np.array([3400.0, 4400.0, 5400.0]) * scale * rng.normal(1.0, 0.04, 3),
        bandwidths=_BASE_BANDWIDTHS * float(_log_uniform(rng, 0.7, 1.6)) * rng.normal(1.0, 0.1, 6).clip(0.7, 1.3),
        glottal_ratio=float(rng.uniform(1.2, 3.0)),
        tilt_hz=float(_log_uniform(rng, 3000.0, 12000.0)),
        jitter=float(rng.uniform(0.003, 0.02)),
        shimmer=float(rng.uniform(0.02, 0.12)),
        breath_db=float(rng.uniform(-32.0, -10.0)),
        nasal_zero=float(rng.uniform(700.0, 1800.0) * scale),
        nasality=float(rng.uniform(0.0, 0.6)),
        sinus_zero=float(rng.uniform(3800.0, 5600.0) * scale),
        sinus_depth=float(rng.uniform(0.5, 1.0)),
        sibilant=float(rng.normal(1.0, 0.08) * scale),
        rate=float(_log_uniform(rng, 0.8, 1.25)),
    )


# ---------------------------------------------------------------------------------------------- content
class _Track:
    """Frame-rate control tracks of one utterance, filled phone by phone."""

    def __init__(self, n_frames: int) -> None:
        self.n = n_frames
        self.pos = 0
        self.formants = np.full((n_frames, 3), np.nan)
        self.voicing = np.zeros(n_frames)
        self.aspiration = np.zeros(n_frames)
        self.frication = np.zeros(n_frames)
        self.fric_kind = np.zeros(n_frames, dtype=np.int64)
        self.nasal = np.zeros(n_frames)
        self.nasal_zero = np.zeros(n_frames)
        self.accent = np.zeros(n_frames)

    def take(self, frames: int) -> slice:
        """The next ``frames`` frames (at least one, clipped at the end)."""
        start = min(self.pos, self.n)
        self.pos = min(self.pos + max(1, int(frames)), self.n)
        return slice(start, self.pos)


def _content(rng: np.random.Generator, voice: Voice, n_frames: int, hop_s: float) -> _Track:
    """A random syllable sequence laid out on the frame grid."""
    tr = _Track(n_frames)
    rate = voice.rate * float(rng.normal(1.0, 0.07))
    scale = 1.0 / voice.vtl
    token = rng.normal(1.0, 0.025, 3)  # this utterance's slight articulation shift

    def frames(lo: float, hi: float) -> int:
        return max(1, int(round(rng.uniform(lo, hi) / rate / hop_s)))

    def vocalic(targets: np.ndarray, idx: int, dur: int, level: float, accent: float = 0.0) -> None:
        sl = tr.take(dur)
        tr.formants[sl] = targets * scale * voice.formant_dev * voice.vowel_dev[idx] * token
        tr.voicing[sl] = level
        tr.accent[sl] = accent
        tr.nasal[sl] = voice.nasality

    def fricative(kind: str, dur: int, voiced: bool) -> None:
        sl = tr.take(dur)
        tr.fric_kind[sl] = _FRIC_KEYS.index(kind)
        tr.frication[sl] = _FRIC_TABLE[_FRIC_KEYS.index(kind), 4] * (0.5 if voiced else 1.0)
        tr.voicing[sl] = 0.3 if voiced else 0.0

    def consonant() -> None:
        kind = rng.choice(["fric", "stop", "nasal", "glide", "h"], p=[0.3, 0.3, 0.17, 0.15, 0.08])
        if kind == "fric":
            fricative(str(rng.choice(list(_FRICATIVES))), frames(0.06, 0.14), bool(rng.random() < 0.35))
        elif kind == "stop":
            voiced = bool(rng.random() < 0.4)
            sl = tr.take(frames(0.035, 0.09))  # closure: silence or a voice bar
            tr.voicing[sl] = 0.08 if voiced else 0.0
            fricative(str(rng.choice(list(_BURSTS))), frames(0.008, 0.02), False)
            if not voiced:  # aspiration before the next vowel
                sl = tr.take(frames(0.02, 0.06))
                tr.aspiration[sl] = 0.25
        elif kind == "nasal":
            j = int(rng.integers(len(_NASALS)))
            sl = tr.take(frames(0.045, 0.1))
            tr.formants[sl] = _NASALS[j, :3] * scale * voice.formant_dev * token
            tr.voicing[sl] = 0.35
            tr.nasal[sl] = 0.95
            tr.nasal_zero[sl] = _NASALS[j, 3] * scale
        elif kind == "glide":
            j = int(rng.integers(len(_GLIDES)))
            vocalic(_GLIDES[j], len(_VOWELS) + j, frames(0.035, 0.08), 0.6)
        else:
            sl = tr.take(frames(0.04, 0.09))
            tr.aspiration[sl] = 0.3

    lead, trail = rng.uniform(0.08, 0.35) / hop_s, rng.uniform(0.08, 0.3) / hop_s
    tr.take(int(min(lead, 0.15 * n_frames)))  # leading silence
    end = max(tr.pos + 1, n_frames - int(min(trail, 0.15 * n_frames)))  # trailing silence stays empty
    while tr.pos < end:
        for _ in range(int(rng.choice([1, 1, 2, 2, 3]))):  # one word
            for _ in range(int(rng.choice([0, 1, 1, 2], p=[0.25, 0.45, 0.2, 0.1]))):
                consonant()
            stressed = bool(rng.random() < 0.4)
            j = int(rng.integers(len(_VOWELS)))
            dur = frames(0.11, 0.22) if stressed else frames(0.06, 0.13)
            vocalic(
                _VOWELS[j],
                j,
                dur,
                float(10 ** (rng.normal(0.0 if stressed else -3.0, 1.5) / 20)),
                float(rng.uniform(0.5, 1.5)) if stressed else 0.0,
            )
            if rng.random() < 0.4:
                consonant()
        if rng.random() < 0.15:
            tr.take(frames(0.1, 0.35))  # a pause between words
    # Trailing silence: anything written past `end` is cut to keep the silence.
    for arr in (tr.voicing, tr.aspiration, tr.frication):
        arr[end:] = 0.0
    return tr


def _smooth(x: np.ndarray, width: int) -> np.ndarray:
    """Smooth along axis 0 with a normalised Hann window of ``width`` frames (edges held)."""
    if width <= 1:
        return x
    w = np.hanning(width + 2)[1:-1]
    w /= w.sum()
    pad = width // 2
    xp = np.pad(x, [(pad, width - 1 - pad)] + [(0, 0)] * (x.ndim - 1), mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(xp, width, axis=0)
    return windows @ w


def _fill(x: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """Fill NaN rows by linear interpolation between neighbouring targets (consonant transitions)."""
    ok = ~np.isnan(x[:, 0])
    if not ok.any():
        return np.broadcast_to(fallback, x.shape).copy()
    idx = np.arange(len(x))
    return np.stack([np.interp(idx, idx[ok], x[ok, k]) for k in range(x.shape[1])], axis=1)


def _f0_contour(rng: np.random.Generator, voice: Voice, tr: _Track, hop_s: float) -> np.ndarray:
    """F0 in Hz on the frame grid: declination, slow wander, pitch accents and a phrase-final movement."""
    n = tr.n
    t = np.arange(n) * hop_s
    st = rng.normal(0.0, 1.0) - rng.uniform(1.0, 4.0) * t / max(t[-1], 1e-9)
    wander = _smooth(rng.normal(size=n + 80), int(0.3 / hop_s))[40 : 40 + n]
    st = st + voice.f0_range * 0.5 * wander / max(float(wander.std()), 1e-9)
    st = st + voice.f0_range * _smooth(tr.accent, int(0.12 / hop_s))
    last = int(np.flatnonzero(tr.voicing > 0)[-1]) if (tr.voicing > 0).any() else n - 1
    fin = np.clip((t - t[last] + 0.3) / 0.3, 0.0, 1.0)
    st = st + fin * (rng.uniform(2.0, 5.0) if rng.random() < 0.2 else -rng.uniform(1.0, 4.0))
    return voice.f0 * 2.0 ** (st / 12.0)


# -------------------------------------------------------------------------------------------- synthesis
def _frames(n: int, n_fft: int, hop: int) -> tuple[int, int]:
    """(number of frames, padded length) of a centred STFT of ``n`` samples."""
    pad = n_fft // 2
    total = n + 2 * pad
    t = max(1, -(-(total - n_fft) // hop) + 1)
    return t, (t - 1) * hop + n_fft


def _stft(x: np.ndarray, n_fft: int, hop: int, win: np.ndarray) -> np.ndarray:
    """Centred STFT, (frames, bins)."""
    t, length = _frames(len(x), n_fft, hop)
    xp = np.zeros(length)
    xp[n_fft // 2 : n_fft // 2 + len(x)] = x
    frames = np.lib.stride_tricks.sliding_window_view(xp, n_fft)[::hop][:t]
    return np.fft.rfft(frames * win, axis=1)


def _istft(spec: np.ndarray, n_fft: int, hop: int, win: np.ndarray, n: int) -> np.ndarray:
    """Weighted overlap-add inverse of ``_stft``, ``n`` samples."""
    frames = np.fft.irfft(spec.astype(np.complex128), n=n_fft, axis=1) * win
    t, k = len(frames), n_fft // hop
    out = np.zeros((t + k - 1, hop))
    norm = np.zeros((t + k - 1, hop))
    parts = frames.reshape(t, k, hop)
    w2 = (win**2).reshape(k, hop)
    for j in range(k):
        out[j : j + t] += parts[:, j]
        norm[j : j + t] += w2[j]
    out, norm = out.ravel(), norm.ravel()
    out = out / np.maximum(norm, 1e-3 * norm.max())
    return out[n_fft // 2 : n_fft // 2 + n]


def _resonators(
    freq: np.ndarray, bw: np.ndarray, z1: np.ndarray, sr: int, zero: bool = False, depth: np.ndarray | float = 1.0
) -> np.ndarray:
    """Complex response of second-order resonators (anti-resonators if ``zero``), unity gain at DC.

    ``freq``/``bw``/``depth``: (frames, k) or broadcastable; ``z1``: e^{-jw} per bin; ``depth`` scales the pole
    (zero) radius, 0 removing the section. Returns (frames, bins), the product over the k sections. Sections at
    or above 0.45*sr, or with NaN frequency, are skipped."""
    freq = np.atleast_2d(freq)
    bw = np.broadcast_to(bw, freq.shape)
    ok = np.isfinite(freq) & (freq > 0) & (freq < 0.45 * sr)
    r = np.where(ok, np.exp(-np.pi * bw / sr) * depth, 0.0)
    c = np.where(ok, 2.0 * r * np.cos(2.0 * np.pi * np.nan_to_num(freq) / sr), 0.0)
    dc = np.prod(1.0 - c + r * r, axis=1, keepdims=True).astype(np.float32)
    z1 = z1.astype(np.complex64)
    z2 = z1 * z1
    poly = np.ones((freq.shape[0], len(z1)), dtype=np.complex64)
    for k in range(freq.shape[1]):
        poly *= 1.0 - c[:, k : k + 1].astype(np.float32) * z1 + (r[:, k : k + 1] ** 2).astype(np.float32) * z2
    return poly / dc if zero else dc / poly


def synthesize_utterance(voice: Voice, rng: np.random.Generator, n: int, sample_rate: int = 16000) -> np.ndarray:
    """``n`` samples of one utterance of ``voice`` (float64, before noise, channel and loudness)."""
    sr = sample_rate
    hop = max(1, int(round(_HOP_SECONDS * sr)))
    n_fft = 4 * hop
    win = np.hanning(n_fft + 1)[:-1]
    n_frames, _ = _frames(n, n_fft, hop)
    hop_s = hop / sr
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sr)
    z1 = np.exp(-2j * np.pi * freqs / sr)

    tr = _content(rng, voice, n_frames, hop_s)
    f0 = _f0_contour(rng, voice, tr, hop_s)
    voicing = _smooth(tr.voicing, 3)
    fallback = _VOWELS[10] / voice.vtl
    formants = np.exp(_smooth(np.log(_fill(tr.formants, fallback)), 7))
    nasal = _smooth(tr.nasal, 3)
    nasal_zero = np.where(tr.nasal_zero > 0, tr.nasal_zero, voice.nasal_zero)

    # Glottal source: a pulse train with jitter and shimmer, one pulse per period of the F0 contour.
    pos = np.arange(n) / hop
    f0_s = np.interp(pos, np.arange(n_frames), f0)
    voicing_s = np.interp(pos, np.arange(n_frames), voicing)
    phase = np.cumsum(f0_s / sr) + rng.uniform()
    k = np.arange(np.ceil(phase[0]), np.floor(phase[-1]) + 1)
    t_k = np.interp(k, phase, np.arange(n, dtype=np.float64))
    period = sr / np.interp(t_k, np.arange(n), f0_s)
    t_k = t_k + rng.normal(0.0, voice.jitter, len(t_k)) * period
    amp = np.interp(t_k, np.arange(n), voicing_s) * np.sqrt(period) * np.exp(rng.normal(0.0, voice.shimmer, len(t_k)))
    keep = (amp > 0) & (t_k >= 0) & (t_k < n - 1)
    t_k, amp = t_k[keep], amp[keep]
    i0 = np.floor(t_k).astype(np.int64)
    frac = t_k - i0
    pulses = (np.bincount(i0, amp * (1 - frac), minlength=n + 1) + np.bincount(i0 + 1, amp * frac, minlength=n + 1))[:n]

    # Per-frame filters: glottal spectrum (two-pole at the glottal formant plus an extra tilt), the
    # vocal-tract cascade, nasal coupling, the hypopharyngeal anti-resonance and lip radiation.
    f32 = freqs.astype(np.float32)
    fg = (f0 * voice.glottal_ratio).astype(np.float32)[:, None]
    glottal = 1.0 / (1.0 + (f32 / fg) ** 2) / np.sqrt(1.0 + (f32 / np.float32(voice.tilt_hz)) ** 2)
    all_f = np.concatenate([formants, np.broadcast_to(voice.upper, (n_frames, 3))], axis=1)
    tract = _resonators(all_f, voice.bandwidths, z1, sr)
    tract *= _resonators(nasal_zero[:, None], 100.0, z1, sr, zero=True, depth=nasal[:, None])
    tract *= _resonators(np.array([[voice.sinus_zero]]), 200.0, z1, sr, zero=True, depth=voice.sinus_depth)
    tract *= (1.0 - 0.95 * z1).astype(np.complex64)  # lip radiation: a first difference
    spec = _stft(pulses, n_fft, hop, win).astype(np.complex64) * glottal * tract

    def power(x: np.ndarray) -> float:
        return float((x.real**2 + x.imag**2).sum(axis=1).mean()) if len(x) else 0.0

    def white(rows: int) -> np.ndarray:
        return (
            rng.standard_normal((rows, len(freqs)), dtype=np.float32)
            + 1j * rng.standard_normal((rows, len(freqs)), dtype=np.float32)
        ).astype(np.complex64)

    voiced_frames = voicing > 0.3
    if not voiced_frames.any():
        voiced_frames[:] = True
    ref = np.sqrt(power(spec[voiced_frames])) + 1e-12

    # Aspiration (breathiness, /h/, stop release) through the vocal tract; levels re the voiced frames.
    asp_amp = 10 ** (voice.breath_db / 20) * voicing + _smooth(tr.aspiration, 3)
    rows = np.flatnonzero(asp_amp > 1e-4)
    asp = white(len(rows)) * tract[rows]
    gain = ref / (np.sqrt(power(asp[voiced_frames[rows]])) + 1e-12)
    spec[rows] += asp * (gain * asp_amp[rows]).astype(np.float32)[:, None]

    # Frication and bursts: shaped noise with the kind's spectral envelope, normalised per frame.
    fric_amp = _smooth(tr.frication, 2)
    rows = np.flatnonzero(fric_amp > 1e-4)
    kind = _FRIC_TABLE[tr.fric_kind[rows]]
    centre = (kind[:, 0] * np.where(kind[:, 5] > 0, voice.sibilant, 1.0 / voice.vtl)).astype(np.float32)
    bw, hp = kind[:, 1:2].astype(np.float32), kind[:, 2:3].astype(np.float32)
    bandpass = 1.0 / np.sqrt(1.0 + ((f32**2 - centre[:, None] ** 2) / (f32 * bw + 1e-3)) ** 2)
    highpass = np.sqrt((f32 / hp) ** 4 / (1.0 + (f32 / hp) ** 4))
    env = (bandpass + kind[:, 3:4].astype(np.float32)) * highpass
    env /= np.sqrt((env**2).mean(axis=1, keepdims=True)) + 1e-12
    fric = white(len(rows)) * env
    gain = ref / (np.sqrt(power(fric)) + 1e-12)
    spec[rows] += fric * (gain * fric_amp[rows]).astype(np.float32)[:, None]

    return _istft(spec, n_fft, hop, win, n)


def _fast_size(n: int) -> int:
    """The smallest 2^a 3^b 5^c >= n."""
    best = 1 << (n - 1).bit_length()
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            p = p35
            while p < n:
                p *= 2
            best = min(best, p)
            p35 *= 3
        p5 *= 5
    return best


def _nuisance(rng: np.random.Generator, speech: np.ndarray, sr: int) -> np.ndarray:
    """Background noise at a random SNR, a random mild channel EQ and a random loudness; peak below 1."""
    n = len(speech)
    m = _fast_size(n)  # FFT length with small factors (pocketfft is slow on primes)
    freqs = np.fft.rfftfreq(m, 1.0 / sr)
    f = np.maximum(freqs, 20.0)
    # Coloured noise (white to brown), slowly modulated, sometimes with mains hum.
    beta = rng.uniform(0.5, 2.0)
    shape = (f / 1000.0) ** (-beta / 2)
    noise = np.fft.irfft((rng.normal(size=len(freqs)) + 1j * rng.normal(size=len(freqs))) * shape, n=m)[:n]
    t = np.arange(n) / sr
    noise *= 1.0 + rng.uniform(0.0, 0.4) * np.sin(2 * np.pi * rng.uniform(0.1, 1.0) * t + rng.uniform(0, 2 * np.pi))
    if rng.random() < 0.15:
        mains = rng.choice([50.0, 60.0])
        hum = sum(np.sin(2 * np.pi * mains * h * t + rng.uniform(0, 2 * np.pi)) / h for h in (1, 2, 3, 5))
        noise = noise / noise.std() + rng.uniform(0.3, 1.0) * hum
    snr = rng.uniform(5.0, 30.0)
    p_speech = float(np.mean(speech**2)) or 1e-6  # (an utterance too short to hold a phone)
    noise *= np.sqrt(p_speech / (float(np.mean(noise**2)) + 1e-20) / 10 ** (snr / 10))
    # Channel: high-pass, sometimes low-pass, overall tilt and two peaking bumps (zero phase).
    octave = np.log2(f / 1000.0)
    gain_db = rng.uniform(-1.0, 1.0) * octave
    for _ in range(2):
        gain_db += np.clip(rng.normal(0.0, 2.5), -5, 5) * np.exp(
            -0.5 * ((octave - rng.uniform(np.log2(0.2), np.log2(6.0))) / rng.uniform(0.3, 1.0)) ** 2
        )
    eq = 10 ** (gain_db / 20)
    hp = _log_uniform(rng, 50.0, 250.0)
    eq *= np.sqrt((freqs / hp) ** 4 / (1.0 + (freqs / hp) ** 4))
    if rng.random() < 0.3:
        lp = rng.uniform(4000.0, 7500.0)
        eq /= np.sqrt(1.0 + (freqs / lp) ** 8)
    y = np.fft.irfft(np.fft.rfft(speech + noise, n=m) * eq, n=m)[:n]
    # Loudness: RMS uniformly in [-40, -20] dBFS, pulled down if the peak would pass 0.95.
    y *= 10 ** (rng.uniform(-40.0, -20.0) / 20) / (np.sqrt(np.mean(y**2)) + 1e-20)
    peak = float(np.abs(y).max())
    if peak > 0.95:
        y *= 0.95 / peak
    return y


def _utterance(
    speaker: str, voice: Voice, seed: int, index: int, seconds: tuple[float, float], sample_rate: int
) -> np.ndarray:
    """Utterance ``index`` of ``speaker`` as 16-bit samples: a pure function of its arguments."""
    rng = _rng("utterance", seed, speaker, index)
    lo, hi = int(np.ceil(seconds[0] * sample_rate)), int(np.floor(seconds[1] * sample_rate))
    n = int(np.clip(round(rng.uniform(*seconds) * sample_rate), lo, max(lo, hi)))
    speech = synthesize_utterance(voice, rng, n, sample_rate)
    y = _nuisance(rng, speech, sample_rate)
    return np.clip(np.round(y * 32767.0), -32767, 32767).astype(np.int16)


def synthesize(
    out: Path,
    speakers: Sequence[str],
    utterances: int,
    seconds: tuple[float, float] = (2.0, 4.0),
    seed: int = 0,
    sample_rate: int = 16000,
    progress: Callable[[int], None] | None = None,
    jobs: int | None = None,
) -> dict[str, list[str]]:
    """Write `utterances` 16-bit mono wav files per speaker under out/<speaker>/<nnnn>.wav; return their paths.

    Returns speaker -> paths relative to ``out``, posix style (e.g. 'id0001/0003.wav'), speakers in the order
    given. ``progress(n)`` is called with the number of files just written. Each file is a pure function of
    ``(seed, speaker, index, seconds, sample_rate)``; durations are drawn uniformly in ``seconds``. ``jobs``
    processes share the speakers (default: the cores this process may use); the files are the same for any.
    """
    out = Path(out)
    speakers = list(speakers)
    if utterances < 0:
        raise ValueError(f"utterances must be >= 0, got {utterances}")
    lo, hi = (float(s) for s in seconds)
    if not 0.0 < lo <= hi:
        raise ValueError(f"seconds must be (min, max) with 0 < min <= max, got {seconds!r}")
    if sample_rate < 8000:
        raise ValueError(f"sample_rate must be >= 8000, got {sample_rate}")
    if len(set(speakers)) != len(speakers):
        raise ValueError("speaker names must be unique")
    for s in speakers:
        if not s or s in (".", "..") or "/" in s or "\\" in s:
            raise ValueError(f"speaker name {s!r} is not a single path component")
    if jobs is None:
        jobs = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    work = [(out, speaker, utterances, (lo, hi), seed, sample_rate) for speaker in speakers]
    if jobs <= 1 or len(speakers) <= 1:
        done = (_speaker_files(*args) for args in work)
        result = {}
        for speaker, paths in zip(speakers, done):
            result[speaker] = paths
            if progress is not None:
                progress(len(paths))
        return result
    from concurrent.futures import ProcessPoolExecutor, as_completed

    with ProcessPoolExecutor(max_workers=min(jobs, len(speakers))) as pool:
        futures = {pool.submit(_speaker_files, *args): args[1] for args in work}
        found = {}
        for future in as_completed(futures):
            found[futures[future]] = future.result()
            if progress is not None:
                progress(len(found[futures[future]]))
    return {speaker: found[speaker] for speaker in speakers}


def _speaker_files(
    out: Path, speaker: str, utterances: int, seconds: tuple[float, float], seed: int, sample_rate: int
) -> list[str]:
    """Write one speaker's files; their paths relative to ``out``."""
    voice = make_voice(speaker, seed)
    log.debug("speaker %s: f0 %.0f Hz, vtl %.2f", speaker, voice.f0, voice.vtl)
    paths = []
    for i in range(utterances):
        rel = f"{speaker}/{i:04d}.wav"
        audio = _utterance(speaker, voice, seed, i, seconds, sample_rate)
        with atomic_path(out / rel) as tmp:
            sf.write(str(tmp), audio, sample_rate, subtype="PCM_16", format="WAV")
        paths.append(rel)
    return paths
