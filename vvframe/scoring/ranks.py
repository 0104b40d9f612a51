"""Embedding work split over DDP ranks: shares of a list, whole batches dealt out by cost, and per-key results
gathered in rank order.

The machinery behind :class:`vvframe.scoring.embed.Extractor`'s ``dist``; with one process every helper returns
its input. Embeddings travel as one stacked tensor per rank with their keys, not a pickled tensor per key, and
either to every rank or to rank 0 only (the back-end stages score on rank 0 alone, so the others need none).
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from typing import Any, TypeVar

import torch
import torch.distributed as tdist
from torch import Tensor

from vvframe.training.launch import Dist

T = TypeVar("T")


def share(items: Sequence[T], dist: Dist) -> list[T]:
    """This rank's share of ``items``: every ``world_size``-th one from its rank on (shares balanced in cost when
    ``items`` is sorted by it, e.g. files by length)."""
    return list(items[dist.rank :: dist.world_size])


def gather_objects(dist: Dist, obj: Any, *, everywhere: bool = True) -> list[Any] | None:
    """Every rank's ``obj`` (picklable) in rank order: on every rank (``everywhere``), else on rank 0 only (the
    others get None); ``[obj]`` for a single process."""
    if dist.world_size == 1:
        return [obj]
    if everywhere:
        return dist.all_gather_object(obj)
    out: list[Any] | None = [None] * dist.world_size if dist.is_main else None
    tdist.gather_object(obj, out, dst=0)
    return out


def gather_values(dist: Dist, part: dict[str, T], *, everywhere: bool = True) -> dict[str, T]:
    """The ranks' small ``{key: value}`` parts merged in rank order (on every rank, or on rank 0 only when not
    ``everywhere``: the others get ``{}``)."""
    parts = gather_objects(dist, part, everywhere=everywhere)
    merged: dict[str, T] = {}
    for piece in parts or ():
        merged.update(piece)
    return merged


def gather_rows(dist: Dist, rows: dict[str, Tensor], *, everywhere: bool = True) -> dict[str, Tensor]:
    """The ranks' ``{key: (D,) tensor}`` parts merged in rank order, sent as one ``(n, D)`` CPU tensor per rank
    (on every rank, or on rank 0 only when not ``everywhere``: the others get ``{}``). Each row comes back as a
    tensor of its own, bit for bit as the rank computed it; with one process ``rows`` itself is returned."""
    if dist.world_size == 1:
        return rows
    keys = list(rows)
    packed = torch.stack([rows[k].detach().cpu() for k in keys]) if keys else None
    merged: dict[str, Tensor] = {}
    for names, block in gather_objects(dist, (keys, packed), everywhere=everywhere) or ():
        if names:
            merged.update(zip(names, (row.clone() for row in block)))
    return merged


def deal(costs: Sequence[int], world_size: int) -> list[int]:
    """The rank that takes each of some indivisible pieces of work: the costliest first, each to the rank with
    the least so far (the lowest rank on a tie), so that the ranks' totals differ by at most about one piece.
    The same ``costs`` give the same answer on every rank."""
    loads = [(0, rank) for rank in range(world_size)]  # a heap: the least loaded rank first
    owners = [0] * len(costs)
    for i in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        load, rank = heapq.heappop(loads)
        owners[i] = rank
        heapq.heappush(loads, (load + costs[i], rank))
    return owners
