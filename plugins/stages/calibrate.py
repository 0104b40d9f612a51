"""The ``calibrate`` stage: a linear score calibration (scores to log-likelihood ratios) fitted on a labelled
development trial list, saved with the run (``calibration/calibration.json`` and the model card's
``calibration``) so that ``eval``, ``verify``, the Python API and the service can give LLRs and posteriors.

It takes the eval stage's scores of the list (``eval/<stem>.scores``) when eval scored exactly these trials with
the same weights, embedding settings and normalizer, else it scores them itself with the back end's machinery
(the embeddings come from the same cache). Quality measures (``calibrate.quality``) need the embeddings, so
with any of them the trials are always scored here.

:func:`trial_quality` and :func:`report` are what ``eval`` uses to apply a run's calibration to other lists.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import torch

from vvframe import BadValue, Component, RunContext
from vvframe.core.schema import Range
from vvframe.data import audio
from vvframe.data.lists import Trial, check_files, read_trials, trial_files
from vvframe.inference import card
from vvframe.scoring.calibration import (
    DEFAULT_L2,
    Calibration,
    calibration_file,
    fit,
    pair_quality,
    summary,
    utterance_quality,
)
from vvframe.scoring.embed import RUN_LAYOUT, EmbedSettings, cohort_files, load_cohort
from vvframe_plugins.stages import backend  # its helpers: the same weights, embedding cache and card entries
from vvframe_plugins.stages.settings import DataSettings, Frontend, Model, Normalizer

log = logging.getLogger(__name__)

Quality = Literal["duration", "norm", "cohort_mean"]  # vvframe.scoring.calibration.QUALITY


@dataclass
class CalibrateSettings:
    """``calibrate:``: the labelled development trials, the prior to fit at, optional quality measures."""

    trials: str  # <0|1> <enroll> <test> lines, paths under data.root: trials like those the model will judge
    prior: Annotated[float, Range(gt=0, lt=1)] = 0.01  # the prior of a target trial the fit weighs the costs at
    quality: list[Quality] = field(default_factory=list)  # duration, norm, cohort_mean (WeSpeaker's QMF)
    top_k: Annotated[int, Range(1)] = 300  # cohort scores averaged for cohort_mean, unless the normalizer has top_k
    l2: Annotated[float, Range(0)] = DEFAULT_L2  # regularisation of the standardised weights

    def __post_init__(self) -> None:
        if len(set(self.quality)) != len(self.quality):
            raise BadValue(f"calibrate.quality {self.quality}: name each quality measure once")


def scored_by(normalizer: Component | None, has_cohort: bool) -> str | None:
    """The normalizer a calibration records for scores of ``normalizer``: its name where loading the run applies it
    too (the API builds the card's normalizer only with the run's cohort), else None (cosine scores)."""
    return normalizer.name if normalizer is not None and has_cohort else None


def _top_k(ctx: RunContext, normalizer: Component | None, default: int) -> int:
    """The normalizer's ``top_k`` (its recipe entry, defaults filled in) when it has one, else ``default``."""
    entry = backend.recipe_entry(ctx, normalizer) if normalizer is not None else {}
    value = entry.get("top_k")
    return int(value) if isinstance(value, int) and not isinstance(value, bool) and value > 0 else int(default)


def trial_quality(
    quality: Sequence[str],
    trials: Sequence[Trial],
    raw: dict[str, torch.Tensor],
    emb: dict[str, torch.Tensor],
    mean: torch.Tensor | None,
    cohort: torch.Tensor | None,
    *,
    root: str | Path,
    mean_subtract: bool,
    top_k: int | None,
) -> np.ndarray | None:
    """The ``(N, 2 * len(quality))`` quality columns of ``trials`` (None without quality measures): ``raw`` are the
    extractor's embeddings, ``emb`` the finished ones, ``mean``/``cohort`` the prepare stage's."""
    if not quality:
        return None
    files = trial_files(trials)
    index = {f: i for i, f in enumerate(files)}
    seconds = [audio.info(Path(root) / f).seconds for f in files] if "duration" in quality else None
    centered = None
    if "norm" in quality:
        shift = mean if (mean_subtract and mean is not None) else None
        centered = torch.stack([raw[f] if shift is None else raw[f] - shift for f in files])
    finished = torch.stack([emb[f] for f in files]) if "cohort_mean" in quality else None
    per = utterance_quality(quality, seconds=seconds, centered=centered, finished=finished, cohort=cohort, top_k=top_k)
    return pair_quality(per, [index[t.enroll] for t in trials], [index[t.test] for t in trials])


