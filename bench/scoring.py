"""Scoring speed: raw cosine scoring and AS-norm of 1,000,000 trials, vectorised against the per-trial loop.

10,000 distinct files (5,000 enroll + 5,000 test, 256-d, random L2-normalised), 1,000,000 random trials between
them, a 6,000-speaker cohort, AS-norm with top 300 (quick mode: a tenth of the trials, files and cohort). Raw
scores gather both rows of each trial and take dot products; they are compared with one enroll x test matrix
product, picked at the trials. The straightforward per-trial AS-norm (cohort scores of both sides, top k,
mean/std, for each trial) runs on a subset of trials, is checked against the vectorised result and extrapolated to
the whole list. On the CPU (and on CUDA when there is one). EER and minDCF are in `bench/metrics.py`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from common import Row, devices, standalone, timed, versus

from vvframe.core import registry

DIM, TOP_K, CHUNK = 256, 300, 65_536


def raw_scores(enroll, test) -> torch.Tensor:
    """Cosine scores of all trials: gather the two rows of each trial and take dot products, chunked."""
    (e_emb, e_idx), (t_emb, t_idx) = enroll, test
    return torch.cat(
        [(e_emb[e_idx[i : i + CHUNK]] * t_emb[t_idx[i : i + CHUNK]]).sum(1) for i in range(0, len(e_idx), CHUNK)]
    )


def matrix_scores(enroll, test) -> torch.Tensor:
    """Cosine scores of all trials from the full enroll x test score matrix, then picked out per trial."""
    (e_emb, e_idx), (t_emb, t_idx) = enroll, test
    return (e_emb @ t_emb.T)[e_idx, t_idx]


def per_trial_asnorm(scores, enroll, test, cohort, n: int) -> torch.Tensor:
    """The straightforward AS-norm: for each trial, both sides' cohort scores, top k, mean and std."""
    out = []
    for i in range(n):
        parts = []
        for emb, idx in (enroll, test):
            top = torch.sort(cohort @ emb[idx[i]], descending=True).values[:TOP_K]
            parts.append((scores[i] - top.mean()) / top.std(unbiased=False).clamp_min(1e-8))
        out.append(0.5 * (parts[0] + parts[1]))
    return torch.stack(out)


def run(quick: bool = False) -> list[Row]:
    """Rows: seconds for raw scoring and for AS-norm, vectorised and per trial, on each device."""
    files, trials, cohort_size, loop_trials = (500, 100_000, 600, 50) if quick else (5_000, 1_000_000, 6_000, 200)
    what = f"{trials:,} trials, {2 * files:,} files, cohort {cohort_size:,}"
    rows = []
    for device in devices():
        g = torch.Generator().manual_seed(0)
        e_emb = F.normalize(torch.randn(files, DIM, generator=g), dim=1).to(device)
        t_emb = F.normalize(torch.randn(files, DIM, generator=g), dim=1).to(device)
        cohort = F.normalize(torch.randn(cohort_size, DIM, generator=g), dim=1).to(device)
        enroll = (e_emb, torch.randint(0, files, (trials,), generator=g).to(device))
        test = (t_emb, torch.randint(0, files, (trials,), generator=g).to(device))
        norm = registry.build("normalizers", {"name": "asnorm", "top_k": TOP_K})
        small = [(emb[:100], idx[:1000] % 100) for emb, idx in (enroll, test)]
        norm(raw_scores(*small), *small, cohort)  # warm up

        scores, t_raw = timed(device, raw_scores, enroll, test)
        picked, t_matrix = timed(device, matrix_scores, enroll, test)
        raw_err = (picked - scores).abs().max().item()
        normed, t_as = timed(device, norm, scores, enroll, test, cohort)
        looped, t_loop = timed(device, per_trial_asnorm, scores, enroll, test, cohort, loop_trials)
        err = (looped - normed[:loop_trials]).abs().max().item()
        extrapolated = t_loop / loop_trials * trials
        rows.append(
            Row(
                f"raw cosine scores (gather + dot, chunked), {trials:,} trials, {device}",
                t_raw,
                "s",
                versus(f"{files:,} x {files:,} score matrix, then pick", t_matrix, "s", t_raw, False)
                + f"; max |diff| {raw_err:.1e}",
            )
        )
        rows.append(
            Row(
                f"AS-norm top {TOP_K}, vectorised, {what}, {device}",
                t_as,
                "s",
                versus(f"per-trial loop (timed on {loop_trials}, extrapolated)", extrapolated, "s", t_as, False)
                + f"; max |diff| {err:.1e}",
            )
        )
    return rows


if __name__ == "__main__":
    standalone("scoring", run, __doc__)
