"""The Python API (`vvframe.load` -> SpeakerModel) and the `vvframe embed` / `vvframe verify` commands."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio
from conftest import vvframe_cli

import vvframe
from vvframe.core.errors import BadValue, VvframeError
from vvframe.inference.api import ModelError


@pytest.fixture(scope="module")
def model(trained_run):
    return vvframe.load(trained_run["run"], device="cpu")


def decisions(trained_run) -> list[dict]:
    with open(trained_run["run"] / "test" / "decisions.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_verify_reproduces_the_test_stage(model, trained_run):
    tuned = json.loads((trained_run["run"] / "eval" / "thresholds.json").read_text())
    assert model.thresholds["eer"] == pytest.approx(tuned["eer"])
    rows = decisions(trained_run)[:25]
    audio = trained_run["audio"]
    for row in rows:
        v = model.verify(audio / row["enroll"], audio / row["test"], threshold="eer")
        assert v.normalized and v.threshold == "eer"
        assert v.score == pytest.approx(float(row["score"]), abs=1e-4)
        assert int(v.accepted) == int(row["decision"])
    assert model.score(audio / rows[0]["enroll"], audio / rows[0]["test"]) == pytest.approx(
        float(rows[0]["score"]), abs=1e-4
    )
    assert {int(r["decision"]) for r in decisions(trained_run)} == {0, 1}


def test_thresholds_by_name_or_number(model, trained_run):
    audio = trained_run["audio"]
    row = decisions(trained_run)[0]
    low = model.verify(audio / row["enroll"], audio / row["test"], threshold=-1e9)
    assert low.accepted and low.threshold_value == -1e9
    assert not model.verify(audio / row["enroll"], audio / row["test"], threshold="1e9").accepted
    with pytest.raises(BadValue, match=r"'bogus' is not one of eer, far@0.001, mindcf@0.01, mindcf@0.05"):
        model.verify(audio / row["enroll"], audio / row["test"], threshold="bogus")


def test_samples_are_embedded_like_files_at_any_rate_and_channel_count(model, trained_run):
    path = sorted(trained_run["audio"].rglob("*.wav"))[0]
    wave, rate = sf.read(path, dtype="float32")
    from_file = model.embed(path)
    assert from_file.shape == (model.embed_dim,) and float(from_file.norm()) == pytest.approx(1.0, abs=1e-5)
    assert torch.allclose(model.embed(wave), from_file, atol=1e-5)
    assert torch.allclose(model.embed(torch.from_numpy(np.stack([wave, wave]))), from_file, atol=1e-5)  # (C, T)
    assert torch.allclose(model.embed(np.stack([wave, wave], 1)), from_file, atol=1e-5)  # (T, C), soundfile's layout
    pcm = np.round(wave * 32767).astype(np.int16)
    assert float(model.embed(pcm) @ from_file) > 0.999
    at_8k = torchaudio.functional.resample(torch.from_numpy(wave), rate, 8000)
    assert float(model.embed(at_8k, sample_rate=8000) @ from_file) > 0.95  # band-limited, still the same voice
    with pytest.raises(BadValue, match="silent"):
        model.embed(np.zeros(16000, dtype=np.float32))
    with pytest.raises(BadValue, match="expected"):
        model.embed(np.zeros((2, 2, 100), dtype=np.float32))
    with pytest.raises(BadValue, match=r"too short: 800 at 16000 Hz; an utterance needs at least 0.1 s"):
        model.embed(wave[:800])


def test_short_and_broken_files_are_named(model, tmp_path):
    sf.write(tmp_path / "short.wav", np.full(400, 0.1, dtype=np.float32), 16000)
    with pytest.raises(VvframeError, match=r"short.wav.*too short: 0.025 s"):
        model.embed(tmp_path / "short.wav")
    (tmp_path / "broken.wav").write_bytes(b"RIFF....not audio")
    with pytest.raises(VvframeError, match="broken.wav"):
        model.embed_many([tmp_path / "broken.wav"])


def test_embed_many_matches_one_at_a_time(model, trained_run):
    paths = sorted(trained_run["audio"].rglob("*.wav"))[:7]
    batched = model.embed_many(paths + [sf.read(paths[0], dtype="float32")[0]])
    assert batched.shape == (8, model.embed_dim)
    alone = torch.stack([model.embed(p) for p in paths])
    assert torch.allclose(batched[:7], alone, atol=1e-5)
    assert torch.allclose(batched[7], alone[0], atol=1e-5)


def test_embed_many_over_ranks_takes_files_only(model, trained_run):
    from vvframe.training.launch import Dist

    paths = sorted(trained_run["audio"].rglob("*.wav"))[:3]
    # one rank: the plain path, the same embeddings
    assert torch.equal(model.embed_many(paths, dist=Dist()), model.embed_many(paths))
    with pytest.raises(BadValue, match=r"embed_many\(dist=...\) splits files over the ranks: give file paths"):
        model.embed_many([paths[0], sf.read(paths[0], dtype="float32")[0]], dist=Dist(rank=1, world_size=2))


def test_enroll_and_identify(model, trained_run):
    audio = trained_run["audio"]
    speakers = sorted(p.name for p in audio.iterdir() if p.name.startswith("eval"))
    for s in speakers:
        model.enroll(s, sorted((audio / s).glob("*.wav"))[:3])
    found = model.identify(sorted((audio / speakers[0]).glob("*.wav"))[0], threshold=None)
    assert [name for name, _ in found.ranking][0] == speakers[0] == found.speaker
    assert sorted(name for name, _ in found.ranking) == speakers
    assert [s for _, s in found.ranking] == sorted((s for _, s in found.ranking), reverse=True)
    rejected = model.identify(sorted((audio / speakers[0]).glob("*.wav"))[0], threshold=1e9)
    assert rejected.speaker is None and rejected.ranking == found.ranking
    with pytest.raises(BadValue, match="no utterances"):
        model.enroll("nobody", [])


def test_a_run_loads_without_its_data_and_from_anywhere(trained_run, tmp_path, monkeypatch):
    moved = tmp_path / "moved"
    shutil.copytree(trained_run["run"], moved)
    monkeypatch.chdir(tmp_path)  # the recipe's relative data paths (c/audio, c/train.txt, ...) do not exist here
    again = vvframe.load(moved, device="cpu")
    wave = sf.read(sorted(trained_run["audio"].rglob("*.wav"))[0], dtype="float32")[0]
    assert torch.allclose(again.embed(wave), vvframe.load(trained_run["run"], device="cpu").embed(wave), atol=1e-6)
    (tmp_path / "older").mkdir()  # a folder of runs (runs/<recipe name>) means its newest run
    assert vvframe.load(tmp_path, device="cpu").source == str(moved)


def test_bad_runs_and_files_are_clear_errors(trained_run, tmp_path):
    with pytest.raises(ModelError, match="no such run directory or model file"):
        vvframe.load(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="not a vvframe run directory"):
        vvframe.load(tmp_path / "empty")
    bare = tmp_path / "bare"
    shutil.copytree(trained_run["run"], bare, ignore=shutil.ignore_patterns("*.pt"))
    with pytest.raises(ModelError, match=r"no checkpoint in .*bare/checkpoints \(looked for avg.pt, best.pt"):
        vvframe.load(bare)
    corrupt = tmp_path / "corrupt"
    shutil.copytree(trained_run["run"], corrupt)
    for name in ("avg.pt", "best.pt"):
        (corrupt / "checkpoints" / name).unlink(missing_ok=True)
    last = corrupt / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[:200])
    with pytest.raises(VvframeError, match="cannot load checkpoint .*last.pt"):
        vvframe.load(corrupt)


class _Payload:
    """Unpickling this would run a command: weights-only loading must refuse it."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (shutil.copyfile, (__file__, str(self.marker)))


