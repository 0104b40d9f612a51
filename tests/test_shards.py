"""Tar shards: written atomically with an index, read back exactly, split across ranks and workers without overlap."""

from __future__ import annotations

import io
import logging
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from vvframe import BadValue
from vvframe.data.lists import ListError, Utterance
from vvframe.data.shards import ShardDataset, key_path, utterance_key, write_shards


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, list[Utterance], dict[str, np.ndarray]]:
    """25 16-bit 16 kHz wavs of 5 speakers, 0.1 to 0.3 s each; paths with dots in folder names."""
    root = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(0)
    utterances, samples = [], {}
    for s in range(5):
        for u in range(5):
            rel = f"spk{s}/vid.{u % 2}/utt{u}.wav"
            data = rng.integers(-30000, 30000, int(rng.integers(1600, 4800))).astype(np.int16)
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            sf.write(root / rel, data, 16000, subtype="PCM_16")
            utterances.append(Utterance(f"spk{s}", rel))
            samples[rel] = data
    return root, utterances, samples


@pytest.fixture(scope="module")
def shards(corpus, tmp_path_factory) -> Path:
    root, utterances, _ = corpus
    out = tmp_path_factory.mktemp("shards")
    write_shards(utterances, root, out, per_shard=4)
    return out


def path_of(key: str) -> str:
    return key_path(key) + ".wav"


def test_writes_shards_index_and_speakers(corpus, tmp_path):
    root, utterances, _ = corpus
    ticks = []
    paths = write_shards(utterances, root, tmp_path, per_shard=4, progress=ticks.append)
    assert [p.name for p in paths] == [f"shard-{i:06d}.tar" for i in range(7)]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([p.name for p in paths] + ["index.txt", "speakers.txt"])
    assert sum(ticks) == 25
    index = [line.split() for line in (tmp_path / "index.txt").read_text().splitlines()]
    assert len(index) == 25 and len({key for _, key, _ in index}) == 25
    assert all("." not in key and "/" not in key for _, key, _ in index)
    assert sorted(path_of(key) for _, key, _ in index) == sorted(u.path for u in utterances)
    assert all(path_of(key).startswith(speaker + "/") for _, key, speaker in index)
    assert (tmp_path / "speakers.txt").read_text().split() == [f"spk{s}" for s in range(5)]
    with tarfile.open(paths[0]) as tar:
        names = tar.getnames()
    assert len(names) == 8 and [n.split(".", 1)[1] for n in names] == ["flac", "spk"] * 4
    assert [n for shard, n, _ in index if shard == "shard-000000.tar"] == [n.split(".")[0] for n in names[::2]]
    # the same list again: byte-identical shards; fewer utterances: the surplus shards of the first run go
    again = tmp_path / "again"
    write_shards(utterances, root, again, per_shard=4)
    assert all((again / p.name).read_bytes() == p.read_bytes() for p in paths)
    write_shards(utterances[:10], root, tmp_path, per_shard=4)
    assert sorted(p.name for p in tmp_path.glob("*.tar")) == [f"shard-{i:06d}.tar" for i in range(3)]


def test_reads_back_every_utterance_exactly(corpus, shards):
    _, _, samples = corpus
    seen = {}
    for item in ShardDataset(shards, 16000, shuffle_buffer=10):
        assert item["key"] not in seen
        assert item["wave"].dtype == torch.float32 and item["wave"].dim() == 1
        seen[item["key"]] = item
    assert sorted(path_of(k) for k in seen) == sorted(samples)
    for key, item in seen.items():
        original = samples[path_of(key)]
        assert np.array_equal((item["wave"].numpy() * 32768).astype(np.int16), original)
        assert item["speaker"] == path_of(key).split("/")[0]


def loader_keys(dataset: ShardDataset, workers: int) -> list[str]:
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=workers)
    return [item["key"] for item in loader]


def test_ranks_and_workers_split_without_overlap(shards):
    per_rank = [loader_keys(ShardDataset(shards, 16000, shuffle_buffer=3, rank=r, world_size=2), 2) for r in range(2)]
    assert all(len(keys) == len(set(keys)) for keys in per_rank)
    assert not set(per_rank[0]) & set(per_rank[1])
    assert len(per_rank[0]) + len(per_rank[1]) == 25


def test_fewer_shards_than_readers_idles_some_with_a_warning(shards, caplog):
    three = sorted(shards.glob("*.tar"))[:3]
    with caplog.at_level(logging.WARNING, logger="vvframe.data.shards"):
        got = [[item["key"] for item in ShardDataset(three, 16000, rank=r, world_size=4)] for r in range(4)]
    assert "3 shards for 4 readers" in caplog.text
    assert sorted(len(keys) for keys in got) == [0, 4, 4, 4]
    assert len({k for keys in got for k in keys}) == 12


def test_crops_have_fixed_length_and_repeat_short_utterances(corpus, shards):
    _, _, samples = corpus
    for item in ShardDataset(shards, 16000, crop_frames=3000):
        assert item["wave"].shape == (3000,)
        original = samples[path_of(item["key"])].astype(np.float32) / 32768
        if len(original) < 3000:
            assert np.array_equal(item["wave"].numpy(), np.tile(original, 2)[:3000])
        else:  # a stretch of the original
            wave = item["wave"].numpy()
            starts = [i for i in range(len(original) - 2999) if original[i] == wave[0]]
            assert any(np.array_equal(original[i : i + 3000], wave) for i in starts)


def test_resamples_to_the_wanted_rate(corpus, shards):
    _, _, samples = corpus
    for item in ShardDataset(shards, 8000, shuffle_buffer=0):
        assert abs(len(item["wave"]) - len(samples[path_of(item["key"])]) / 2) <= 1


