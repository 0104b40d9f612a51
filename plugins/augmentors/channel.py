"""A random recording channel without any downloaded data: equaliser, band limits, telephone band, clipping, codec.

Each chosen utterance (``prob``) goes through the stages below in this order, each stage with its own
probability and random settings:

1. ``eq``: ``eq_bands`` peaking filters, centres log-uniform in ``eq_hz``, gains uniform in ``eq_db``, Q uniform in
   ``eq_q`` (the RBJ cookbook's peaking biquad, torchaudio's ``equalizer_biquad``);
2. ``highpass`` / ``lowpass``: a corner log-uniform in ``highpass_hz`` / ``lowpass_hz``, two Butterworth biquads
   in cascade (24 dB per octave, -6 dB at the corner);
3. ``telephone``: down to 8 kHz and back (torchaudio's resampler) and the band 300-3,400 Hz (24 dB per octave on
   either side);
4. ``clip``: clipped at a level uniform in ``clip`` times the utterance's peak;
5. ``codec``: companded and quantised to 8 bits (256 levels), mu-law (mu = 255) or A-law (A = 87.6), as G.711.

The biquads are torchaudio's designs (the RBJ cookbook's, as ``equalizer_biquad``, ``lowpass_biquad`` and
``highpass_biquad`` make them); every linear stage of an utterance (its bands, high-pass and low-pass) is applied at
once by multiplying its FFT by their frequency responses, which equals running the recursive filters from rest (the
FFT is twice the batch's length), is batched over utterances with their own settings, and runs as fast on a GPU as
anywhere (``on: device``), where a sample-by-sample recursion would not.
"""

from __future__ import annotations

import functools
import math
from typing import Annotated, Literal

import torch
from torchaudio.functional import resample

from vvframe import BadValue
from vvframe.core.schema import Range

from .common import (
    Place,
    Probability,
    check_batch,
    check_place,
    check_prob,
    check_range,
    chosen_rows,
    fast_fft_size,
    log_uniform,
    randint,
    rows_of,
    uniform,
)

Codec = Literal["mulaw", "alaw"]
CODECS: tuple[str, ...] = ("mulaw", "alaw")
TELEPHONE_RATE = 8000
TELEPHONE_BAND = (300.0, 3400.0)  # Hz
BUTTERWORTH_Q = 1 / math.sqrt(2)
MU, A = 255.0, 87.6
LEVELS = 256  # 8 bits
Hz = Annotated[tuple[float, float], Range(gt=0)]


# --- biquads, one set of coefficients per row ---------------------------------------------------------------


def peaking(center_hz: torch.Tensor, gain_db: torch.Tensor, q: torch.Tensor, sample_rate: int):
    """``(b, a)``, each ``(n, 3)``: peaking-equaliser biquads (the RBJ cookbook's, as ``equalizer_biquad``)."""
    w0 = 2 * math.pi * center_hz / sample_rate
    amp = 10.0 ** (gain_db / 40.0)
    alpha = torch.sin(w0) / (2 * q)
    cos = torch.cos(w0)
    b = torch.stack([1 + alpha * amp, -2 * cos, 1 - alpha * amp], -1)
    a = torch.stack([1 + alpha / amp, -2 * cos, 1 - alpha / amp], -1)
    return b, a


def lowpass(corner_hz: torch.Tensor, sample_rate: int, q: float = BUTTERWORTH_Q):
    """``(b, a)``, each ``(n, 3)``: second-order low-pass biquads (``lowpass_biquad``'s)."""
    w0 = 2 * math.pi * corner_hz / sample_rate
    alpha, cos = torch.sin(w0) / (2 * q), torch.cos(w0)
    b = torch.stack([(1 - cos) / 2, 1 - cos, (1 - cos) / 2], -1)
    return b, torch.stack([1 + alpha, -2 * cos, 1 - alpha], -1)


def highpass(corner_hz: torch.Tensor, sample_rate: int, q: float = BUTTERWORTH_Q):
    """``(b, a)``, each ``(n, 3)``: second-order high-pass biquads (``highpass_biquad``'s)."""
    w0 = 2 * math.pi * corner_hz / sample_rate
    alpha, cos = torch.sin(w0) / (2 * q), torch.cos(w0)
    b = torch.stack([(1 + cos) / 2, -(1 + cos), (1 + cos) / 2], -1)
    return b, torch.stack([1 + alpha, -2 * cos, 1 - alpha], -1)


