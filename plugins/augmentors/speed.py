"""Speed perturbation by resampling (as ``sox speed``): duration scales by 1/factor and pitch shifts with it."""

from __future__ import annotations

import logging
from typing import Annotated

import torch
from torchaudio.functional import resample

from vvframe import BadValue
from vvframe.core.schema import Range

from .common import Place, Probability, check_batch, check_place, check_prob, chosen_rows, randint

log = logging.getLogger(__name__)


def speed_perturb(wave: torch.Tensor, factor: float, sample_rate: int) -> torch.Tensor:
    """``wave`` (``(..., T)``) played ``factor`` times faster: ``round(T / factor)`` samples, pitch scaled too.

    The samples are read as if recorded at ``sample_rate * factor`` and resampled to ``sample_rate``
    (torchaudio's windowed-sinc resampler).
    """
    if factor <= 0:
        raise ValueError(f"speed factor {factor}: expected a positive number")
    frames = wave.shape[-1]
    target = round(frames / factor)
    if factor == 1.0:
        return wave
    orig = round(sample_rate * factor)
    out = resample(wave, orig, int(sample_rate))
    return _fit(out, target)


def _fit(wave: torch.Tensor, frames: int) -> torch.Tensor:
    """The first ``frames`` samples of ``wave``; a shorter one is repeated to fill them."""
    have = wave.shape[-1]
    if have >= frames:
        return wave[..., :frames]
    reps = -(-frames // have)
    return wave.repeat(*([1] * (wave.dim() - 1)), reps)[..., :frames]


class Speed:
    """Speed perturbation per utterance among ``factors``; with ``new_speakers`` each factor makes new speakers.

    Each chosen utterance (``prob``) draws a factor uniformly from ``factors``, 1.0 included: with the defaults
    (``prob=1.0``, factors 0.9, 1.0, 1.1) two thirds of the utterances are perturbed, WeSpeaker's scheme. The
    result is cut (slower) or repeated (faster) back to the batch's length. With ``new_speakers`` the factors
    are reordered so 1.0 comes first, ``label_multiplier = len(factors)`` and a call returns ``(x, k)``: the
    trainer's label is ``label + k * num_speakers`` (``label_map`` gives each factor's label range), so a
    checkpoint's first ``num_speakers`` classes are the speakers as recorded.
    """

    on = "waveform"

    def __init__(
        self,
        sample_rate: int,
        factors: Annotated[tuple[float, ...], Range(gt=0, le=10)] = (0.9, 1.0, 1.1),
        prob: Probability = 1.0,
        new_speakers: bool = False,
        on: Place = "workers",
    ):
        self.sample_rate = int(sample_rate)
        self.prob = check_prob(prob, "speed")
        self.runs_on = check_place(on, "speed")
        factors = tuple(float(f) for f in factors)
        if not factors or any(f <= 0 for f in factors):
            raise BadValue(
                f"speed: factors={list(factors)}; expected one or more positive numbers, e.g. [0.9, 1.0, 1.1]"
            )
        if len(set(factors)) != len(factors):
            raise BadValue(f"speed: factors={list(factors)} repeats a factor; list each once")
        self.new_speakers = bool(new_speakers)
        if self.new_speakers:
            if 1.0 not in factors:
                raise BadValue(
                    f"speed: new_speakers needs factor 1.0 among factors={list(factors)}: it keeps the"
                    " recorded speakers' labels (k = 0)"
                )
            factors = (1.0, *(f for f in factors if f != 1.0))  # 1.0 first: k = 0 is the speaker as recorded
        self.factors = factors
        self.label_multiplier = len(factors) if self.new_speakers else 1

    def label_map(self, num_speakers: int) -> dict[float, tuple[int, int]]:
        """Factor -> the range ``[start, stop)`` of training labels its speakers get (``label + k * num_speakers``)."""
        if not self.new_speakers:
            return {1.0: (0, num_speakers)}
        return {f: (k * num_speakers, (k + 1) * num_speakers) for k, f in enumerate(self.factors)}

    def draw(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        """``(batch,)`` indices into ``factors``; an utterance not chosen (``prob``) gets 1.0's index, or -1."""
        chosen = chosen_rows(batch, self.prob, generator)
        k = randint(0, len(self.factors) - 1, batch, generator)
        keep = self.factors.index(1.0) if 1.0 in self.factors else -1
        return torch.where(chosen, k, torch.full_like(k, keep))

    def plan(self, x: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """``{"k": (B,) long}``: each utterance's index into ``factors`` (1.0's, or -1 without 1.0, if not chosen)."""
        check_batch(x, self.on, "speed")
        return {"k": self.draw(x.shape[0], generator)}

    def apply(self, x: torch.Tensor, plan: dict[str, torch.Tensor]) -> torch.Tensor:
        """``x`` with each utterance resampled by its planned factor and cut or repeated back to ``T`` samples, on
        ``x``'s device."""
        k = plan["k"].to(x.device)
        out = x
        for index, factor in enumerate(self.factors):
            rows = (k == index).nonzero().flatten()
            if factor == 1.0 or not len(rows):
                continue
            if out is x:
                out = x.clone()
            out[rows] = _fit(speed_perturb(x[rows], factor, self.sample_rate), x.shape[1])
        return out

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """The ``(B, T)`` batch with each utterance's speed changed, cut or repeated back to ``T`` samples.

        Returns ``(x, k)`` when ``new_speakers`` (``k``: the ``(B,)`` factor indices, 0 for 1.0), else ``x``.
        """
        plan = self.plan(x, generator)
        out = self.apply(x, plan)
        if self.new_speakers:
            return out, plan["k"].to(device=x.device, dtype=torch.long)
        return out

    def __repr__(self) -> str:
        return (
            f"Speed(factors={list(self.factors)}, prob={self.prob}, new_speakers={self.new_speakers},"
            f" on={self.runs_on!r})"
        )
