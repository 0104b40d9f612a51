"""Score normalizers: the vectorized ones agree with a straightforward per-trial loop."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F

from vvframe import BadValue
from vvframe.core import registry

NAMES = ["znorm", "tnorm", "snorm", "asnorm"]


def make(files=50, trials=300, cohort=80, dim=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    emb = F.normalize(torch.randn(files, dim, generator=g), dim=1)
    e_rows, t_rows = emb[: files // 2], emb[files // 2 :]
    e_idx = torch.randint(0, len(e_rows), (trials,), generator=g)
    t_idx = torch.randint(0, len(t_rows), (trials,), generator=g)
    scores = (e_rows[e_idx] * t_rows[t_idx]).sum(1)
    coh = F.normalize(torch.randn(cohort, dim, generator=g), dim=1)
    return scores, (e_rows, e_idx), (t_rows, t_idx), coh


def stats(x, cohort, k):
    s = sorted((cohort.double() @ x.double()).tolist(), reverse=True)[:k]
    t = torch.tensor(s, dtype=torch.float64)
    return t.mean().item(), max(t.std(unbiased=False).item(), 1e-8)


def loop(name, scores, enroll, test, cohort, k=None):
    """Per trial: cohort scores of both sides, sorted, top k (all when k is None), mean and std."""
    k = k or len(cohort)
    out = []
    for i, s in enumerate(scores.tolist()):
        me, se = stats(enroll[0][enroll[1][i]], cohort, k)
        mt, st = stats(test[0][test[1][i]], cohort, k)
        z, t = (s - me) / se, (s - mt) / st
        out.append({"znorm": z, "tnorm": t}.get(name, 0.5 * (z + t)))
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("name", NAMES)
def test_matches_per_trial_loop(name):
    scores, enroll, test, cohort = make()
    config = {"name": name, "top_k": 20} if name == "asnorm" else {"name": name}
    got = registry.build("normalizers", config)(scores, enroll, test, cohort)
    want = loop(name, scores, enroll, test, cohort, 20 if name == "asnorm" else None)
    assert got.dtype == torch.float32 and got.shape == scores.shape
    assert torch.allclose(got.double(), want, atol=1e-5, rtol=1e-5), (got.double() - want).abs().max()


def test_asnorm_chunked_equals_unchunked(monkeypatch):
    from vvframe_plugins.normalizers import common

    scores, enroll, test, cohort = make(files=60)
    whole = registry.build("normalizers", {"name": "asnorm", "top_k": 20})(scores, enroll, test, cohort)
    monkeypatch.setattr(common, "CHUNK", 7)
    monkeypatch.setattr(common.side_stats, "__defaults__", (None, 7))
    chunked = registry.build("normalizers", {"name": "asnorm", "top_k": 20})(scores, enroll, test, cohort)
    assert torch.allclose(whole, chunked, atol=1e-6)


def test_none_is_identity_and_accepts_no_cohort():
    scores, enroll, test, cohort = make()
    norm = registry.build("normalizers", {"name": "none"})
    assert torch.equal(norm(scores, enroll, test, cohort), scores)
    assert torch.equal(norm(scores, enroll, test, None), scores)


@pytest.mark.parametrize("name", NAMES)
def test_invariant_to_cohort_order(name):
    scores, enroll, test, cohort = make()
    norm = registry.build("normalizers", {"name": name})
    perm = torch.randperm(len(cohort), generator=torch.Generator().manual_seed(1))
    assert torch.allclose(norm(scores, enroll, test, cohort), norm(scores, enroll, test, cohort[perm]), atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_missing_cohort_is_a_bad_value(name):
    scores, enroll, test, _ = make()
    with pytest.raises(BadValue, match="needs a cohort"):
        registry.build("normalizers", {"name": name})(scores, enroll, test, None)


def test_top_k_above_cohort_clamps_and_logs_once(caplog):
    scores, enroll, test, cohort = make(cohort=15)
    norm = registry.build("normalizers", {"name": "asnorm", "top_k": 300})
    with caplog.at_level(logging.WARNING):
        first = norm(scores, enroll, test, cohort)
        norm(scores, enroll, test, cohort)
    assert sum("top_k" in r.getMessage() for r in caplog.records) == 1
    snorm = registry.build("normalizers", {"name": "snorm"})(scores, enroll, test, cohort)
    assert torch.allclose(first, snorm, atol=1e-6)


@pytest.mark.parametrize("bad", [0, -3])
def test_top_k_below_one_is_a_bad_value(bad):
    from vvframe_plugins.normalizers.asnorm import ASNorm

    with pytest.raises(BadValue):
        ASNorm(top_k=bad)
