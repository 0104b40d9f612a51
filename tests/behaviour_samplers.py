"""Behaviour of a sampler component: with the engine's values it gives two ranks disjoint shares of utterance
indices with the same number of batches, ``len()`` of them, and ``set_epoch`` changes the order reproducibly."""

from __future__ import annotations

from vvframe.core import registry


def behaves(name: str, factory) -> None:
    labels = [i % 10 for i in range(200)]  # 10 speakers x 20 utterances

    def share(rank: int, epoch: int) -> list[list[int]]:
        sampler = registry.build(
            "samplers", {"name": name}, labels=labels, batch_size=8, rank=rank, world_size=2, seed=1
        )
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == len(sampler), (name, len(batches), len(sampler))
        return batches

    first, second = share(0, 0), share(1, 0)
    assert len(first) == len(second) > 0, (name, len(first), len(second))
    flat = [i for batch in first + second for i in batch]
    assert len(flat) == len(set(flat)), f"{name}: the ranks' shares overlap"
    assert set(flat) <= set(range(len(labels))) and all(isinstance(i, int) for i in flat), name
    assert share(0, 0) == first and share(0, 1) != first, f"{name}: not seeded by (seed, epoch)"
    per_speaker = registry.build("samplers", {"name": name}, labels=labels, batch_size=8).per_speaker
    assert isinstance(per_speaker, int) and per_speaker >= 1, (name, per_speaker)