def test_a_checkpoint_is_never_unpickled_with_code(trained_run, tmp_path):
    evil = tmp_path / "evil.pt"
    marker = tmp_path / "executed"
    torch.save({"model": _Payload(marker)}, evil)
    with pytest.raises(VvframeError, match="evil.pt"):
        vvframe.load(trained_run["run"], checkpoint=evil)
    assert not marker.exists()


def test_the_embed_and_verify_commands(model, trained_run, tmp_path):
    run, audio = trained_run["run"], trained_run["audio"]
    paths = sorted(audio.rglob("*.wav"))[:4]
    made = vvframe_cli("embed", str(run), *map(str, paths[:2]), "--out", str(tmp_path / "e.npz"), "--device", "cpu")
    assert made.returncode == 0, made.stderr
    assert "wrote" in made.stdout and f"{model.embed_dim} dimensions" in made.stdout
    (tmp_path / "files.txt").write_text("".join(f"spk {p.relative_to(audio)}\n" for p in paths[2:]))
    listed = vvframe_cli(
        "embed", str(run), "--list", str(tmp_path / "files.txt"), "--root", str(audio), "--out", str(tmp_path / "l.npz")
    )
    assert listed.returncode == 0, listed.stderr
    with np.load(tmp_path / "e.npz") as a, np.load(tmp_path / "l.npz") as b:
        assert list(a["paths"]) == list(map(str, paths[:2]))
        got = np.concatenate([a["embeddings"], b["embeddings"]])
        assert json.loads(str(a["metadata"]))["embed_dim"] == model.embed_dim
    assert np.allclose(got, model.embed_many(paths).numpy(), atol=1e-5)

    row = decisions(trained_run)[0]
    said = vvframe_cli("verify", str(run), str(audio / row["enroll"]), str(audio / row["test"]))
    assert said.returncode == 0, said.stderr
    verdict = "same speaker" if row["decision"] == "1" else "different speakers"
    assert said.stdout.startswith(f"score {float(row['score']):.4f} (normalized), threshold eer = ")
    assert said.stdout.strip().endswith(verdict)

    out = tmp_path / "decisions.csv"
    many = vvframe_cli(
        "verify",
        str(run),
        "--pairs",
        str(trained_run["work"] / "c" / "pairs.txt"),
        "--root",
        str(audio),
        "--out",
        str(out),
    )
    assert many.returncode == 0, many.stderr
    with open(out, newline="") as handle:
        mine = list(csv.DictReader(handle))
    theirs = decisions(trained_run)
    assert [(r["enroll"], r["test"], r["decision"]) for r in mine] == [
        (r["enroll"], r["test"], r["decision"]) for r in theirs
    ]
    assert np.allclose([float(r["score"]) for r in mine], [float(r["score"]) for r in theirs], atol=1e-4)

    wrong = vvframe_cli("verify", str(run), str(paths[0]))
    assert wrong.returncode == 2 and "give two audio files A B, or --pairs FILE" in wrong.stderr
    bogus = vvframe_cli("verify", str(run), str(paths[0]), str(paths[1]), "--threshold", "eerr")
    assert bogus.returncode == 2 and "'eerr' is not one of eer" in bogus.stderr
    missing = vvframe_cli("embed", str(run), str(tmp_path / "gone.wav"), "--out", str(tmp_path / "x.npz"))
    assert missing.returncode == 2 and "gone.wav" in missing.stderr and not (tmp_path / "x.npz").exists()


