"""The first-party samplers: rank shares, speaker groups, seeding, exact resume, deferral, clear errors."""

from __future__ import annotations

import logging
import re

import numpy as np
import pytest

from vvframe import BadValue, VvframeError
from vvframe.core import registry

SPEAKERS, PER = 6, 20
FEW = np.repeat(np.arange(SPEAKERS), PER).tolist()  # 6 speakers x 20 utterances


def skewed(seed: int = 3, speakers: int = 40) -> list[int]:
    """Speakers with 3 to 150 utterances, in a shuffled order."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(speakers), rng.integers(3, 150, speakers))
    return rng.permutation(labels).tolist()


def build(name: str, labels: list[int], batch_size: int, rank: int = 0, world_size: int = 1, seed: int = 0, **args):
    return registry.build(
        "samplers",
        {"name": name, **args},
        labels=labels,
        batch_size=batch_size,
        rank=rank,
        world_size=world_size,
        seed=seed,
    )


def epoch(sampler, e: int = 0, start: int = 0) -> list[list[int]]:
    sampler.set_epoch(e, start)
    return list(sampler)


CASES = [
    ("random", {}),
    ("random", {"drop_last": False}),
    ("speaker_balanced", {}),
    ("speaker_balanced", {"per_speaker": 2}),
    ("speaker_balanced", {"per_speaker": 4, "max_per_speaker": 30}),
]


@pytest.mark.parametrize("name, args", CASES)
def test_ranks_get_disjoint_equal_shares(name, args):
    labels = skewed()
    shares = [epoch(build(name, labels, 12, rank=r, world_size=3, **args), 5) for r in range(3)]
    assert len({len(s) for s in shares}) == 1 and len(shares[0]) > 0
    assert len(shares[0]) == len(build(name, labels, 12, rank=1, world_size=3, **args))
    flat = [i for share in shares for batch in share for i in batch]
    assert len(flat) == len(set(flat)) and set(flat) <= set(range(len(labels)))
    for batches in zip(*shares):  # step by step, every rank's batch has the same size
        assert len({len(b) for b in batches}) == 1


def test_random_covers_everything_but_the_incomplete_last_batch():
    labels = skewed()
    sampler = build("random", labels, 16)
    batches = epoch(sampler)
    assert sampler.per_speaker == 1
    assert all(len(b) == 16 for b in batches) and len(batches) == len(labels) // 16
    assert sampler.dropped == len(labels) % 16
    kept = build("random", labels, 16, drop_last=False)
    assert sorted(i for b in epoch(kept) for i in b) == list(range(len(labels)))


@pytest.mark.parametrize("per_speaker", [1, 2, 4])
def test_speaker_groups_and_no_speaker_twice_in_a_batch(per_speaker):
    labels = skewed()
    sampler = build("speaker_balanced", labels, 8 * per_speaker, per_speaker=per_speaker, max_per_speaker=60)
    assert sampler.per_speaker == per_speaker
    used = {}
    for batch in epoch(sampler, 2):
        assert len(batch) == 8 * per_speaker
        speakers = [labels[i] for i in batch]
        groups = [speakers[i : i + per_speaker] for i in range(0, len(batch), per_speaker)]
        assert all(len(set(g)) == 1 for g in groups)
        assert len({g[0] for g in groups}) == len(groups)
        for s in speakers:
            used[s] = used.get(s, 0) + 1
    assert max(used.values()) <= 60


@pytest.mark.parametrize("name, args", CASES)
def test_seeded_reproducible_and_epochs_differ(name, args):
    labels = skewed()
    first = epoch(build(name, labels, 8, seed=7, **args), 3)
    assert first == epoch(build(name, labels, 8, seed=7, **args), 3)
    assert first != epoch(build(name, labels, 8, seed=7, **args), 4)
    assert first != epoch(build(name, labels, 8, seed=8, **args), 3)


@pytest.mark.parametrize("name, args", CASES)
def test_set_epoch_with_start_yields_the_tail_then_whole_epochs_again(name, args):
    sampler = build(name, skewed(), 8, rank=1, world_size=2, **args)
    whole = epoch(sampler, 4)
    assert len(whole) == len(sampler)
    for k in (0, 1, 5, len(whole)):
        assert epoch(sampler, 4, start=k) == whole[k:]
    sampler.set_epoch(4, start=3)
    assert list(sampler)[:1] == whole[3:4]
    assert list(sampler) == whole  # start applies to one iteration only


def test_few_speakers_deferral_keeps_nearly_all_utterances():
    """voxceleb_trainer drops a group whose speaker is already in the batch: with 6 speakers most of an epoch."""
    for per_speaker, world_size in [(1, 1), (2, 1), (5, 1), (1, 2), (1, 3)]:
        samplers = [
            build("speaker_balanced", FEW, 4 * per_speaker, rank=r, world_size=world_size, per_speaker=per_speaker)
            for r in range(world_size)
        ]
        used = sum(len(b) for s in samplers for b in epoch(s, 1))
        assert used >= 0.95 * len(FEW), (per_speaker, world_size, used)
        assert samplers[0].used == used and samplers[0].dropped == len(FEW) - used


def test_every_epoch_fills_the_largest_possible_number_of_batches():
    """On corpora of every shape, the schedule uses K batches, K the largest that distinct speakers can fill."""
    rng = np.random.default_rng(0)
    ran = 0
    for trial in range(40):
        speakers = int(rng.integers(3, 30))
        labels = np.repeat(np.arange(speakers), rng.integers(1, 60, speakers) ** int(rng.integers(1, 3)) // 8 + 1)
        per_speaker = int(rng.integers(1, 4))
        groups = int(rng.integers(1, 9))
        world_size = int(rng.integers(1, 3))
        cap = [None, 20][trial % 2]
        counts = np.bincount(labels) if cap is None else np.minimum(np.bincount(labels), cap)
        counts = counts // per_speaker
        best = max(k for k in range(counts.sum() // groups + 1) if np.minimum(counts, k).sum() >= k * groups)
        args = dict(per_speaker=per_speaker, max_per_speaker=cap, skip_small=True)
        if best // world_size == 0 or (counts > 0).sum() < groups:
            continue
        ran += 1
        shares = [
            epoch(
                build(
                    "speaker_balanced",
                    labels.tolist(),
                    groups * per_speaker,
                    rank=r,
                    world_size=world_size,
                    seed=trial,
                    **args,
                ),
                trial,
            )
            for r in range(world_size)
        ]
        flat = [i for share in shares for b in share for i in b]
        assert len(flat) == len(set(flat)) == best // world_size * world_size * groups * per_speaker
        for b in (b for share in shares for b in share):
            spk = [int(labels[i]) for i in b]
            assert len(set(spk)) == groups and all(
                len(set(spk[j : j + per_speaker])) == 1 for j in range(0, len(b), per_speaker)
            )
    assert ran >= 25


def test_cap_and_dropped_are_reported(caplog):
    labels = np.repeat(np.arange(6), [10, 10, 10, 10, 10, 60]).tolist()  # one speaker dominates
    with caplog.at_level(logging.DEBUG, logger="vvframe_plugins.samplers.speaker_balanced"):
        sampler = build("speaker_balanced", labels, 4, max_per_speaker=40)
    assert sampler.capped == 20
    # K batches hold at most one utterance of the big speaker each: 50 + min(40, K) >= 4 K holds up to K = 16
    assert len(sampler) == 16 and sampler.used == 64 and sampler.dropped == 90 - 64
    assert "left out" in caplog.text
    batches = epoch(sampler)
    assert sum(labels[i] == 5 for b in batches for i in b) <= 40


def test_a_speaker_too_small_for_a_group_is_a_clear_error():
    labels = FEW + [SPEAKERS, SPEAKERS + 1, SPEAKERS + 1]  # one speaker with 1 utterance, one with 2
    message = r"2 of 8 speakers have fewer than per_speaker=3 utterances \(the smallest has 1\)"
    with pytest.raises(BadValue, match=message):
        build("speaker_balanced", labels, 6, per_speaker=3)
    sampler = build("speaker_balanced", labels, 6, per_speaker=3, skip_small=True)
    assert sampler.speakers == SPEAKERS
    assert all(labels[i] < SPEAKERS for b in epoch(sampler) for i in b)


def test_a_batch_size_not_a_multiple_of_per_speaker_is_a_clear_error():
    with pytest.raises(BadValue, match=r"batch_size 10 is not a multiple of per_speaker 3.*9 or 12.*1, 2, 5, 10"):
        build("speaker_balanced", FEW, 10, per_speaker=3)


def test_fewer_speakers_than_groups_per_batch_is_a_clear_error():
    with pytest.raises(BadValue, match="only 6 speakers.*holds 8 groups.*at most 12"):
        build("speaker_balanced", FEW, 16, per_speaker=2)


@pytest.mark.parametrize("name, args", [("random", {}), ("speaker_balanced", {})])
def test_bad_engine_values_are_clear_errors(name, args):
    with pytest.raises(VvframeError, match="rank 2 is not among the 2 ranks"):
        build(name, FEW, 4, rank=2, world_size=2, **args)
    with pytest.raises(ValueError, match="do not fill one batch|cannot fill one batch"):
        build(name, list(range(5)), 4, world_size=2, **args)


def unequal(smallest: int = 6, speakers: int = 30, seed: int = 0) -> list[int]:
    """``speakers`` speakers with 20 to 300 utterances, except one with ``smallest``: a small real corpus."""
    rng = np.random.default_rng(seed)
    counts = np.concatenate([[smallest], rng.integers(20, 300, speakers - 1)])
    return rng.permutation(np.repeat(np.arange(speakers), counts)).tolist()


SMALL_LOG = "vvframe_plugins.samplers.speaker_balanced"


def small_epoch_records(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "an epoch uses" in r.getMessage() and r.levelno == logging.INFO]


def test_an_epoch_of_less_than_half_the_list_is_reported_once_with_the_numbers_and_the_fix(caplog):
    """30 speakers, batch 30: every batch holds every speaker, so the one with 6 utterances sets the epoch."""
    labels = unequal()
    with caplog.at_level(logging.INFO, logger=SMALL_LOG):
        sampler = build("speaker_balanced", labels, 30, max_per_speaker=None)
        assert small_epoch_records(caplog) == []  # building says nothing: the run's first epoch does
        for e in range(3):
            epoch(sampler, e)
    assert sampler.used == 180 == sum(len(b) for b in epoch(sampler, 3))
    (message,) = small_epoch_records(caplog)  # once, not once per epoch
    assert message == f"speaker_balanced: {sampler.small_epoch()}"
    assert f"an epoch uses 180 of the {len(labels)} listed utterances (" in message
    assert "every one of the 30, so the smallest speaker's 6 utterances set the epoch at 6 batches" in message
    assert "sampler: random" in message
    # every change it names uses what it says, and at least half the list
    batch, used = map(int, re.search(r"batch_size (\d+) \(\d+ speakers a batch\) uses (\d+)", message).groups())
    assert batch < 30 and build("speaker_balanced", labels, batch, max_per_speaker=None).used == used
    assert (
        used >= len(labels) / 2 and build("speaker_balanced", labels, batch, max_per_speaker=None).small_epoch() is None
    )
    per, used = map(int, re.search(r"per_speaker: (\d+) \(15 speakers a batch\) uses (\d+)", message).groups())
    assert build("speaker_balanced", labels, 30, per_speaker=per, max_per_speaker=None).used == used >= len(labels) / 2


def test_a_balanced_list_or_a_batch_of_fewer_speakers_says_nothing(caplog):
    balanced = np.repeat(np.arange(30), 20).tolist()
    with caplog.at_level(logging.INFO, logger=SMALL_LOG):
        for labels, batch in [(balanced, 30), (unequal(), 16), (skewed(), 8)]:
            sampler = build("speaker_balanced", labels, batch, max_per_speaker=None)
            assert sampler.small_epoch() is None and sampler.used >= len(labels) / 2
            epoch(sampler)
        assert build("random", unequal(), 30).small_epoch() is None
    assert small_epoch_records(caplog) == []


def test_the_cap_as_the_reason_names_max_per_speaker():
    labels = np.repeat(np.arange(10), 1000).tolist()
    sampler = build("speaker_balanced", labels, 4, max_per_speaker=100)
    message = sampler.small_epoch()
    assert message.startswith(
        "an epoch uses 1000 of the 10000 listed utterances (10%): 9000 beyond max_per_speaker 100"
    )
    assert "max_per_speaker: null uses 10000" in message


def test_only_rank_0_reports_and_the_batch_it_names_is_the_global_one(caplog):
    labels = unequal()
    with caplog.at_level(logging.INFO, logger=SMALL_LOG):
        shares = [build("speaker_balanced", labels, 30, rank=r, world_size=2, max_per_speaker=None) for r in range(2)]
        for sampler in shares:
            epoch(sampler)
    (message,) = small_epoch_records(caplog)
    assert "6 batches" not in message and "3 batches on each of 2 ranks" in message
    batch = int(re.search(r"batch_size (\d+) over 2 ranks", message).group(1))
    assert build("speaker_balanced", labels, batch // 2, world_size=2, max_per_speaker=None).small_epoch() is None


def test_a_changed_epoch_length_is_reported_again(caplog):
    from vvframe_plugins.samplers.random import EpochBatchSampler

    class Shrinking(EpochBatchSampler):
        def __len__(self) -> int:
            return 1

        def rank_batches(self, rng):
            return [list(range(self.batch_size))]

        def small_epoch_advice(self) -> str:
            return f"{self.used} this time"

    sampler = Shrinking(list(range(100)), 4, 0, 1, 0)
    with caplog.at_level(logging.INFO):
        for e, used in enumerate([60, 40, 40, 40, 30, 30]):
            sampler.used = used
            sampler.set_epoch(e)
    assert small_epoch_records(caplog) == [
        "sampler: an epoch uses 40 of the 100 listed utterances (40%): 40 this time",
        "sampler: an epoch uses 30 of the 100 listed utterances (30%): 30 this time",
    ]


@pytest.mark.parametrize("per_speaker, world_size, cap", [(1, 1, None), (2, 1, 50), (3, 2, None), (1, 3, 20)])
def test_used_is_what_epoch_utterances_computes_from_the_counts(per_speaker, world_size, cap):
    from vvframe_plugins.samplers.speaker_balanced import epoch_utterances

    labels = skewed(seed=per_speaker + world_size)
    sampler = build(
        "speaker_balanced",
        labels,
        6 * per_speaker,
        world_size=world_size,
        per_speaker=per_speaker,
        max_per_speaker=cap,
        skip_small=True,
    )
    counts = np.bincount(labels)
    counts = counts[counts >= per_speaker]
    assert sampler.used == epoch_utterances(counts, 6 * per_speaker, per_speaker, cap, world_size)
    assert sampler.used + sampler.capped + sampler.skipped + sampler.unfilled <= len(labels)
