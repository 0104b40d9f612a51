"""Scoring speed: raw cosine scores and AS-norm of 1,000,000 trials, against WeSpeaker's algorithm and the floor.

10,000 distinct utterances (256-d, random, L2-normalised) and 1,000,000 random trials among them, both sides
drawn from the same utterances as in VoxCeleb's trial lists; a 6,000-entry cohort; AS-norm with the top 300
(quick: 1,000 utterances, 100,000 trials, a cohort of 1,500).

- vvframe: ``score_pairs(pairs, embeddings, cohort, asnorm)`` from the string keys, as the eval stage calls it;
  and its two tensor parts alone, the raw scores (``pair_scores``: sparse dot products at the trials) and the
  ``asnorm`` normalizer given one matrix for both sides (cohort statistics once per utterance).
- the reference: WeSpeaker's algorithm (``score.py`` then ``score_norm.py``), written here in numpy: a per-trial
  loop of dot products of the two embeddings looked up by key (already unit length, so no norms: a little
  faster than a cosine); the cohort statistics of each side's distinct utterances (one product with the cohort,
  a full sort, the top 300, mean and std); a per-trial loop for the normalized scores. Its two per-trial loops
  are timed on the first 100,000 trials and extrapolated to all (linear in the trials; quick: all of them); the
  statistics are timed whole. Its scores are compared with vvframe's on those trials.
- the floor: one utterances x cohort product and ``torch.topk`` of the top 300 (10,000 x 6,000): the work
  AS-norm cannot avoid.
- before this change: raw scores from both rows of every trial gathered (65,536 trials a chunk), and AS-norm with
  each side's statistics computed on its own (once per side; both sides hold the same 10,000 utterances here).

Each figure is the fastest of 2 calls after an untimed first one (other work only adds time); vvframe's, the
floor's and the figures from before are called in turn in each round, so that a change in the load reaches them
alike; the reference's parts likewise, in a round of their own first (numpy's BLAS threads and torch's compete for
the cores when interleaved). On the CPU, and on CUDA when there is one (the reference runs on the CPU).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from common import Row, devices, number, standalone, timed, versus

from vvframe.core import registry
from vvframe.scoring.embed import score_pairs
from vvframe.scoring.scores import pair_scores
from vvframe_plugins.normalizers.common import normalized

DIM, TOP_K, OLD_CHUNK = 256, 300, 65_536


def reference_raw(pairs, emb: dict[str, np.ndarray]) -> np.ndarray:
    """WeSpeaker's ``score.py``: one dot product per trial of the two embeddings looked up by key."""
    return np.array([float(np.dot(emb[e], emb[t])) for e, t in pairs], dtype=np.float32)


def reference_stats(keys, emb: dict[str, np.ndarray], cohort: np.ndarray) -> dict[str, tuple[float, float]]:
    """WeSpeaker's ``score_norm.py`` statistics: per utterance, mean and std of its top cohort scores (full sort)."""
    rows = np.stack([emb[k] for k in keys])
    top = np.sort(rows @ cohort.T, axis=1)[:, ::-1][:, :TOP_K]
    return dict(zip(keys, zip(top.mean(axis=1).tolist(), top.std(axis=1).tolist())))


def reference_norm(pairs, raw: np.ndarray, enroll_stats, test_stats) -> np.ndarray:
    """WeSpeaker's ``score_norm.py`` per-trial loop: AS-norm of each raw score from the two sides' statistics."""
    out = []
    for (e, t), s in zip(pairs, raw.tolist()):
        (me, se), (mt, st) = enroll_stats[e], test_stats[t]
        out.append(0.5 * ((s - me) / se + (s - mt) / st))
    return np.array(out, dtype=np.float32)


def old_raw(rows, ei, ti) -> torch.Tensor:
    """The raw scores before this change: both rows of each trial gathered and multiplied, 65,536 trials a chunk."""
    return torch.cat(
        [(rows[ei[i : i + OLD_CHUNK]] * rows[ti[i : i + OLD_CHUNK]]).sum(1) for i in range(0, len(ei), OLD_CHUNK)]
    )


def old_asnorm(scores, enroll, test, cohort) -> torch.Tensor:
    """AS-norm before this change: each side's statistics on its own, even when both sides hold the same rows."""
    return 0.5 * (normalized(scores, enroll, cohort, TOP_K) + normalized(scores, test, cohort, TOP_K))