# ---- the model card: a run directory describes itself ---------------------------------------------------------
THEIR_FRONTEND = {"name": "fbank", "n_mels": 16}
THEIR_MODEL = {"name": "xvector", "embed_dim": 8}


def _third_party_run(folder, **card_fields):
    """A run directory as a third party's training stage might leave it: no recipe.yaml, no vvframe train stage,
    only weights where it likes them and a card.json written by hand. Returns (run, frontend, network)."""
    from vvframe.core import registry

    torch.manual_seed(0)
    front = registry.build("frontends", THEIR_FRONTEND, sample_rate=16000)
    net = registry.build("models", THEIR_MODEL, in_dim=front.out_dim, sample_rate=16000)
    (folder / "weights").mkdir(parents=True)
    torch.save({"model": net.state_dict()}, folder / "weights" / "final.pt")
    card = {"frontend": THEIR_FRONTEND, "model": THEIR_MODEL, "sample_rate": 16000, "weights": "weights/final.pt"}
    (folder / "card.json").write_text(json.dumps({**card, **card_fields}))
    return folder, front.eval(), net.eval()


def test_a_run_written_by_a_third_party_stage_loads_and_embeds(tmp_path):
    run, front, net = _third_party_run(tmp_path / "theirs")
    assert not (run / "recipe.yaml").exists()
    model = vvframe.load(run, device="cpu")
    assert (model.sample_rate, model.embed_dim, model.thresholds, model.normalizer) == (16000, 8, {}, None)
    assert model.meta["crops"] == 0 and model.meta["crop_seconds"] == 3.0 and model.meta["max_seconds"] is None
    wave = torch.from_numpy(np.random.default_rng(1).uniform(-0.3, 0.3, 12000).astype(np.float32))
    with torch.inference_mode():
        want = torch.nn.functional.normalize(net(front(wave[None])), dim=-1)[0]
    assert torch.allclose(model.embed(wave), want, atol=1e-5)
    with pytest.raises(BadValue, match=r"threshold 'eer': .*theirs has no tuned thresholds .*give a number"):
        model.verify(wave, wave)
    assert model.verify(wave, wave, threshold=0.5).accepted


def test_the_embedding_settings_come_from_the_card(tmp_path):
    run, _, _ = _third_party_run(tmp_path / "theirs", embed={"crops": 3, "crop_seconds": 0.5})
    model = vvframe.load(run, device="cpu")
    assert (model.meta["crops"], model.meta["crop_seconds"], model.meta["mean_subtracted"]) == (3, 0.5, False)
    wave = torch.from_numpy(np.random.default_rng(2).uniform(-0.3, 0.3, 16000).astype(np.float32))
    assert model.embed(wave).shape == (8,)


