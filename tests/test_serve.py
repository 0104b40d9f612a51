"""``vvframe serve``: the HTTP verification service, in-process (make_server in a thread) and as the CLI."""
from __future__ import annotations

import csv
import io
import json
import logging
import selectors
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import vvframe
from vvframe.serve import RequestError, make_server, parse_multipart

MAX_BYTES = 400_000   # the test server's body limit: two of the corpus's files (<= 2.5 s at 16 kHz) fit
MAX_SECONDS = 3.0


# ---- helpers -------------------------------------------------------------------------------------------------
def multipart(parts: list[tuple[str | None, str | None, bytes]]) -> tuple[bytes, str]:
    """A multipart/form-data body of ``(name, filename, data)`` parts, and its Content-Type."""
    boundary = "test" + uuid.uuid4().hex
    out = io.BytesIO()
    for name, filename, data in parts:
        out.write(f"--{boundary}\r\n".encode())
        disposition = "form-data" + (f'; name="{name}"' if name is not None else "")
        disposition += f'; filename="{filename}"' if filename is not None else ""
        out.write(f"Content-Disposition: {disposition}\r\n".encode())
        if filename is not None:
            out.write(b"Content-Type: application/octet-stream\r\n")
        out.write(b"\r\n" + data + b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"


def request(base: str, path: str, parts=None, *, method: str | None = None, body: bytes | None = None,
            content_type: str | None = None) -> tuple[int, dict, dict]:
    """``(status, JSON answer, headers)``."""
    if parts is not None:
        body, content_type = multipart(parts)
    headers = {"Content-Type": content_type} if content_type else {}
    req = urllib.request.Request(base + path, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=60) as answer:
            return answer.status, json.loads(answer.read()), dict(answer.headers)
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read()), dict(exc.headers)


def wav_bytes(wave: np.ndarray, rate: int = 16000, fmt: str = "WAV") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, wave, rate, format=fmt)
    return buf.getvalue()


def decisions(trained_run) -> list[dict[str, str]]:
    with open(trained_run["run"] / "test" / "decisions.csv", newline="") as f:
        return list(csv.DictReader(f))


def pair(trained_run, row) -> list[tuple[str, str, bytes]]:
    audio = trained_run["audio"]
    return [("a", Path(row["enroll"]).name, (audio / row["enroll"]).read_bytes()),
            ("b", Path(row["test"]).name, (audio / row["test"]).read_bytes())]


# ---- fixtures ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model(trained_run):
    return vvframe.load(trained_run["run"], device="cpu")


def _start(model, **kwargs):
    server = make_server(model, "127.0.0.1", 0, **kwargs)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    return server, thread


@pytest.fixture(scope="module")
def base(model):
    server, thread = _start(model, max_bytes=MAX_BYTES, max_seconds=MAX_SECONDS)
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(5)


# ---- answers -------------------------------------------------------------------------------------------------
def test_health(base, model, trained_run):
    status, answer, _ = request(base, "/health")
    assert status == 200
    assert answer["status"] == "ok"
    assert answer["model"] == str(trained_run["run"])
    assert answer["sample_rate"] == model.sample_rate == 16000
    assert answer["embed_dim"] == model.embed_dim
    assert answer["thresholds"] == pytest.approx(model.thresholds) and "eer" in answer["thresholds"]


def test_verify_matches_the_test_stage(base, model, trained_run):
    rows = decisions(trained_run)
    chosen = [r for r in rows if r["decision"] == "1"][:3] + [r for r in rows if r["decision"] == "0"][:3]
    assert len(chosen) >= 4
    for row in chosen:
        status, answer, _ = request(base, "/verify", pair(trained_run, row))
        assert status == 200, answer
        assert answer["score"] == pytest.approx(float(row["score"]), abs=1e-4)
        assert answer["accepted"] is (row["decision"] == "1")
        assert answer["threshold"] == "eer"
        assert answer["threshold_value"] == pytest.approx(model.thresholds["eer"])
        assert answer["normalized"] is True