def alternating(fns: dict, rounds: int, device: str) -> dict[str, float]:
    """Each function's fastest of ``rounds`` calls, the functions called in turn in each round, so that a change in
    the machine's load reaches all of them alike."""
    seconds = {name: math.inf for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            seconds[name] = min(seconds[name], timed(device, fn)[1])
    return seconds


def run(quick: bool = False) -> list[Row]:
    """Rows: the floor, the reference, vvframe's raw scores, AS-norm and both from keys, on each device."""
    n_utt, n_trials, n_cohort, n_loop = (
        (1_000, 100_000, 1_500, 100_000) if quick else (10_000, 1_000_000, 6_000, 100_000)
    )
    rounds = 2
    g = torch.Generator().manual_seed(0)
    rows_cpu = F.normalize(torch.randn(n_utt, DIM, generator=g), dim=1)
    cohort_cpu = F.normalize(torch.randn(n_cohort, DIM, generator=g), dim=1)
    keys = [f"id{i % 1211:05d}/{i:06d}.wav" for i in range(n_utt)]
    ei_list = torch.randint(0, n_utt, (n_trials,), generator=g).tolist()
    ti_list = torch.randint(0, n_utt, (n_trials,), generator=g).tolist()
    pairs = [(keys[a], keys[b]) for a, b in zip(ei_list, ti_list)]
    what = f"{n_trials:,} trials, {n_utt:,} utterances, cohort {n_cohort:,}"

    # the reference (CPU, numpy): loops on the first n_loop trials, extrapolated; statistics whole
    emb_np = {k: r for k, r in zip(keys, rows_cpu.numpy())}
    cohort_np = cohort_cpu.numpy()
    sub = pairs[:n_loop]
    scale = n_trials / len(sub)
    enroll_keys, test_keys = sorted({e for e, _ in pairs}), sorted({t for _, t in pairs})
    ref_raw = reference_raw(sub, emb_np)  # the results (and a first, untimed call of each)
    e_stats, t_stats = reference_stats(enroll_keys, emb_np, cohort_np), reference_stats(test_keys, emb_np, cohort_np)
    ref_norm = reference_norm(sub, ref_raw, e_stats, t_stats)
    reference = {
        "ref raw": lambda: reference_raw(sub, emb_np),
        "ref stats": lambda: (
            reference_stats(enroll_keys, emb_np, cohort_np),
            reference_stats(test_keys, emb_np, cohort_np),
        ),
        "ref norm": lambda: reference_norm(sub, ref_raw, e_stats, t_stats),
    }
    # timed apart from torch's calls: numpy's BLAS threads and torch's would compete for the cores in turn
    t = alternating(reference, rounds, "cpu")
    t_ref_raw, t_ref_stats, t_ref_norm = t["ref raw"] * scale, t["ref stats"], t["ref norm"] * scale
    t_ref = t_ref_raw + t_ref_stats + t_ref_norm
    ref_parts = (
        f"per-trial cosine loop {number(t_ref_raw)} s + top-{TOP_K} statistics per side {number(t_ref_stats)} s"
        f" + per-trial AS-norm loop {number(t_ref_norm)} s"
        + (f"; loops timed on {len(sub):,} trials, extrapolated" if scale > 1 else "")
    )
    ref_label = "WeSpeaker's algorithm" + (f" (loops timed on {len(sub):,}, extrapolated)" if scale > 1 else "")

    rows = []
    for device in devices():
        on = f", {device}" if device == "cpu" else f", {device} (the reference on the CPU)"
        emb = {k: r for k, r in zip(keys, rows_cpu.to(device))}
        cohort = cohort_cpu.to(device)
        norm = registry.build("normalizers", {"name": "asnorm", "top_k": TOP_K})
        matrix = torch.stack([emb[k] for k in sorted(emb)])  # score_pairs' one matrix: keys sorted
        order = {k: i for i, k in enumerate(sorted(emb))}
        ei = torch.tensor([order[e] for e, _ in pairs], device=device)
        ti = torch.tensor([order[t] for _, t in pairs], device=device)

        e_rows, t_rows = torch.stack([emb[k] for k in enroll_keys]), torch.stack([emb[k] for k in test_keys])
        e_pos = {k: i for i, k in enumerate(enroll_keys)}
        t_pos = {k: i for i, k in enumerate(test_keys)}
        sep_e = torch.tensor([e_pos[e] for e, _ in pairs], device=device)
        sep_t = torch.tensor([t_pos[t] for _, t in pairs], device=device)
        raw = pair_scores(matrix, ei, matrix, ti)  # the results (and a first, untimed call of each)
        raw_k, normed_k = score_pairs(pairs, emb, cohort, norm)
        normed = norm(raw, (matrix, ei), (matrix, ti), cohort)
        before_raw = old_raw(matrix, ei, ti)
        before_norm = old_asnorm(raw, (e_rows, sep_e), (t_rows, sep_t), cohort)
        torch.topk(matrix @ cohort.T, TOP_K, dim=1)
        t = alternating(
            {
                # the floor: one utterances x cohort product and the top 300 of every row
                "floor": lambda: torch.topk(matrix @ cohort.T, TOP_K, dim=1).values,
                # vvframe, from the keys as the eval stage calls it, and its two tensor parts alone
                "keys": lambda: score_pairs(pairs, emb, cohort, norm),
                "raw": lambda: pair_scores(matrix, ei, matrix, ti),
                "asnorm": lambda: norm(raw, (matrix, ei), (matrix, ti), cohort),
                # before this change: gathered rows; statistics once per side
                "old raw": lambda: old_raw(matrix, ei, ti),
                "old asnorm": lambda: old_asnorm(raw, (e_rows, sep_e), (t_rows, sep_t), cohort),
            },
            rounds,
            device,
        )
        t_floor, t_keys, t_raw, t_as, t_old_raw, t_old_as = (
            t[k] for k in ("floor", "keys", "raw", "asnorm", "old raw", "old asnorm")
        )
        floor_text = f"floor (one {n_utt:,} x {n_cohort:,} product + top {TOP_K})"

        raw_diff = (raw_k.cpu()[: len(sub)] - torch.from_numpy(ref_raw)).abs().max().item()
        norm_diff = (normed_k.cpu()[: len(sub)] - torch.from_numpy(ref_norm)).abs().max().item()
        parts_diff = max((raw - raw_k).abs().max().item(), (normed - normed_k).abs().max().item())
        old_diff = max((before_raw - raw).abs().max().item(), (before_norm - normed).abs().max().item())
        checked = f"{len(sub):,}" if scale > 1 else "all"
        rows.append(Row(f"floor: {n_utt:,} x {n_cohort:,} cohort product + torch.topk {TOP_K}{on}", t_floor, "s"))
        if device == "cpu":
            rows.append(
                Row(
                    f"reference: WeSpeaker's algorithm, {what}, cpu (numpy)",
                    t_ref,
                    "s",
                    ref_parts + "; " + versus(floor_text, t_floor, "s", t_ref, False),
                )
            )
        rows += [
            Row(
                f"raw cosine scores (pair_scores: sparse dot products at the trials), {n_trials:,} trials{on}",
                t_raw,
                "s",
                versus(f"before: gather both rows + dot, {OLD_CHUNK:,} a chunk", t_old_raw, "s", t_raw, False),
            ),
            Row(
                f"AS-norm top {TOP_K}, one matrix for both sides, {what}{on}",
                t_as,
                "s",
                versus("before: statistics once per side", t_old_as, "s", t_as, False)
                + "; "
                + versus(floor_text, t_floor, "s", t_as, False),
            ),
            Row(
                f"raw + AS-norm, tensors in, {what}{on}",
                t_raw + t_as,
                "s",
                versus(floor_text, t_floor, "s", t_raw + t_as, False)
                + "; "
                + versus(ref_label, t_ref, "s", t_raw + t_as, False),
            ),
            Row(
                f"score_pairs + asnorm from the string keys, {what}{on}",
                t_keys,
                "s",
                versus(ref_label, t_ref, "s", t_keys, False)
                + "; "
                + versus(floor_text, t_floor, "s", t_keys, False)
                + f"; max |diff| against the reference on {checked} trials: raw {raw_diff:.1e}, normalized"
                f" {norm_diff:.1e}; the tensor parts {parts_diff:.1e}; before this change {old_diff:.1e}",
            ),
        ]
    return rows


if __name__ == "__main__":
    standalone("scoring", run, __doc__)