@functools.lru_cache(maxsize=8)
def _unit_circle(n_fft: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(cos, sin)`` of ``w`` and ``2 w`` at the ``rfft`` bins of ``n_fft``, each ``(2, n_fft // 2 + 1)`` float32."""
    w = 2 * math.pi * torch.arange(n_fft // 2 + 1, dtype=torch.float64) / n_fft
    both = torch.stack([w, 2 * w])
    return torch.cos(both).float().to(device), torch.sin(both).float().to(device)


def response(b: torch.Tensor, a: torch.Tensor, n_fft: int, device: torch.device) -> torch.Tensor:
    """``(n, n_fft // 2 + 1)`` complex64: the biquads ``(b, a)`` (each ``(n, 3)``) at the ``rfft`` bins of ``n_fft``."""
    cos, sin = _unit_circle(n_fft, torch.device(device))
    b, a = b.to(device, torch.float32), a.to(device, torch.float32)
    numerator = torch.complex(torch.addmm(b[:, :1], b[:, 1:], cos), -(b[:, 1:] @ sin))  # b0 + b1 z^-1 + b2 z^-2
    denominator = torch.complex(torch.addmm(a[:, :1], a[:, 1:], cos), -(a[:, 1:] @ sin))
    return numerator / denominator


def fft_size(frames: int) -> int:
    """An FFT length of at least twice ``frames`` with factors 2, 3 and 5 only: filtering by the response on its
    bins then equals running the recursive filter from rest, to float precision (what wraps around has decayed
    over ``frames`` samples, and every filter here decays within a few thousand)."""
    return fast_fft_size(2 * frames)


def filter_rows(x: torch.Tensor, gains: torch.Tensor, n_fft: int) -> torch.Tensor:
    """``x`` ``(n, T)`` filtered row by row by the responses ``gains`` ``(n, n_fft // 2 + 1)`` (from rest)."""
    spectrum = torch.fft.rfft(x, n=n_fft, dim=-1) * gains.to(
        torch.complex64 if x.dtype != torch.float64 else gains.dtype
    )
    return torch.fft.irfft(spectrum, n=n_fft, dim=-1)[..., : x.shape[-1]].to(x.dtype)


def biquad_rows(x: torch.Tensor, b: torch.Tensor, a: torch.Tensor, sections: int = 1) -> torch.Tensor:
    """``x`` ``(n, T)`` filtered row by row, row ``i`` by the biquad ``(b[i], a[i])`` (``sections`` in cascade)."""
    n_fft = fft_size(x.shape[-1])
    return filter_rows(x, response(b, a, n_fft, x.device) ** sections, n_fft)


# --- codecs -------------------------------------------------------------------------------------------------


def compand(x: torch.Tensor, codec: str) -> torch.Tensor:
    """``x`` (clamped to [-1, 1]) through an 8-bit G.711-style codec: companded, quantised to 256 levels, expanded."""
    x = x.clamp(-1.0, 1.0)
    sign, mag = torch.sign(x), x.abs()
    if codec == "mulaw":
        y = torch.log1p(MU * mag) / math.log1p(MU)
    else:
        big = 1 + math.log(A)
        y = torch.where(mag < 1 / A, A * mag / big, (1 + torch.log((A * mag).clamp_min(1.0))) / big)
    signed = sign * y  # in [-1, 1]
    code = ((signed + 1) * (LEVELS / 2)).floor().clamp(0, LEVELS - 1)
    level = (code + 0.5) / (LEVELS / 2) - 1  # the middle of its step: 256 values, none exactly 0
    sign, y = torch.sign(level), level.abs()
    if codec == "mulaw":
        mag = torch.expm1(y * math.log1p(MU)) / MU
    else:
        big = 1 + math.log(A)
        mag = torch.where(y < 1 / big, y * big / A, torch.exp(y * big - 1) / A)
    return sign * mag


def telephone(x: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """``x`` ``(n, T)`` through a telephone line: down to 8 kHz, the band 300-3,400 Hz, back to ``sample_rate``."""
    frames = x.shape[-1]
    narrow = resample(x, sample_rate, TELEPHONE_RATE) if sample_rate != TELEPHONE_RATE else x
    n = narrow.shape[0]
    low = torch.full((n,), TELEPHONE_BAND[0], dtype=torch.float64)
    high = torch.full((n,), TELEPHONE_BAND[1], dtype=torch.float64)
    narrow = biquad_rows(narrow, *highpass(low, TELEPHONE_RATE), sections=2)
    narrow = biquad_rows(narrow, *lowpass(high, TELEPHONE_RATE), sections=2)
    wide = resample(narrow, TELEPHONE_RATE, sample_rate) if sample_rate != TELEPHONE_RATE else narrow
    if wide.shape[-1] >= frames:
        return wide[..., :frames]
    return torch.nn.functional.pad(wide, (0, frames - wide.shape[-1]))


# --- the augmentor ------------------------------------------------------------------------------------------


class Channel:
    """A random channel per chosen utterance: equaliser, high/low-pass, telephone band, clipping, 8-bit codec."""

    on = "waveform"
    label_multiplier = 1

    def __init__(
        self,
        sample_rate: int,
        prob: Probability = 0.6,
        eq_prob: Probability = 0.5,
        eq_bands: Annotated[tuple[int, int], Range(1, 10)] = (1, 3),
        eq_db: Annotated[tuple[float, float], Range(-30, 30)] = (-10.0, 10.0),
        eq_hz: Hz = (100.0, 6000.0),
        eq_q: Annotated[tuple[float, float], Range(gt=0, le=20)] = (0.5, 2.0),
        highpass_prob: Probability = 0.3,
        highpass_hz: Hz = (60.0, 400.0),
        lowpass_prob: Probability = 0.3,
        lowpass_hz: Hz = (3000.0, 7000.0),
        telephone_prob: Probability = 0.15,
        clip_prob: Probability = 0.1,
        clip: Annotated[tuple[float, float], Range(gt=0, le=1)] = (0.5, 0.9),
        codec_prob: Probability = 0.15,
        codecs: tuple[Codec, ...] = CODECS,
        on: Place = "workers",
    ):
        self.sample_rate = int(sample_rate)
        self.prob = check_prob(prob, "channel")
        self.probs = {
            stage: check_prob(p, f"channel: {stage}_prob")
            for stage, p in (
                ("eq", eq_prob),
                ("highpass", highpass_prob),
                ("lowpass", lowpass_prob),
                ("telephone", telephone_prob),
                ("clip", clip_prob),
                ("codec", codec_prob),
            )
        }
        nyquist = self.sample_rate / 2
        self.eq_bands = tuple(int(k) for k in check_range(*eq_bands, "channel: eq_bands"))
        if self.eq_bands[0] < 1:
            raise BadValue(f"channel: eq_bands={list(self.eq_bands)}; expected at least one band")
        self.eq_db = check_range(*eq_db, "channel: eq_db")
        self.eq_q = check_range(*eq_q, "channel: eq_q")
        if self.eq_q[0] <= 0:
            raise BadValue(f"channel: eq_q={list(self.eq_q)}; expected Q values above 0")
        self.eq_hz = self._band(eq_hz, "eq_hz", nyquist)
        self.highpass_hz = self._band(highpass_hz, "highpass_hz", nyquist)
        self.lowpass_hz = self._band(lowpass_hz, "lowpass_hz", nyquist)
        self.clip = check_range(*clip, "channel: clip (a fraction of the peak)")
        if not 0 < self.clip[0] <= self.clip[1] <= 1:
            raise BadValue(f"channel: clip={list(self.clip)}; expected fractions of the peak in (0, 1]")
        self.codecs = tuple(str(c) for c in codecs)
        unknown = [c for c in self.codecs if c not in CODECS]
        if not self.codecs or unknown:
            raise BadValue(f"channel: codecs={list(self.codecs)}; expected one or more of {', '.join(CODECS)}")
        if self.probs["telephone"] > 0 and self.sample_rate < 2 * TELEPHONE_BAND[1]:
            raise BadValue(
                f"channel: telephone_prob {self.probs['telephone']} at {self.sample_rate} Hz; the telephone band"
                f" reaches {TELEPHONE_BAND[1]:g} Hz: set telephone_prob: 0"
            )
        self.runs_on = check_place(on, "channel")

    @staticmethod
    def _band(value: tuple[float, float], name: str, nyquist: float) -> tuple[float, float]:
        low, high = check_range(*value, f"channel: {name}")
        if not 0 < low <= high < nyquist:
            raise BadValue(
                f"channel: {name}={[low, high]}; expected frequencies above 0 and below {nyquist:g} Hz, half the"
                " sample rate"
            )
        return low, high

    def plan(self, x: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Every random setting of a call, per utterance: whether each stage applies (bool ``(B,)``, false for an
        utterance not chosen), the equaliser's bands ``(B, max bands)``, the corners, clip levels and codecs."""
        check_batch(x, self.on, "channel")
        batch, bands = x.shape[0], self.eq_bands[1]
        chosen = chosen_rows(batch, self.prob, generator)

        def uses(stage: str) -> torch.Tensor:
            return chosen & chosen_rows(batch, self.probs[stage], generator)

        eq = uses("eq")
        count = randint(self.eq_bands[0], self.eq_bands[1], batch, generator)
        plan = {
            "eq": eq,
            "eq_on": (torch.arange(bands) < count.unsqueeze(1)) & eq.unsqueeze(1),
            "eq_hz": log_uniform(*self.eq_hz, batch * bands, generator).view(batch, bands),
            "eq_db": uniform(*self.eq_db, batch * bands, generator).view(batch, bands),
            "eq_q": uniform(*self.eq_q, batch * bands, generator).view(batch, bands),
            "highpass": uses("highpass"),
            "highpass_hz": log_uniform(*self.highpass_hz, batch, generator),
            "lowpass": uses("lowpass"),
            "lowpass_hz": log_uniform(*self.lowpass_hz, batch, generator),
            "telephone": uses("telephone"),
            "clip": uses("clip"),
            "clip_level": uniform(*self.clip, batch, generator),
        }
        codec = uses("codec")
        which = randint(0, len(self.codecs) - 1, batch, generator)
        plan["codec"] = torch.where(codec, which, torch.full_like(which, -1))
        return plan

    def apply(self, x: torch.Tensor, plan: dict[str, torch.Tensor]) -> torch.Tensor:
        """``x`` through each utterance's planned channel, on ``x``'s device."""
        plan = {k: v.to(x.device) for k, v in plan.items()}
        out, rate = x, self.sample_rate

        def change(index: torch.Tensor, fn) -> None:
            nonlocal out
            if len(index):
                if out is x:
                    out = x.clone()
                out[index] = fn(out[index], index)

        linear = plan["eq"] | plan["highpass"] | plan["lowpass"]
        index = rows_of(linear)
        if len(index):  # the bands, high-pass and low-pass of each utterance as one response
            n_fft, place = fft_size(x.shape[-1]), {"device": x.device}
            gains = torch.ones(len(index), n_fft // 2 + 1, dtype=torch.complex64, **place)
            for band in range(plan["eq_on"].shape[1]):
                on = plan["eq_on"][index, band]
                if on.any():
                    i = index[on]
                    design = peaking(plan["eq_hz"][i, band], plan["eq_db"][i, band], plan["eq_q"][i, band], rate)
                    gains[on] *= response(*design, n_fft, x.device)
            for stage, design in (("highpass", highpass), ("lowpass", lowpass)):
                on = plan[stage][index]
                if on.any():
                    gains[on] *= (response(*design(plan[f"{stage}_hz"][index[on]], rate), n_fft, x.device) ** 2).to(
                        gains.dtype
                    )
            change(index, lambda w, i: filter_rows(w, gains, n_fft))
        change(rows_of(plan["telephone"]), lambda w, i: telephone(w, rate))

        def clip(w: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
            level = (plan["clip_level"][i].to(w.dtype) * w.abs().amax(-1)).unsqueeze(-1)
            return torch.minimum(torch.maximum(w, -level), level)

        change(rows_of(plan["clip"]), clip)
        for k, codec in enumerate(self.codecs):
            change(rows_of(plan["codec"] == k), lambda w, i, c=codec: compand(w, c))
        return out

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The ``(B, T)`` batch with a random share (``prob``) of its utterances through a random channel."""
        return self.apply(x, self.plan(x, generator))

    def __repr__(self) -> str:
        stages = ", ".join(f"{k}={v}" for k, v in self.probs.items())
        return f"Channel(prob={self.prob}, {stages}, codecs={list(self.codecs)}, on={self.runs_on!r})"