def read_calibration(run_dir: str | Path) -> Calibration | None:
    """The run's calibration (``calibration/calibration.json``), or None when the calibrate stage has not run."""
    path = calibration_file(run_dir)
    return Calibration.load(path) if path.is_file() else None


def report(
    cal: Calibration, scores: Any, labels: Any, quality: np.ndarray | None, p_targets: Sequence[float]
) -> dict[str, Any]:
    """Cllr, minCllr, actDCF and minDCF (at ``p_targets`` and the fitted prior) of ``scores`` read as LLRs
    (``before``) and of their calibrated LLRs (``after``)."""
    priors = list(dict.fromkeys([*(float(p) for p in p_targets), cal.prior]))
    llrs = cal.llr(scores, quality)
    return {"prior": cal.prior, "before": summary(scores, labels, priors), "after": summary(llrs, labels, priors)}


def report_lines(title: str, rep: dict[str, Any]) -> list[str]:
    """A small table of :func:`report`: Cllr, minCllr, then actDCF and minDCF at each prior, before and after."""
    priors = list(rep["before"]["act_dcf"])
    head = ["", "Cllr", "minCllr"] + [f"{k}{p}" for p in priors for k in ("actDCF", "minDCF")]
    rows = [head]
    for name in ("before", "after"):
        r = rep[name]
        rows.append(
            [name, f"{r['cllr']:.4f}", f"{r['min_cllr']:.4f}"]
            + [f"{r[k][p]:.4f}" for p in priors for k in ("act_dcf", "min_dcf")]
        )
    widths = [max(len(row[c]) for row in rows) for c in range(len(head))]
    return [title] + ["  ".join(x.rjust(w) for x, w in zip(row, widths)) for row in rows]


