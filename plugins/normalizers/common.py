"""Score normalizers (kind ``normalizers``): the contract and the shared, vectorized cohort statistics.

A normalizer is a class with an explicit signature (annotated keyword arguments with defaults, no ``**kwargs``;
the engine supplies nothing). The built object is called ::

    norm(scores, enroll, test, cohort) -> Tensor (T,)

- ``scores``: ``(T,)`` float tensor, the raw cosine scores of the ``T`` trials;
- ``enroll``: a tuple ``(embeddings (E, D), index (T,) long)``: the distinct enrollment embeddings
  (L2-normalised) and, per trial, the row it uses; ``test``: the same for the test side, ``((S, D), (T,))``. Both
  sides may hold the same matrix (``vvframe.scoring.embed.score_pairs`` passes one matrix of every distinct
  utterance to both, since trial lists use most utterances on both sides);
- ``cohort``: ``(C, D)`` L2-normalised cohort embeddings (speaker means or utterances), or ``None``; only
  ``none`` accepts ``None``, the others raise :class:`vvframe.BadValue`.

Cohort scores are computed once per DISTINCT embedding with matrix products, in blocks of at most
:data:`BLOCK_ELEMENTS` scores (``rows x C``) to bound memory, each block reduced at once to its rows' statistics
(``torch.topk`` for ``asnorm``), then gathered per trial with the index; never per trial. When both sides hold the
same matrix (the same tensor, or equal ones), each row's statistics are computed once for both; rows that no
trial of a side that needs them uses are skipped. Work is in float32 on the embeddings' device. Standard
deviations are population ones (``correction=0``), clamped to at least :data:`MIN_STD`. The result is float32,
shape ``(T,)``.

- ``none``: the scores unchanged.
- ``znorm``: ``(s - mu_e) / sigma_e``, the enrollment side's cohort statistics.
- ``tnorm``: ``(s - mu_t) / sigma_t``, the test side's.
- ``snorm``: ``0.5 * (z + t)``.
- ``asnorm(top_k=300)``: as ``snorm``, but each side's statistics are over its ``top_k`` highest cohort scores;
  ``top_k`` above the cohort size is clamped to ``C``, ``top_k < 1`` is a :class:`BadValue`; a cohort too small
  for top-k statistics is logged (see :class:`vvframe_plugins.normalizers.asnorm.ASNorm`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

from vvframe import BadValue

BLOCK_ELEMENTS = 1 << 23  # cohort scores held at once: 8 Mi floats, 32 MiB (1,398 rows of a 6,000 cohort)
MIN_STD = 1e-8

Side = tuple[torch.Tensor, torch.Tensor]


def check(owner: str, scores: torch.Tensor, enroll: Side, test: Side, cohort: torch.Tensor | None) -> None:
    """Raise :class:`BadValue` on a missing cohort or on shapes that do not fit the contract."""
    if cohort is None:
        raise BadValue(f"{owner} needs a cohort: add the prepare stage / cohort section")
    if scores.dim() != 1:
        raise BadValue(f"{owner}: scores must be (T,), got shape {tuple(scores.shape)}")
    if cohort.dim() != 2 or cohort.shape[0] < 1:
        raise BadValue(f"{owner}: cohort must be a non-empty (C, D) tensor, got shape {tuple(cohort.shape)}")
    for side, (emb, index) in (("enroll", enroll), ("test", test)):
        if emb.dim() != 2 or emb.shape[1] != cohort.shape[1]:
            raise BadValue(
                f"{owner}: {side} embeddings must be (N, {cohort.shape[1]}) like the cohort,"
                f" got shape {tuple(emb.shape)}"
            )
        if index.shape != scores.shape:
            raise BadValue(
                f"{owner}: {side} index must be (T,) = {tuple(scores.shape)}, got shape {tuple(index.shape)}"
            )


def row_blocks(rows: int, cols: int, budget: int | None = None) -> Iterator[slice]:
    """Slices of ``range(rows)`` whose ``rows x cols`` blocks hold at most ``budget`` (default
    :data:`BLOCK_ELEMENTS`) elements each, one row per block at the least."""
    step = max(1, (BLOCK_ELEMENTS if budget is None else budget) // max(1, cols))
    for start in range(0, rows, step):
        yield slice(start, min(start + step, rows))


def side_stats(emb: torch.Tensor, cohort: torch.Tensor, top_k: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mean, std)``, each ``(N,)`` float32: per row of ``emb`` over its cohort scores (all ``C``, or the
    ``top_k`` highest), from blocked matrix products (see :func:`row_blocks`)."""
    emb = emb.to(torch.float32)
    cohort_t = cohort.to(device=emb.device, dtype=torch.float32).T
    mean = emb.new_empty(emb.shape[0])
    std = emb.new_empty(emb.shape[0])
    for rows in row_blocks(emb.shape[0], cohort_t.shape[1]):
        block = emb[rows] @ cohort_t  # (n, C)
        if top_k is not None and top_k < block.shape[1]:
            block = torch.topk(block, top_k, dim=1, sorted=False).values
        std[rows], mean[rows] = torch.std_mean(block, dim=1, correction=0)
    return mean, std.clamp_min_(MIN_STD)


