"""``vvframe export`` and loading its files: TorchScript and ONNX give the run's embeddings, scores and decisions."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import shutil
import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import vvframe
from vvframe import cli
from vvframe.inference import export as ex
from vvframe.inference.api import ModelError

RATE = 16000
TOL = 1e-4
FORMATS = ["torchscript", "onnx"]


def _need_onnx() -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")


def _run_cli(*args: str) -> tuple[int, str, str]:
    """``vvframe ARGS`` in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main(list(args))
        except SystemExit as exc:  # argparse
            code = exc.code
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One intra-op thread while these tests run: on a small shared CPU, two threads made these small models'
    forward passes about ten times slower (threads waiting for each other), which is all these tests measure."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def reference(trained_run):
    return vvframe.load(trained_run["run"], device="cpu")


@pytest.fixture(scope="module")
def exports(trained_run, tmp_path_factory):
    """``get(fmt) -> (path, what vvframe export printed, loaded SpeakerModel)``, each exported once by the CLI."""
    folder = tmp_path_factory.mktemp("exported")
    made: dict[str, tuple[Path, str, vvframe.inference.api.SpeakerModel]] = {}

    def get(fmt: str):
        if fmt == "onnx":
            _need_onnx()
        if fmt not in made:
            out = folder / ("model.onnx" if fmt == "onnx" else "model.pt")
            force = []
            if fmt == "torchscript":  # --force over a file that is there: it is replaced (tested below)
                out.write_text("replace me")
                force = ["--force"]
            code, text, err = _run_cli("export", str(trained_run["run"]), "--format", fmt, "--out", str(out), *force)
            assert code == 0, err
            made[fmt] = (out, text, vvframe.load(out, device="cpu"))
        return made[fmt]

    return get


@pytest.fixture(params=FORMATS)
def fmt(request):
    return request.param


