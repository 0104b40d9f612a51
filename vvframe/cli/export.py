"""``vvframe export RUN --format onnx|torchscript --out FILE``: a trained run as one file, verified before it is
kept (the machinery is :mod:`vvframe.inference.export`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vvframe.cli import model_options, refuse_existing
from vvframe.core.atomic import atomic_path
from vvframe.inference import export as writer
from vvframe.inference.api import load
from vvframe.inference.card import ModelError
from vvframe.inference.exported import INPUT, OUTPUT, read_metadata
from vvframe.inference.model import SpeakerModel


def main(rest: list[str]) -> int:
    """``vvframe export RUN --format onnx|torchscript --out FILE``: export, verify, report."""
    parser = argparse.ArgumentParser(
        prog="vvframe export",
        description="a trained run as one TorchScript or ONNX file: frontend, network, mean subtraction and L2"
        " normalisation in one graph (input waves (batch, samples) float32 at the run's sample rate,"
        " output embeddings (batch, dim)), with the tuned thresholds, the score normalizer and its"
        " cohort stored in the file. `vvframe.load(FILE)` reads it back. The export is checked against"
        " the PyTorch model before it is kept.",
    )
    parser.add_argument("run", metavar="RUN", help="a run directory")
    parser.add_argument(
        "--format",
        required=True,
        choices=writer.FORMATS,
        help="onnx (needs onnx and onnxscript to export,"
        " onnxruntime to load: pip install 'vvframe[onnx]') or torchscript",
    )
    parser.add_argument("--out", required=True, type=Path, metavar="FILE", help="the file to write")
    parser.add_argument("--opset", type=int, metavar="N", help="ONNX opset (default: the exporter's choice)")
    parser.add_argument("--force", action="store_true", help="replace FILE if it exists")
    model_options(parser, device=False)
    opts = parser.parse_args(rest)
    if opts.opset is not None and opts.format != "onnx":
        parser.error("--opset applies to --format onnx only")
    out: Path = opts.out
    if out.is_dir():
        parser.error(f"--out {out}: a directory; name the file to write")
    refuse_existing(out, opts.force)
    run = Path(opts.run)
    if not run.is_dir():
        raise ModelError(
            f"{run}: no such run directory (export takes a run directory)"
            if not run.exists()
            else f"{run}: a file; export takes a run directory"
        )

    model = load(run, device="cpu", checkpoint=opts.checkpoint, trust_recipe=opts.trust_recipe)
    if int(model.meta.get("crops") or 0):
        print(
            f"warning: the run embeds {model.meta['crops']} crops of {model.meta.get('crop_seconds')} s per"
            " utterance; the exported model embeds whole utterances (its thresholds were tuned with crops)",
            file=sys.stderr,
        )
    try:
        with atomic_path(out) as tmp:
            writer.export(model, opts.format, tmp, opset=opts.opset)
            worst, shapes = writer.compare(model, tmp)
            if not worst <= writer.TOLERANCE:  # NaN fails too
                raise writer.ExportError(
                    f"verification failed: the {opts.format} export differs from the PyTorch model by"
                    f" up to {worst:.3g} (more than {writer.TOLERANCE:g}); {out} not written"
                )
            size = tmp.stat().st_size
    except writer.ExportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    _report(model, out, opts.format, size, worst, shapes)
    return 0


def _report(model: SpeakerModel, out: Path, fmt: str, size: int, worst: float, shapes: list[tuple[int, int]]) -> None:
    meta = model.meta
    exported = read_metadata(out).get("exported") or {}
    name = "ONNX" if fmt == "onnx" else "TorchScript"
    if exported.get("opset"):
        name += f" (opset {exported['opset']})"
    if exported.get("cpu_only"):
        name += ", runs on the CPU only"
    parts = [(meta.get(k) or {}).get("name") for k in ("frontend", "model")]
    print(
        f"wrote {out} ({size / 1e6:.1f} MB): {name}, {' + '.join(p for p in parts if p) or 'model'} from {model.source}"
    )
    print(f"  input  {INPUT} (batch, samples) float32 at {model.sample_rate} Hz")
    print(
        f"  output {OUTPUT} (batch, {model.embed_dim}), {'mean-subtracted, ' if meta.get('mean_subtracted') else ''}"
        "unit length"
    )
    if model.thresholds:
        print(
            "  thresholds: "
            + ", ".join(f"{k} {v:.4f}" for k, v in model.thresholds.items())
            + (f" (tuned on {meta['tuned_on']})" if meta.get("tuned_on") else "")
        )
    else:
        print("  thresholds: none (the run's eval stage has not run)")
    if model.cohort is not None:
        norm = (meta.get("normalizer") or {}).get("name") if model.normalizer is not None else None
        print(f"  cohort: {len(model.cohort)} embeddings" + (f" for {norm} score normalization" if norm else ""))
    else:
        print("  cohort: none (raw cosine scores)")
    seconds = ", ".join(f"{b}x{s / model.sample_rate:.2f} s" for b, s in shapes)
    print(f"  verified: max |difference| from the PyTorch model {worst:.2g} (batches {seconds})")