def same_rows(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether ``a`` and ``b`` hold the same embeddings row for row (the same tensor, a view of the same memory,
    or equal values)."""
    if a is b:
        return True
    if a.shape != b.shape or a.dtype != b.dtype or a.device != b.device:
        return False
    if a.data_ptr() == b.data_ptr() and a.stride() == b.stride():
        return True
    return bool(torch.equal(a, b))


def trial_stats(
    sides: Sequence[Side], cohort: torch.Tensor, top_k: int | None = None
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per side, ``(mean, std)`` of each trial's cohort scores, ``(T,)`` each: computed once per distinct row of
    the sides' embeddings (sides holding the same matrix share them), for the rows their indices use."""
    groups: list[tuple[torch.Tensor, list[int]]] = []
    for i, (emb, _) in enumerate(sides):
        group = next((g for g in groups if same_rows(g[0], emb)), None)
        if group is None:
            groups.append((emb, [i]))
        else:
            group[1].append(i)
    out: list[tuple[torch.Tensor, torch.Tensor]] = [None] * len(sides)  # type: ignore[list-item]
    for emb, members in groups:
        indices = [sides[i][1].to(device=emb.device, dtype=torch.long) for i in members]
        used = torch.zeros(emb.shape[0], dtype=torch.bool, device=emb.device)
        for index in indices:
            used.index_fill_(0, index, True)
        if bool(used.all()):
            mean, std = side_stats(emb, cohort, top_k)
        else:  # some rows are used by no trial of these sides: their statistics are never needed
            rows = used.nonzero().squeeze(1)
            mean = torch.full((emb.shape[0],), float("nan"), device=emb.device)
            std = mean.clone()
            mean[rows], std[rows] = side_stats(emb[rows], cohort, top_k)
        for i, index in zip(members, indices):
            out[i] = (mean.index_select(0, index), std.index_select(0, index))
    return out


def normalized(scores: torch.Tensor, side: Side, cohort: torch.Tensor, top_k: int | None = None) -> torch.Tensor:
    """``(s - mu) / sigma`` per trial, with the statistics of the side's distinct rows gathered by its index."""
    ((mean, std),) = trial_stats([side], cohort, top_k)
    return (scores.to(device=mean.device, dtype=torch.float32) - mean) / std


def symmetric(
    scores: torch.Tensor, enroll: Side, test: Side, cohort: torch.Tensor, top_k: int | None = None
) -> torch.Tensor:
    """``0.5 * (z + t)``: the mean of the scores normalized by each side's statistics, computed once per distinct
    embedding of both sides together."""
    (me, se), (mt, st) = trial_stats([enroll, test], cohort, top_k)
    scores = scores.to(device=me.device, dtype=torch.float32)
    return 0.5 * ((scores - me) / se + (scores - mt) / st)