def _speechy(seconds: float, seed: int) -> np.ndarray:
    """Synthetic audio: a few harmonics with a wobbling pitch, plus noise, at RATE."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    pitch = 110 + 40 * seed % 90 + 15 * np.sin(2 * np.pi * 3 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / RATE
    wave = sum(np.sin(k * phase) / k for k in range(1, 6)) * (0.5 + 0.5 * np.sin(2 * np.pi * 2.5 * t) ** 2)
    return (0.2 * wave + 0.02 * rng.standard_normal(len(t))).astype(np.float32)


# ---- embeddings -----------------------------------------------------------------------------------------------
def test_embeddings_match_the_pytorch_model(fmt, exports, reference):
    path, _, model = exports(fmt)
    assert model.source == str(path)
    for seconds, seed in ((1.0, 1), (3.0, 2), (10.0, 3)):
        x = _speechy(seconds, seed)
        got, want = model.embed(x), reference.embed(x)
        assert got.shape == want.shape == (reference.embed_dim,)
        assert (got - want).abs().max() <= TOL, (fmt, seconds)
        assert abs(float(got.norm()) - 1.0) < 1e-5


def test_the_graph_takes_any_batch_and_length(fmt, exports, reference):
    _, _, model = exports(fmt)
    waves = torch.from_numpy(np.stack([_speechy(3.0, s) for s in (4, 5, 6)]))
    with torch.inference_mode():
        batched = model.net(waves)
        alone = torch.cat([model.net(w[None]) for w in waves])
        want = reference.net.embedder(waves)  # the PyTorch graph: mean and L2 norm inside
        odd = model.net(waves[:2, : RATE + 123])  # another batch size and an odd length
        odd_want = reference.net.embedder(waves[:2, : RATE + 123])
    assert batched.shape == (3, reference.embed_dim) and odd.shape == (2, reference.embed_dim)
    assert (batched - alone).abs().max() <= TOL
    assert (batched - want).abs().max() <= TOL
    assert (odd - odd_want).abs().max() <= TOL
    assert torch.allclose(batched.norm(dim=1), torch.ones(3), atol=1e-5)  # unit length out of the graph


def test_embed_many_of_mixed_lengths_equals_one_by_one(fmt, exports, reference):
    _, _, model = exports(fmt)
    items = [_speechy(0.8, 7), _speechy(1.5, 8), _speechy(1.1, 9), _speechy(1.5, 10)]  # two of equal length
    many = model.embed_many(items)
    ones = torch.stack([model.embed(x) for x in items])
    assert (many - ones).abs().max() <= TOL
    assert (many - reference.embed_many(items)).abs().max() <= TOL


# ---- scores and decisions ---------------------------------------------------------------------------------
def test_verify_reproduces_the_runs_decisions(fmt, exports, trained_run):
    _, _, model = exports(fmt)
    rows = list(csv.DictReader((trained_run["run"] / "test" / "decisions.csv").open(encoding="utf-8")))[:20]
    assert rows and model.normalizer is not None
    audio = trained_run["audio"]
    for row in rows:
        v = model.verify(audio / row["enroll"], audio / row["test"], "eer")
        assert v.normalized and v.threshold == "eer"
        assert abs(v.score - float(row["score"])) <= TOL, row  # AS-norm scores: the cohort travelled
        assert int(v.accepted) == int(row["decision"]), row


# ---- metadata -----------------------------------------------------------------------------------------------
def test_metadata_round_trip(fmt, exports, reference, tmp_path):
    path, text, model = exports(fmt)
    assert (model.sample_rate, model.embed_dim) == (reference.sample_rate, reference.embed_dim) == (RATE, 24)
    assert model.thresholds == reference.thresholds and "eer" in model.thresholds
    meta = model.meta
    assert meta["format"] == "vvframe-model" and meta["version"] == 1
    assert meta["crops"] == 0 and meta["embeddings"] == "normalized" and meta["mean_subtracted"] is True
    assert meta["normalizer"]["name"] == "asnorm" and meta["cohort"] is True
    assert meta["exported"]["format"] == fmt
    assert meta["tuned_on"] == reference.meta["tuned_on"] and meta["model"]["name"] == "ecapa_tdnn"
    assert torch.equal(model.cohort, reference.cohort.float())
    # the summary vvframe export printed
    assert f"wrote {path}" in text and "verified: max |difference|" in text
    assert "cohort: 5 embeddings for asnorm" in text and "thresholds: eer " in text
    # the format is told by content, not by the suffix
    renamed = tmp_path / "renamed.bin"
    shutil.copy(path, renamed)
    assert vvframe.load(renamed, device="cpu").thresholds == reference.thresholds


def test_torchscript_file_layout(exports):
    path, _, _ = exports("torchscript")
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        meta_name = next(n for n in names if n.endswith("/extra/vvframe.json"))
        meta = json.loads(zf.read(meta_name))
        cohort = np.load(io.BytesIO(zf.read(meta_name.replace("vvframe.json", "cohort.npy"))), allow_pickle=False)
    assert meta["sample_rate"] == RATE and cohort.shape == (5, 24) and cohort.dtype == np.float32


def test_onnx_file_layout(exports):
    path, text, model = exports("onnx")
    import onnx

    proto = onnx.load(str(path))
    props = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(props["vvframe"])["embed_dim"] == 24 and props["vvframe.cohort"]
    assert [i.name for i in proto.graph.input] == ["waves"] and [o.name for o in proto.graph.output] == ["embeddings"]
    dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", "samples"]
    assert [d.dim_param or d.dim_value for d in proto.graph.output[0].type.tensor_type.shape.dim] == ["batch", 24]
    assert "ONNX (opset" in text and model.net.providers == ["CPUExecutionProvider"]


# ---- files that are not exported models ----------------------------------------------------------------------
def test_bad_files_are_model_errors(trained_run, tmp_path):
    checkpoint = trained_run["run"] / "checkpoints" / "last.pt"
    with pytest.raises(ModelError, match="checkpoint.*weights only.*run directory") as err:
        vvframe.load(checkpoint, device="cpu")
    assert str(checkpoint) in str(err.value)

    noise = tmp_path / "noise.onnx"
    noise.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    text = tmp_path / "notes.pt"
    text.write_text("these are not the weights you are looking for\n" * 20)
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    for bad in (noise, text, empty):
        with pytest.raises(ModelError, match="not a vvframe model file.*TorchScript or ONNX") as err:
            vvframe.load(bad, device="cpu")
        assert str(bad) in str(err.value)

    plain_zip = tmp_path / "archive.pt"
    with zipfile.ZipFile(plain_zip, "w") as zf:
        zf.writestr("stuff/readme.txt", "hello")
    with pytest.raises(ModelError, match="a zip archive, not a model from `vvframe export`"):
        vvframe.load(plain_zip, device="cpu")

    with pytest.raises(ModelError, match="no such run directory or model file"):
        vvframe.load(tmp_path / "missing.onnx", device="cpu")

    foreign = tmp_path / "foreign.pt"  # TorchScript, but not from vvframe export
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated
        torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(foreign))
    with pytest.raises(ModelError, match="a TorchScript file without vvframe metadata"):
        vvframe.load(foreign, device="cpu")


def test_a_damaged_export_is_a_model_error(exports, tmp_path):
    path, _, _ = exports("torchscript")
    cut = tmp_path / "cut.pt"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ModelError, match=str(cut)):
        vvframe.load(cut, device="cpu")


def test_onnx_without_vvframe_metadata(tmp_path):
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    file = tmp_path / "other.onnx"
    file.write_bytes(helper.make_model(graph).SerializeToString())
    with pytest.raises(ModelError, match="ONNX model without vvframe metadata"):
        vvframe.load(file, device="cpu")


def test_onnx_without_onnxruntime_says_what_to_install(exports, monkeypatch):
    path, _, _ = exports("onnx")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime -> ImportError
    with pytest.raises(ModelError, match=r"onnxruntime: pip install 'vvframe\[onnx\]'"):
        vvframe.load(path, device="cpu")


def test_onnx_export_without_onnxscript_says_what_to_install(reference, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxscript", None)
    with pytest.raises(ex.MissingPackage, match=r"onnxscript.*pip install 'vvframe\[onnx\]'"):
        ex.export(reference, "onnx", tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


def test_an_exported_model_cannot_be_exported_again(exports, tmp_path):
    _, _, model = exports("torchscript")
    with pytest.raises(ModelError, match="only a model loaded from a run directory"):
        ex.export(model, "torchscript", tmp_path / "again.pt")
    assert not (tmp_path / "again.pt").exists()


# ---- the command ----------------------------------------------------------------------------------------------
def test_export_refuses_to_overwrite(trained_run, tmp_path):
    out = tmp_path / "taken.pt"
    out.write_text("keep me")
    code, _, err = _run_cli("export", str(trained_run["run"]), "--format", "torchscript", "--out", str(out))
    assert code == 2 and "exists" in err and "--force" in err
    assert out.read_text() == "keep me"


def test_export_force_replaces_the_file(exports):
    path, text, model = exports("torchscript")  # written with --force over a text file
    assert f"wrote {path}" in text and "TorchScript" in text
    assert model.embed_dim == 24
    assert not [p.name for p in path.parent.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_a_failed_verification_writes_nothing(trained_run, exports, tmp_path, monkeypatch):
    source, _, _ = exports("torchscript")
    monkeypatch.setattr(ex, "export", lambda model, fmt, out, opset=None: shutil.copy(source, out))
    monkeypatch.setattr(ex, "compare", lambda model, path: (0.5, [(1, RATE)]))
    out = tmp_path / "model.pt"
    code, _, err = _run_cli("export", str(trained_run["run"]), "--format", "torchscript", "--out", str(out))
    assert code == 1 and "verification failed" in err and "0.5" in err
    assert list(tmp_path.iterdir()) == []


def test_export_argument_mistakes(trained_run, tmp_path):
    run = str(trained_run["run"])
    code, _, err = _run_cli("export", str(tmp_path / "nowhere"), "--format", "onnx", "--out", str(tmp_path / "m.onnx"))
    assert code == 2 and "no such run directory" in err
    code, _, err = _run_cli("export", run, "--format", "tflite", "--out", str(tmp_path / "m"))
    assert code == 2 and "invalid choice" in err
    code, _, err = _run_cli("export", run, "--format", "torchscript", "--out", str(tmp_path / "m.pt"), "--opset", "18")
    assert code == 2 and "--opset applies to --format onnx only" in err
    checkpoint = trained_run["run"] / "checkpoints" / "last.pt"
    code, _, err = _run_cli("export", str(checkpoint), "--format", "torchscript", "--out", str(tmp_path / "m.pt"))
    assert code == 2 and "export takes a run directory" in err
    assert list(tmp_path.iterdir()) == []


def test_console_script_exit_code(tmp_path):
    from conftest import vvframe_cli

    done = vvframe_cli("export", str(tmp_path / "nowhere"), "--format", "torchscript", "--out", str(tmp_path / "m.pt"))
    assert done.returncode == 2 and "no such run directory" in done.stderr and "Traceback" not in done.stderr
