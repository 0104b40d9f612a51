"""The back-end stages: ``prepare`` (cohort embeddings), ``eval`` (scores, normalization, metrics, thresholds) and
``test`` (decisions for unlabelled pairs).

They use this run's ``checkpoints/avg.pt`` (else ``best.pt``, else ``last.pt``) unless ``embed.checkpoint`` names
a checkpoint file or another run directory; the log says which weights were used. Embeddings are cached under
the run directory, keyed by file and weights, so no file is embedded twice. With ``embed.launcher: ddp``
(``embed.nproc`` processes spawned here) or under torchrun (its processes, whatever the launcher says) the ranks
split the files, rank 0 gathers the embeddings and alone scores and writes; the embeddings are those one process
computes (bit for bit with the same threads per process).

Each writes its part of the run's model card (:mod:`vvframe.inference.card`), which is all that loading the run
reads: the frontend, model, sample rate, embedding settings and pinned weights it embedded with (all three),
the cohort files (prepare), the score normalizer and the tuned thresholds (eval).
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import torch

from vvframe import BadValue, Component, RunContext
from vvframe.core.atomic import atomic_json, atomic_write
from vvframe.core.run import LOG_FILE
from vvframe.core.schema import Range
from vvframe.data.lists import Trial, Utterance, check_files, read_trials, read_utterances, trial_files
from vvframe.inference import card
from vvframe.scoring.embed import (
    EmbedSettings,
    Extractor,
    cohort_files,
    finish,
    l2_normalize,
    load_cohort,
    save_cohort,
    score_pairs,
    thresholds_file,
)
from vvframe.scoring.metrics import actual_dcf, cllr, det_plot, eer, min_dcf, threshold_at_far
from vvframe.scoring.thresholds import pick_threshold
from vvframe.training import checkpoint as ckpt
from vvframe.training.launch import Dist, launch, setup_rank_logging, under_torchrun
from vvframe_plugins.stages.settings import DataSettings, Frontend, Model, Normalizer

log = logging.getLogger(__name__)


@dataclass
class CohortSettings:
    """``cohort:``: the utterances whose embeddings the score normalizers compare against."""

    list: str  # <speaker> <path> lines, paths under data.root
    per_speaker: Literal["mean", "none"] = "mean"  # a speaker's mean embedding, or every utterance
    first_k: Annotated[int, Range(1)] | None = None  # with mean: only each speaker's first K utterances


@dataclass
class EvalSettings:
    """``eval:``: trial lists to score; minDCF operating points; the false-alarm rate for a threshold."""

    trials: list[str] = field(default_factory=list)
    p_target: list[Annotated[float, Range(gt=0, lt=1)]] = field(default_factory=lambda: [0.01, 0.05])
    target_far: Annotated[float, Range(0, 1)] = 0.001

    def __post_init__(self) -> None:
        if not self.trials:
            raise BadValue("eval.trials is empty: give one or more trial lists (<0|1> <enroll> <test>)")


@dataclass
class TestSettings:
    """``test:``: unlabelled pairs to decide, and the threshold: eer, mindcf@P, far@F (from eval), bayes@P (from
    calibrate) or a number."""

    pairs: str
    threshold: str = "eer"


def weights_for(ctx: RunContext, embed: EmbedSettings) -> Path:
    """The checkpoint a back-end stage embeds with: ``embed.checkpoint``, else this run's avg/best/last."""
    try:
        return ckpt.for_inference(embed.checkpoint or ctx.run_dir)
    except ckpt.CheckpointError as exc:
        raise BadValue(f"{exc}; or set embed.checkpoint to a checkpoint or run directory") from None


@dataclass
class Job:
    """A back-end stage's embedding work as every rank needs it (picklable: spawned ranks get a copy): the weights,
    the files, and what rank 0 then does with their raw embeddings, ``then(ctx, job, raw, *args)``."""

    ctx: RunContext
    data: DataSettings
    embed: EmbedSettings
    frontend: Component
    model: Component
    weights: Path
    files: list[str]
    then: Callable[..., None]
    args: tuple = ()


