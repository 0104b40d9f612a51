"""Reading the files ``vvframe export`` writes (:mod:`vvframe.inference.export`) back as a
:class:`~vvframe.inference.model.SpeakerModel`: :func:`load_exported` (what ``vvframe.load(FILE)`` does) and
:func:`read_metadata`.

The formats are told apart by content, never by suffix, and nothing is unpickled:

* TorchScript: a zip archive (``zipfile.is_zipfile``) with the extra files ``vvframe.json`` (the metadata) and
  ``cohort.npy``; the graph is loaded with ``torch.jit.load``.
* ONNX: a ModelProto whose ``metadata_props`` hold ``vvframe`` (the JSON) and ``vvframe.cohort`` (base64 of the
  ``.npy`` bytes), read with onnxruntime (``InferenceSession(...).get_modelmeta().custom_metadata_map``), which
  also runs the graph. Anything that is neither is a ModelError naming the file.

The cohort is read with ``np.load(allow_pickle=False)``; the one component built from the metadata, the score
normalizer, must be an installed entry point unless the file is trusted.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from vvframe.core import registry
from vvframe.core.errors import VvframeError, short
from vvframe.inference.card import ModelError, refuse_references
from vvframe.inference.model import FORMAT, FORMAT_VERSION, SpeakerModel

log = logging.getLogger(__name__)

META_FILE = "vvframe.json"  # TorchScript extra files
COHORT_FILE = "cohort.npy"
ONNX_META = "vvframe"  # ONNX metadata_props keys
ONNX_COHORT = "vvframe.cohort"
INPUT, OUTPUT = "waves", "embeddings"  # the graph's input and output names
INSTALL_HINT = "pip install 'vvframe[onnx]'"


def load_exported(path: str | Path, device: str | torch.device = "cpu", *, trust_recipe: bool = False) -> SpeakerModel:
    """A :class:`~vvframe.inference.model.SpeakerModel` from a file written by ``vvframe export``, told apart by
    content: TorchScript (a zip archive with ``extra/vvframe.json``) or ONNX (a ModelProto with ``vvframe``
    metadata). Anything else, a training checkpoint included, is a ModelError naming the file. The one component built
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
    if zipfile.is_zipfile(path):
        meta_text, cohort_bytes = _zip_contents(path)
        return "torchscript", _parse_meta(path, meta_text), cohort_bytes
    if head.startswith(b"PK\x03\x04"):  # a zip's first entry but no end of archive: cut short or damaged
        raise ModelError(f"{path}: a damaged zip archive (it has no end; cut short?): not a readable TorchScript model")
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        raise ModelError(
            f"{path}: a pickled PyTorch file (a checkpoint?), which holds weights only: pass the run"
            " directory instead, or export it with `vvframe export RUN --format onnx|torchscript`"
        )
    fields = _onnx_metadata(path, empty=not head)
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


def _onnx_metadata(path: Path, empty: bool) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file, read by onnxruntime; a ModelError when the file is no ONNX model."""
    not_model = (
        f"{path}: not a vvframe model file: expected a TorchScript or ONNX file from `vvframe export` (or give a"
        " run directory)"
    )
    if empty:
        raise ModelError(f"{not_model}; it is empty")
    try:
        import onnxruntime
    except ImportError:
        raise ModelError(
            f"{path}: not a TorchScript file; telling whether it is an ONNX model, and running one, needs"
            f" onnxruntime: {INSTALL_HINT}"
        ) from None
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL  # metadata only
    try:
        session = onnxruntime.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own kinds for a file it cannot read
        raise ModelError(f"{not_model}; onnxruntime cannot read it as ONNX ({short(exc)})") from None
    return dict(session.get_modelmeta().custom_metadata_map)


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
        raise ModelError(f"{path}: the TorchScript graph cannot be loaded: {short(exc)}") from exc


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
            raise ModelError(f"{path}: its cohort is not a readable .npy array ({short(exc)})") from None
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
            raise ModelError(f"{path}: onnxruntime cannot load it: {short(exc)}") from exc
        self.input = self.session.get_inputs()[0].name
        self.output = self.session.get_outputs()[0].name
        self.providers = self.session.get_providers()

    def forward(self, waves: Tensor) -> Tensor:
        x = waves.detach().to(device="cpu", dtype=torch.float32).contiguous().numpy()
        (out,) = self.session.run([self.output], {self.input: x})
        return torch.from_numpy(out).to(waves.device)

    def extra_repr(self) -> str:
        return f"providers={self.providers}"