def _eval_scores(
    ctx: RunContext, path: str, trials: list[Trial], embed: EmbedSettings, normalizer: Component | None
) -> np.ndarray | None:
    """The eval stage's final scores of ``trials`` when it wrote them for exactly these trials with the weights,
    embedding settings and normalizer of this recipe (as the card records them); else None."""
    scores_file = ctx.run_dir / RUN_LAYOUT["eval"] / f"{Path(path).stem}.scores"
    card_file = ctx.run_dir / card.CARD_FILE
    if not scores_file.is_file() or not card_file.is_file():
        return None
    try:
        described = json.loads(card_file.read_text(encoding="utf-8"))
        weights = backend.weights_for(ctx, embed)
    except (OSError, ValueError, BadValue):
        return None
    same = (
        described.get("normalizer") == (backend.recipe_entry(ctx, normalizer) if normalizer is not None else None)
        and described.get("embed") == {k: getattr(embed, k) for k in card.EMBED_KEYS}
        and described.get("weights") == (card.relative(ctx.run_dir, weights) if embed.checkpoint else None)
    )
    rows = [line.split() for line in scores_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not same or len(rows) != len(trials):
        return None
    for row, t in zip(rows, trials):
        if len(row) != 4 or (row[0], row[1], row[3]) != (t.enroll, t.test, str(t.label)):
            return None
    return np.array([float(row[2]) for row in rows], dtype=np.float64)


def _fit(
    ctx: RunContext,
    scores: np.ndarray,
    trials: list[Trial],
    settings: CalibrateSettings,
    normalizer: Component | None,
    quality: np.ndarray | None,
    top_k: int | None,
    job: backend.Job | None,
) -> None:
    """Fit, save (``calibration/calibration.json`` and the card) and report, on rank 0."""
    labels = np.array([t.label for t in trials], dtype=np.int64)
    cal = fit(
        scores,
        labels,
        settings.prior,
        quality,
        settings.quality,
        l2=settings.l2,
        normalizer=scored_by(normalizer, cohort_files(ctx.run_dir)[0].is_file()),
        top_k=top_k,
    )
    source = "eval" if job is None else "calibrate"
    cal = dataclasses.replace(cal, fitted_on={"trials_file": settings.trials, "scores_from": source, **cal.fitted_on})
    target = calibration_file(ctx.run_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    cal.save(target)
    if job is not None:  # the scores are the normalizer's: loading the run must normalize them the same way
        normalized = backend.recipe_entry(ctx, normalizer) if normalizer is not None else None
        backend.write_card(ctx, job, normalizer=normalized, calibration=cal.to_dict())
    else:
        card.update(ctx.run_dir, calibration=cal.to_dict())
    rep = report(cal, scores, labels, quality, [settings.prior])
    if ctx.writer is not None:
        for name in ("before", "after"):
            ctx.writer.add_scalar(f"calibrate/cllr_{name}", rep[name]["cllr"])
            ctx.writer.add_scalar(f"calibrate/act_dcf_{name}", rep[name]["act_dcf"][str(cal.prior)])
    title = f"calibration on {settings.trials} ({len(trials)} trials, {int(labels.sum())} targets): {cal.describe()}"
    for line in report_lines(title, rep):
        log.info(line)
    log.info("calibration saved in %s", target)


def _score_and_fit(
    ctx: RunContext,
    job: backend.Job,
    raw: dict[str, torch.Tensor],
    trials: list[Trial],
    settings: CalibrateSettings,
    normalizer: Component | None,
) -> None:
    """calibrate on rank 0 once the trials' files are embedded: their scores and quality measures, then the fit."""
    cohort, mean = load_cohort(ctx.run_dir)
    norm = normalizer.build() if normalizer is not None else None
    emb = backend.finish_embeddings(raw, mean, job.embed)
    plain, normed = backend.score_trials(trials, emb, cohort, norm)
    scores = (normed if normed is not None else plain).double().numpy()
    top_k = _top_k(ctx, normalizer, settings.top_k) if "cohort_mean" in settings.quality else None
    quality = trial_quality(
        settings.quality,
        trials,
        raw,
        emb,
        mean,
        cohort,
        root=job.data.root,
        mean_subtract=job.embed.mean_subtract,
        top_k=top_k,
    )
    _fit(ctx, scores, trials, settings, normalizer, quality, top_k, job)


def calibrate(
    ctx: RunContext,
    data: DataSettings,
    embed: EmbedSettings,
    calibrate: CalibrateSettings,
    frontend: Frontend,
    model: Model,
    normalizer: Normalizer | None = None,
):
    """Fit a linear score calibration (llr = a * score + b, optionally + quality terms) on labelled trials."""
    trials = read_trials(calibrate.trials, labelled=True)
    check_files(trial_files(trials), data.root, calibrate.trials)
    if len({t.label for t in trials}) < 2:
        raise BadValue(f"calibrate.trials {calibrate.trials}: needs both target and non-target trials")

    def run() -> None:
        scores = None if calibrate.quality else _eval_scores(ctx, calibrate.trials, trials, embed, normalizer)
        if scores is not None:
            log.info("calibrate: the eval stage's scores of %s", calibrate.trials)
            if ctx.is_main:
                _fit(ctx, scores, trials, calibrate, normalizer, None, None, None)
            return
        needs_cohort = (normalizer is not None and normalizer.name != "none") or "cohort_mean" in calibrate.quality
        if needs_cohort and not cohort_files(ctx.run_dir)[0].is_file():
            what = f"normalizer '{normalizer.name}'" if normalizer is not None else "the quality measure cohort_mean"
            raise BadValue(
                f"{what} needs cohort embeddings: run the prepare stage first (stages: [..., prepare, calibrate])"
            )
        files = trial_files(trials)
        job = backend.Job(ctx, data, embed, frontend, model, backend.weights_for(ctx, embed), files, _score_and_fit)
        job.args = (trials, calibrate, normalizer)
        backend.launch_job(job)

    return run