def launch_job(job: Job) -> None:
    """Embed ``job.files`` under ``embed.launcher`` and hand rank 0 the result: in this process, or split over DDP
    ranks (spawned here, or torchrun's, whose processes all run this stage whatever ``embed.launcher`` says)."""
    launcher = "ddp" if under_torchrun() else job.embed.launcher
    if launcher != job.embed.launcher:
        log.info(
            "under torchrun: its %d processes split the files (embed.launcher %s)",
            job.ctx.world_size,
            job.embed.launcher,
        )
    log.info("embedding with the weights of %s", job.weights)
    launch(_embed_rank, (job,), launcher, job.embed.device, job.embed.nproc)


def _embed_rank(dist: Dist, job: Job) -> None:
    """One rank's share of the embeddings, gathered on rank 0, which alone goes on to ``job.then``."""
    ctx = job.ctx.for_rank(dist.rank, dist.world_size)
    if dist.world_size > 1:  # a spawned or torchrun rank: rank 0 logs to the run's log.txt, the others warn only
        setup_rank_logging(dist, Path(ctx.run_dir) / LOG_FILE)
    try:
        raw = _extractor(ctx, job, dist)(job.files)
        if ctx.is_main:
            job.then(ctx, job, raw, *job.args)
        dist.barrier()  # under torchrun the next stage may read what rank 0 just wrote (the cohort, thresholds)
    finally:
        if ctx is not job.ctx:
            ctx.close()


