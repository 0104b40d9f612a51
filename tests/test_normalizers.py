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


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("rows_per_block", [1, 7])
def test_blocked_equals_unblocked(monkeypatch, name, rows_per_block):
    from vvframe_plugins.normalizers import common

    scores, enroll, test, cohort = make(files=60)
    config = {"name": name, "top_k": 20} if name == "asnorm" else {"name": name}
    whole = registry.build("normalizers", config)(scores, enroll, test, cohort)
    monkeypatch.setattr(common, "BLOCK_ELEMENTS", rows_per_block * len(cohort))
    blocked = registry.build("normalizers", config)(scores, enroll, test, cohort)
    assert torch.allclose(whole, blocked, atol=1e-6)


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


@pytest.fixture(autouse=True)
def fresh_cohort_warnings(monkeypatch):
    """asnorm says a cohort is too small once per process: each test starts with nothing said."""
    from vvframe_plugins.normalizers import asnorm

    monkeypatch.setattr(asnorm, "_WARNED", set())


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


# --- statistics once per distinct embedding, in bounded blocks -----------------------------------------------------


def counting_side_stats(monkeypatch):
    """Patch ``common.side_stats`` to record how many embedding rows each call gets."""
    from vvframe_plugins.normalizers import common

    calls = []
    real = common.side_stats

    def side_stats(emb, cohort, top_k=None):
        calls.append(emb.shape[0])
        return real(emb, cohort, top_k)

    monkeypatch.setattr(common, "side_stats", side_stats)
    return calls


def shared(files=40, trials=400, cohort=70, dim=16, seed=3):
    """One matrix of distinct utterances used by both sides (as ``score_pairs`` passes it), some rows unused."""
    g = torch.Generator().manual_seed(seed)
    emb = F.normalize(torch.randn(files, dim, generator=g), dim=1)
    e_idx = torch.randint(0, files - 5, (trials,), generator=g)  # the last 5 rows: no trial uses them
    t_idx = torch.randint(0, files - 5, (trials,), generator=g)
    scores = (emb[e_idx] * emb[t_idx]).sum(1)
    return scores, (emb, e_idx), (emb, t_idx), F.normalize(torch.randn(cohort, dim, generator=g), dim=1)


@pytest.mark.parametrize("name", NAMES)
def test_one_matrix_for_both_sides_matches_the_per_trial_loop(name):
    scores, enroll, test, cohort = shared()
    config = {"name": name, "top_k": 20} if name == "asnorm" else {"name": name}
    got = registry.build("normalizers", config)(scores, enroll, test, cohort)
    want = loop(name, scores, enroll, test, cohort, 20 if name == "asnorm" else None)
    assert torch.isfinite(got).all()
    assert torch.allclose(got.double(), want, atol=1e-5, rtol=1e-5), (got.double() - want).abs().max()


@pytest.mark.parametrize("name", ["snorm", "asnorm"])
@pytest.mark.parametrize("same", ["same tensor", "equal copy"])
def test_statistics_once_per_distinct_embedding(monkeypatch, name, same):
    scores, enroll, test, cohort = shared()
    if same == "equal copy":
        test = (test[0].clone(), test[1])
    used = len(torch.unique(torch.cat([enroll[1], test[1]])))
    calls = counting_side_stats(monkeypatch)
    registry.build("normalizers", {"name": name})(scores, enroll, test, cohort)
    assert calls == [used] and used == len(enroll[0]) - 5  # one call, only the rows a trial uses


def test_separate_sides_each_get_their_rows_and_znorm_only_the_enrollment_side(monkeypatch):
    scores, enroll, test, cohort = make()
    calls = counting_side_stats(monkeypatch)
    registry.build("normalizers", {"name": "asnorm", "top_k": 20})(scores, enroll, test, cohort)
    assert sorted(calls) == sorted([len(torch.unique(enroll[1])), len(torch.unique(test[1]))])
    calls.clear()
    scores, enroll, test, cohort = shared()
    registry.build("normalizers", {"name": "znorm"})(scores, enroll, test, cohort)
    assert calls == [len(torch.unique(enroll[1]))]


@pytest.mark.parametrize(("rows", "cols", "budget"), [(0, 5, 10), (10, 3, 9), (10, 3, 10), (7, 50, 10), (100, 1, 1000)])
def test_row_blocks_cover_the_rows_within_the_budget(rows, cols, budget):
    from vvframe_plugins.normalizers.common import row_blocks

    blocks = list(row_blocks(rows, cols, budget))
    assert [i for b in blocks for i in range(rows)[b]] == list(range(rows))
    assert all((b.stop - b.start) * cols <= max(budget, cols) for b in blocks)


def test_cohort_products_are_taken_in_bounded_blocks(monkeypatch):
    from vvframe_plugins.normalizers import common

    seen = []
    real = common.row_blocks

    def row_blocks(rows, cols, budget=None):
        for block in real(rows, cols, budget):
            seen.append((block.stop - block.start) * cols)
            yield block

    monkeypatch.setattr(common, "row_blocks", row_blocks)
    monkeypatch.setattr(common, "BLOCK_ELEMENTS", 5 * 80)
    scores, enroll, test, cohort = make(files=60)
    got = registry.build("normalizers", {"name": "asnorm", "top_k": 20})(scores, enroll, test, cohort)
    assert len(seen) >= 12 and max(seen) <= 5 * 80
    want = loop("asnorm", scores, enroll, test, cohort, 20)
    assert torch.allclose(got.double(), want, atol=1e-5, rtol=1e-5)


# --- AS-norm says when its cohort is too small ----------------------------------------------------------------------


def asnorm_warnings(caplog, top_k, cohort_size, dim=8):
    """The warnings of two calls of ``asnorm(top_k)`` with a cohort of ``cohort_size``."""
    g = torch.Generator().manual_seed(0)
    emb = F.normalize(torch.randn(6, dim, generator=g), dim=1)
    cohort = F.normalize(torch.randn(cohort_size, dim, generator=g), dim=1)
    idx = torch.arange(6)
    norm = registry.build("normalizers", {"name": "asnorm", "top_k": top_k})
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="vvframe_plugins.normalizers.asnorm"):
        for _ in range(2):
            norm((emb * emb.roll(1, 0)).sum(1), (emb, idx), (emb, idx.roll(1)), cohort)
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


@pytest.mark.parametrize(
    ("top_k", "cohort_size", "says"),
    [
        (300, 30, ["top_k=300 exceeds it, so all 30 are used (plain s-norm)", "about 13 %"]),  # issue 16's cohort
        (300, 1000, ["top_k=300 selects more than 1/5 of it (wanted: a cohort of at least 1,500"]),
        (20, 5000, ["20 scores per side estimate its standard deviation only to about 16 %"]),
    ],
)
def test_asnorm_warns_once_when_the_cohort_is_too_small(caplog, top_k, cohort_size, says):
    messages = asnorm_warnings(caplog, top_k, cohort_size)
    assert len(messages) == 1
    assert messages[0].startswith(f"asnorm: a cohort of {cohort_size} embeddings is too small for top-{top_k}")
    assert all(s in messages[0] for s in says), messages[0]
    assert (
        "a few thousand speakers unlike the test ones" in messages[0]
        and "one mean embedding per speaker" in messages[0]
    )


@pytest.mark.parametrize(("top_k", "cohort_size"), [(300, 1500), (300, 6000), (50, 250)])
def test_asnorm_is_quiet_with_a_large_enough_cohort(caplog, top_k, cohort_size):
    assert asnorm_warnings(caplog, top_k, cohort_size) == []