def test_a_bad_card_names_its_file_and_field(tmp_path):
    from vvframe.inference.card import CardError

    run, _, _ = _third_party_run(tmp_path / "a", sample_rate="16k")
    with pytest.raises(CardError, match=rf"{run / 'card.json'}: field 'sample_rate': expected a positive whole"):
        vvframe.load(run, device="cpu")
    run, _, _ = _third_party_run(tmp_path / "b", sample_rte=16000)
    with pytest.raises(CardError, match=r"unknown field 'sample_rte' \(did you mean 'sample_rate'\?\)"):
        vvframe.load(run, device="cpu")
    run, _, _ = _third_party_run(tmp_path / "c", embed={"crop": 2})
    with pytest.raises(CardError, match=r"field 'embed': unknown setting 'crop' \(did you mean 'crops'"):
        vvframe.load(run, device="cpu")
    run, _, _ = _third_party_run(tmp_path / "d", weights="weights/missing.pt")
    with pytest.raises(CardError, match=r"field 'weights' names weights/missing.pt, which does not exist"):
        vvframe.load(run, device="cpu")
    run, _, _ = _third_party_run(tmp_path / "e", version=99, vvframe="9.0")
    with pytest.raises(CardError, match=r"written by a newer vvframe \(9.0, card version 99\)"):
        vvframe.load(run, device="cpu")
    run, _, _ = _third_party_run(tmp_path / "f")
    (run / "card.json").write_text(json.dumps({"frontend": THEIR_FRONTEND, "sample_rate": 16000}))
    with pytest.raises(CardError, match=r"card.json: no 'model' \(the model entry"):
        vvframe.load(run, device="cpu")
    (run / "card.json").write_text("{not json")
    with pytest.raises(CardError, match=r"card.json: not a JSON model card"):
        vvframe.load(run, device="cpu")
    (run / "card.json").unlink()
    with pytest.raises(ModelError, match=r"not a vvframe run directory \(it has no card.json"):
        vvframe.load(run, device="cpu")


def test_a_card_naming_python_objects_needs_trust(tmp_path):
    direct = {**THEIR_MODEL, "name": "vvframe_plugins.models.xvector:XVector"}
    run, _, _ = _third_party_run(tmp_path / "theirs", model=direct)
    with pytest.raises(ModelError, match=r"card.json: names Python objects directly \(model.name = 'vvframe_plugins"):
        vvframe.load(run, device="cpu")
    assert vvframe.load(run, device="cpu", trust_recipe=True).embed_dim == 8


def test_card_update_checks_what_a_stage_writes(tmp_path):
    from vvframe.inference import card

    card.update(tmp_path, frontend=THEIR_FRONTEND, sample_rate=16000)
    card.update(tmp_path, model=THEIR_MODEL, embed={"crops": 0})
    written = json.loads((tmp_path / "card.json").read_text())
    assert written["format"] == "vvframe-card" and written["version"] == 1 and written["vvframe"] == vvframe.__version__
    assert (
        written["frontend"] == THEIR_FRONTEND and written["model"] == THEIR_MODEL and written["embed"] == {"crops": 0}
    )
    with pytest.raises(card.CardError, match=r"card.json: field 'frontend': expected an entry \{name"):
        card.update(tmp_path, frontend="fbank")
    with pytest.raises(card.CardError, match=r"unknown field 'thresholdz'"):
        card.update(tmp_path, thresholdz={})
    with pytest.raises(card.CardError, match=r"field 'thresholds': eer: expected a finite number, got inf"):
        card.update(tmp_path, thresholds={"eer": float("inf")})
    assert json.loads((tmp_path / "card.json").read_text()) == written  # a refused update changes nothing


def test_the_trained_runs_card(trained_run):
    from vvframe.inference import card

    read = card.read(trained_run["run"])
    assert read.frontend["name"] == "fbank" and read.model["name"] == "ecapa_tdnn" and read.sample_rate == 16000
    assert read.normalizer["name"] == "asnorm" and read.tuned_on == "c/trials.txt" and "eer" in read.thresholds
    assert read.cohort == trained_run["run"] / "cohort" / "embeddings.pt" and read.weights is None
    raw = json.loads((trained_run["run"] / "card.json").read_text())
    assert raw["cohort"] == {"embeddings": "cohort/embeddings.pt", "mean": "cohort/mean.pt"}  # relative: a run moves
