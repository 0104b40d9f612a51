"""``vvframe embed`` and ``vvframe verify``: a trained run (or an exported model file) applied to audio files."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from vvframe.cli import model_options, refuse_existing, vad_option
from vvframe.core.errors import BadValue

if TYPE_CHECKING:
    import torch

    from vvframe.training.launch import Dist

_MODEL_HELP = "a run directory (its weights, cohort and tuned thresholds) or a file from `vvframe export`"


def _parser(command: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"vvframe {command}", description=description)
    parser.add_argument("model", metavar="RUN", help=_MODEL_HELP)
    model_options(parser)
    vad_option(parser)
    return parser


def _load(opts: argparse.Namespace, device: str | torch.device | None = None, say: bool = True):
    from vvframe.inference.api import load

    device = opts.device if device is None else device
    model = load(opts.model, device=device, checkpoint=opts.checkpoint, trust_recipe=opts.trust_recipe)
    if say and Path(model.source) != Path(opts.model):
        print(f"{opts.model}: using its newest usable run, {model.source}", file=sys.stderr)
    return model


def _listed(path: Path, root: Path | None) -> list[str]:
    """Paths from a list file: one ``<path>`` or ``<speaker> <path>`` per line (``#`` comments allowed)."""
    if not path.is_file():
        raise BadValue(f"--list {path}: no such file")
    out = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        parts = line.split("#", 1)[0].split()
        if not parts:
            continue
        if len(parts) > 2:
            raise BadValue(f"{path}:{number}: expected '<path>' or '<speaker> <path>', got {line.strip()!r}")
        out.append(str(root / parts[-1]) if root else parts[-1])
    if not out:
        raise BadValue(f"--list {path}: no paths in it")
    return out


def embed(rest: list[str], description: str) -> int:
    parser = _parser("embed", description)
    parser.add_argument("files", nargs="*", metavar="FILE", help="audio files")
    parser.add_argument(
        "--list", type=Path, metavar="LIST", help="a file of paths: '<path>' or '<speaker> <path>' lines"
    )
    parser.add_argument("--root", type=Path, metavar="DIR", help="the folder the list's paths are relative to")
    parser.add_argument(
        "--out",
        type=Path,
        required=True,
        metavar="FILE.npz",
        help="numpy archive: 'paths' (N,), 'embeddings' (N, D) float32, 'metadata' (JSON)",
    )
    parser.add_argument("--force", action="store_true", help="replace --out if it exists")
    parser.add_argument(
        "--nproc",
        type=int,
        default=1,
        metavar="N",
        help="split the files over N DDP processes (one GPU each on CUDA, else CPU processes); under torchrun its"
        " processes split them",
    )
    opts = parser.parse_args(rest)
    files = list(opts.files) + (_listed(opts.list, opts.root) if opts.list else [])
    if not files:
        parser.error("give audio files, or --list LIST")
    if opts.out.suffix != ".npz":
        parser.error(f"--out {opts.out}: the output is a numpy archive; name it *.npz")
    if opts.nproc < 1:
        parser.error(f"--nproc {opts.nproc}: give a number of processes >= 1")
    refuse_existing(opts.out, opts.force)
    from vvframe.training.launch import launch, under_torchrun

    launcher = "ddp" if opts.nproc > 1 or under_torchrun() else "single"
    if launcher == "ddp" and not under_torchrun():
        _spawn_checks(opts, files)
    written = launch(_embed_rank, (opts, files), launcher, opts.device, opts.nproc)
    if written is not None:  # rank 0 wrote the file
        print(
            f"wrote {opts.out}: {len(files)} embeddings of {written} dimensions"
            " (mean-subtracted, unit length: a dot product is the raw cosine score)"
        )
    return 0


def _spawn_checks(opts: argparse.Namespace, files: list[str]) -> None:
    """Before ranks are spawned: the model loads, and every file exists (else the error a single process gives)."""
    from vvframe.data import audio

    opts.model = _load(opts, device="cpu").source  # the run the ranks load, resolved (and said) once
    for path in files:
        if not Path(path).is_file():
            audio.utterance_info(path)  # names the file as a single process would


def _embed_rank(dist: Dist, opts: argparse.Namespace, files: list[str]) -> int | None:
    """One rank's share of ``files`` (all of them for a single process), gathered on rank 0, which writes
    ``--out`` and returns the embeddings' dimension; the other ranks return None."""
    import json

    import numpy as np

    from vvframe.core.atomic import atomic_path

    model = _load(opts, device=dist.device, say=dist.is_main)
    emb = model.embed_many(files, progress=True, vad=opts.vad, dist=dist)  # split over the ranks, gathered on 0
    if not dist.is_main:
        return None
    array = emb.numpy().astype(np.float32)
    with atomic_path(opts.out) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, paths=np.array(files), embeddings=array, metadata=np.array(json.dumps(model.metadata())))
    return model.embed_dim


