"""The first-party frontends: shapes, Kaldi equality of fbank, train/eval behaviour, normalisation, batching."""

from __future__ import annotations

import pytest
import torch
import torchaudio
from torchaudio.compliance import kaldi

from vvframe.core import registry

NAMES = ["fbank", "melspec", "mfcc", "raw"]


def build(name: str, sample_rate: int = 16000, **args):
    return registry.build("frontends", {"name": name, **args}, sample_rate=sample_rate)


@pytest.fixture(scope="module")
def waves() -> torch.Tensor:
    """Three utterances of 1 s at 16 kHz in [-1, 1]: tones of different pitch plus noise."""
    gen = torch.Generator().manual_seed(0)
    t = torch.arange(16000) / 16000
    tones = torch.stack([torch.sin(2 * torch.pi * f * t) for f in (220.0, 440.0, 1234.0)])
    return 0.3 * tones + 0.05 * torch.randn(3, 16000, generator=gen)


@pytest.mark.parametrize(
    "name, out_dim, frames", [("fbank", 80, 98), ("melspec", 40, 101), ("mfcc", 30, 101), ("raw", 1, 16000)]
)
def test_shape_and_out_dim(waves, name, out_dim, frames):
    frontend = build(name).eval()
    feats = frontend(waves)
    assert frontend.out_dim == out_dim
    assert feats.shape == (3, out_dim, frames) and feats.dtype == torch.float32
    assert torch.isfinite(feats).all()


@pytest.mark.parametrize(
    "args, kaldi_args",
    [
        ({}, {}),
        (
            {"window": "povey", "n_mels": 40, "f_min": 50.0, "f_max": -400.0, "preemphasis": 0.5},
            {
                "window_type": "povey",
                "num_mel_bins": 40,
                "low_freq": 50.0,
                "high_freq": -400.0,
                "preemphasis_coefficient": 0.5,
            },
        ),
        (
            {"frame_length": 32.0, "frame_shift": 12.5, "f_max": 7000.0},
            {"frame_length": 32.0, "frame_shift": 12.5, "high_freq": 7000.0},
        ),
    ],
)
def test_fbank_equals_kaldi_fbank_on_16_bit_scale(waves, args, kaldi_args):
    """fbank(wave) == kaldi.fbank(wave * 2**15) (dither and mean normalisation off), utterance by utterance."""
    frontend = build("fbank", dither=0.0, mean_norm=False, **args)
    ours = frontend(waves)
    options = {"num_mel_bins": 80, "window_type": "hamming", "dither": 0.0, **kaldi_args}
    for i in range(len(waves)):
        reference = kaldi.fbank(waves[i : i + 1] * 32768, sample_frequency=16000, **options).T
        assert ours[i].shape == reference.shape
        assert torch.allclose(ours[i], reference, atol=1e-4, rtol=0), (ours[i] - reference).abs().max()


def test_fbank_equals_kaldi_fbank_at_8_khz_with_scale_one():
    wave = torch.randn(2, 4000, generator=torch.Generator().manual_seed(1))
    ours = build("fbank", sample_rate=8000, n_mels=23, dither=0.0, mean_norm=False, scale=1.0)(wave)
    for i in range(2):
        reference = kaldi.fbank(wave[i : i + 1], sample_frequency=8000, num_mel_bins=23, window_type="hamming").T
        assert torch.allclose(ours[i], reference, atol=1e-4, rtol=0)


def test_fbank_dithers_only_in_training(waves):
    frontend = build("fbank", mean_norm=False)  # dither 1.0 by default
    frontend.eval()
    assert torch.equal(frontend(waves), frontend(waves))
    assert torch.allclose(frontend(waves), build("fbank", dither=0.0, mean_norm=False)(waves))
    frontend.train()
    torch.manual_seed(0)
    first = frontend(waves)
    assert not torch.equal(first, frontend(waves))
    assert not torch.allclose(first, frontend.eval()(waves), atol=1e-3)


