"""The back-end stages: ``prepare`` (cohort embeddings), ``eval`` (scores, normalization, metrics, thresholds) and
``test`` (decisions for unlabelled pairs).

They use this run's ``checkpoints/avg.pt`` (else ``best.pt``, else ``last.pt``) unless ``embed.checkpoint`` names
a checkpoint file or another run directory; the log says which weights were used. Embeddings are cached under
the run directory, keyed by file and weights, so no file is embedded twice.

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import torch

from vvframe import BadValue, Component, RunContext
from vvframe.core.atomic import atomic_json, atomic_write
from vvframe.core.schema import Range
from vvframe.data.lists import Trial, check_files, read_trials, read_utterances, trial_files
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
from vvframe.training.launch import pick_device
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
    """``test:``: unlabelled pairs to decide, and the threshold: eer, mindcf@P, far@F (from eval) or a number."""

    pairs: str
    threshold: str = "eer"


def _weights(ctx: RunContext, embed: EmbedSettings) -> Path:
    try:
        return ckpt.for_inference(embed.checkpoint or ctx.run_dir)
    except ckpt.CheckpointError as exc:
        raise BadValue(f"{exc}; or set embed.checkpoint to a checkpoint or run directory") from None


def _extractor(
    ctx: RunContext, data: DataSettings, embed: EmbedSettings, frontend: Component, model: Component
) -> tuple[Extractor, Path]:
    path = _weights(ctx, embed)
    state = ckpt.load(path)
    front = frontend.build(sample_rate=data.sample_rate)
    net = model.build(in_dim=front.out_dim, sample_rate=data.sample_rate)
    ckpt.load_state(net, state["model"], f"{path} (model)")
    stat = path.stat()
    settings = (embed.crops, embed.crop_seconds, embed.max_seconds, str(ctx.recipe.get("frontend")))
    model_id = hashlib.sha1(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{settings}".encode()).hexdigest()[:16]
    log.info("embedding with the weights of %s", path)
    extractor = Extractor(
        front,
        net,
        data.root,
        data.sample_rate,
        device=pick_device(embed.device),
        max_seconds=embed.max_seconds,
        crops=embed.crops,
        crop_seconds=embed.crop_seconds,
        cache_dir=ctx.run_dir / "cache",
        model_id=model_id,
        progress=ctx.progress,
    )
    return extractor, path


def _entry(ctx: RunContext, component: Component) -> dict[str, Any]:
    """A component's entry as the resolved recipe holds it (defaults filled in), else its own name and arguments."""
    entry = ctx.recipe.get(component.path)
    return entry if isinstance(entry, dict) and entry.get("name") == component.name else component.to_recipe()


def _describe(
    ctx: RunContext,
    data: DataSettings,
    embed: EmbedSettings,
    frontend: Component,
    model: Component,
    weights: Path,
    **more: Any,
) -> None:
    """Write what this stage embedded with into the run's card (rank 0): the frontend and model entries (as the
    resolved recipe has them, defaults filled in), the sample rate, the embedding settings, the weights when
    ``embed.checkpoint`` chose them, and ``more``."""
    if not ctx.is_main:
        return
    card.update(
        ctx.run_dir,
        frontend=_entry(ctx, frontend),
        model=_entry(ctx, model),
        sample_rate=data.sample_rate,
        embed={k: getattr(embed, k) for k in card.EMBED_KEYS},
        weights=card.relative(ctx.run_dir, weights) if embed.checkpoint else None,
        **more,
    )


def _finish(raw: dict[str, torch.Tensor], mean: torch.Tensor | None, embed: EmbedSettings) -> dict[str, torch.Tensor]:
    return finish(raw, mean if embed.mean_subtract else None)


def _score(
    trials: list[Trial], emb: dict[str, torch.Tensor], cohort: torch.Tensor | None, normalizer
) -> tuple[torch.Tensor, torch.Tensor | None]:
    return score_pairs([(t.enroll, t.test) for t in trials], emb, cohort, normalizer)


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
        extractor, weights = _extractor(ctx, data, embed, frontend, model)
        raw = extractor([u.path for u in utterances])
        mean = torch.stack(list(raw.values())).mean(0)
        emb = _finish(raw, mean, embed)
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
        _describe(ctx, data, embed, frontend, model, weights, cohort=files)
        log.info(
            "cohort: %d %s from %d utterances of %d speakers",
            len(rows),
            "speaker means" if cohort.per_speaker == "mean" else "utterances",
            len(utterances),
            len({u.speaker for u in utterances}),
        )

    return run


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
        extractor, weights = _extractor(ctx, data, embed, frontend, model)
        cohort, mean = load_cohort(ctx.run_dir)
        norm = normalizer.build() if normalizer is not None else None
        if norm is not None and cohort is None and normalizer.name != "none":
            raise BadValue(
                f"normalizer '{normalizer.name}' needs cohort embeddings: run the prepare stage first"
                " (stages: [..., prepare, eval])"
            )
        out = ctx.run_dir / "eval"
        out.mkdir(parents=True, exist_ok=True)
        files = sorted({p for trials in lists.values() for p in trial_files(trials)})
        emb = _finish(extractor(files), mean, embed)
        metrics, thresholds, table = {}, {}, []
        for i, (path, trials) in enumerate(lists.items()):
            labels = torch.tensor([t.label for t in trials])
            raw, normed = _score(trials, emb, cohort, norm)
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
            row = [stem, str(len(trials))]
            for name in ("raw", "normalized"):
                if name in entry:
                    row += [f"{100 * entry[name]['eer']:.2f}"] + [
                        f"{entry[name]['min_dcf'][str(p)]:.4f}" for p in eval.p_target
                    ]
            table.append(row)
        atomic_json(out / "metrics.json", metrics)
        atomic_json(thresholds_file(ctx.run_dir), thresholds)
        _describe(
            ctx,
            data,
            embed,
            frontend,
            model,
            weights,
            normalizer=_entry(ctx, normalizer) if normalizer is not None else None,
            thresholds={k: v for k, v in thresholds.items() if k != "tuned_on" and math.isfinite(v)},
            tuned_on=thresholds["tuned_on"],
        )
        head = ["list", "trials", "EER%"] + [f"minDCF{p}" for p in eval.p_target]
        if norm is not None:
            head += [f"{h} ({normalizer.name})" for h in head[2:]]
        widths = [max(len(str(r[c])) for r in [head, *table]) for c in range(len(head))]
        for r in [head, *table]:
            log.info("  ".join(str(x).rjust(w) for x, w in zip(r, widths)))

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
        extractor, weights = _extractor(ctx, data, embed, frontend, model)
        _describe(ctx, data, embed, frontend, model, weights)
        cohort, mean = load_cohort(ctx.run_dir)
        norm = normalizer.build() if normalizer is not None else None
        emb = _finish(extractor(trial_files(pairs)), mean, embed)
        raw, normed = _score(pairs, emb, cohort, norm)
        final = normed if normed is not None else raw
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

    return run


def _threshold(ctx: RunContext, name: str) -> float:
    """``test.threshold``'s value: a number, or a threshold the eval stage tuned (``eval/thresholds.json``)."""
    path = thresholds_file(ctx.run_dir)
    tuned = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    tuned = {k: v for k, v in tuned.items() if k != "tuned_on"}
    untuned = (
        f": {path} holds none; run eval first or give a number"
        if path.is_file()
        else f" comes from the eval stage, and {path} does not exist: run eval first or give a number"
    )
    return pick_threshold(name, tuned, setting="test.threshold", untuned=untuned)[1]