def test_epoch_changes_the_order_and_seed_reproduces_it(shards):
    def run(epoch: int, seed: int = 0) -> list[tuple[str, float]]:
        dataset = ShardDataset(shards, 16000, crop_frames=1000, shuffle_buffer=8, seed=seed)
        dataset.set_epoch(epoch)
        return [(item["key"], float(item["wave"].sum())) for item in dataset]

    first = run(0)
    assert run(0) == first  # the same keys in the same order, the same crops
    assert [k for k, _ in run(1)] != [k for k, _ in first]
    assert sorted(run(1)) != sorted(first)  # other crops too
    assert [k for k, _ in run(0, seed=1)] != [k for k, _ in first]
    assert sorted(k for k, _ in run(1)) == sorted(k for k, _ in first)


def test_corrupt_member_is_skipped_with_a_warning(shards, tmp_path, caplog):
    broken = tmp_path / "shard-000000.tar"
    with tarfile.open(shards / "shard-000000.tar") as src, tarfile.open(broken, "w") as dst:
        members = [(m, src.extractfile(m).read()) for m in src.getmembers()]
        victim = members[2][0].name
        for member, data in members:
            if member.name == victim:
                data = np.random.default_rng(1).integers(0, 256, len(data)).astype(np.uint8).tobytes()
            dst.addfile(member, io.BytesIO(data))
    with caplog.at_level(logging.WARNING, logger="vvframe.data.shards"):
        keys = [item["key"] for item in ShardDataset([broken, shards / "shard-000001.tar"], 16000)]
    assert len(keys) == 7 and victim.split(".")[0] not in keys
    assert str(broken) in caplog.text and f"member {victim} is corrupt" in caplog.text
    # a truncated shard: what was read is kept, a warning names the shard, the next shard is read
    truncated = tmp_path / "shard-000002.tar"
    truncated.write_bytes((shards / "shard-000002.tar").read_bytes()[:6000])
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="vvframe.data.shards"):
        keys = [item["key"] for item in ShardDataset([truncated, shards / "shard-000003.tar"], 16000)]
    assert 4 <= len(keys) < 8 and str(truncated) in caplog.text


def test_keys_are_tar_safe_and_reversible():
    for path in ["id10001/1zcIwhmdeo4/00001.wav", "a.b/c d~e/f%g.flac", "x/ünï.code.wav"]:
        key = utterance_key(path)
        assert "." not in key and "/" not in key and " " not in key
        assert key_path(key) == path.rsplit(".", 1)[0]
    assert utterance_key("id10001/1zcIwhmdeo4/00001.wav") == "id10001~1zcIwhmdeo4~00001"


def test_refuses_duplicates_missing_files_and_bad_shard_paths(corpus, tmp_path):
    root, utterances, _ = corpus
    with pytest.raises(BadValue, match="the list names it twice"):
        write_shards(utterances + utterances[:1], root, tmp_path / "dup")
    with pytest.raises(ListError, match="1 file missing"):
        write_shards(utterances + [Utterance("spk0", "spk0/nope.wav")], root, tmp_path / "missing")
    assert not (tmp_path / "dup").exists() and not (tmp_path / "missing").exists()
    with pytest.raises(BadValue, match="no such shard"):
        ShardDataset(tmp_path / "nowhere", 16000)
    with pytest.raises(BadValue, match="rank"):
        ShardDataset(tmp_path, 16000, rank=2, world_size=2)


def test_unreadable_source_is_left_out_and_listed(corpus, tmp_path):
    root, utterances, _ = corpus
    (tmp_path / "src").mkdir()
    sf.write(tmp_path / "src" / "silent.wav", np.zeros(1600, dtype=np.int16), 16000, subtype="PCM_16")
    sf.write(tmp_path / "src" / "ok.wav", np.arange(1600, dtype=np.int16), 16000, subtype="PCM_16")
    sf.write(tmp_path / "src" / "short.wav", np.arange(1, 801, dtype=np.int16), 16000, subtype="PCM_16")
    sf.write(tmp_path / "src" / "nan.wav", np.full(1600, np.nan, dtype=np.float32), 16000, subtype="FLOAT")
    (tmp_path / "src" / "junk.wav").write_bytes(b"junk" * 100)
    items = [
        Utterance("a", "ok.wav"),
        Utterance("a", "silent.wav"),
        Utterance("b", "junk.wav"),
        Utterance("b", "short.wav"),
        Utterance("b", "nan.wav"),
    ]
    write_shards(items, tmp_path / "src", tmp_path / "out", seed=None)
    assert [line.split()[1] for line in (tmp_path / "out" / "index.txt").read_text().splitlines()] == ["ok"]
    skipped = (tmp_path / "out" / "skipped.txt").read_text().splitlines()
    assert [line.split(":")[0] for line in skipped] == ["silent.wav", "junk.wav", "short.wav", "nan.wav"]
    assert skipped[2].startswith("short.wav: too short: 0.050 s") and "NaN/inf" in skipped[3]
    assert [item["key"] for item in ShardDataset(tmp_path / "out", 16000)] == ["ok"]


def test_two_jobs_write_the_same_shards(corpus, shards, tmp_path):
    root, utterances, _ = corpus
    # a multi-threaded torch op in this process first: a forked pool would then deadlock in OpenMP
    assert torch.any(torch.ones(200_000) != 0)
    ticks = []
    paths = write_shards(utterances, root, tmp_path, per_shard=4, progress=ticks.append, jobs=2)
    assert sum(ticks) == 25
    assert all(p.read_bytes() == (shards / p.name).read_bytes() for p in paths)
    assert (tmp_path / "index.txt").read_text() == (shards / "index.txt").read_text()
