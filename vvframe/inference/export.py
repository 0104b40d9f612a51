"""``vvframe export``'s machinery: a model loaded from a run directory written as one file, TorchScript or ONNX,
that ``vvframe.load`` reads back (:mod:`vvframe.inference.exported` reads it; the command is
:mod:`vvframe.cli.export`).

The file holds one graph: frontend, network, mean subtraction and L2 normalisation. Its input is ``waves``,
``(batch, samples)`` float32 at the run's sample rate; its output ``embeddings``, ``(batch, embed_dim)``,
mean-subtracted and unit length. Both axes are dynamic. Beside the graph it carries the metadata of
:meth:`vvframe.inference.model.SpeakerModel.metadata` (sample rate, tuned thresholds, the score normalizer's
entry, ...) and the cohort embeddings as ``.npy`` bytes, so AS-norm scores and tuned thresholds work as with the run:

* TorchScript (``torch.jit.trace``): a zip archive with the extra files ``vvframe.json`` and ``cohort.npy``.
  Tracing records the graph the example input takes; sizes derived from the input's shape stay symbolic for
  the first-party frontends and models, and every export is checked on other lengths before it is kept.
* ONNX (``torch.onnx.export(dynamo=True)``, which needs ``onnx`` and ``onnxscript``; the TorchScript-based
  exporter cannot export the framing of the fbank frontend with a dynamic length): the ModelProto's
  ``metadata_props`` hold ``vvframe`` (the JSON) and ``vvframe.cohort`` (base64 of the ``.npy`` bytes). Loading
  needs ``onnxruntime``.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import importlib
import io
import json
import logging
import operator
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from vvframe.core.atomic import atomic_path
from vvframe.core.errors import VvframeError, short
from vvframe.inference.card import ModelError
from vvframe.inference.exported import (
    COHORT_FILE,
    INPUT,
    INSTALL_HINT,
    META_FILE,
    ONNX_COHORT,
    ONNX_META,
    OUTPUT,
    load_exported,
)
from vvframe.inference.model import SpeakerModel
from vvframe.scoring.embed import Embedder

log = logging.getLogger(__name__)

FORMATS = ("onnx", "torchscript")
TOLERANCE = 1e-4  # the largest difference from the PyTorch model an export may show


class ExportError(VvframeError, RuntimeError):
    """A model that could not be exported, or an export that does not reproduce the PyTorch model."""


class MissingPackage(VvframeError, ImportError):
    """An optional package that the ONNX format needs (``pip install 'vvframe[onnx]'``)."""


# ---- exporting ---------------------------------------------------------------------------------------------
def _embedder(model: SpeakerModel) -> Embedder:
    """A CPU, eval-mode copy of the :class:`~vvframe.scoring.embed.Embedder` inside a model loaded from a run
    directory."""
    inner = getattr(model.net, "embedder", None)
    if not isinstance(inner, Embedder):
        raise ModelError(
            f"{model.source or 'this model'}: only a model loaded from a run directory can be exported"
            " (its network is not a vvframe Embedder; an exported file is already exported)"
        )
    return copy.deepcopy(inner).cpu().eval()


def exported_metadata(model: SpeakerModel, fmt: str, **extra: Any) -> dict[str, Any]:
    """What an exported file says about ``model``: :meth:`SpeakerModel.metadata` with ``crops`` 0 (an export
    embeds whole utterances) and ``embeddings: normalized`` (the graph subtracts the mean and normalises)."""
    return dict(
        model.metadata(),
        crops=0,
        embeddings="normalized",
        exported={"format": fmt, "torch": torch.__version__, **extra},
    )


def _cohort_bytes(cohort: Tensor | None) -> bytes | None:
    if cohort is None:
        return None
    buf = io.BytesIO()
    np.save(buf, cohort.detach().float().cpu().numpy(), allow_pickle=False)
    return buf.getvalue()


def _noise(batch: int, samples: int, gen: torch.Generator) -> Tensor:
    """Quiet uniform noise, ``(batch, samples)``: the waveforms exports are traced with and compared on."""
    return (torch.rand(batch, samples, generator=gen) * 2 - 1) * 0.3


def _example(sample_rate: int) -> Tensor:
    """Deterministic noise to trace with: two seconds, a length :func:`compare` avoids."""
    return _noise(2, 2 * sample_rate, torch.Generator().manual_seed(1234))


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the tracer's and exporters' warnings and chatter (the verification is what tells)."""
    loggers = [
        logging.getLogger(name)
        for name in (
            "torch.onnx",
            "torch.export",
            "torch._dynamo",
            "torch.fx",
            "torch.utils._sympy",
            "torch._subclasses",
            "onnxscript",
        )
    ]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def export(model: SpeakerModel, fmt: str, out: str | Path, *, opset: int | None = None) -> Path:
    """Write ``model`` (a :class:`~vvframe.inference.model.SpeakerModel` loaded from a run directory) to ``out``
    as ``fmt`` (``onnx`` or ``torchscript``), atomically; returns ``out``. ``opset``: the ONNX opset (default:
    the exporter's). The file is not verified here; :func:`compare` does that (``vvframe export`` always does)."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}: choose {' or '.join(FORMATS)}")
    out = Path(out)
    embedder = _embedder(model)
    with atomic_path(out) as tmp:
        if fmt == "torchscript":
            _torchscript(model, embedder, tmp)
        else:
            _onnx(model, embedder, tmp, opset)
    return out


def _torchscript(model: SpeakerModel, embedder: Embedder, path: Path) -> None:
    example = _example(model.sample_rate)
    try:
        with _quiet(), torch.no_grad():
            traced = torch.jit.trace(embedder, (example,), check_trace=False)
    except Exception as exc:
        raise ExportError(f"TorchScript export of {model.source} failed: torch.jit.trace: {exc}") from exc
    pinned = _pins_cpu(traced)
    if pinned:
        log.warning(
            "%s: the traced graph creates tensors on the CPU explicitly (a device read from the input"
            " while tracing); the TorchScript file will run on the CPU only",
            model.source,
        )
    extra = {META_FILE: json.dumps(exported_metadata(model, "torchscript", cpu_only=pinned), indent=1)}
    cohort = _cohort_bytes(model.cohort)
    if cohort is not None:
        extra[COHORT_FILE] = cohort
    with _quiet():
        torch.jit.save(traced, str(path), _extra_files=extra)


def _pins_cpu(traced: torch.jit.ScriptModule) -> bool:
    """Whether tracing baked the CPU in as a constant device (``torch.full(..., device=x.device)`` is recorded
    with the device of the example input), which would break the graph on another device."""
    return 'Device = prim::Constant[value="cpu"]' in str(traced.inlined_graph)


def _onnx(model: SpeakerModel, embedder: Embedder, path: Path, opset: int | None) -> None:
    try:
        import onnx

        importlib.import_module("onnxscript")  # torch.onnx.export(dynamo=True) needs it: say so before trying
    except ImportError as exc:
        raise MissingPackage(
            f"ONNX export needs the onnx and onnxscript packages ({exc.name} is missing): {INSTALL_HINT}"
        ) from None
    example = _example(model.sample_rate)
    dims = ({0: torch.export.Dim("batch"), 1: torch.export.Dim("samples")},)
    try:
        with _quiet(), torch.no_grad():
            program = torch.onnx.export(
                embedder,
                (example,),
                dynamo=True,
                input_names=[INPUT],
                output_names=[OUTPUT],
                dynamic_shapes=dims,
                opset_version=opset,
                custom_translation_table=_translations(),
                external_data=False,
                verbose=False,
                report=False,
            )
        proto = program.model_proto
    except Exception as exc:
        raise ExportError(f"ONNX export of {model.source} failed: {type(exc).__name__}: {short(exc)}") from exc
    actual = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is not None and actual != opset:
        log.warning("ONNX opset %s was asked for; the exporter wrote opset %s", opset, actual)
    props = {p.key: p.value for p in proto.metadata_props if p.key not in (ONNX_META, ONNX_COHORT)}
    props[ONNX_META] = json.dumps(exported_metadata(model, "onnx", opset=actual))
    cohort = _cohort_bytes(model.cohort)
    if cohort is not None:
        props[ONNX_COHORT] = base64.b64encode(cohort).decode("ascii")
    onnx.helper.set_model_props(proto, props)
    if proto.ByteSize() >= 2**31:
        raise ExportError(f"ONNX export of {model.source}: the model is over 2 GB, more than one ONNX file holds")
    onnx.save_model(proto, str(path))


def _translations() -> dict | None:
    """ONNX translations that replace onnxscript's: Python's ``//`` on symbolic sizes with floor semantics.

    onnxscript translates ``operator.floordiv`` on sizes to ONNX ``Div``, which truncates: right for positive
    operands only. Ceiling division written ``-(-n // k)`` (CAM++'s segment count) then gives wrong shapes for
    every length that is not a multiple of ``k``. This floors as Python does (the formula of torch's refs)."""
    try:
        from onnxscript import BOOL, INT64
        from onnxscript import opset18 as op
    except ImportError:  # an onnxscript that moved these: export with its own translations
        return None

    def floordiv(self, other):
        inexact = op.Cast(op.Mod(self, other), to=BOOL.dtype)
        offset = op.And(op.Equal(op.Less(self, 0), op.Greater(other, 0)), inexact)
        return op.Sub(op.Div(self, other), op.Cast(offset, to=INT64.dtype))

    return {operator.floordiv: floordiv}


# ---- verification ------------------------------------------------------------------------------------------
def compare(model: SpeakerModel, path: str | Path, seed: int = 0) -> tuple[float, list[tuple[int, int]]]:
    """The largest absolute difference between the embeddings of the exported file at ``path`` and those of
    ``model`` (loaded from a run directory) on random waveforms: batches of several lengths, none the length
    the export was traced with. Returns ``(max difference, [(batch, samples), ...] compared)``. Also checks
    that the file's metadata and cohort are the model's (an ExportError otherwise)."""
    embedder = _embedder(model)
    loaded = load_exported(path, "cpu")
    if (loaded.sample_rate, loaded.embed_dim) != (model.sample_rate, model.embed_dim):
        raise ExportError(
            f"{path}: its metadata says {loaded.sample_rate} Hz, {loaded.embed_dim} dimensions; the"
            f" model has {model.sample_rate} Hz, {model.embed_dim}"
        )
    if loaded.thresholds != model.thresholds:
        raise ExportError(f"{path}: its thresholds {loaded.thresholds} are not the model's {model.thresholds}")
    if (loaded.cohort is None) != (model.cohort is None) or (
        model.cohort is not None and not torch.equal(loaded.cohort, model.cohort)
    ):
        raise ExportError(f"{path}: its cohort is not the model's")
    rate = model.sample_rate
    shapes = [(1, int(0.83 * rate) + 1), (3, int(1.71 * rate) + 7), (2, int(4.3 * rate) + 3)]
    gen = torch.Generator().manual_seed(seed)
    worst = 0.0
    for batch, samples in shapes:
        waves = _noise(batch, samples, gen)
        with torch.inference_mode():
            want = embedder(waves).float()
            try:
                got = loaded.net(waves).float().cpu()
            except Exception as exc:
                raise ExportError(
                    f"{path}: the exported model fails on a ({batch}, {samples}) batch, which the"
                    f" PyTorch model embeds: {short(exc)}"
                ) from exc
        if got.shape != want.shape:
            raise ExportError(
                f"{path}: a ({batch}, {samples}) batch gave embeddings shaped {tuple(got.shape)};"
                f" the model gives {tuple(want.shape)} (a length or batch size fixed at export?)"
            )
        worst = max(worst, float((got - want).abs().max()))
    return worst, shapes