def test_verify_threshold_by_name_or_number(base, model, trained_run):
    row = decisions(trained_run)[0]
    score = float(row["score"])
    name = next(n for n in model.thresholds if n.startswith("mindcf@"))
    status, answer, _ = request(base, f"/verify?threshold={name}", pair(trained_run, row))
    assert status == 200 and answer["threshold"] == name
    assert answer["threshold_value"] == pytest.approx(model.thresholds[name])
    assert answer["accepted"] is (answer["score"] >= model.thresholds[name])
    for value, accepted in ((score - 0.5, True), (score + 0.5, False)):
        status, answer, _ = request(base, f"/verify?threshold={value}", pair(trained_run, row))
        assert status == 200 and answer["accepted"] is accepted and answer["threshold_value"] == pytest.approx(value)
    # the threshold as a form field, as `curl -F threshold=...` sends it
    status, answer, _ = request(base, "/verify", pair(trained_run, row) + [("threshold", None, name.encode())])
    assert status == 200 and answer["threshold"] == name


def test_verify_takes_any_two_parts(base, trained_run):
    row = decisions(trained_run)[0]
    (_, fa, a), (_, fb, b) = pair(trained_run, row)
    expected = request(base, "/verify", [("a", fa, a), ("b", fb, b)])[1]["score"]
    assert request(base, "/verify", [("b", fb, b), ("a", fa, a)])[1]["score"] == pytest.approx(expected, abs=1e-6)
    unnamed = request(base, "/verify", [("first", fa, a), ("second", fb, b)])[1]
    assert unnamed["score"] == pytest.approx(expected, abs=1e-6)