@pytest.mark.parametrize("name", ["fbank", "melspec", "mfcc", "raw"])
def test_mean_norm_gives_zero_mean_over_time(waves, name):
    feats = build(name, mean_norm=True).eval()(waves)
    assert feats.mean(dim=-1).abs().max() < 1e-4
    if name != "raw":  # the default of the others: their features are far from zero mean without it
        assert build(name, mean_norm=False).eval()(waves).mean(dim=-1).abs().max() > 1.0


def test_melspec_is_voxceleb_trainers_front_end(waves):
    """Pre-emphasis by a [-0.97, 1] convolution with reflect padding, MelSpectrogram, log(x + 1e-6), InstanceNorm1d."""
    padded = torch.nn.functional.pad(waves.unsqueeze(1), (1, 0), mode="reflect")
    emphasised = torch.nn.functional.conv1d(padded, torch.tensor([[[-0.97, 1.0]]])).squeeze(1)
    mel = torchaudio.transforms.MelSpectrogram(
        sample_rate=16000, n_fft=512, win_length=400, hop_length=160, window_fn=torch.hamming_window, n_mels=40
    )
    reference = torch.nn.InstanceNorm1d(40)((mel(emphasised) + 1e-6).log())
    assert torch.allclose(build("melspec")(waves), reference, atol=1e-4)


def test_mfcc_is_torchaudio_mfcc_of_log_mels(waves):
    reference = torchaudio.transforms.MFCC(
        16000,
        n_mfcc=20,
        log_mels=True,
        melkwargs={
            "n_fft": 512,
            "win_length": 400,
            "hop_length": 160,
            "f_min": 20.0,
            "n_mels": 40,
            "window_fn": torch.hamming_window,
        },
    )(waves)
    ours = build("mfcc", n_mfcc=20, n_mels=40, preemphasis=0.0, mean_norm=False)(waves)
    assert torch.allclose(ours, reference, atol=1e-4)


@pytest.mark.parametrize("name", NAMES)
def test_a_batch_equals_each_utterance_alone(waves, name):
    frontend = build(name, preemphasis=0.97).eval()
    together = frontend(waves)
    alone = torch.cat([frontend(waves[i : i + 1]) for i in range(len(waves))])
    assert torch.allclose(together, alone, atol=1e-5, rtol=0)


def test_fbank_passes_gradients_to_the_waveform(waves):
    """A waveform that requires grad (adversarial examples) takes an out-of-place path with the same result."""
    frontend = build("fbank", dither=0.0)
    wave = waves.clone().requires_grad_(True)
    feats = frontend(wave)
    assert torch.allclose(feats, frontend(waves), atol=1e-5)
    feats.square().mean().backward()
    assert wave.grad is not None and torch.isfinite(wave.grad).all() and wave.grad.abs().sum() > 0


def test_features_stay_float32_under_autocast(waves):
    frontend = build("fbank", dither=0.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        feats = frontend(waves)
    assert feats.dtype == torch.float32 and torch.allclose(feats, frontend(waves))


def test_recipe_values_are_coerced_by_annotation(waves):
    frontend = registry.build(
        "frontends", {"name": "fbank", "n_mels": "40", "dither": "0", "mean_norm": False}, sample_rate=16000
    )
    assert frontend.out_dim == 40 and frontend.dither == 0.0
    assert frontend(waves).shape == (3, 40, 98)
    mfcc = registry.build("frontends", {"name": "mfcc", "n_mfcc": 20.0, "f_max": "7600"}, sample_rate=16000)
    assert mfcc(waves).shape[1] == 20


@pytest.mark.parametrize("name", NAMES)
def test_bad_input_shape_is_a_clear_error(name):
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        build(name)(torch.zeros(8000))


def test_bad_arguments_are_clear_errors(waves):
    with pytest.raises(ValueError, match="f_max"):
        build("fbank", f_max=9000.0)
    with pytest.raises(ValueError, match="n_mfcc 40 must not exceed n_mels 30"):
        build("mfcc", n_mfcc=40, n_mels=30)
    with pytest.raises(ValueError, match="at least 400 samples"):
        build("fbank")(waves[:, :300])
