"""Voice activity detection (vvframe.data.vad): both detectors on generated speech with silences at known places,
`vvframe data vad` on a small tree, and the `vad` setting of the API and the service."""

from __future__ import annotations

import importlib.util
import io
import sys

import numpy as np
import pytest
import soundfile as sf
import torch
from torch import nn

from vvframe.cli import main as vvframe_main
from vvframe.core.errors import BadValue
from vvframe.data import vad
from vvframe.data.audio import pcm16
from vvframe.tools import synth

SR = 16000
HAS_SILERO = importlib.util.find_spec("silero_vad") is not None
needs_silero = pytest.mark.skipif(not HAS_SILERO, reason="silero-vad is not installed (pip install 'vvframe[vad]')")
DETECTORS = ["energy", pytest.param("silero", marks=needs_silero)]
# where each detector's edges may lie (onset, offset) in seconds: energy frames are 10 ms apart; silero's windows
# are 32 ms long and its network keeps the speech probability up for about 0.1 s after the speech stops
TOLERANCE = {"energy": (0.05, 0.05), "silero": (0.05, 0.15)}


def utterance(seed: int, seconds: float, rms: float = 0.05) -> np.ndarray:
    """A synthetic voice speaking for about ``seconds``, cut to where it is audible (40 dB below its loudest 10 ms
    of the clean signal), at ``rms``: speech that starts and stops at known samples."""
    clean = synth.synthesize_utterance(synth.make_voice(f"v{seed}", 0), np.random.default_rng(seed), int(seconds * SR))
    frames = np.sqrt((clean[: len(clean) // 160 * 160].reshape(-1, 160) ** 2).mean(axis=1))
    on = np.flatnonzero(frames > frames.max() * 10 ** (-40 / 20))
    x = clean[on[0] * 160 : (on[-1] + 1) * 160]
    return x / np.sqrt(np.mean(x**2)) * rms


def layout(*parts: float | np.ndarray, noise_db: float = -40.0, seed: int = 0) -> tuple[np.ndarray, list]:
    """Silences (a number of seconds) and utterances (arrays) end to end, with white noise ``noise_db`` below the
    speech's RMS of 0.05 throughout; returns the samples and the true (start, end) of each utterance."""
    pieces, truth, t = [], [], 0.0
    for part in parts:
        piece = np.zeros(round(part * SR)) if isinstance(part, (int, float)) else part
        if not isinstance(part, (int, float)):
            truth.append((t, t + len(piece) / SR))
        pieces.append(piece)
        t += len(piece) / SR
    wave = np.concatenate(pieces)
    wave = wave + np.random.default_rng(seed).normal(0.0, 0.05 * 10 ** (noise_db / 20), len(wave))
    return wave.astype(np.float32), truth


@pytest.fixture(scope="module")
def two_utterances():
    """0.7 s of silence, 1.6 s of speech, 0.8 s of silence, 1.4 s of speech 6 dB quieter, 0.6 s of silence."""
    return layout(0.7, utterance(1, 1.6), 0.8, utterance(2, 1.4, rms=0.05 / 2), 0.6)


def assert_near(found, truth, tolerance) -> None:
    assert len(found) == len(truth), (found, truth)
    for (start, end), (true_start, true_end) in zip(found, truth):
        assert abs(start - true_start) <= tolerance[0] and abs(end - true_end) <= tolerance[1], (found, truth)


@pytest.mark.parametrize("name", DETECTORS)
def test_the_detectors_find_the_speech_at_any_gain(name, two_utterances):
    wave, truth = two_utterances
    exact = vad.detector(name, pad_seconds=0.0)
    assert_near(exact.segments(wave, SR), truth, TOLERANCE[name])
    assert_near(exact.segments(wave * 0.01, SR), truth, TOLERANCE[name])  # 40 dB quieter: the same speech
    padded = vad.detector(name).segments(wave, SR)  # the default pads 0.05 s on each side
    assert_near(padded, [(s - 0.05, e + 0.05) for s, e in truth], TOLERANCE[name])
    spans = vad.detector(name).spans(torch.from_numpy(wave), SR)
    assert [(s / SR, e / SR) for s, e in spans] == padded


def test_the_energy_thresholds_are_relative(two_utterances):
    wave, _ = two_utterances
    energy = vad.detector("energy")
    assert energy.spans(wave * 0.01, SR) == energy.spans(wave, SR) == energy.spans(wave * 8, SR)
    # at another rate the same times come out, to a frame
    at_8k = energy.segments(torch.from_numpy(wave)[::2].clone(), SR // 2)
    assert np.allclose(at_8k, energy.segments(wave, SR), atol=0.011)


def test_energy_noise_floor_tracks_louder_noise():
    quiet, truth = layout(0.6, utterance(3, 1.5), 0.6, noise_db=-45.0)
    noisy, _ = layout(0.6, utterance(3, 1.5), 0.6, noise_db=-15.0)  # 15 dB SNR
    energy = vad.detector("energy", pad_seconds=0.0)
    assert_near(energy.segments(quiet, SR), truth, (0.05, 0.05))
    assert_near(energy.segments(noisy, SR), truth, (0.1, 0.1))


@pytest.mark.parametrize("name", DETECTORS)
def test_speech_without_silence_is_trimmed_to_itself(name):
    speech = torch.from_numpy(layout(utterance(4, 1.8), noise_db=-40.0)[0])
    detector = vad.detector(name)
    assert detector.trim(speech, SR) is speech
    assert detector.spans(speech, SR) == [(0, len(speech))]


def test_short_gaps_are_bridged_and_short_bursts_dropped():
    word = utterance(5, 0.8)
    wave, truth = layout(0.5, word, 0.2, word, 0.5, word[: int(0.08 * SR)], 0.6)  # gap 0.2 s, then an 80 ms burst
    found = vad.detector("energy", pad_seconds=0.0).segments(wave, SR)
    assert_near(found, [(truth[0][0], truth[1][1])], (0.05, 0.05))
    apart = vad.detector("energy", pad_seconds=0.0, min_silence_seconds=0.1, min_speech_seconds=0.05)
    assert len(apart.segments(wave, SR)) == 3


@pytest.mark.parametrize("name", DETECTORS)
def test_no_speech_is_an_error_naming_the_audio_and_what_was_found(name):
    hiss = np.random.default_rng(0).normal(0.0, 0.001, 2 * SR).astype(np.float32)
    detector = vad.detector(name)
    assert detector.spans(hiss, SR) == []
    with pytest.raises(vad.NoSpeech) as caught:
        detector.trim(hiss, SR, "hiss.wav")
    message = str(caught.value)
    assert message.startswith(f"hiss.wav: no speech found by the {name} detector: 2.00 s, sample peak -")
    assert "dBFS" in message and caught.value.path == "hiss.wav"
    with pytest.raises(vad.NoSpeech, match=r"^zeros: no speech found .*: 1.00 s, every sample zero$"):
        detector.trim(np.zeros(SR, dtype=np.float32), SR, "zeros")


def test_the_energy_error_says_the_contrast_it_saw():
    hiss = np.random.default_rng(0).normal(0.0, 0.001, 2 * SR).astype(np.float32)
    with pytest.raises(vad.NoSpeech, match=r"dB of contrast, where speech needs frames 6.0 dB above the floor"):
        vad.detector("energy").trim(hiss, SR, "hiss.wav")
    with pytest.raises(vad.NoSpeech, match=r"loudest frames are at -1\d\d.\d dBFS, below min_level_db=-80"):
        vad.detector("energy").trim(hiss * 1e-5, SR, "faint.wav")


def test_settings_and_options_are_checked():
    assert [vad.choice(v) for v in (True, False, None, "off", "energy", "silero")] == [
        "energy",
        None,
        None,
        None,
        "energy",
        "silero",
    ]
    with pytest.raises(BadValue, match=r"vad='silro': expected true, false or a detector: energy, silero \(did you"):
        vad.choice("silro")
    with pytest.raises(BadValue) as caught:
        vad.detector("energy", pad=0.1)
    assert str(caught.value) == (
        "the energy detector has no option 'pad'; it takes ratio, margin_db, floor_percentile, peak_percentile,"
        " min_level_db, frame_seconds, hop_seconds, min_speech_seconds, min_silence_seconds, pad_seconds"
    )
    with pytest.raises(BadValue, match=r"the silero detector has no option 'treshold' \(did you mean 'threshold'"):
        vad.detector("silero", treshold=0.4)
    with pytest.raises(BadValue, match=r"ratio=1.5: expected a number in \(0, 1\)"):
        vad.detector("energy", ratio=1.5)


def test_silero_without_its_package_names_the_extra(monkeypatch):
    vad._silero_model.cache_clear()
    monkeypatch.setitem(sys.modules, "silero_vad", None)  # an import of it fails as if it were not installed
    try:
        with pytest.raises(vad.MissingSilero, match=r"needs the silero-vad package \(pip install 'vvframe\[vad\]'\)"):
            vad.detector("silero")
    finally:
        vad._silero_model.cache_clear()


@needs_silero
def test_silero_leaves_torch_threads_as_they_were():
    vad._silero_model.cache_clear()
    threads = torch.get_num_threads()
    vad.detector("silero").spans(np.zeros(SR, dtype=np.float32) + 1e-3, SR)
    assert torch.get_num_threads() == threads


# ---- vvframe data vad ----------------------------------------------------------------------------------------
@pytest.fixture
def tree(tmp_path):
    """SRC with two files of speech (wav and flac, one in a subfolder) and one of hiss only."""
    src = tmp_path / "src"
    (src / "a" / "deep").mkdir(parents=True)
    first, truth_first = layout(0.5, utterance(6, 1.2), 0.7)
    second, truth_second = layout(0.4, utterance(7, 1.0), 0.5, utterance(8, 0.9), 0.6)
    sf.write(src / "a" / "one.wav", pcm16(first), SR, subtype="PCM_16")
    sf.write(src / "a" / "deep" / "two.flac", pcm16(second), 8000 * 2, format="FLAC", subtype="PCM_16")
    hiss = np.random.default_rng(1).normal(0.0, 0.001, SR)
    sf.write(src / "hiss.wav", pcm16(hiss), SR, subtype="PCM_16")
    return src, {"a/one.wav": truth_first, "a/deep/two.flac": truth_second}


def read_segments(path) -> dict[str, list[tuple[float, float]]]:
    found: dict[str, list[tuple[float, float]]] = {}
    for line in path.read_text().splitlines():
        name, start, end = line.split()
        found.setdefault(name, []).append((float(start), float(end)))
    return found


def test_the_vad_command_mirrors_the_tree_and_lists_the_segments(tree, tmp_path, capsys):
    src, truth = tree
    dst, listing = tmp_path / "dst", tmp_path / "segments.txt"
    assert vvframe_main(["data", "vad", str(src), str(dst), "--segments", str(listing)]) == 0
    out, err = capsys.readouterr()
    assert "2 trimmed copies" in out and "1 file without speech" in out
    assert "  no speech: hiss.wav: 1.00 s, sample peak -48.1 dBFS; frame levels from -60.5 dBFS" in err
    segments = read_segments(listing)
    assert list(segments) == ["a/deep/two.flac", "a/one.wav"]
    for name, found in segments.items():
        assert_near(found, [(s - 0.05, e + 0.05) for s, e in truth[name]], (0.05, 0.05))
        copy = sf.info(str(dst / name))
        source = sf.info(str(src / name))
        assert (copy.samplerate, copy.format, copy.subtype, copy.channels) == (
            source.samplerate,
            source.format,
            "PCM_16",
            1,
        )
        kept = sum(round(e * SR) - round(s * SR) for s, e in found)
        assert abs(copy.frames - kept) <= 2 * 8 * len(found)  # the list's times are to the millisecond
    assert not (dst / "hiss.wav").exists()
    # a copy holds exactly its file's speech: the samples of the spans, end to end
    for name in segments:
        original = sf.read(src / name, dtype="int16")[0]
        spans = vad.detector("energy").spans(original / 32768.0, SR)
        copied = sf.read(dst / name, dtype="int16")[0]
        assert np.array_equal(copied, np.concatenate([original[s:e] for s, e in spans]))


def test_the_vad_command_replaces_outputs_only_with_force(tree, tmp_path, capsys):
    src, _ = tree
    dst, listing = tmp_path / "dst", tmp_path / "segments.txt"
    assert vvframe_main(["data", "vad", str(src), "--segments", str(listing)]) == 0
    assert vvframe_main(["data", "vad", str(src), "--segments", str(listing)]) == 2
    assert f"error: {listing} exists; choose another --segments FILE or pass --force to replace it" in (
        capsys.readouterr().err
    )
    assert vvframe_main(["data", "vad", str(src), "--segments", str(listing), "--force"]) == 0
    assert vvframe_main(["data", "vad", str(src), str(dst)]) == 0
    assert vvframe_main(["data", "vad", str(src), str(dst)]) == 2
    assert f"error: {dst / 'a' / 'deep' / 'two.flac'} exists; choose another DST or pass --force" in (
        capsys.readouterr().err
    )
    assert vvframe_main(["data", "vad", str(src), str(dst), "--force"]) == 0


def test_the_vad_command_fails_only_when_no_file_has_speech(tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(2):
        sf.write(src / f"hiss{i}.wav", pcm16(np.random.default_rng(i).normal(0.0, 0.001, SR)), SR)
    sf.write(src / "zeros.wav", np.zeros(SR, dtype=np.int16), SR)
    assert vvframe_main(["data", "vad", str(src), "--segments", str(tmp_path / "s.txt")]) == 2
    err = capsys.readouterr().err
    assert "no speech: zeros.wav: silent: every sample of the part read is zero" in err
    assert (
        f"error: {src}: the energy detector found speech in none of its 3 audio files (3 without speech,"
        " 0 unreadable); nothing written"
    ) in err
    assert not (tmp_path / "s.txt").exists()
    with pytest.raises(SystemExit):
        vvframe_main(["data", "vad", str(src)])  # neither DST nor --segments
    assert "give DST (trimmed copies), --segments FILE, or both" in capsys.readouterr().err


# ---- the API and the service ---------------------------------------------------------------------------------
class BandEnergies(nn.Module):
    """A stand-in network: the mean log energy of 8 frequency bands, so silence changes the embedding."""

    embed_dim = 8

    def forward(self, waves: torch.Tensor) -> torch.Tensor:
        spec = torch.stft(waves, 256, 128, window=torch.hann_window(256), return_complex=True).abs() ** 2
        bands = spec[:, 1:129].reshape(len(waves), 8, 16, -1).mean(dim=2)
        return torch.log(bands + 1e-8).mean(dim=-1)


@pytest.fixture(scope="module")
def speaker_model():
    from vvframe.inference.model import SpeakerModel

    return SpeakerModel(BandEnergies(), {"sample_rate": SR, "embed_dim": 8, "thresholds": {"eer": 0.5}})


def test_the_api_embeds_the_speech_only_when_asked(speaker_model, tmp_path):
    padded, _ = layout(0.8, utterance(9, 1.5), 0.9)
    sf.write(tmp_path / "padded.wav", pcm16(padded), SR)
    plain, _ = layout(utterance(9, 1.5))
    sf.write(tmp_path / "plain.wav", pcm16(plain), SR)
    file = speaker_model.embed(tmp_path / "padded.wav")
    trimmed = speaker_model.embed(tmp_path / "padded.wav", vad=True)
    samples = sf.read(tmp_path / "padded.wav", dtype="float32")[0]
    speech = vad.detector("energy").trim(torch.from_numpy(samples), SR)
    assert torch.allclose(trimmed, speaker_model.embed(speech), atol=1e-6)  # the file's speech, as samples
    assert torch.allclose(speaker_model.embed(samples, vad="energy"), trimmed, atol=1e-6)
    assert float((file - trimmed).norm()) > 0.05  # the silences did count without vad
    # a file without silence: the same embedding either way
    plain_file = tmp_path / "plain.wav"
    assert torch.allclose(speaker_model.embed(plain_file, vad=True), speaker_model.embed(plain_file), atol=1e-6)
    both = speaker_model.embed_many([tmp_path / "padded.wav", samples], vad=True)
    assert torch.allclose(both[0], trimmed, atol=1e-6) and torch.allclose(both[1], trimmed, atol=1e-6)
    result = speaker_model.verify(tmp_path / "padded.wav", samples, vad=True)
    assert result.score == pytest.approx(1.0, abs=1e-5)


def test_the_api_names_a_file_without_speech(speaker_model, tmp_path):
    sf.write(tmp_path / "hiss.wav", pcm16(np.random.default_rng(0).normal(0.0, 0.001, SR)), SR)
    with pytest.raises(vad.NoSpeech, match=r"hiss.wav: no speech found by the energy detector: 1.00 s"):
        speaker_model.verify(tmp_path / "hiss.wav", tmp_path / "hiss.wav", vad=True)
    assert speaker_model.embed(tmp_path / "hiss.wav").shape == (8,)  # without vad it is embedded as it is


def test_the_service_cuts_uploads_to_their_speech(speaker_model):
    from vvframe.inference.serve import RequestError, Service

    def upload(wave: np.ndarray) -> bytes:
        buffer = io.BytesIO()
        sf.write(buffer, pcm16(wave), SR, format="WAV", subtype="PCM_16")
        return buffer.getvalue()

    padded, _ = layout(0.8, utterance(10, 1.2), 0.9)
    service = Service(speaker_model, vad=True)
    assert service.health()["vad"] == "energy" and Service(speaker_model).health()["vad"] is None
    got = service.decode("'a' (x.wav)", upload(padded))
    spans = vad.detector("energy").spans(pcm16(padded) / 32768.0, SR)
    assert len(got) == sum(e - s for s, e in spans) < len(padded)
    with pytest.raises(RequestError) as caught:
        service.decode("'b' (hiss.wav)", upload(np.random.default_rng(0).normal(0.0, 0.001, SR)))
    assert caught.value.status == 400
    assert caught.value.message.startswith("'b' (hiss.wav): no speech found by the energy detector: 1.00 s")


def test_a_model_with_its_own_vad_setting_is_served_with_it(speaker_model):
    from vvframe.inference.model import SpeakerModel
    from vvframe.inference.serve import Service

    own = SpeakerModel(BandEnergies(), {**speaker_model.meta, "vad": "energy"})
    padded = torch.from_numpy(layout(0.8, utterance(11, 1.2), 0.9)[0])
    assert torch.allclose(own.embed(padded), speaker_model.embed(padded, vad=True), atol=1e-6)
    assert torch.allclose(own.embed(padded, vad=False), speaker_model.embed(padded), atol=1e-6)
    service = Service(own)
    assert service.health()["vad"] == "energy" and Service(own, vad=False).health()["vad"] is None
    # Service.embed takes what decode cut already: the model is told not to cut it again
    served = torch.tensor(service.embed(padded)["embedding"])
    assert torch.allclose(served, speaker_model.embed(padded), atol=1e-6)


# ---- embed.vad: the back-end stages' extraction, the card, the commands ----------------------------------------
def test_the_extractor_cuts_each_utterance_to_its_speech(tmp_path):
    from vvframe.data.audio import read
    from vvframe.scoring.embed import Extractor

    padded, _ = layout(0.8, utterance(12, 1.4), 0.9)
    sf.write(tmp_path / "padded.wav", pcm16(padded), SR)
    sf.write(tmp_path / "plain.wav", pcm16(layout(utterance(12, 1.4))[0]), SR)
    paths = ["padded.wav", "plain.wav"]

    def extractor(**options):
        return Extractor(nn.Identity(), BandEnergies(), tmp_path, SR, progress=False, **options)

    as_read, cut = extractor()(paths), extractor(vad=True)(paths)
    assert torch.allclose(cut["plain.wav"], as_read["plain.wav"], atol=1e-6)  # no silence: nothing changes
    speech = vad.detector("energy").trim(read(tmp_path / "padded.wav", SR), SR)
    assert torch.allclose(cut["padded.wav"], extractor().embed_waves([speech])[0], atol=1e-6)
    assert float((cut["padded.wav"] - as_read["padded.wav"]).norm()) > 0.05
    assert torch.allclose(extractor(vad=True).embed_waves([read(tmp_path / "padded.wav", SR)])[0], cut["padded.wav"])
    # crops and max_seconds are taken from the speech
    for options in ({"crops": 3, "crop_seconds": 0.5}, {"max_seconds": 0.6}):
        got = extractor(vad="energy", **options)(["padded.wav"])["padded.wav"]
        assert torch.allclose(got, extractor(**options).embed_waves([speech])[0], atol=1e-6)
    sf.write(tmp_path / "hiss.wav", pcm16(np.random.default_rng(0).normal(0.0, 0.001, SR)), SR)
    with pytest.raises(vad.NoSpeech, match=rf"^{tmp_path / 'hiss.wav'}: no speech found by the energy detector"):
        extractor(vad=True)(["plain.wav", "hiss.wav"])


def test_embed_vad_is_a_setting_the_card_records(tmp_path):
    from vvframe.core.schema import CoercionError, instantiate
    from vvframe.inference import card
    from vvframe.scoring.embed import EmbedSettings

    assert [instantiate(EmbedSettings, {"vad": v}).vad for v in (True, False, "silero")] == [True, False, "silero"]
    assert EmbedSettings().vad is False
    with pytest.raises(CoercionError, match=r"got 'silro'"):
        instantiate(EmbedSettings, {"vad": "silro"})
    card.update(tmp_path, frontend={"name": "fbank"}, model={"name": "tdnn"}, sample_rate=SR)
    assert card.read(tmp_path).vad is False  # a card without the setting: off
    card.update(tmp_path, embed={"crops": 0, "vad": "energy"})
    assert card.read(tmp_path).vad == "energy"
    with pytest.raises(card.CardError, match=r"field 'embed': vad: expected true, false, 'energy' or 'silero'"):
        card.update(tmp_path, embed={"vad": "yes"})


def test_the_commands_take_vad(tmp_path):
    import argparse

    from vvframe.cli import vad_option

    parser = argparse.ArgumentParser()
    vad_option(parser)
    assert [parser.parse_args(a).vad for a in ([], ["--vad"], ["--vad", "silero"], ["--vad", "off"])] == [
        None,
        "energy",
        "silero",
        "off",
    ]
