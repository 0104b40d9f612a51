"""Augmentors that need no downloaded data: `channel` (equaliser, band limits, telephone, clipping, codec),
`colored_noise` (white, pink, brown at an SNR) and `babble` (other speakers of the batch), each checked by what it
measurably does to the signal."""

from __future__ import annotations

import logging
import math

import pytest
import torch
from torchaudio.functional import equalizer_biquad, highpass_biquad

from vvframe import BadValue
from vvframe.core import registry
from vvframe_plugins.augmentors.babble import Babble
from vvframe_plugins.augmentors.channel import Channel, compand, telephone
from vvframe_plugins.augmentors.colored_noise import ColoredNoise

SR = 16000
NONE = dict(eq_prob=0.0, highpass_prob=0.0, lowpass_prob=0.0, telephone_prob=0.0, clip_prob=0.0, codec_prob=0.0)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def only(stage: str, **settings) -> Channel:
    """A channel that always applies ``stage`` and nothing else."""
    return Channel(SR, prob=1.0, **{**NONE, f"{stage}_prob": 1.0, **settings})


def impulses(rows: int, frames: int = SR) -> torch.Tensor:
    x = torch.zeros(rows, frames)
    x[:, 0] = 0.5
    return x


def response_db(out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The frequency response (dB, one value per Hz at 1 s) of a linear stage, from its impulse response."""
    return 20 * torch.log10(torch.fft.rfft(out.double()).abs() / torch.fft.rfft(x.double()).abs())


def band_db(x: torch.Tensor, out: torch.Tensor, low: float, high: float) -> float:
    """How much the energy of ``out`` in [low, high) Hz differs from that of ``x`` (dB, all rows together)."""
    freqs = torch.fft.rfftfreq(x.shape[-1], 1 / SR)
    band = (freqs >= low) & (freqs < high)
    power = [torch.fft.rfft(w.double()).abs().pow(2)[..., band].sum() for w in (x, out)]
    return float(10 * torch.log10(power[1] / power[0]))


def snr_db(clean: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    clean, out = clean.double(), out.double()
    return 10 * torch.log10(clean.pow(2).mean(-1) / (out - clean).pow(2).mean(-1))


# --- channel ----------------------------------------------------------------------------------------------


def test_equaliser_bands_are_torchaudios_peaking_filters_with_the_gain_drawn():
    aug = only("eq", eq_bands=(1, 1), eq_db=(-12, 12), eq_hz=(200, 4000), eq_q=(0.7, 2))
    x = impulses(6)
    plan = aug.plan(x, gen(1))
    out = aug.apply(x, plan)
    response = response_db(out, x)
    for row in range(6):
        center, gain, q = (float(plan[k][row, 0]) for k in ("eq_hz", "eq_db", "eq_q"))
        assert abs(float(response[row, round(center)]) - gain) < 0.1  # the drawn gain at the drawn centre
        assert abs(float(response[row, 0])) < 1e-3  # and none at DC
        reference = equalizer_biquad(x[row], SR, center, gain, q)
        assert torch.allclose(out[row], reference, atol=1e-5)
    assert plan["eq_db"].min() >= -12 and plan["eq_db"].max() <= 12 and plan["eq_db"].std() > 2


def test_low_and_high_pass_cut_24_db_an_octave_beyond_their_corner_and_keep_the_band():
    x = impulses(8)
    low = only("lowpass", lowpass_hz=(1500, 3900))
    plan = low.plan(x, gen(2))
    response = response_db(low.apply(x, plan), x)
    for row, corner in enumerate(plan["lowpass_hz"].tolist()):
        assert 1500 <= corner <= 3900
        assert response[row, round(2 * corner) :].max() < -24  # outside the pass band: 24 dB down or more
        assert response[row, : round(corner / 2)].min() > -0.6  # inside: within 0.6 dB
        assert abs(float(response[row, round(corner)]) + 6.02) < 0.1  # two Butterworth sections: -6 dB at it
    high = only("highpass", highpass_hz=(100, 400))
    plan = high.plan(x, gen(3))
    response = response_db(high.apply(x, plan), x)
    for row, corner in enumerate(plan["highpass_hz"].tolist()):
        assert response[row, 1 : round(corner / 2)].max() < -24
        assert response[row, round(2 * corner) : 7000].min() > -0.6


def test_filtering_by_the_response_equals_torchaudios_recursive_biquads_from_rest():
    x = 0.1 * torch.randn(2, SR, generator=gen(3))
    aug = only("highpass", highpass_hz=(60, 60))  # the slowest-decaying filter of the defaults
    expected = highpass_biquad(highpass_biquad(x.double(), SR, 60.0), SR, 60.0)
    error = (aug(x, gen()).double() - expected).abs().max()
    assert error < 3e-5  # float32 rounding, 70 dB below the signal (torchaudio's own in float32: about 1e-5)


def test_telephone_band_keeps_300_to_3400_hz_and_removes_the_rest():
    x = 0.1 * torch.randn(4, 2 * SR, generator=gen(4))
    out = only("telephone")(x, gen())
    assert out.shape == x.shape
    assert band_db(x, out, 4200, 8000) < -35  # above the 8 kHz line's Nyquist frequency
    assert band_db(x, out, 0, 150) < -20  # more than an octave below 300 Hz
    assert abs(band_db(x, out, 500, 3000)) < 0.5  # the band itself
    assert telephone(x, 8000).shape == x.shape  # at 8 kHz: the band alone, no resampling


@pytest.mark.parametrize("codec", ["mulaw", "alaw"])
def test_codecs_quantise_to_256_levels_with_the_error_of_8_bit_g711(codec):
    x = (0.1 * torch.randn(3, SR, generator=gen(5))).clamp(-1, 1)
    out = only("codec", codecs=(codec,))(x, gen())
    for row in out:
        assert len(torch.unique(row)) <= 256
    assert torch.equal(out, compand(x, codec))
    assert 33 < snr_db(x, out).min() < 45  # about 38 dB for speech-like levels; a linear 8 bits would give ~23
    assert (compand(torch.tensor([2.0, -3.0]), codec).abs() <= 1).all()  # beyond full scale: clamped first


def test_clipping_cuts_at_the_level_drawn_times_the_peak_and_leaves_the_rest():
    x = 0.1 * torch.randn(6, 8000, generator=gen(6))
    aug = only("clip", clip=(0.5, 0.8))
    plan = aug.plan(x, gen(7))
    out = aug.apply(x, plan)
    level = plan["clip_level"].float() * x.abs().amax(1)
    assert torch.allclose(out.abs().amax(1), level)
    inside = x.abs() <= level.unsqueeze(1)
    assert torch.equal(out[inside], x[inside]) and (~inside).any()
    assert plan["clip_level"].min() >= 0.5 and plan["clip_level"].max() <= 0.8


def test_channel_is_seeded_chooses_by_prob_and_refuses_impossible_corners():
    aug = Channel(SR, prob=1.0, **{k: 0.5 for k in NONE})
    x = 0.1 * torch.randn(16, 8000, generator=gen(8))
    assert torch.equal(aug(x, gen(1)), aug(x, gen(1))) and not torch.equal(aug(x, gen(1)), aug(x, gen(2)))
    assert torch.equal(Channel(SR, prob=0.0)(x, gen()), x)
    half = Channel(SR, prob=0.5, **{**NONE, "codec_prob": 1.0})(x, gen(3))
    assert 2 < (half != x).any(1).sum() < 14
    with pytest.raises(BadValue, match="lowpass_hz.*below 8000 Hz"):
        Channel(SR, lowpass_hz=(3000, 9000))
    with pytest.raises(BadValue, match="telephone"):
        Channel(6000, lowpass_hz=(1000, 2000), eq_hz=(100, 2000))
    built = registry.build("augmentors", {"name": "channel", "codecs": ["alaw"], "eq_db": ["-3", 3]}, sample_rate=SR)
    assert built.codecs == ("alaw",) and built.eq_db == (-3.0, 3.0)


# --- colored noise ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("color", "slope"), [("white", 0.0), ("pink", -1.0), ("brown", -2.0)])
def test_colored_noise_has_its_spectral_slope_and_the_snr_drawn(color, slope):
    aug = ColoredNoise(SR, colors=(color,), snr_db=(0, 20), prob=1.0)
    x = 0.1 * torch.sin(2 * math.pi * 60 * torch.arange(SR) / SR).repeat(16, 1)  # a hum below the fitted range
    plan = aug.plan(x, gen(9))
    out = aug.apply(x, plan)
    measured = snr_db(x, out)
    assert torch.allclose(measured, plan["snr_db"], atol=0.5)  # as `noise`: within 0.5 dB (in fact exact)
    assert plan["snr_db"].min() >= 0 and plan["snr_db"].max() <= 20
    power = torch.fft.rfft((out - x).double()).abs().pow(2)
    power = power / power.sum(1, keepdim=True)  # each row's noise at the same level before averaging
    freqs = torch.fft.rfftfreq(SR, 1 / SR, dtype=torch.float64)
    band = (freqs >= 100) & (freqs <= 6000)
    logf, logp = freqs[band].log10(), power.mean(0)[band].log10()
    fitted = float(((logf - logf.mean()) * (logp - logp.mean())).sum() / (logf - logf.mean()).pow(2).sum())
    assert abs(fitted - slope) < 0.1, fitted


def test_colored_noise_is_seeded_and_draws_its_colours():
    aug = ColoredNoise(SR, prob=1.0)
    x = 0.1 * torch.randn(30, 4000, generator=gen(1))
    assert torch.equal(aug(x, gen(3)), aug(x, gen(3))) and not torch.equal(aug(x, gen(3)), aug(x, gen(4)))
    assert set(aug.plan(x, gen(3))["exponent"].tolist()) == {0.0, 1.0, 2.0}
    assert torch.equal(ColoredNoise(SR, prob=0.0)(x, gen()), x)
    with pytest.raises(BadValue, match="colors"):
        ColoredNoise(SR, colors=("purple",))


# --- babble -----------------------------------------------------------------------------------------------


def tone_batch(speakers: list[int]) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """One utterance per entry, each a tone at its own frequency (a whole number of periods in 1 s, so one FFT
    bin), at its own level; the labels; each row's frequency in Hz."""
    t = torch.arange(SR) / SR
    freqs = [300 + 170 * i for i in range(len(speakers))]
    x = torch.stack([(0.05 + 0.02 * i) * torch.sin(2 * math.pi * f * t) for i, f in enumerate(freqs)])
    return x, torch.tensor(speakers), freqs


def test_babble_mixes_other_speakers_only_each_at_the_same_level_at_the_snr_drawn():
    speakers = [i // 3 for i in range(12)]  # 4 speakers x 3 utterances
    x, labels, freqs = tone_batch(speakers)
    aug = Babble(talkers=(3, 7), snr_db=(5, 15), prob=1.0)
    plan = aug.plan(x, gen(11), labels)
    out = aug.apply(x, plan)
    assert plan["rows"].tolist() == list(range(12))
    counts = []
    for row in range(12):
        spectrum = torch.fft.rfft((out[row] - x[row]).double()).abs()
        present = {f for f in freqs if spectrum[f] > 1e-3 * spectrum.max()}
        own = {freqs[j] for j in range(12) if speakers[j] == speakers[row]}
        assert present and not present & own, row  # never the utterance's own speaker (itself included)
        counts.append(len(present))
        levels = spectrum[sorted(present)]
        assert levels.max() / levels.min() < 1.001  # each talker brought to the same level
    assert min(counts) >= 3 and max(counts) <= 7 and len(set(counts)) > 1
    assert torch.allclose(snr_db(x, out), plan["snr_db"], atol=0.5)
    assert plan["snr_db"].min() >= 5 and plan["snr_db"].max() <= 15


def test_babble_is_seeded_and_takes_what_a_small_batch_has():
    x, labels, freqs = tone_batch([0, 0, 0, 1])  # speaker 0's utterances have one other talker, speaker 1's three
    aug = Babble(talkers=(3, 3), prob=1.0)
    out = aug(x, gen(1), labels=labels)
    assert torch.equal(out, aug(x, gen(1), labels=labels)) and not torch.equal(out, aug(x, gen(2), labels=labels))
    for row, expected in [(0, {freqs[3]}), (3, set(freqs[:3]))]:
        spectrum = torch.fft.rfft((out[row] - x[row]).double()).abs()
        assert {f for f in freqs if spectrum[f] > 1e-3 * spectrum.max()} == expected
    assert torch.equal(Babble(prob=0.0)(x, gen(), labels=labels), x)


def test_babble_in_a_batch_of_one_speaker_leaves_it_alone_and_says_so_at_debug_level(caplog):
    x, _, _ = tone_batch([0, 0, 0, 0])
    with caplog.at_level(logging.DEBUG, logger="vvframe_plugins.augmentors.babble"):
        out = Babble(prob=1.0)(x, gen(), labels=torch.zeros(4, dtype=torch.long))
    assert torch.equal(out, x)
    assert "4 utterances left alone (no other speaker in the batch)" in caplog.text


def test_babble_without_labels_says_it_needs_them():
    x, labels, _ = tone_batch([0, 1])
    with pytest.raises(ValueError, match="needs the batch's speaker labels"):
        Babble()(x, gen())
    with pytest.raises(ValueError, match=r"labels \(3,\) for a batch of 2"):
        Babble()(x, gen(), labels=torch.tensor([0, 1, 2]))