def _extractor(ctx: RunContext, job: Job, dist: Dist) -> Extractor:
    data, embed, path = job.data, job.embed, job.weights
    state = ckpt.load(path)
    front = job.frontend.build(sample_rate=data.sample_rate)
    net = job.model.build(in_dim=front.out_dim, sample_rate=data.sample_rate)
    ckpt.load_state(net, state["model"], f"{path} (model)")
    stat = path.stat()
    settings = (embed.crops, embed.crop_seconds, embed.max_seconds, embed.vad, str(ctx.recipe.get("frontend")))
    model_id = hashlib.sha1(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{settings}".encode()).hexdigest()[:16]
    return Extractor(
        front,
        net,
        data.root,
        data.sample_rate,
        device=dist.device,
        max_seconds=embed.max_seconds,
        crops=embed.crops,
        crop_seconds=embed.crop_seconds,
        vad=embed.vad,
        cache_dir=ctx.run_dir / "cache",
        model_id=model_id,
        dist=dist,
        gather="main",
        progress=ctx.progress,
    )


def recipe_entry(ctx: RunContext, component: Component) -> dict[str, Any]:
    """A component's entry as the resolved recipe holds it (defaults filled in), else its own name and arguments."""
    entry = ctx.recipe.get(component.path)
    return (
        entry
        if isinstance(entry, dict) and entry.get("name") == component.name
        else {"name": component.name, **component.args}
    )


def write_card(ctx: RunContext, job: Job, **more: Any) -> None:
    """Write what this stage embedded with into the run's card (rank 0): the frontend and model entries (as the
    resolved recipe has them, defaults filled in), the sample rate, the embedding settings, the weights when
    ``embed.checkpoint`` chose them, and ``more``."""
    if not ctx.is_main:
        return
    data, embed, frontend, model, weights = job.data, job.embed, job.frontend, job.model, job.weights
    card.update(
        ctx.run_dir,
        frontend=recipe_entry(ctx, frontend),
        model=recipe_entry(ctx, model),
        sample_rate=data.sample_rate,
        embed={k: getattr(embed, k) for k in card.EMBED_KEYS},
        weights=card.relative(ctx.run_dir, weights) if embed.checkpoint else None,
        **more,
    )


def finish_embeddings(
    raw: dict[str, torch.Tensor], mean: torch.Tensor | None, embed: EmbedSettings
) -> dict[str, torch.Tensor]:
    """Raw embeddings made ready for scoring: the cohort ``mean`` subtracted when ``embed.mean_subtract``, L2-normed."""
    return finish(raw, mean if embed.mean_subtract else None)


def score_trials(
    trials: list[Trial], emb: dict[str, torch.Tensor], cohort: torch.Tensor | None, normalizer
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(raw, normalized)`` scores of ``trials`` (normalized: None without a built ``normalizer``)."""
    return score_pairs([(t.enroll, t.test) for t in trials], emb, cohort, normalizer)


def _save_cohort(
    ctx: RunContext, job: Job, raw: dict[str, torch.Tensor], utterances: list[Utterance], cohort: CohortSettings
) -> None:
    """prepare on rank 0: the cohort's speaker means (or utterances) and the mean embedding, into cohort/."""
    mean = torch.stack(list(raw.values())).mean(0)
    emb = finish_embeddings(raw, mean, job.embed)
    if cohort.per_speaker == "mean":
        by_speaker: dict[str, list[torch.Tensor]] = {}
        for u in utterances:
            by_speaker.setdefault(u.speaker, []).append(emb[u.path])
        names = sorted(by_speaker)
        rows = [
            torch.stack(by_speaker[n][: cohort.first_k] if cohort.first_k else by_speaker[n]).mean(0) for n in names
        ]
    else:
        names = [u.speaker for u in utterances]
        rows = [emb[u.path] for u in utterances]
    save_cohort(ctx.run_dir, names, l2_normalize(torch.stack(rows)), mean)
    files = dict(zip(("embeddings", "mean"), (card.relative(ctx.run_dir, f) for f in cohort_files(ctx.run_dir))))
    write_card(ctx, job, cohort=files)
    log.info(
        "cohort: %d %s from %d utterances of %d speakers",
        len(rows),
        "speaker means" if cohort.per_speaker == "mean" else "utterances",
        len(utterances),
        len({u.speaker for u in utterances}),
    )


def prepare(
    ctx: RunContext,
    data: DataSettings,
    embed: EmbedSettings,
    cohort: CohortSettings,
    frontend: Frontend,
    model: Model,
):
    """Cohort embeddings (per speaker or per utterance) and the mean vector, saved under cohort/."""
    utterances = read_utterances(cohort.list)
    check_files([u.path for u in utterances], data.root, cohort.list)

    def run() -> None:
        files = [u.path for u in utterances]
        launch_job(
            Job(ctx, data, embed, frontend, model, weights_for(ctx, embed), files, _save_cohort, (utterances, cohort))
        )

    return run


def _score_lists(
    ctx: RunContext,
    job: Job,
    embedded: dict[str, torch.Tensor],
    lists: dict[str, list[Trial]],
    eval: EvalSettings,  # noqa: A002 - the section's name
    normalizer: Component | None,
) -> None:
    """eval on rank 0: scores, metrics, DET plots and thresholds of each trial list, into eval/; with the run's
    score calibration (the calibrate stage's) also Cllr, minCllr and actDCF before and after it."""
    from vvframe_plugins.stages.calibrate import read_calibration, report, report_lines, scored_by, trial_quality

    embed = job.embed
    cohort, mean = load_cohort(ctx.run_dir)
    norm = normalizer.build() if normalizer is not None else None
    out = ctx.run_dir / "eval"
    out.mkdir(parents=True, exist_ok=True)
    emb = finish_embeddings(embedded, mean, embed)
    calibration = read_calibration(ctx.run_dir)
    why = calibration.mismatch(scored_by(normalizer, cohort is not None)) if calibration else ""
    if why:
        log.warning("eval: the run's score calibration is not applied: %s", why)
        calibration = None
    metrics, thresholds, table = {}, {}, []
    for i, (path, trials) in enumerate(lists.items()):
        labels = torch.tensor([t.label for t in trials])
        raw, normed = score_trials(trials, emb, cohort, norm)
        final = normed if normed is not None else raw
        stem = Path(path).stem
        atomic_write(
            out / f"{stem}.scores",
            "".join(f"{t.enroll} {t.test} {s:.6f} {t.label}\n" for t, s in zip(trials, final.tolist())),
        )
        entry = {"trials": len(trials), "targets": int(labels.sum())}
        for name, scores in (("raw", raw), ("normalized", normed)):
            if scores is None:
                continue
            value, thr = eer(scores, labels)
            entry[name] = {
                "eer": value,
                "eer_threshold": thr,
                "cllr": cllr(scores, labels),
                "min_dcf": {str(p): min_dcf(scores, labels, p)[0] for p in eval.p_target},
            }
        image = det_plot(final, labels, out / f"{stem}_det.png", title=stem, p_targets=eval.p_target)
        if ctx.writer is not None:
            ctx.writer.add_image(f"eval/{stem}_det", image, dataformats="HWC")
            ctx.writer.add_scalar(f"eval/{stem}_eer", entry["normalized" if normed is not None else "raw"]["eer"])
        metrics[stem] = entry
        if i == 0:  # thresholds are tuned on the first list
            thresholds["eer"] = entry["normalized" if normed is not None else "raw"]["eer_threshold"]
            for p in eval.p_target:
                thresholds[f"mindcf@{p}"] = min_dcf(final, labels, p)[1]
            thresholds[f"far@{eval.target_far}"] = threshold_at_far(final, labels, eval.target_far)
            thresholds["tuned_on"] = path
            entry["actual_dcf_at_eer_threshold"] = {
                str(p): actual_dcf(final, labels, thresholds["eer"], p) for p in eval.p_target
            }
        if calibration is not None:
            quality = trial_quality(
                calibration.quality,
                trials,
                embedded,
                emb,
                mean,
                cohort,
                root=job.data.root,
                mean_subtract=embed.mean_subtract,
                top_k=calibration.top_k,
            )
            entry["calibration"] = report(calibration, final, labels, quality, eval.p_target)
            fitted = calibration.fitted_on.get("trials_file", "?")
            for line in report_lines(f"{stem}: calibration fitted on {fitted}", entry["calibration"]):
                log.info(line)
        row = [stem, str(len(trials))]
        for name in ("raw", "normalized"):
            if name in entry:
                row += [f"{100 * entry[name]['eer']:.2f}"] + [
                    f"{entry[name]['min_dcf'][str(p)]:.4f}" for p in eval.p_target
                ]
        table.append(row)
    atomic_json(out / "metrics.json", metrics)
    atomic_json(thresholds_file(ctx.run_dir), thresholds)
    write_card(
        ctx,
        job,
        normalizer=recipe_entry(ctx, normalizer) if normalizer is not None else None,
        thresholds={k: v for k, v in thresholds.items() if k != "tuned_on" and math.isfinite(v)},
        tuned_on=thresholds["tuned_on"],
    )
    head = ["list", "trials", "EER%"] + [f"minDCF{p}" for p in eval.p_target]
    if norm is not None:
        head += [f"{h} ({normalizer.name})" for h in head[2:]]
    widths = [max(len(str(r[c])) for r in [head, *table]) for c in range(len(head))]
    for r in [head, *table]:
        log.info("  ".join(str(x).rjust(w) for x, w in zip(r, widths)))


def eval(
    ctx: RunContext,
    data: DataSettings,
    embed: EmbedSettings,
    eval: EvalSettings,
    frontend: Frontend,
    model: Model,
    normalizer: Normalizer | None = None,
):  # noqa: A001 - the stage's public name
    """Score each trial list: raw and normalized scores, EER, minDCF, Cllr, DET plots, tuned thresholds."""
    lists = {path: read_trials(path, labelled=True) for path in eval.trials}
    for path, trials in lists.items():
        check_files(trial_files(trials), data.root, path)
        if len({t.label for t in trials}) < 2:
            raise BadValue(f"{path}: needs both target and non-target trials")

    def run() -> None:
        if normalizer is not None and normalizer.name != "none" and not cohort_files(ctx.run_dir)[0].is_file():
            raise BadValue(
                f"normalizer '{normalizer.name}' needs cohort embeddings: run the prepare stage first"
                " (stages: [..., prepare, eval])"
            )
        files = sorted({p for trials in lists.values() for p in trial_files(trials)})
        weights = weights_for(ctx, embed)
        launch_job(Job(ctx, data, embed, frontend, model, weights, files, _score_lists, (lists, eval, normalizer)))

    return run


def _read_pairs(path: str) -> list[Trial]:
    text = Path(path).read_text(encoding="utf-8") if Path(path).is_file() else ""
    first = text.splitlines()[0] if text else ""
    if "," in first:  # the seed system's CSV: a header audio_1,audio_2
        rows = list(csv.reader(text.splitlines()))
        header = [h.strip() for h in rows[0]]
        if header[:2] != ["audio_1", "audio_2"]:
            raise BadValue(f"{path}: a CSV of pairs needs the header audio_1,audio_2; got {','.join(header)}")
        return [Trial(r[0].strip(), r[1].strip()) for r in rows[1:] if r]
    return read_trials(path, labelled=False)


def _decide(
    ctx: RunContext,
    job: Job,
    raw: dict[str, torch.Tensor],
    pairs: list[Trial],
    test: TestSettings,
    threshold: float,
    normalizer: Component | None,
) -> None:
    """test on rank 0: each pair's score and decision at ``threshold``, into test/decisions.csv."""
    write_card(ctx, job)
    cohort, mean = load_cohort(ctx.run_dir)
    norm = normalizer.build() if normalizer is not None else None
    emb = finish_embeddings(raw, mean, job.embed)
    scores, normed = score_trials(pairs, emb, cohort, norm)
    final = normed if normed is not None else scores
    rows = ["enroll,test,score,decision"] + [
        f"{p.enroll},{p.test},{s:.6f},{int(s >= threshold)}" for p, s in zip(pairs, final.tolist())
    ]
    (ctx.run_dir / "test").mkdir(parents=True, exist_ok=True)
    atomic_write(ctx.run_dir / "test" / "decisions.csv", "\n".join(rows) + "\n")
    accepted = int((final >= threshold).sum())
    log.info(
        "test: %d pairs, %d accepted at threshold %s = %.4f (test/decisions.csv)",
        len(pairs),
        accepted,
        test.threshold,
        threshold,
    )


def test(
    ctx: RunContext,
    data: DataSettings,
    embed: EmbedSettings,
    test: TestSettings,
    frontend: Frontend,
    model: Model,
    normalizer: Normalizer | None = None,
):
    """Scores and accept/reject decisions for unlabelled pairs, with a threshold from eval or a number."""
    pairs = _read_pairs(test.pairs)
    check_files(trial_files(pairs), data.root, test.pairs)

    def run() -> None:
        threshold = _threshold(ctx, test.threshold)
        weights = weights_for(ctx, embed)
        job = Job(
            ctx,
            data,
            embed,
            frontend,
            model,
            weights,
            trial_files(pairs),
            _decide,
            (pairs, test, threshold, normalizer),
        )
        launch_job(job)

    return run


def _threshold(ctx: RunContext, name: str) -> float:
    """``test.threshold``'s value: a number, a threshold the eval stage tuned (``eval/thresholds.json``), or
    ``bayes@P`` of the calibrate stage's calibration."""
    from vvframe_plugins.stages.calibrate import read_calibration

    calibration = read_calibration(ctx.run_dir)
    path = thresholds_file(ctx.run_dir)
    tuned = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    tuned = {k: v for k, v in tuned.items() if k != "tuned_on"}
    untuned = (
        f": {path} holds none; run eval first or give a number"
        if path.is_file()
        else f" comes from the eval stage, and {path} does not exist: run eval first or give a number"
    )
    bayes = calibration.threshold if calibration is not None else None
    return pick_threshold(name, tuned, setting="test.threshold", untuned=untuned, bayes=bayes)[1]
