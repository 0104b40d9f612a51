"""Cosine scores of trial pairs without a gathered row per trial.

A trial list names ``(enroll, test)`` pairs of utterances, usually far fewer distinct utterances than trials (a
million trials over ten thousand files). :func:`score_pairs` stacks each distinct utterance once, whichever side
it is on, and passes that one matrix to both sides of the normalizer, so cohort statistics are computed once per
utterance (see the normalizers kind). :func:`pair_scores` takes the dot products at the trials only: the trials
become the pattern of a sparse ``E x S`` CSR matrix and ``torch.sparse.sampled_addmm`` computes ``enroll @ test.T``
at that pattern, one fused dot product per distinct pair, in ``O(T)`` memory. Where that operation is missing
(a device without it) the dot products are taken over :data:`GATHER_CHUNK` gathered rows at a time; both ways
give the same float32 scores to rounding.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from itertools import chain, count

import numpy as np
import torch
from torch import Tensor

log = logging.getLogger(__name__)

GATHER_CHUNK = 4096  # rows per side gathered at once on the fallback path: 4 MiB a side at D=256 in float32


def index_pairs(pairs: Sequence[tuple[str, str]]) -> tuple[list[str], Tensor, Tensor]:
    """The distinct keys of the pairs (sorted; one row per key whichever side names it) and each pair's enroll and
    test row numbers, two ``(T,)`` long tensors."""
    first: dict[str, int] = {}  # key -> where it first occurs among the 2T keys: one C-level pass over them
    where = np.fromiter(map(first.setdefault, chain.from_iterable(pairs), count()), dtype=np.int64)
    if where.size != 2 * len(pairs):
        raise ValueError(f"pairs must be (enroll, test) pairs: {len(pairs)} pairs name {where.size} keys")
    keys = sorted(first)
    row = np.zeros(where.size, dtype=np.int64)  # first occurrence -> the key's row among the sorted keys
    row[np.fromiter((first[k] for k in keys), dtype=np.int64, count=len(keys))] = np.arange(len(keys))
    index = torch.from_numpy(row[where].reshape(-1, 2))
    return keys, index[:, 0].contiguous(), index[:, 1].contiguous()


def _check_index(name: str, index: Tensor, rows: int) -> None:
    """Raise ``IndexError`` when ``index`` names a row outside ``range(rows)`` (the sparse kernel does not check)."""
    if index.numel() and (int(index.min()) < 0 or int(index.max()) >= rows):
        raise IndexError(f"{name} index out of range for {rows} rows: {int(index.min())}..{int(index.max())}")


def pair_scores(enroll: Tensor, e_index: Tensor, test: Tensor, t_index: Tensor) -> Tensor:
    """``enroll[e_index[i]] . test[t_index[i]]`` for every trial ``i``: float32 ``(T,)`` on ``enroll``'s device,
    from the distinct pairs only and without a ``(T, D)`` gathered tensor (see the module docstring)."""
    enroll = enroll.to(torch.float32)
    test = test.to(device=enroll.device, dtype=torch.float32)
    e_index = e_index.to(device=enroll.device, dtype=torch.long)
    t_index = t_index.to(device=enroll.device, dtype=torch.long)
    if e_index.shape != t_index.shape or e_index.dim() != 1:
        raise ValueError(f"indices must be two (T,) tensors, got {tuple(e_index.shape)} and {tuple(t_index.shape)}")
    _check_index("enroll side", e_index, enroll.shape[0])
    _check_index("test side", t_index, test.shape[0])
    if not len(e_index):
        return enroll.new_zeros(0)
    try:
        return _sampled(enroll, e_index, test, t_index)
    except (RuntimeError, NotImplementedError) as e:  # no sparse CSR sampled_addmm on this device or build
        log.debug("sampled_addmm unavailable (%s): dot products of gathered rows", e)
        return _gathered(enroll, e_index, test, t_index)


def _sampled(enroll: Tensor, e_index: Tensor, test: Tensor, t_index: Tensor) -> Tensor:
    """The dot products from ``sampled_addmm`` at the CSR pattern of the distinct ``(enroll, test)`` pairs."""
    n_enroll, n_test = enroll.shape[0], test.shape[0]
    key, order = torch.sort(e_index * n_test + t_index)  # sorted columns within each row, as CSR requires
    pair, inverse = torch.unique_consecutive(key, return_inverse=True)  # distinct columns, too
    rows = torch.div(pair, n_test, rounding_mode="floor")
    crow = torch.zeros(n_enroll + 1, dtype=torch.long, device=enroll.device)
    crow[1:] = torch.cumsum(torch.bincount(rows, minlength=n_enroll), 0)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Ss]parse CSR tensor support is in beta", category=UserWarning)
        pattern = torch.sparse_csr_tensor(
            crow, pair - rows * n_test, enroll.new_zeros(len(pair)), size=(n_enroll, n_test), check_invariants=False
        )
        values = torch.sparse.sampled_addmm(pattern, enroll, test.T, beta=0.0).values()
    out = values.new_empty(key.shape)
    out[order] = values[inverse]
    return out


def _gathered(enroll: Tensor, e_index: Tensor, test: Tensor, t_index: Tensor, chunk: int | None = None) -> Tensor:
    """The dot products of gathered row pairs, :data:`GATHER_CHUNK` trials at a time (the fallback path)."""
    chunk = chunk or GATHER_CHUNK
    out = enroll.new_empty(len(e_index))
    for start in range(0, len(e_index), chunk):
        a = enroll.index_select(0, e_index[start : start + chunk])
        a.mul_(test.index_select(0, t_index[start : start + chunk]))
        torch.sum(a, dim=1, out=out[start : start + chunk])
    return out


def score_pairs(
    pairs: Sequence[tuple[str, str]], emb: dict[str, Tensor], cohort: Tensor | None = None, normalizer=None
) -> tuple[Tensor, Tensor | None]:
    """Cosine scores of ``(enroll, test)`` key pairs over finished embeddings, and the normalized scores.

    Each distinct embedding is stacked once, in one matrix that both sides share; ``normalizer`` (a built score
    normalizer, see the normalizers kind) gets it twice, with each side's per-pair indices, and the cohort (the
    first-party normalizers then compute the cohort statistics once per utterance). Returns ``(raw, normalized or
    None)``.
    """
    keys, ei, ti = index_pairs(pairs)
    rows = torch.stack([emb[k] for k in keys]) if keys else torch.zeros(0, 0)
    raw = pair_scores(rows, ei, rows, ti) if len(ei) else torch.zeros(0)
    if normalizer is None:
        return raw, None
    return raw, normalizer(raw, (rows, ei), (rows, ti), cohort)
