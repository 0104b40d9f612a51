"""Score normalizers (kind ``normalizers``): the contract and the shared, vectorized cohort statistics.

A normalizer is a class with an explicit signature (annotated keyword arguments with defaults, no ``**kwargs``;
the engine supplies nothing). The built object is called ::

    norm(scores, enroll, test, cohort) -> Tensor (T,)

- ``scores``: ``(T,)`` float tensor, the raw cosine scores of the ``T`` trials;
- ``enroll``: a tuple ``(embeddings (E, D), index (T,) long)``: the distinct enrollment embeddings
  (L2-normalised) and, per trial, the row it uses; ``test``: the same for the test side, ``((S, D), (T,))``;
- ``cohort``: ``(C, D)`` L2-normalised cohort embeddings (speaker means or utterances), or ``None``; only
  ``none`` accepts ``None``, the others raise :class:`vvframe.BadValue`.

Cohort scores are computed once per DISTINCT enroll/test embedding with matrix products (``E x C`` and
``S x C``, chunked by :data:`CHUNK` rows to bound memory), reduced to statistics per distinct row, then gathered
per trial with the index; never per trial. Work is in float32 on the tensors' device. Standard deviations are
population ones (``correction=0``), clamped to at least :data:`MIN_STD`. The result is float32, shape ``(T,)``.

- ``none``: the scores unchanged.
- ``znorm``: ``(s - mu_e) / sigma_e``, the enrollment side's cohort statistics.
- ``tnorm``: ``(s - mu_t) / sigma_t``, the test side's.
- ``snorm``: ``0.5 * (z + t)``.
- ``asnorm(top_k=300)``: as ``snorm``, but each side's statistics are over its ``top_k`` highest cohort scores;
  ``top_k`` above the cohort size is clamped to ``C`` (logged once), ``top_k < 1`` is a :class:`BadValue`.
"""

from __future__ import annotations

import torch

from vvframe import BadValue

CHUNK = 4096
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


def side_stats(
    emb: torch.Tensor, cohort: torch.Tensor, top_k: int | None = None, chunk: int = CHUNK
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mean, std)``, each ``(N,)`` float32: per distinct row of ``emb`` over its cohort scores (all ``C``,
    or the ``top_k`` highest), from chunked matrix products."""
    cohort = cohort.to(device=emb.device, dtype=torch.float32)
    means, stds = [], []
    for start in range(0, emb.shape[0], chunk):
        block = emb[start : start + chunk].to(torch.float32) @ cohort.T  # (n, C)
        if top_k is not None and top_k < block.shape[1]:
            block = torch.topk(block, top_k, dim=1, sorted=False).values
        std, mean = torch.std_mean(block, dim=1, correction=0)
        means.append(mean)
        stds.append(std.clamp_min(MIN_STD))
    if not means:
        empty = emb.new_zeros(0, dtype=torch.float32)
        return empty, empty
    return torch.cat(means), torch.cat(stds)


def normalized(scores: torch.Tensor, side: Side, cohort: torch.Tensor, top_k: int | None = None) -> torch.Tensor:
    """``(s - mu) / sigma`` per trial, with the statistics of the side's distinct rows gathered by its index."""
    emb, index = side
    mean, std = side_stats(emb, cohort, top_k)
    index = index.to(mean.device)
    return (scores.to(device=mean.device, dtype=torch.float32) - mean[index]) / std[index]
