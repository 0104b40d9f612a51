"""Scoring trial pairs: the sparse dot products at the trials equal a naive per-trial cosine, whatever the trials."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vvframe.core import registry
from vvframe.scoring import scores
from vvframe.scoring.embed import score_pairs


def embeddings(n=30, dim=12, seed=0) -> dict[str, torch.Tensor]:
    """``n`` finished (unit-length) embeddings under keys ``u00``... ."""
    g = torch.Generator().manual_seed(seed)
    rows = F.normalize(torch.randn(n, dim, generator=g), dim=1)
    return {f"u{i:02d}": rows[i] for i in range(n)}


def trials(keys_e, keys_t, n, seed=1) -> list[tuple[str, str]]:
    """``n`` random pairs (repeats of utterances and of whole pairs included), in no particular order."""
    g = torch.Generator().manual_seed(seed)
    ei = torch.randint(0, len(keys_e), (n,), generator=g).tolist()
    ti = torch.randint(0, len(keys_t), (n,), generator=g).tolist()
    pairs = [(keys_e[a], keys_t[b]) for a, b in zip(ei, ti)]
    return pairs + pairs[: n // 10]  # some trials twice


def naive(pairs, emb) -> torch.Tensor:
    """One cosine per trial, in float64."""
    return torch.tensor(
        [F.cosine_similarity(emb[e].double(), emb[t].double(), dim=0).item() for e, t in pairs], dtype=torch.float64
    )


KEYS = sorted(embeddings())
LAYOUTS = {
    "disjoint": (KEYS[:12], KEYS[12:]),
    "overlapping": (KEYS[:20], KEYS[8:]),
    "identical": (KEYS, KEYS),
    "one enrollment": (KEYS[:1], KEYS),
}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_raw_scores_equal_a_per_trial_cosine(layout):
    emb = embeddings()
    pairs = trials(*LAYOUTS[layout], n=500)
    raw, normed = score_pairs(pairs, emb)
    assert normed is None and raw.dtype == torch.float32 and raw.shape == (len(pairs),)
    assert torch.allclose(raw.double(), naive(pairs, emb), atol=1e-6)


def test_trial_order_changes_only_the_order_of_the_scores():
    emb = embeddings()
    pairs = trials(*LAYOUTS["overlapping"], n=300)
    perm = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(5)).tolist()
    raw, _ = score_pairs(pairs, emb)
    shuffled, _ = score_pairs([pairs[i] for i in perm], emb)
    assert torch.allclose(shuffled, raw[perm], atol=1e-7)


def test_one_row_per_distinct_key_whichever_side_names_it():
    keys, ei, ti = scores.index_pairs([("b", "a"), ("a", "c"), ("c", "c"), ("b", "a")])
    assert keys == ["a", "b", "c"]
    assert ei.tolist() == [1, 0, 2, 1] and ti.tolist() == [0, 2, 2, 0]


def test_the_gathered_fallback_equals_the_sparse_path(monkeypatch):
    emb = embeddings()
    pairs = trials(*LAYOUTS["overlapping"], n=400)
    sparse, _ = score_pairs(pairs, emb)

    def missing(*args, **kwargs):
        raise NotImplementedError("no sampled_addmm here")

    monkeypatch.setattr(torch.sparse, "sampled_addmm", missing)
    monkeypatch.setattr(scores, "GATHER_CHUNK", 7)  # many chunks, one short one at the end
    gathered, _ = score_pairs(pairs, emb)
    assert torch.allclose(gathered, sparse, atol=1e-6)
    assert torch.allclose(gathered.double(), naive(pairs, emb), atol=1e-6)


def test_pair_scores_over_two_matrices_and_bad_indices():
    g = torch.Generator().manual_seed(2)
    enroll, test = torch.randn(5, 8, generator=g), torch.randn(9, 8, generator=g)
    ei, ti = torch.tensor([4, 0, 4, 2, 4]), torch.tensor([8, 8, 0, 3, 8])
    want = (enroll[ei].double() * test[ti].double()).sum(1)
    assert torch.allclose(scores.pair_scores(enroll, ei, test, ti).double(), want, atol=1e-5)
    with pytest.raises(IndexError, match="test side index out of range for 9 rows"):
        scores.pair_scores(enroll, ei, test, ti + 1)
    assert scores.pair_scores(enroll, ei[:0], test, ti[:0]).shape == (0,)


def test_no_pairs_no_scores():
    raw, normed = score_pairs([], embeddings())
    assert raw.shape == (0,) and normed is None


def per_trial_asnorm(pairs, emb, cohort, k) -> torch.Tensor:
    """AS-norm trial by trial: both sides' cohort scores, the top k, mean and population std (float64)."""
    out = []
    for e, t in pairs:
        s = emb[e].double() @ emb[t].double()
        z = []
        for key in (e, t):
            top = torch.topk(cohort.double() @ emb[key].double(), k).values
            z.append((s - top.mean()) / top.std(unbiased=False).clamp_min(1e-8))
        out.append(0.5 * (z[0] + z[1]))
    return torch.stack(out)


@pytest.mark.parametrize("layout", ["disjoint", "identical"])
def test_normalized_scores_equal_a_per_trial_asnorm(layout):
    emb = embeddings()
    cohort = F.normalize(torch.randn(60, 12, generator=torch.Generator().manual_seed(9)), dim=1)
    pairs = trials(*LAYOUTS[layout], n=200)
    norm = registry.build("normalizers", {"name": "asnorm", "top_k": 10})
    raw, normed = score_pairs(pairs, emb, cohort, norm)
    assert torch.allclose(raw.double(), naive(pairs, emb), atol=1e-6)
    assert torch.allclose(normed.double(), per_trial_asnorm(pairs, emb, cohort, 10), atol=1e-5)
