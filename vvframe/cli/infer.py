"""``vvframe embed`` and ``vvframe verify``: a trained run (or an exported model file) applied to audio files."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vvframe.cli import model_options, refuse_existing
from vvframe.core.errors import BadValue

_MODEL_HELP = "a run directory (its weights, cohort and tuned thresholds) or a file from `vvframe export`"


def _parser(command: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"vvframe {command}", description=description)
    parser.add_argument("model", metavar="RUN", help=_MODEL_HELP)
    model_options(parser)
    return parser


def _load(opts: argparse.Namespace):
    from vvframe.inference.api import load

    model = load(opts.model, device=opts.device, checkpoint=opts.checkpoint, trust_recipe=opts.trust_recipe)
    if Path(model.source) != Path(opts.model):
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
    opts = parser.parse_args(rest)
    files = list(opts.files) + (_listed(opts.list, opts.root) if opts.list else [])
    if not files:
        parser.error("give audio files, or --list LIST")
    if opts.out.suffix != ".npz":
        parser.error(f"--out {opts.out}: the output is a numpy archive; name it *.npz")
    refuse_existing(opts.out, opts.force)
    import json

    import numpy as np

    from vvframe.core.atomic import atomic_path

    model = _load(opts)
    emb = model.embed_many(files, progress=True).numpy().astype(np.float32)
    with atomic_path(opts.out) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, paths=np.array(files), embeddings=emb, metadata=np.array(json.dumps(model.metadata())))
    print(
        f"wrote {opts.out}: {len(files)} embeddings of {model.embed_dim} dimensions"
        " (mean-subtracted, unit length: a dot product is the raw cosine score)"
    )
    return 0


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
        help="a threshold the run's eval stage tuned (eer, mindcf@P, far@F) or a number (eer)",
    )
    opts = parser.parse_args(rest)
    if bool(opts.pairs) == bool(opts.files) or (opts.files and len(opts.files) != 2):
        parser.error("give two audio files A B, or --pairs FILE")
    if opts.out and not opts.pairs:
        parser.error("--out goes with --pairs (two files print their decision)")
    if opts.out:
        refuse_existing(opts.out, opts.force)
    model = _load(opts)
    name, value = model.threshold(opts.threshold)
    if opts.files:
        result = model.verify(*opts.files, threshold=opts.threshold)
        kind = "normalized" if result.normalized else "cosine"
        verdict = "same speaker" if result.accepted else "different speakers"
        print(f"score {result.score:.4f} ({kind}), threshold {name} = {value:.4f}: {verdict}")
        return 0
    from vvframe.data.lists import read_trials, trial_files

    pairs = read_trials(opts.pairs)
    root = opts.root or Path(".")
    files = trial_files(pairs)
    emb = model.embed_many([str(root / f) for f in files], progress=True)
    index = {f: i for i, f in enumerate(files)}
    scores, normalized = model.pair_scores(emb, emb, [(index[p.enroll], index[p.test]) for p in pairs])
    rows = ["enroll,test,score,decision"] + [
        f"{p.enroll},{p.test},{s:.6f},{int(s >= value)}" for p, s in zip(pairs, scores.tolist())
    ]
    text = "\n".join(rows) + "\n"
    if opts.out:
        from vvframe.core.atomic import atomic_write

        atomic_write(opts.out, text)
        accepted = sum(int(s >= value) for s in scores.tolist())
        print(
            f"wrote {opts.out}: {len(pairs)} pairs, {accepted} accepted at threshold {name} = {value:.4f}"
            f" ({'normalized' if normalized else 'cosine'} scores)"
        )
    else:
        sys.stdout.write(text)
    return 0
