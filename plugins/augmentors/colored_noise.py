"""Generated noise of a colour (white, pink, brown) at a random SNR: noise without a MUSAN download."""

from __future__ import annotations

from typing import Annotated, Literal

import torch

from vvframe import BadValue
from vvframe.core.schema import Range

from .common import Place, Probability, check_batch, check_place, check_prob, check_range, chosen_rows, randint, uniform
from .noise import add_noise

Colour = Literal["white", "pink", "brown"]
EXPONENTS: dict[str, float] = {"white": 0.0, "pink": 1.0, "brown": 2.0}  # power spectral density ~ 1 / f^exponent


def colour(white: torch.Tensor, exponent: torch.Tensor, sample_rate: int, low_hz: float) -> torch.Tensor:
    """``white`` ``(n, T)`` shaped so its power spectral density falls as ``1 / f^exponent`` (one exponent per row),
    flat below ``low_hz`` and with no DC, by scaling its FFT."""
    frames = white.shape[-1]
    freqs = torch.fft.rfftfreq(frames, 1.0 / sample_rate, device=white.device, dtype=torch.float64)
    exponent = exponent.to(white.device, torch.float64).unsqueeze(-1)
    gain = freqs.clamp_min(low_hz).pow(-exponent / 2)  # amplitude: the square root of the power's slope
    gain[..., 0] = 0.0
    spectrum = torch.fft.rfft(white.double(), dim=-1) * gain
    return torch.fft.irfft(spectrum, n=frames, dim=-1).to(white.dtype)


class ColoredNoise:
    """White, pink or brown noise (power ~ 1/f^0, 1/f, 1/f^2) per chosen utterance at an SNR uniform in ``snr_db``.

    ``colors``: those drawn from, uniformly; ``low_hz``: below it the spectrum is flat (and DC is removed), so the
    power of pink and brown noise, and with it the SNR, is not spent on inaudible rumble.
    """

    on = "waveform"
    label_multiplier = 1

    def __init__(
        self,
        sample_rate: int,
        colors: tuple[Colour, ...] = ("white", "pink", "brown"),
        snr_db: Annotated[tuple[float, float], Range(-30, 60)] = (5.0, 20.0),
        low_hz: Annotated[float, Range(gt=0)] = 50.0,
        prob: Probability = 0.5,
        on: Place = "workers",
    ):
        self.sample_rate = int(sample_rate)
        self.colors = tuple(str(c) for c in colors)
        unknown = [c for c in self.colors if c not in EXPONENTS]
        if not self.colors or unknown:
            raise BadValue(f"colored_noise: colors={list(self.colors)}; expected one or more of white, pink, brown")
        self.snr_db = check_range(*snr_db, "colored_noise: snr_db")
        self.low_hz = float(low_hz)
        if not 0 < self.low_hz < self.sample_rate / 2:
            raise BadValue(
                f"colored_noise: low_hz={self.low_hz}; expected a frequency above 0 and below half the sample rate"
            )
        self.prob = check_prob(prob, "colored_noise")
        self.runs_on = check_place(on, "colored_noise")

    def plan(self, x: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """``{"rows": (n,), "exponent": (n,), "white": (n, T) float32, "snr_db": (n,)}``: the chosen utterances,
        each one's colour (as its spectral exponent), white noise from ``generator`` and SNR."""
        check_batch(x, self.on, "colored_noise")
        batch, frames = x.shape
        chosen = chosen_rows(batch, self.prob, generator)
        kinds = randint(0, len(self.colors) - 1, batch, generator)
        snr = uniform(*self.snr_db, batch, generator)
        rows = chosen.nonzero().flatten()
        white = torch.randn(len(rows), frames, generator=generator, device=generator.device).cpu()
        exponents = torch.tensor([EXPONENTS[c] for c in self.colors], dtype=torch.float64)
        return {"rows": rows, "exponent": exponents[kinds[rows]], "white": white, "snr_db": snr[rows]}

    def apply(self, x: torch.Tensor, plan: dict[str, torch.Tensor]) -> torch.Tensor:
        """``x`` with each planned row's coloured noise added at its SNR, on ``x``'s device."""
        rows = plan["rows"].to(x.device)
        if not len(rows):
            return x
        noise = colour(plan["white"].to(x.device), plan["exponent"], self.sample_rate, self.low_hz)
        out = x.clone()
        out[rows] = add_noise(x[rows], noise, plan["snr_db"].to(x.device))
        return out

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Coloured noise added to a random share (``prob``) of the ``(B, T)`` batch."""
        return self.apply(x, self.plan(x, generator))

    def __repr__(self) -> str:
        return (
            f"ColoredNoise(colors={list(self.colors)}, snr_db={list(self.snr_db)}, low_hz={self.low_hz},"
            f" prob={self.prob}, on={self.runs_on!r})"
        )
