"""vvframe's augmentors: noise at the SNR drawn, aligned reverberation, speed with new speakers, SpecAugment,
gain and choice; the same seed gives the same batch, and each survives pickling."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
import soundfile as sf
import torch

from vvframe import BadValue
from vvframe.core import registry
from vvframe_plugins.augmentors.choice import Choice
from vvframe_plugins.augmentors.gain import Gain
from vvframe_plugins.augmentors.noise import Noise, add_noise
from vvframe_plugins.augmentors.reverb import Reverb, reverberate
from vvframe_plugins.augmentors.specaug import SpecAugment
from vvframe_plugins.augmentors.speed import Speed, speed_perturb

SR = 16000
T = 4000


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def snr_db(clean: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    clean, out = clean.double(), out.double()
    return 10 * torch.log10(clean.pow(2).mean(-1) / (out - clean).pow(2).mean(-1))


def write(path, wave, rate: int = SR) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.asarray(wave, dtype="float32"), rate)


@pytest.fixture(scope="module")
def musan(tmp_path_factory):
    """noise/, music/ (white noise; one file shorter than a crop) and speech/ (four tones, one per talker)."""
    root = tmp_path_factory.mktemp("musan")
    rng = np.random.default_rng(1)
    for category in ("noise", "music"):
        for i, frames in enumerate([3 * T, T // 3]):
            write(root / category / "sub" / f"{i}.wav", 0.1 * rng.standard_normal(frames))
    t = np.arange(T) / SR
    for i, freq in enumerate(TONES):
        write(root / "speech" / f"talker{i}.flac", (0.05 + 0.05 * i) * np.sin(2 * np.pi * freq * t))
    return root


TONES = [500, 1000, 1500, 2000]  # Hz; whole periods in T samples, so each shows as one FFT bin


@pytest.fixture(scope="module")
def rirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("rirs")
    rng = np.random.default_rng(2)
    for i in range(3):
        rir = np.zeros(800)
        rir[10 * (i + 1)] = 1.0
        rir[10 * (i + 1) + 1 :] = 0.3 * rng.standard_normal(800 - 10 * (i + 1) - 1)
        write(root / "sim" / f"room{i}" / f"rir{i}.wav", rir)
    return root


def batch(rows: int = 6, frames: int = T, seed: int = 0) -> torch.Tensor:
    return 0.1 * torch.randn(rows, frames, generator=gen(seed))


# --- noise ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("target", [-5.0, 0.0, 7.5, 20.0])
def test_add_noise_gives_the_snr_asked_for(target):
    clean, noise = batch(3, seed=1), 3.0 * batch(3, seed=2)
    measured = snr_db(clean, add_noise(clean, noise, target))
    assert torch.allclose(measured, torch.full_like(measured, target), atol=0.5)
    assert torch.allclose(measured, torch.full_like(measured, target), atol=1e-3)  # in fact exact


def test_noise_batch_snrs_are_the_ones_drawn_and_in_their_category_range(musan):
    aug = Noise(SR, str(musan), categories={"noise": (0, 5), "music": (10, 15), "speech": (20, 25)}, prob=1.0)
    x = batch(24)
    g = gen(3)
    draws = aug.draw(len(x), g)
    out = aug.mix(x, draws, g)
    assert torch.equal(out, aug(x, gen(3)))  # draw + mix is exactly what a call does
    assert sorted(d.row for d in draws) == list(range(24))
    assert {d.category for d in draws} == {"noise", "music", "speech"}
    measured = snr_db(x, out)
    for d in draws:
        low, high = aug.categories[d.category]
        assert low <= d.snr_db <= high
        assert abs(measured[d.row].item() - d.snr_db) < 0.5, d


def test_babble_mixes_several_distinct_talkers(musan):
    aug = Noise(SR, str(musan), categories={"speech": (13, 20)}, babble=(3, 3), prob=1.0)
    x = batch(4)
    g = gen(5)
    draws = aug.draw(len(x), g)
    out = aug.mix(x, draws, g)
    assert all(len(set(d.files)) == 3 for d in draws)
    for d in draws:
        spectrum = torch.fft.rfft((out[d.row] - x[d.row]).double()).abs()
        bins = {round(b * SR / T) for b in spectrum.topk(3).indices.tolist()}
        talkers = {TONES[int(f.rsplit("talker", 1)[1].split(".")[0])] for f in d.files}
        assert bins == talkers
        # each talker at the same level in the babble, whatever its level in its file
        levels = spectrum[[f * T // SR for f in talkers]]
        assert levels.max() / levels.min() < 1.01


def test_noise_prob_zero_leaves_the_batch_and_prob_one_changes_every_row(musan):
    x = batch(8)
    assert torch.equal(Noise(SR, str(musan), prob=0.0)(x, gen()), x)
    out = Noise(SR, str(musan), prob=1.0)(x, gen())
    assert (out != x).any(1).all()
    some = Noise(SR, str(musan), prob=0.5)(batch(64), gen())
    changed = (some != batch(64)).any(1).sum().item()
    assert 16 < changed < 48


def test_noise_errors_name_the_folder(tmp_path, musan):
    (tmp_path / "noise").mkdir()
    with pytest.raises(BadValue, match=rf"{tmp_path}.*none of the categories noise, music, speech"):
        Noise(SR, str(tmp_path))
    with pytest.raises(BadValue, match="is not a folder"):
        Noise(SR, str(tmp_path / "absent"))
    with pytest.raises(BadValue, match="upside down"):
        Noise(SR, str(musan), categories={"noise": (15, 0)})
    with pytest.raises(BadValue, match="prob"):
        Noise(SR, str(musan), prob=1.5)


def test_noise_uses_the_categories_present(tmp_path, musan, caplog):
    write(tmp_path / "noise" / "a.wav", 0.1 * np.random.default_rng(0).standard_normal(T))
    aug = Noise(SR, str(tmp_path), prob=1.0)
    assert list(aug.categories) == ["noise"] and "music/, speech/" in caplog.text
    assert {d.category for d in aug.draw(10, gen())} == {"noise"}


# --- reverb -----------------------------------------------------------------------------------------------


def test_reverberate_normalises_energy_and_aligns_to_the_direct_path():
    x = batch(2)
    delta = torch.zeros(300)
    delta[37] = 0.25
    assert torch.allclose(reverberate(x, delta), x, atol=1e-6)  # a delta anywhere: the input itself
    rir = torch.zeros(50)
    rir[5], rir[6] = 2.0, 1.0  # direct path at 5, one echo a sample later
    expected = (2.0 * x + 1.0 * torch.nn.functional.pad(x, (1, 0))[:, :-1]) / math.sqrt(5.0)
    assert torch.allclose(reverberate(x, rir), expected, atol=1e-5)
    assert torch.allclose(reverberate(x, 10 * rir), expected, atol=1e-5)


def test_reverb_keeps_the_length_and_uses_the_folder(rirs, tmp_path):
    aug = Reverb(SR, str(rirs), prob=1.0)
    assert len(aug.files) == 3
    x = batch(5)
    out = aug(x, gen())
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert (out != x).any(1).all()
    assert torch.equal(Reverb(SR, str(rirs), prob=0.0)(x, gen()), x)
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(BadValue, match=rf"{tmp_path / 'empty'} holds no audio"):
        Reverb(SR, str(tmp_path / "empty"))


# --- speed ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("factor", [0.9, 1.1])
def test_speed_changes_duration_and_pitch_by_its_factor(factor):
    frames = 8001
    tone = torch.sin(2 * math.pi * 1000 * torch.arange(frames) / SR)
    out = speed_perturb(tone, factor, SR)
    assert len(out) == round(frames / factor)
    peak = torch.fft.rfft(out).abs().argmax().item() * SR / len(out)
    assert abs(peak - 1000 * factor) < 5
    assert speed_perturb(batch(3), factor, SR).shape == (3, round(T / factor))


def test_speed_batch_keeps_the_shape():
    x = batch(8)
    out = Speed(SR, prob=1.0)(x, gen())
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert torch.equal(Speed(SR, prob=0.0)(x, gen()), x)


def test_speed_new_speakers_returns_the_factor_index():
    aug = Speed(SR, factors=(0.9, 1.1, 1.0), new_speakers=True)
    assert aug.factors == (1.0, 0.9, 1.1) and aug.label_multiplier == 3
    assert aug.label_map(100) == {1.0: (0, 100), 0.9: (100, 200), 1.1: (200, 300)}
    x = batch(24)
    out, k = aug(x, gen())
    assert k.dtype == torch.long and k.shape == (24,) and set(k.tolist()) == {0, 1, 2}
    for row, index in enumerate(k.tolist()):
        if index == 0:
            assert torch.equal(out[row], x[row])
        else:
            stretched = speed_perturb(x[row], aug.factors[index], SR)
            expected = stretched[:T] if len(stretched) >= T else torch.cat([stretched, stretched])[:T]
            assert torch.allclose(out[row], expected, atol=1e-6)
    out, k = Speed(SR, new_speakers=True, prob=0.0)(x, gen())
    assert not k.any() and torch.equal(out, x)
    with pytest.raises(BadValue, match="needs factor 1.0"):
        Speed(SR, factors=(0.9, 1.1), new_speakers=True)
    assert Speed(SR).label_multiplier == 1 and isinstance(Speed(SR)(x, gen()), torch.Tensor)


# --- specaug, gain ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("axis", ["freq", "time"])
def test_specaug_masks_one_band_within_bounds(axis):
    feats, frames = 40, 50
    x = torch.randn(16, feats, frames) + 3.0
    if axis == "freq":
        aug = SpecAugment(num_time_masks=0, num_freq_masks=1, max_freq=8, prob=1.0)
    else:
        aug = SpecAugment(num_time_masks=1, max_time=10, num_freq_masks=0, prob=1.0)
    out = aug(x, gen())
    assert out.shape == x.shape
    changed = out != x
    widths = []
    for row in range(len(x)):
        # every changed value is the utterance's mean, and the band is whole along the other axis
        assert torch.allclose(out[row][changed[row]], x[row].mean().expand(int(changed[row].sum())))
        band = changed[row].any(1 if axis == "freq" else 0).nonzero().flatten()
        if len(band):
            assert band.max() - band.min() + 1 == len(band)  # contiguous
            assert changed[row].all(1 if axis == "freq" else 0)[band].all()
        widths.append(len(band))
    assert max(widths) <= (8 if axis == "freq" else 10) and max(widths) > 0


def test_specaug_prob_and_device_agnostic_masks():
    x = torch.randn(32, 40, 50)
    assert torch.equal(SpecAugment(prob=0.0)(x, gen()), x)
    changed = (SpecAugment(max_time=20, max_freq=20, prob=0.5)(x, gen()) != x).flatten(1).any(1).sum().item()
    assert 6 < changed < 26
    mask = SpecAugment(prob=1.0).masks(x, gen())
    assert mask.dtype == torch.bool and mask.device == x.device and mask.shape == x.shape


def test_gain_scales_within_its_range():
    x = batch(32)
    aug = Gain(min_db=-6, max_db=3, prob=1.0)
    out = aug(x, gen())
    db = 20 * torch.log10(out.norm(dim=1) / x.norm(dim=1))
    assert db.min() >= -6 - 1e-4 and db.max() <= 3 + 1e-4 and db.std() > 1
    assert torch.allclose(db.double(), aug.gains_db(32, gen()), atol=1e-4)
    with pytest.raises(BadValue, match="upside down"):
        Gain(min_db=3, max_db=-3)


# --- every augmentor --------------------------------------------------------------------------------------


def all_augmentors(musan, rirs) -> dict:
    return {
        "noise": Noise(SR, str(musan), prob=1.0),
        "reverb": Reverb(SR, str(rirs), prob=1.0),
        "speed": Speed(SR, prob=1.0, new_speakers=True),
        "specaug": SpecAugment(prob=1.0),
        "gain": Gain(prob=1.0),
        "choice": Choice(SR, [{"name": "reverb", "root": str(rirs), "prob": 1.0}, {"name": "gain", "prob": 1.0}]),
    }


def _apply(aug, seed: int) -> torch.Tensor:
    x = batch(6, seed=9) if aug.on == "waveform" else torch.randn(6, 40, 50, generator=gen(9))
    out = aug(x, gen(seed))
    return torch.cat([out[0].flatten(), out[1].double()]) if isinstance(out, tuple) else out


def test_same_seed_same_batch_and_other_seeds_differ(musan, rirs):
    for name, aug in all_augmentors(musan, rirs).items():
        first = _apply(aug, 0)
        assert torch.equal(first, _apply(aug, 0)), name
        assert not torch.equal(first, _apply(aug, 1)), name


def test_each_augmentor_pickles_and_works_after(musan, rirs):
    for name, aug in all_augmentors(musan, rirs).items():
        again = pickle.loads(pickle.dumps(aug))
        assert type(again) is type(aug) and again.on == aug.on and again.label_multiplier == aug.label_multiplier
        assert torch.equal(_apply(again, 4), _apply(aug, 4)), name


def test_waveform_augmentors_refuse_a_feature_batch(musan):
    with pytest.raises(ValueError, match=r"\(B, T\) waveform"):
        Gain()(torch.randn(2, 40, 50), gen())
    with pytest.raises(ValueError, match=r"\(B, n_feats, frames\)"):
        SpecAugment()(torch.randn(2, 8000), gen())


# --- choice -----------------------------------------------------------------------------------------------


def test_choice_picks_one_option_per_utterance_by_weight():
    aug = Choice(
        SR,
        [
            {"name": "gain", "min_db": 6, "max_db": 6, "prob": 1.0},
            {"name": "gain", "min_db": -6, "max_db": -6, "prob": 1.0},
        ],
        weights=[3, 1],
    )
    assert aug.on == "waveform" and aug.label_multiplier == 1
    x = batch(400)
    ratio = 20 * torch.log10(aug(x, gen()).norm(dim=1) / x.norm(dim=1))
    louder = torch.isclose(ratio, torch.tensor(6.0), atol=1e-3)
    softer = torch.isclose(ratio, torch.tensor(-6.0), atol=1e-3)
    assert (louder | softer).all()  # exactly one option each, never both, never none
    assert 250 < louder.sum() < 350  # weights 3:1
    half = Choice(SR, [{"name": "gain", "prob": 1.0}], prob=0.5)(x, gen())
    assert 150 < (half != x).any(1).sum() < 250


def test_choice_errors():
    with pytest.raises(BadValue, match="same input"):
        Choice(SR, [{"name": "gain"}, {"name": "specaug"}])
    with pytest.raises(BadValue, match="change speaker labels"):
        Choice(SR, [{"name": "gain"}, {"name": "speed", "new_speakers": True}])
    with pytest.raises(BadValue, match="weights"):
        Choice(SR, [{"name": "gain"}], weights=[1, 2])
    with pytest.raises(ValueError, match="gian"):  # a RecipeError from registry.build, at construction
        Choice(SR, [{"name": "gian"}])


# --- recipes ----------------------------------------------------------------------------------------------


def test_built_from_a_recipe_entry_with_coerced_arguments(musan):
    aug = registry.build(
        "augmentors",
        {"name": "noise", "root": str(musan), "prob": "0.5", "categories": {"noise": ["0", 5]}, "babble": [2, 4]},
        sample_rate=SR,
    )
    assert isinstance(aug, Noise) and aug.prob == 0.5 and aug.sample_rate == SR
    assert aug.categories == {"noise": (0.0, 5.0)} and aug.babble == (2, 4)
    speed = registry.build(
        "augmentors", {"name": "speed", "factors": [1.1, 1, 0.9], "new_speakers": True}, sample_rate=SR
    )
    assert speed.factors == (1.0, 1.1, 0.9)
    spec = registry.build("augmentors", {"name": "specaug", "max_time": "12"}, sample_rate=SR)
    assert spec.max_time == 12 and spec.on == "features"