def test_embed(base, model, trained_run):
    file = trained_run["audio"] / decisions(trained_run)[0]["enroll"]
    status, answer, _ = request(base, "/embed", [("audio", file.name, file.read_bytes())])
    assert status == 200, answer
    assert answer["dim"] == model.embed_dim == len(answer["embedding"])
    assert answer["sample_rate"] == model.sample_rate
    np.testing.assert_allclose(answer["embedding"], model.embed(file).numpy(), atol=1e-5)
    assert np.linalg.norm(answer["embedding"]) == pytest.approx(1.0, abs=1e-4)
    # another rate and two channels: mixed to mono and resampled like the Python API does it
    wave, rate = sf.read(str(file), dtype="float32")
    stereo = np.stack([wave[::2], 0.5 * wave[::2]], axis=1)
    status, answer, _ = request(base, "/embed", [("audio", "x.flac", wav_bytes(stereo, rate // 2, "FLAC"))])
    assert status == 200, answer
    expected = model.embed(stereo.mean(axis=1), sample_rate=rate // 2).numpy()
    np.testing.assert_allclose(answer["embedding"], expected, atol=1e-4)


def test_concurrent_requests_get_their_own_answers(base, trained_run):
    rows = decisions(trained_run)[:5]
    audio = trained_run["audio"]
    files = sorted({r["enroll"] for r in rows} | {r["test"] for r in rows})[:5]
    jobs = [("/verify", pair(trained_run, r)) for r in rows]
    jobs += [("/embed", [("audio", Path(f).name, (audio / f).read_bytes())]) for f in files]
    expected = [request(base, path, parts) for path, parts in jobs]  # one at a time first
    assert all(status == 200 for status, _, _ in expected)
    order = [i % len(jobs) for i in range(50)]

    def call(i):
        path, parts = jobs[i]
        return i, request(base, path, parts)

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(call, order))
    assert len(answers) == 50
    for i, (status, answer, _) in answers:
        assert status == 200, answer
        want = expected[i][1]
        if "score" in want:
            assert answer["score"] == pytest.approx(want["score"], abs=1e-5)
            assert answer["accepted"] is want["accepted"]
        else:
            np.testing.assert_allclose(answer["embedding"], want["embedding"], atol=1e-5)


# ---- refusals ------------------------------------------------------------------------------------------------
def test_refusals(base, model, trained_run):
    row = decisions(trained_run)[0]
    good = pair(trained_run, row)
    noise = (np.random.default_rng(0).standard_normal(16000) * 0.1).astype(np.float32)

    def refused(path, parts=None, status=400, **kwargs):
        got, answer, headers = request(base, path, parts, **kwargs)
        assert got == status, answer
        assert isinstance(answer.get("error"), str) and answer["error"]
        return answer["error"], headers

    error, _ = refused("/embed", [("audio", "big.wav", b"\0" * (MAX_BYTES + 1000))], status=413)
    assert "--max-bytes" in error and str(MAX_BYTES) in error
    error, _ = refused("/verify", [good[0], ("b", "notes.txt", b"these are not the samples you are looking for")])
    assert "'b' (notes.txt)" in error and "decode" in error
    error, _ = refused("/verify", [good[0]])
    assert "missing" in error and "'b'" in error
    error, _ = refused("/verify", [good[0], ("b", "quiet.wav", wav_bytes(np.zeros(16000, np.float32)))])
    assert "'b' (quiet.wav)" in error and "silent" in error
    error, _ = refused("/embed", [("audio", "long.wav", wav_bytes(np.tile(noise, 4)))])
    assert "--max-seconds" in error
    error, _ = refused("/embed", [("audio", "tiny.wav", wav_bytes(noise[:100]))])
    assert "'audio' (tiny.wav)" in error
    error, _ = refused("/embed", [("audio", "empty.wav", b"")])
    assert "empty" in error
    error, _ = refused("/embed", [("audio", "a.wav", good[0][2]), ("audio2", "b.wav", good[1][2])])
    assert "expected 1" in error
    error, _ = refused("/embed", method="POST", body=good[0][2], content_type="audio/wav")
    assert "multipart/form-data" in error
    error, _ = refused("/embed", method="POST", body=b"--x\r\n\r\nno end",
                       content_type="multipart/form-data; boundary=x")
    assert "closing boundary" in error
    error, _ = refused("/verify?threshold=bogus", good)
    assert "bogus" in error and all(name in error for name in model.thresholds)
    error, _ = refused("/verify?treshold=eer", good)
    assert "treshold" in error
    error, _ = refused("/nowhere", status=404)
    assert "/nowhere" in error
    error, _ = refused("/verify", status=405)
    error, headers = refused("/health", method="POST", body=b"x", content_type="text/plain", status=405)
    assert headers.get("Allow") == "GET, HEAD"
    assert request(base, "/health")[0] == 200  # still serving
    assert request(base, "/verify", good)[0] == 200


def test_model_failure_is_500_and_logged(model, caplog):
    class Broken:
        def __init__(self, inner):
            self.inner = inner

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def embed(self, x, sample_rate=None):
            raise RuntimeError("the network fell over")

    server, thread = _start(Broken(model))
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        noise = (np.random.default_rng(1).standard_normal(16000) * 0.1).astype(np.float32)
        with caplog.at_level(logging.INFO, logger="vvframe.serve"):
            status, answer, _ = request(base, "/embed", [("audio", "x.wav", wav_bytes(noise))])
        assert status == 500 and "the network fell over" in answer["error"]
        assert any(r.exc_info and "fell over" in str(r.exc_info[1]) for r in caplog.records)
        assert any("POST /embed 500" in r.getMessage() for r in caplog.records)
        assert request(base, "/health")[0] == 200
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_multipart_parser_keeps_binary_data_exact():
    data = bytes(range(256)) * 3 + b"\r\n--almost\r\n\r\n--" + bytes(range(255, -1, -1))
    body, ctype = multipart([("a", "x.bin", data), ("b", None, b""), (None, None, b"plain")])
    parts = parse_multipart(b"preamble\r\n" + body + b"epilogue", ctype.split("boundary=")[1])
    assert [(p.name, p.filename, p.data) for p in parts] == [("a", "x.bin", data), ("b", None, b""),
                                                             (None, None, b"plain")]
    with pytest.raises(RequestError, match="boundary"):
        parse_multipart(body, "other")


# ---- the command ---------------------------------------------------------------------------------------------
def test_cli_serves_until_interrupted(trained_run, tmp_path):
    script = Path(sys.executable).parent / "vvframe"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "vvframe"]
    with open(tmp_path / "stderr.txt", "w+") as err:
        proc = subprocess.Popen([*command, "serve", str(trained_run["run"]), "--port", "0", "--device", "cpu"],
                                stdout=subprocess.PIPE, stderr=err, text=True)
        try:
            line = ""
            with selectors.DefaultSelector() as sel:
                sel.register(proc.stdout, selectors.EVENT_READ)
                deadline = time.monotonic() + 120
                while not line and time.monotonic() < deadline and proc.poll() is None:
                    if sel.select(timeout=1):
                        line = proc.stdout.readline()
            started = f"serving {trained_run['run']} on http://127.0.0.1:"
            assert line.startswith(started), (line, err.seek(0) or err.read())
            assert "(POST /verify, POST /embed, GET /health)" in line
            url = line.split(" on ", 1)[1].split()[0]
            status, answer, _ = request(url, "/health")
            assert status == 200 and answer["status"] == "ok" and answer["model"] == str(trained_run["run"])
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=15) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()
        err.seek(0)
        log = err.read()
    assert "GET /health 200" in log and "Traceback" not in log
