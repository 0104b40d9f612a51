"""``vvframe export``: a trained run as one file (TorchScript or ONNX) that ``vvframe.load`` reads back.

The file holds one graph: frontend, network, mean subtraction and L2 normalisation. Its input is ``waves``,
``(batch, samples)`` float32 at the run's sample rate; its output ``embeddings``, ``(batch, embed_dim)``,
mean-subtracted and unit length. Both axes are dynamic. Beside the graph it carries the metadata of
:meth:`vvframe.inference.api.SpeakerModel.metadata` (sample rate, tuned thresholds, the score normalizer's recipe entry, ...)
and the cohort embeddings as ``.npy`` bytes, so AS-norm scores and tuned thresholds work as with the run:

* TorchScript (``torch.jit.trace``): a zip archive with the extra files ``vvframe.json`` and ``cohort.npy``.
  Tracing records the graph the example input takes; sizes derived from the input's shape stay symbolic for
  the first-party frontends and models, and every export is checked on other lengths before it is kept.
* ONNX (``torch.onnx.export(dynamo=True)``, which needs ``onnx`` and ``onnxscript``; the TorchScript-based
  exporter cannot export the framing of the fbank frontend with a dynamic length): the ModelProto's
  ``metadata_props`` hold ``vvframe`` (the JSON) and ``vvframe.cohort`` (base64 of the ``.npy`` bytes). Loading
  needs ``onnxruntime``.

:func:`load_exported` tells the formats apart by content, never by suffix, and unpickles nothing: zip entries
and protobuf fields are read as data, the cohort with ``np.load(allow_pickle=False)``, TorchScript code with
``torch.jit.load``.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import copy
import importlib
import io
import json
import logging
import operator
import sys
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from torch import Tensor, nn

from vvframe.core import registry
from vvframe.core.atomic import atomic_path
from vvframe.core.errors import VvframeError, refuse_existing
from vvframe.inference.api import FORMAT, FORMAT_VERSION, ModelError, SpeakerModel, load, refuse_references
from vvframe.scoring.embed import Embedder

log = logging.getLogger(__name__)

FORMATS = ("onnx", "torchscript")
META_FILE = "vvframe.json"  # TorchScript extra files
COHORT_FILE = "cohort.npy"
ONNX_META = "vvframe"  # ONNX metadata_props keys
ONNX_COHORT = "vvframe.cohort"
INPUT, OUTPUT = "waves", "embeddings"
TOLERANCE = 1e-4  # the largest difference from the PyTorch model an export may show
INSTALL_HINT = "pip install 'vvframe[onnx]'"


class ExportError(VvframeError, RuntimeError):
    """A model that could not be exported, or an export that does not reproduce the PyTorch model."""


class MissingPackage(VvframeError, ImportError):
    """An optional package that the ONNX format needs (``pip install 'vvframe[onnx]'``)."""


# ---- exporting ---------------------------------------------------------------------------------------------
def _embedder(model: SpeakerModel) -> Embedder:
    """A CPU, eval-mode copy of the :class:`~vvframe.scoring.embed.Embedder` inside a model loaded from a run directory."""
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
    """Write ``model`` (a :class:`~vvframe.inference.api.SpeakerModel` loaded from a run directory) to ``out`` as ``fmt``
    (``onnx`` or ``torchscript``), atomically; returns ``out``. ``opset``: the ONNX opset (default: the
    exporter's). The file is not verified here; :func:`compare` does that (``vvframe export`` always does)."""
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
        raise ExportError(f"ONNX export of {model.source} failed: {type(exc).__name__}: {_first_line(exc)}") from exc
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


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# ---- loading -------------------------------------------------------------------------------------------------
def load_exported(path: str | Path, device: str | torch.device = "cpu", *, trust_recipe: bool = False) -> SpeakerModel:
    """A :class:`~vvframe.inference.api.SpeakerModel` from a file written by ``vvframe export``, told apart by content:
    TorchScript (a zip archive with ``extra/vvframe.json``) or ONNX (a ModelProto with ``vvframe`` metadata).
    Anything else, a training checkpoint included, is a ModelError naming the file. The one component built
    from the metadata, the score normalizer, must be an installed entry point unless ``trust_recipe``."""
    path = Path(path)
    fmt, meta, cohort_bytes = _contents(path)
    refuse_references({"normalizer": meta.get("normalizer")}, path, trust_recipe)
    if fmt == "torchscript":
        net, device = _torchscript_net(path, meta, torch.device(device))
    else:
        net, device = _onnx_net(path, torch.device(device))
    return _speaker_model(path, net, meta, cohort_bytes, device, trust_recipe)


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata of a file from ``vvframe export`` without loading its graph (a ModelError if it has none)."""
    return _contents(Path(path))[1]


def _contents(path: Path) -> tuple[str, dict[str, Any], bytes | None]:
    """``(format, metadata, cohort .npy bytes or None)`` of a file from ``vvframe export``, read as data."""
    if not path.exists():
        raise ModelError(f"{path}: no such run directory or model file")
    if path.is_dir():
        raise ModelError(f"{path}: a directory, not an exported model file (load a run directory with vvframe.load)")
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as exc:
        raise ModelError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        meta_text, cohort_bytes = _zip_contents(path)
        return "torchscript", _parse_meta(path, meta_text), cohort_bytes
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        raise ModelError(
            f"{path}: a pickled PyTorch file (a checkpoint?), which holds weights only: pass the run"
            " directory instead, or export it with `vvframe export RUN --format onnx|torchscript`"
        )
    fields = _onnx_fields(path)
    if fields is None:
        raise ModelError(
            f"{path}: not a vvframe model file: expected a TorchScript or ONNX file from"
            " `vvframe export` (or give a run directory)"
        )
    if ONNX_META not in fields:
        raise ModelError(
            f"{path}: an ONNX model without vvframe metadata (no '{ONNX_META}' in its metadata_props):"
            " not a model from `vvframe export`"
        )
    meta = _parse_meta(path, fields[ONNX_META].encode("utf-8"))
    cohort_bytes = None
    if ONNX_COHORT in fields:
        try:
            cohort_bytes = base64.b64decode(fields[ONNX_COHORT], validate=True)
        except ValueError:
            raise ModelError(f"{path}: its '{ONNX_COHORT}' metadata is not base64") from None
    return "onnx", meta, cohort_bytes


def _zip_contents(path: Path) -> tuple[bytes, bytes | None]:
    """The metadata and the cohort (None when it has none) in a TorchScript file's extra files."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            meta_name = _member(names, f"extra/{META_FILE}")
            if meta_name is None:
                raise _not_exported(path, names)
            cohort_name = _member(names, f"extra/{COHORT_FILE}")
            return zf.read(meta_name), (zf.read(cohort_name) if cohort_name else None)
    except zipfile.BadZipFile as exc:
        raise ModelError(f"{path}: a damaged zip archive ({exc}): not a readable TorchScript model") from None


def _not_exported(path: Path, names: list[str]) -> ModelError:
    """What a zip archive without vvframe metadata is: a checkpoint, a foreign TorchScript file or another zip."""
    scripted = _member(names, "constants.pkl") is not None
    if not scripted and _member(names, "data.pkl") is not None and not any("/code/" in n for n in names):
        return ModelError(
            f"{path}: a PyTorch checkpoint, which holds weights only: pass the run directory instead"
            " (vvframe.load(RUN_DIR, checkpoint=FILE) for other weights), or export the run with"
            " `vvframe export RUN --format onnx|torchscript`"
        )
    what = "a TorchScript file without vvframe metadata" if scripted else "a zip archive"
    return ModelError(f"{path}: {what}, not a model from `vvframe export` (expected extra/{META_FILE} in it)")


def _member(names: list[str], suffix: str) -> str | None:
    """The entry ``<archive>/<suffix>`` of a torch zip (one folder, of any name, above everything)."""
    for name in names:
        parts = name.split("/", 1)
        if len(parts) == 2 and parts[1] == suffix:
            return name
    return None


def _torchscript_net(path: Path, meta: dict[str, Any], device: torch.device) -> tuple[nn.Module, torch.device]:
    if device.type != "cpu" and (meta.get("exported") or {}).get("cpu_only"):
        log.warning(
            "%s: this TorchScript graph runs on the CPU only (it was traced with CPU constants in it);"
            " loading it on the CPU instead of %s (export as ONNX to run elsewhere)",
            path,
            device,
        )
        device = torch.device("cpu")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load is deprecated in favour of torch.export
            return torch.jit.load(str(path), map_location=device), device
    except Exception as exc:
        raise ModelError(f"{path}: the TorchScript graph cannot be loaded: {_first_line(exc)}") from exc


def _onnx_net(path: Path, device: torch.device) -> tuple[nn.Module, torch.device]:
    try:
        import onnxruntime
    except ImportError:
        raise ModelError(f"{path}: an ONNX model; running it needs onnxruntime: {INSTALL_HINT}") from None
    net = OnnxNet(path, device, onnxruntime)
    if "CUDAExecutionProvider" not in net.providers:
        device = torch.device("cpu")  # waveforms stay where onnxruntime runs
    return net, device


def _parse_meta(path: Path, text: bytes) -> dict[str, Any]:
    try:
        meta = json.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ModelError(f"{path}: its vvframe metadata is not JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelError(f"{path}: its metadata is not vvframe's (format {FORMAT!r} expected)")
    if int(meta.get("version") or 0) > FORMAT_VERSION:
        raise ModelError(
            f"{path}: written by a newer vvframe ({meta.get('vvframe')}, format version"
            f" {meta.get('version')}); this one reads version {FORMAT_VERSION}"
        )
    for key in ("sample_rate", "embed_dim"):
        if not isinstance(meta.get(key), int) or meta[key] <= 0:
            raise ModelError(f"{path}: its metadata lacks a positive integer {key!r}")
    return meta


def _speaker_model(
    path: Path,
    net: nn.Module,
    meta: dict[str, Any],
    cohort_bytes: bytes | None,
    device: torch.device,
    trust_recipe: bool = False,
) -> SpeakerModel:
    cohort = None
    if cohort_bytes is not None:
        try:
            array = np.load(io.BytesIO(cohort_bytes), allow_pickle=False)
        except Exception as exc:  # noqa: BLE001 - numpy raises many kinds on a damaged array
            raise ModelError(f"{path}: its cohort is not a readable .npy array ({_first_line(exc)})") from None
        if array.ndim != 2 or array.shape[1] != meta["embed_dim"] or array.dtype.kind != "f":
            raise ModelError(
                f"{path}: its cohort is a {array.dtype} array shaped {array.shape}; expected"
                f" (C, {meta['embed_dim']}) floats"
            )
        cohort = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    normalizer = None
    if meta.get("normalizer") and cohort is not None:
        try:
            normalizer = registry.build("normalizers", meta["normalizer"], references=trust_recipe)
        except VvframeError as exc:
            raise ModelError(f"{path}: its score normalizer cannot be built: {exc}") from exc
    return SpeakerModel(net, meta, cohort=cohort, normalizer=normalizer, device=device, source=str(path))


class OnnxNet(nn.Module):
    """An ONNX Runtime session as a module: ``(B, T)`` float32 waveforms -> ``(B, D)`` embeddings on the
    input's device (computed on the CPU, or by the CUDA provider when ``device`` is CUDA and ORT has it)."""

    def __init__(self, path: str | Path, device: torch.device, onnxruntime):
        super().__init__()
        providers = ["CPUExecutionProvider"]
        if device.type == "cuda":
            if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
                providers.insert(0, ("CUDAExecutionProvider", {"device_id": device.index or 0}))
            else:
                log.warning(
                    "%s: this onnxruntime has no CUDA provider; running the ONNX model on the CPU"
                    " (pip install onnxruntime-gpu for CUDA)",
                    path,
                )
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3
        try:
            self.session = onnxruntime.InferenceSession(str(path), sess_options=options, providers=providers)
        except Exception as exc:
            raise ModelError(f"{path}: onnxruntime cannot load it: {_first_line(exc)}") from exc
        self.input = self.session.get_inputs()[0].name
        self.output = self.session.get_outputs()[0].name
        self.providers = self.session.get_providers()

    def forward(self, waves: Tensor) -> Tensor:
        x = waves.detach().to(device="cpu", dtype=torch.float32).contiguous().numpy()
        (out,) = self.session.run([self.output], {self.input: x})
        return torch.from_numpy(out).to(waves.device)

    def extra_repr(self) -> str:
        return f"providers={self.providers}"


# ONNX ModelProto fields as (number: wire type); a file must parse as a message with only these wire types for
# the known numbers and must hold ir_version and graph to count as ONNX. metadata_props (14) entries are
# StringStringEntryProto messages: key (1), value (2).
_ONNX_FIELDS = {1: 0, 2: 2, 3: 2, 4: 2, 5: 0, 6: 2, 7: 2, 8: 2, 14: 2, 20: 2, 25: 2}


def _onnx_fields(path: Path) -> dict[str, str] | None:
    """The ``metadata_props`` of an ONNX file as a dict, or None when the file is not an ONNX ModelProto.

    Reads the protobuf's top-level fields directly (skipping the graph), so telling ONNX from anything else needs
    neither the onnx package nor onnxruntime."""
    seen: set[int] = set()
    props: dict[str, str] = {}
    try:
        with open(path, "rb") as f:
            for number, wire, size in _fields(f, path.stat().st_size):
                if number == 0 or _ONNX_FIELDS.get(number, wire) != wire:
                    return None
                if number == 14:
                    key, value = _entry(f.read(size))
                    props[key] = value
                seen.add(number)
    except (EOFError, OSError, ValueError):
        return None
    return props if {1, 7} <= seen else None


def _fields(f: BinaryIO, end: int) -> Iterator[tuple[int, int, int]]:
    """The fields of the protobuf message from ``f``'s position to ``end``: ``(number, wire type, size)``, with a
    varint's value already read and any other value's ``size`` bytes next in ``f`` (skipped unless the caller
    reads them). An EOFError or ValueError where the bytes are no message."""
    while f.tell() < end:
        key = _varint(f)
        number, wire = key >> 3, key & 7
        if wire == 0:
            _varint(f)
            size = 0
        elif wire == 1 or wire == 5:
            size = 8 if wire == 1 else 4
        elif wire == 2:
            size = _varint(f)
        else:
            raise ValueError(f"wire type {wire}")
        start = f.tell()
        if start + size > end:
            raise ValueError("a field runs past the end")
        yield number, wire, size
        f.seek(start + size)


def _varint(f: BinaryIO) -> int:
    value = shift = 0
    while True:
        byte = f.read(1)
        if not byte:
            raise EOFError
        value |= (byte[0] & 0x7F) << shift
        if byte[0] < 0x80:
            return value
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _entry(data: bytes) -> tuple[str, str]:
    """A StringStringEntryProto's ``(key, value)``; a ValueError when it is not one."""
    f = io.BytesIO(data)
    found = {1: "", 2: ""}
    for number, wire, size in _fields(f, len(data)):
        if number not in found or wire != 2:
            raise ValueError("not a StringStringEntryProto")
        found[number] = f.read(size).decode("utf-8")
    return found[1], found[2]


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
                    f" PyTorch model embeds: {_first_line(exc)}"
                ) from exc
        if got.shape != want.shape:
            raise ExportError(
                f"{path}: a ({batch}, {samples}) batch gave embeddings shaped {tuple(got.shape)};"
                f" the model gives {tuple(want.shape)} (a length or batch size fixed at export?)"
            )
        worst = max(worst, float((got - want).abs().max()))
    return worst, shapes


# ---- the command -------------------------------------------------------------------------------------------
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
        choices=FORMATS,
        help="onnx (needs onnx and onnxscript to export,"
        " onnxruntime to load: pip install 'vvframe[onnx]') or torchscript",
    )
    parser.add_argument("--out", required=True, type=Path, metavar="FILE", help="the file to write")
    parser.add_argument("--checkpoint", metavar="FILE", help="other weights for the run (a checkpoint file)")
    parser.add_argument("--opset", type=int, metavar="N", help="ONNX opset (default: the exporter's choice)")
    parser.add_argument("--force", action="store_true", help="replace FILE if it exists")
    parser.add_argument(
        "--trust-recipe",
        action="store_true",
        help="allow the run's recipe to name Python objects (module:attr): only for runs you trust",
    )
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
            export(model, opts.format, tmp, opset=opts.opset)
            worst, shapes = compare(model, tmp)
            if not worst <= TOLERANCE:  # NaN fails too
                raise ExportError(
                    f"verification failed: the {opts.format} export differs from the PyTorch model by"
                    f" up to {worst:.3g} (more than {TOLERANCE:g}); {out} not written"
                )
            size = tmp.stat().st_size
    except ExportError as exc:
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