def verify(rest: list[str], description: str) -> int:
    parser = _parser("verify", description)
    parser.add_argument("files", nargs="*", metavar="A B", help="two audio files")
    parser.add_argument(
        "--pairs",
        type=Path,
        metavar="FILE",
        help="many pairs instead: '<enroll> <test>' or '<label> <enroll> <test>' lines",
    )
    parser.add_argument("--root", type=Path, metavar="DIR", help="the folder the pairs' paths are relative to")
    parser.add_argument("--out", type=Path, metavar="FILE.csv", help="with --pairs: the decisions (default: stdout)")
    parser.add_argument("--force", action="store_true", help="replace --out if it exists")
    parser.add_argument(
        "--threshold",
        default="eer",
        help="a threshold the run's eval stage tuned (eer, mindcf@P, far@F), bayes@P (a calibrated run: the Bayes"
        " decision for a prior P of a target trial) or a number (eer)",
    )
    parser.add_argument(
        "--prior",
        type=float,
        metavar="P",
        help="a calibrated run: the prior of a target trial for the posterior (default: bayes@P's P, else the"
        " prior the calibration was fitted at)",
    )
    opts = parser.parse_args(rest)
    if bool(opts.pairs) == bool(opts.files) or (opts.files and len(opts.files) != 2):
        parser.error("give two audio files A B, or --pairs FILE")
    if opts.out and not opts.pairs:
        parser.error("--out goes with --pairs (two files print their decision)")
    if opts.out:
        refuse_existing(opts.out, opts.force)
    model = _load(opts)
    if opts.files:
        result = model.verify(*opts.files, threshold=opts.threshold, prior=opts.prior, vad=opts.vad)
        kind = "normalized" if result.normalized else "cosine"
        verdict = "same speaker" if result.accepted else "different speakers"
        shown = f"threshold {result.threshold} = {result.threshold_value:.4f}"
        print(f"score {result.score:.4f} ({kind}), {shown}: {verdict}")
        if result.llr is not None:
            print(f"llr {result.llr:+.3f}: P(same speaker) = {result.posterior:.3f} for a prior of {result.prior:g}")
        return 0
    from vvframe.data.lists import read_trials, trial_files

    pairs = read_trials(opts.pairs)
    root = opts.root or Path(".")
    files = trial_files(pairs)
    index = {f: i for i, f in enumerate(files)}
    results = model.verify_pairs(
        [str(root / f) for f in files],
        [(index[p.enroll], index[p.test]) for p in pairs],
        opts.threshold,
        prior=opts.prior,
        progress=True,
        vad=opts.vad,
    )
    calibrated = bool(results) and results[0].llr is not None
    rows = ["enroll,test,score,decision" + (",llr,posterior" if calibrated else "")] + [
        f"{p.enroll},{p.test},{r.score:.6f},{int(r.accepted)}"
        + (f",{r.llr:.6f},{r.posterior:.6f}" if calibrated else "")
        for p, r in zip(pairs, results)
    ]
    text = "\n".join(rows) + "\n"
    if opts.out:
        from vvframe.core.atomic import atomic_write

        atomic_write(opts.out, text)
        accepted = sum(r.accepted for r in results)
        values = {r.threshold_value for r in results}
        name = results[0].threshold if results else opts.threshold
        shown = f" = {values.pop():.4f}" if len(values) == 1 else " (each trial's own)"
        print(
            f"wrote {opts.out}: {len(pairs)} pairs, {accepted} accepted at threshold {name}{shown}"
            f" ({'normalized' if results and results[0].normalized else 'cosine'} scores)"
        )
    else:
        sys.stdout.write(text)
    return 0
