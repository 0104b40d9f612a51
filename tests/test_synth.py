"""vvframe.tools.synth: deterministic files, valid audio, and speaker identity that lives in the voice.

The identity check is a tiny real experiment: log-mel features, a small 1-d conv net with mean pooling,
cosine scoring and EER on trials among held-out speakers. Untrained, the net (and trivial cues such as
loudness, duration or the long-term spectrum) must not separate the speakers; trained for a few seconds
on other speakers, it must.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio

from vvframe.tools.synth import make_voice, synthesize

SR = 16000


def eer(scores: np.ndarray, labels: np.ndarray) -> float:
    """Equal error rate from one sort: labels 1 for target trials, higher score = more alike."""
    order = np.argsort(-scores, kind="stable")
    lab = labels[order].astype(np.float64)
    fnr = 1.0 - np.cumsum(lab) / lab.sum()
    fpr = np.cumsum(1.0 - lab) / (1.0 - lab).sum()
    i = int(np.argmin(np.abs(fnr - fpr)))
    return float((fnr[i] + fpr[i]) / 2)


def test_eer_helper():
    assert eer(np.array([0.9, 0.8, 0.2, 0.1]), np.array([1, 1, 0, 0])) == 0.0
    assert eer(np.array([0.9, 0.8, 0.2, 0.1]), np.array([0, 0, 1, 1])) == 1.0
    rng = np.random.default_rng(0)
    assert abs(eer(rng.normal(size=4000), rng.integers(0, 2, 4000)) - 0.5) < 0.05


# ------------------------------------------------------------------------------------- files and determinism
def read_bytes(root: Path, paths: dict[str, list[str]]) -> dict[str, bytes]:
    return {p: (root / p).read_bytes() for ps in paths.values() for p in ps}


def test_deterministic_and_independent_of_other_speakers(tmp_path):
    a = synthesize(tmp_path / "a", ["x1", "x2"], 2, (1.0, 1.5), seed=3)
    b = synthesize(tmp_path / "b", ["x3", "x2", "x1"], 2, (1.0, 1.5), seed=3)  # other speakers, other order
    c = synthesize(tmp_path / "c", ["x1", "x2"], 2, (1.0, 1.5), seed=4)
    assert a == {"x1": ["x1/0000.wav", "x1/0001.wav"], "x2": ["x2/0000.wav", "x2/0001.wav"]}
    assert list(b) == ["x3", "x2", "x1"]
    fa, fb, fc = read_bytes(tmp_path / "a", a), read_bytes(tmp_path / "b", b), read_bytes(tmp_path / "c", c)
    assert all(fa[p] == fb[p] for p in fa)  # bit-identical
    assert all(fa[p] != fc[p] for p in fa)  # another seed, other files
    assert make_voice("x1", 3).f0 == make_voice("x1", 3).f0 != make_voice("x1", 4).f0
    # A second run into the same folder rewrites the same bytes.
    synthesize(tmp_path / "a", ["x1"], 2, (1.0, 1.5), seed=3)
    assert read_bytes(tmp_path / "a", {"x1": a["x1"]}) == {p: fa[p] for p in a["x1"]}


def test_processes_share_the_speakers_and_write_the_same_files(tmp_path):
    speakers = ["x1", "x2", "x3"]
    one = synthesize(tmp_path / "one", speakers, 2, (0.5, 0.8), seed=5, jobs=1)
    two = synthesize(tmp_path / "two", speakers, 2, (0.5, 0.8), seed=5, jobs=2)
    assert one == two and list(two) == speakers
    assert read_bytes(tmp_path / "one", one) == read_bytes(tmp_path / "two", two)


def test_files_are_valid_audio(tmp_path):
    calls: list[int] = []
    out = synthesize(tmp_path, [f"s{i}" for i in range(6)], 3, (1.0, 2.5), seed=0, progress=calls.append)
    assert sum(calls) == 18 and set(calls) == {3}  # one call per speaker, with its file count
    for spk, paths in out.items():
        assert len(paths) == 3
        for rel in paths:
            assert rel.startswith(f"{spk}/") and rel.endswith(".wav")
            info = sf.info(str(tmp_path / rel))
            assert (info.samplerate, info.channels, info.subtype, info.format) == (SR, 1, "PCM_16", "WAV")
            assert 1.0 <= info.frames / SR <= 2.5
            x, _ = sf.read(str(tmp_path / rel))
            assert 0.01 < np.abs(x).max() < 1.0
            assert np.isfinite(x).all()


def test_other_sample_rate_and_bounds(tmp_path):
    out = synthesize(tmp_path, ["a"], 1, (0.5, 0.5), seed=1, sample_rate=8000)
    info = sf.info(str(tmp_path / out["a"][0]))
    assert (info.samplerate, info.frames) == (8000, 4000)
    assert synthesize(tmp_path / "none", ["a"], 0) == {"a": []}


@pytest.mark.parametrize(
    "kwargs",
    [
        {"speakers": ["a", "a"]},
        {"speakers": ["a/b"]},
        {"speakers": [".."]},
        {"speakers": [""]},
        {"utterances": -1},
        {"seconds": (0.0, 1.0)},
        {"seconds": (2.0, 1.0)},
        {"sample_rate": 4000},
    ],
)
def test_bad_arguments(tmp_path, kwargs):
    args = {"speakers": ["a"], "utterances": 1, **kwargs}
    with pytest.raises(ValueError):
        synthesize(tmp_path, **args)


def test_same_speaker_utterances_differ_in_content(tmp_path):
    out = synthesize(tmp_path, ["a"], 3, (2.0, 2.0), seed=5)
    xs = [sf.read(str(tmp_path / p))[0] for p in out["a"]]
    for i in range(3):
        for j in range(i + 1, 3):
            a, b = xs[i] - xs[i].mean(), xs[j] - xs[j].mean()
            n = len(a) + len(b)
            xc = np.fft.irfft(np.fft.rfft(a, n) * np.conj(np.fft.rfft(b, n)), n)
            assert np.abs(xc).max() / (np.linalg.norm(a) * np.linalg.norm(b)) < 0.3


# ------------------------------------------------------------------------------------ identity in the voice
class Net(torch.nn.Module):
    """A small 1-d conv net over log-mel frames, mean pooling, a 64-d embedding."""

    def __init__(self, n_classes: int) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Conv1d(40, 128, 5, padding=2),
            torch.nn.ReLU(),
            torch.nn.BatchNorm1d(128),
            torch.nn.Conv1d(128, 128, 3, dilation=2, padding=2),
            torch.nn.ReLU(),
            torch.nn.BatchNorm1d(128),
            torch.nn.Conv1d(128, 128, 1),
            torch.nn.ReLU(),
            torch.nn.BatchNorm1d(128),
        )
        self.embed = torch.nn.Linear(128, 64)
        self.classify = torch.nn.Linear(64, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(self.body(x).mean(2))


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    """A corpus of 40 training and 24 held-out speakers, with features, waveforms and trial labels."""
    torch.set_num_threads(2)
    root = tmp_path_factory.mktemp("synth")
    train = synthesize(root, [f"tr{i:02d}" for i in range(40)], 6, (2.0, 3.0), seed=123)
    test = synthesize(root, [f"te{i:02d}" for i in range(24)], 5, (2.0, 3.0), seed=123)
    mel = torchaudio.transforms.MelSpectrogram(SR, n_fft=400, hop_length=160, n_mels=40)

    def load(split: dict[str, list[str]]):
        waves, feats, labels = [], [], []
        for k, paths in enumerate(split.values()):
            for p in paths:
                x, _ = sf.read(str(root / p), dtype="float32")
                waves.append(x)
                feats.append(torch.log(mel(torch.from_numpy(x)) + 1e-6))
                labels.append(k)
        return waves, feats, np.array(labels)

    tr_waves, tr_feats, tr_labels = load(train)
    te_waves, te_feats, te_labels = load(test)
    iu = np.triu_indices(len(te_labels), 1)
    trials = (te_labels[:, None] == te_labels[None])[iu].astype(np.int64)
    return {
        "train": (tr_feats, tr_labels),
        "test": (te_waves, te_feats),
        "iu": iu,
        "trials": trials,
        "n_train": len(train),
    }


def pair_eer(experiment, similarity: np.ndarray) -> float:
    return eer(similarity[experiment["iu"]], experiment["trials"])


def cmn(f: torch.Tensor) -> torch.Tensor:
    return f - f.mean(1, keepdim=True)


def embed_eer(experiment, net: Net) -> float:
    net.eval()
    with torch.no_grad():
        e = torch.cat([net(cmn(f)[None]) for f in experiment["test"][1]])
    e = torch.nn.functional.normalize(e, dim=1).numpy()
    return pair_eer(experiment, e @ e.T)


def test_trivial_cues_do_not_separate_speakers(experiment):
    waves, feats = experiment["test"]
    level = np.array([10 * np.log10(np.mean(x.astype(np.float64) ** 2)) for x in waves])
    duration = np.array([len(x) for x in waves], dtype=np.float64)
    power = torch.stack([f.exp().mean(1) for f in feats]).numpy()
    centroid = (power * np.arange(power.shape[1])).sum(1) / power.sum(1)
    ltas = torch.stack([f.mean(1) for f in feats]).numpy()
    ltas -= ltas.mean(0)
    ltas /= np.linalg.norm(ltas, axis=1, keepdims=True)
    eers = {
        "loudness": pair_eer(experiment, -np.abs(level[:, None] - level[None])),
        "duration": pair_eer(experiment, -np.abs(duration[:, None] - duration[None])),
        "centroid": pair_eer(experiment, -np.abs(centroid[:, None] - centroid[None])),
        "ltas": pair_eer(experiment, ltas @ ltas.T),
    }
    print("trivial-cue EERs:", {k: round(v, 3) for k, v in eers.items()})
    assert eers["loudness"] > 0.4 and eers["duration"] > 0.4, eers
    assert eers["centroid"] > 0.3 and eers["ltas"] > 0.3, eers


def test_untrained_net_fails_and_briefly_trained_net_separates_speakers(experiment):
    torch.manual_seed(0)
    net = Net(experiment["n_train"])
    untrained = embed_eer(experiment, net)

    feats, labels = experiment["train"]
    feats = [cmn(f) for f in feats]
    labels = torch.from_numpy(labels)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    gen = torch.Generator().manual_seed(0)
    crop = 150  # 1.5 s
    for _ in range(300):
        net.train()
        idx = torch.randint(len(feats), (32,), generator=gen).tolist()
        starts = [int(torch.randint(feats[i].shape[1] - crop + 1, (1,), generator=gen)) for i in idx]
        x = torch.stack([feats[i][:, s : s + crop] for i, s in zip(idx, starts)])
        loss = torch.nn.functional.cross_entropy(net.classify(net(x)), labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    trained = embed_eer(experiment, net)
    print(f"EER untrained {untrained:.3f}, trained {trained:.3f}")
    assert untrained > 0.3
    assert trained < 0.32 and trained < 0.65 * untrained
