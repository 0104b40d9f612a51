"""What an augmentor is (kind ``augmentors``), and the helpers vvframe's own augmentors share.

The contract:

- **A component is a callable with an explicit signature**: keyword parameters, annotated, with defaults
  (no ``*args``/``**kwargs``). The signature is the recipe's schema: YAML values are converted by the
  annotations. vvframe passes ``sample_rate: int`` by name when the signature has it.
- **What it returns** is a picklable callable (it is sent to DataLoader worker processes: hold no open
  files, no lambdas), called as ``aug(x, generator) -> Tensor``:

  - attribute ``on: str`` says where it runs: ``"waveform"`` -- ``x`` is a ``(B, T)`` float waveform batch,
    augmented in the loader workers on the CPU; or ``"features"`` -- ``x`` is ``(B, n_feats, frames)``,
    augmented on the device after the frontend (it must work on whatever device ``x`` is on: random numbers
    are drawn on the generator's device and moved to ``x``'s);
  - it returns a tensor of the same shape, dtype and device as ``x``;
  - every random number comes from ``generator`` (a ``torch.Generator``), so the same generator state gives
    the same batch;
  - every augmentor takes ``prob: float``: the probability that each utterance of the batch is augmented,
    drawn independently per utterance;
  - files (noise, impulse responses) are listed once, at construction, and only the crops needed are read
    (``vvframe.data.audio.random_crop`` / ``read`` with ``start``/``frames``), never whole long files;
  - attribute ``label_multiplier: int``: ``1`` for an augmentor that keeps speaker identity (it returns
    ``x`` alone). One that makes new speakers (``speed`` with ``new_speakers: true``) has
    ``label_multiplier > 1`` and returns ``(x, k)``, ``k`` a ``(B,)`` long tensor in
    ``[0, label_multiplier)``; the trainer maps ``label -> label + k * num_speakers``, and ``k = 0`` means
    "the speaker as recorded".
- ``labels`` (optional): an augmentor whose ``__call__`` (and ``plan``) has a parameter named ``labels`` is
  called ``aug(x, generator, labels=labels)``, ``labels`` the ``(B,)`` long tensor of the batch's speakers as
  recorded (``babble`` mixes only other speakers' utterances); one without it is called ``aug(x, generator)``
  as before (:func:`vvframe.data.dataset.call_augmentor`).
- **On the device** (optional, waveform augmentors): attribute ``runs_on: str``, ``"workers"`` (the default
  when absent) or ``"device"``. One that runs on the device has two methods whose composition is its call:
  ``plan(x, generator) -> plan`` draws every random number of the call and reads any files it needs (noise
  crops, impulse responses), in the loader worker, returning CPU tensors (in dicts and lists) that depend on
  ``x``'s shape only; ``apply(x, plan) -> Tensor`` does the arithmetic (FFT convolution, mixing, filtering,
  resampling) on whatever device ``x`` and ``plan`` are on, drawing nothing. ``aug(x, g)`` is
  ``apply(x, plan(x, g))``; a label-changing one puts its ``k`` in ``plan["k"]`` and ``apply`` returns the
  batch alone. vvframe's own waveform augmentors take the recipe argument ``on: workers | device`` and keep
  it as ``runs_on`` (their attribute ``on`` stays the input they take, ``"waveform"``).
- A bad argument (an empty folder, a range upside down) is an error at construction, a ``vvframe.BadValue``
  that names the value and what was expected, never a failure in a worker hours later.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Annotated, Literal

import torch

from vvframe import BadValue
from vvframe.core.schema import Range
from vvframe.data.lists import AUDIO_SUFFIXES

log = logging.getLogger(__name__)

ON = ("waveform", "features")

Probability = Annotated[float, Range(0, 1)]  # every augmentor's prob: `vvframe check` refuses prob: 2
Place = Literal["workers", "device"]  # the recipe's `on`: where a waveform augmentor runs (its runs_on)


def check_prob(prob: float, owner: str) -> float:
    """``prob`` as a float in [0, 1], or a ``BadValue`` naming ``owner``."""
    prob = float(prob)
    if not 0.0 <= prob <= 1.0:
        raise BadValue(f"{owner}: prob={prob} is not a probability; expected a value in [0, 1]")
    return prob


def check_place(on: str, owner: str) -> str:
    """``on`` (the recipe's ``workers`` or ``device``), or a ``BadValue`` naming ``owner``."""
    if on not in ("workers", "device"):
        raise BadValue(f"{owner}: on={on!r}; expected 'workers' (in the loader workers) or 'device'")
    return on


def check_range(low: float, high: float, what: str) -> tuple[float, float]:
    """``(low, high)`` as floats with ``low <= high``, or a ``BadValue`` naming ``what``."""
    low, high = float(low), float(high)
    if low > high:
        raise BadValue(f"{what}: [{low}, {high}] is upside down; expected [low, high] with low <= high")
    return low, high


def audio_files(folder: str | Path, what: str) -> list[str]:
    """Every ``*.wav``/``*.flac`` under ``folder`` (recursively), sorted; a ``BadValue`` if there are none."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise BadValue(f"{what}: {folder} is not a folder; expected a folder of .wav/.flac files")
    files = sorted(str(p) for p in folder.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
    if not files:
        raise BadValue(f"{what}: {folder} holds no audio; expected .wav or .flac files in it or its subfolders")
    log.debug("%s: %d files under %s", what, len(files), folder)
    return files


def chosen_rows(batch: int, prob: float, generator: torch.Generator) -> torch.Tensor:
    """A ``(batch,)`` bool CPU tensor: which utterances to augment, each independently with ``prob``.

    Always draws ``batch`` numbers, so the generator advances the same way whatever ``prob`` is.
    """
    return torch.rand(batch, generator=generator, device=generator.device).cpu() < prob


def uniform(low: float, high: float, size: int, generator: torch.Generator) -> torch.Tensor:
    """``size`` floats uniform in ``[low, high)`` on the CPU (float64, for exact bookkeeping)."""
    draw = torch.rand(size, generator=generator, device=generator.device, dtype=torch.float64).cpu()
    return low + (high - low) * draw


def randint(low: int, high: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """``size`` integers uniform in ``[low, high]`` (both ends included) on the CPU."""
    return torch.randint(low, high + 1, (size,), generator=generator, device=generator.device).cpu()


def log_uniform(low: float, high: float, size: int, generator: torch.Generator) -> torch.Tensor:
    """``size`` floats log-uniform in ``[low, high)`` (``0 < low``) on the CPU (float64): for frequencies."""
    return torch.exp(uniform(math.log(low), math.log(high), size, generator))


def rows_of(mask: torch.Tensor) -> torch.Tensor:
    """The indices where the ``(B,)`` bool ``mask`` is true, a ``(n,)`` long tensor on its device."""
    return mask.nonzero().flatten()


def fast_fft_size(n: int) -> int:
    """The smallest ``m >= n`` whose prime factors are 2, 3 and 5 (FFTs of such sizes are fast)."""
    best = 1 << max(0, (n - 1).bit_length())
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            m = p35 * (1 << max(0, (-(-n // p35) - 1).bit_length()))  # the power of two bringing p35 to >= n
            best = min(best, m)
            p35 *= 3
        p5 *= 5
    return best


def check_batch(x: torch.Tensor, on: str, owner: str) -> None:
    """A ``ValueError`` unless ``x`` is a floating batch of the shape ``on`` implies."""
    want = 3 if on == "features" else 2
    shape = "(B, n_feats, frames) feature" if on == "features" else "(B, T) waveform"
    if not isinstance(x, torch.Tensor) or x.dim() != want or not x.is_floating_point():
        got = f"{tuple(x.shape)} {x.dtype}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{owner} works on a {shape} batch of floats, got {got}")
