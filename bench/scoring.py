"""Scoring speed: raw cosine scoring and AS-norm of 1,000,000 trials, and EER/minDCF of 10,000,000 scores.

Run by hand; prints a table. 10,000 distinct files (5,000 enroll + 5,000 test, 256-d, random L2-normalised),
1,000,000 random trials between them, a 6,000-speaker cohort, AS-norm with top 300. The straightforward
per-trial AS-norm (cohort scores of both sides, top k, mean/std, for each trial) runs on a subset of trials and
is extrapolated to the whole list. On the CPU (and on CUDA when there is one).
"""
from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F

from vvframe import registry
from vvframe.metrics import eer, min_dcf

FILES, TRIALS, DIM, COHORT, TOP_K = 5_000, 1_000_000, 256, 6_000, 300
LOOP_TRIALS, METRIC_SCORES, CHUNK = 200, 10_000_000, 65_536


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timed(device: str, fn, *args):
    sync(device)
    start = time.perf_counter()
    out = fn(*args)
    sync(device)
    return out, time.perf_counter() - start


def raw_scores(enroll, test) -> torch.Tensor:
    """Cosine scores of all trials: gather the two rows of each trial and take dot products, chunked."""
    (e_emb, e_idx), (t_emb, t_idx) = enroll, test
    return torch.cat([(e_emb[e_idx[i:i + CHUNK]] * t_emb[t_idx[i:i + CHUNK]]).sum(1)
                      for i in range(0, len(e_idx), CHUNK)])


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


def main() -> None:
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print(f"{TRIALS:,} trials over {2 * FILES:,} files ({FILES:,} enroll + {FILES:,} test, {DIM}-d), "
          f"cohort {COHORT:,}, AS-norm top {TOP_K}; torch threads {torch.get_num_threads()}")
    print(f"{'step':<44} {'device':<6} {'seconds':>9}")
    for device in devices:
        g = torch.Generator().manual_seed(0)
        e_emb = F.normalize(torch.randn(FILES, DIM, generator=g), dim=1).to(device)
        t_emb = F.normalize(torch.randn(FILES, DIM, generator=g), dim=1).to(device)
        cohort = F.normalize(torch.randn(COHORT, DIM, generator=g), dim=1).to(device)
        enroll = (e_emb, torch.randint(0, FILES, (TRIALS,), generator=g).to(device))
        test = (t_emb, torch.randint(0, FILES, (TRIALS,), generator=g).to(device))
        norm = registry.build("normalizers", {"name": "asnorm", "top_k": TOP_K})
        small = [(emb[:100], idx[:1000] % 100) for emb, idx in (enroll, test)]
        norm(raw_scores(*small), *small, cohort)  # warm up

        scores, t_raw = timed(device, raw_scores, enroll, test)
        normed, t_as = timed(device, norm, scores, enroll, test, cohort)
        looped, t_loop = timed(device, per_trial_asnorm, scores, enroll, test, cohort, LOOP_TRIALS)
        err = (looped - normed[:LOOP_TRIALS]).abs().max().item()
        per_trial = t_loop / LOOP_TRIALS
        print(f"{'raw cosine scoring (gather + dot, chunked)':<44} {device:<6} {t_raw:>9.3f}")
        print(f"{'asnorm, vectorized':<44} {device:<6} {t_as:>9.3f}")
        print(f"{f'per-trial asnorm, {LOOP_TRIALS} trials':<44} {device:<6} {t_loop:>9.3f}"
              f"   ({1e3 * per_trial:.2f} ms/trial, max |diff| {err:.1e})")
        print(f"{'per-trial asnorm, extrapolated to all':<44} {device:<6} {per_trial * TRIALS:>9.0f}"
              f"   (x{per_trial * TRIALS / t_as:,.0f} the vectorized time)")

    rng = np.random.default_rng(0)
    labels = rng.random(METRIC_SCORES) < 0.01
    scores = (rng.standard_normal(METRIC_SCORES) + 2.0 * labels).astype(np.float32)  # cosine scores are float32
    (value, _), t_eer = timed("cpu", eer, scores, labels)
    (dcf, _), t_dcf = timed("cpu", min_dcf, scores, labels)
    print(f"{f'EER of {METRIC_SCORES:,} scores':<44} {'cpu':<6} {t_eer:>9.3f}   (EER {100 * value:.2f}%)")
    print(f"{f'minDCF(0.01) of {METRIC_SCORES:,} scores':<44} {'cpu':<6} {t_dcf:>9.3f}   (minDCF {dcf:.4f})")


if __name__ == "__main__":
    main()
