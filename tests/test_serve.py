"""``vvframe serve``: the HTTP verification service, in-process (make_server in a thread) and as the CLI."""

from __future__ import annotations

import csv
import http.client
import io
import json
import logging
import select
import selectors
import signal
import socket
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
from vvframe.cli.serve import main
from vvframe.core.errors import BadValue
from vvframe.inference.serve import RequestError, make_server, parse_multipart

MAX_BYTES = 400_000  # the test server's body limit: two of the corpus's files (<= 2.5 s at 16 kHz) fit
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


def request(
    base: str,
    path: str,
    parts=None,
    *,
    method: str | None = None,
    body: bytes | None = None,
    content_type: str | None = None,
) -> tuple[int, dict, dict]:
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


def raw_request(port: int, data: bytes) -> tuple[int, dict, dict]:
    """Send ``data`` as it is on a new connection: ``(status, JSON answer, headers)`` of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(data)
        return read_answer(sock)


def read_answer(sock: socket.socket) -> tuple[int, dict, dict]:
    answer = http.client.HTTPResponse(sock)
    answer.begin()
    with answer:
        return answer.status, json.loads(answer.read()), dict(answer.headers)


def until(condition, what: str) -> None:
    """Wait for ``condition()`` (a hang guard, not a timing)."""
    deadline = time.monotonic() + 60
    while not condition():
        assert time.monotonic() < deadline, f"still waiting for {what}"
        time.sleep(0.01)


def wav_bytes(wave: np.ndarray, rate: int = 16000, fmt: str = "WAV") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, wave, rate, format=fmt)
    return buf.getvalue()


def decisions(trained_run) -> list[dict[str, str]]:
    with open(trained_run["run"] / "test" / "decisions.csv", newline="") as f:
        return list(csv.DictReader(f))


def pair(trained_run, row) -> list[tuple[str, str, bytes]]:
    audio = trained_run["audio"]
    return [
        ("a", Path(row["enroll"]).name, (audio / row["enroll"]).read_bytes()),
        ("b", Path(row["test"]).name, (audio / row["test"]).read_bytes()),
    ]


# ---- fixtures ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model(trained_run):
    return vvframe.load(trained_run["run"], device="cpu")


def _start(model, **kwargs):
    server = make_server(model, "127.0.0.1", 0, **kwargs)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    return server, thread


@pytest.fixture
def started(model):
    """``start(**limits) -> (server, port)``: a server of its own for one test, stopped after it."""
    servers = []

    def start(**kwargs):
        servers.append(_start(model, **kwargs))
        return servers[-1][0], servers[-1][0].server_address[1]

    yield start
    for server, thread in servers:
        server.shutdown()
        server.server_close()
        thread.join(5)


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
    error, _ = refused(
        "/embed", method="POST", body=b"--x\r\n\r\nno end", content_type="multipart/form-data; boundary=x"
    )
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
        with caplog.at_level(logging.INFO, logger="vvframe.inference.serve"):
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
    assert [(p.name, p.filename, p.data) for p in parts] == [
        ("a", "x.bin", data),
        ("b", None, b""),
        (None, None, b"plain"),
    ]
    with pytest.raises(RequestError, match="boundary"):
        parse_multipart(body, "other")


# ---- the command ---------------------------------------------------------------------------------------------
def test_cli_serves_until_interrupted(trained_run, tmp_path):
    script = Path(sys.executable).parent / "vvframe"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "vvframe"]
    with open(tmp_path / "stderr.txt", "w+") as err:
        proc = subprocess.Popen(
            [*command, "serve", str(trained_run["run"]), "--port", "0", "--device", "cpu"],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
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


# ---- hostile input and load ----------------------------------------------------------------------------------
MULTIPART = b"Content-Type: multipart/form-data; boundary=x\r\n"


def test_malformed_content_length_is_400(base):
    port = int(base.rsplit(":", 1)[1])
    for start in (
        b"POST /verify HTTP/1.1\r\nHost: x\r\n" + MULTIPART,
        b"GET /health HTTP/1.1\r\nHost: x\r\n",
        b"POST /embed HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n" + MULTIPART,
    ):
        for value in ("-5", "abc", "1e3", "+5", "0x10", "", "5 5"):
            status, answer, headers = raw_request(port, start + f"Content-Length: {value}\r\n\r\n".encode())
            assert (status, answer) == (
                400,
                {
                    "error": f"Content-Length {value!r} is not valid: it must be the body's"
                    " size in bytes, a whole number >= 0 (e.g. Content-Length:"
                    " 1024)"
                },
            ), (start, value)
            assert headers["Connection"] == "close"
        status, answer, _ = raw_request(port, start + b"Content-Length: 5\r\nContent-Length: 7\r\n\r\nabcde")
        assert (status, answer["error"]) == (
            400,
            "several Content-Length values (5, 7): send one Content-Length header, the body's size in bytes",
        )
        status, answer, _ = raw_request(port, start + b"Content-Length: 5, 5\r\n\r\nabcde")
        assert status == 400 and answer["error"].startswith("several Content-Length values (5, 5)")
    status, answer, _ = raw_request(port, b"POST /verify HTTP/1.1\r\nHost: x\r\n" + MULTIPART + b"\r\n")
    assert (status, answer["error"]) == (411, "POST needs a Content-Length header (the body's size in bytes)")
    status, answer, _ = raw_request(
        port,
        b"POST /verify HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        + MULTIPART
        + b"\r\n5\r\nabcde\r\n0\r\n\r\n",
    )
    assert (status, answer["error"]) == (
        411,
        "Transfer-Encoding 'chunked' is not supported (no chunked uploads): send the body with a Content-Length header",
    )
    status, answer, _ = raw_request(
        port, b"POST /embed HTTP/1.1\r\nHost: x\r\n" + MULTIPART + b"Content-Length: " + b"9" * 5000 + b"\r\n\r\n"
    )
    assert status == 413 and "--max-bytes" in answer["error"]
    status, answer, _ = raw_request(port, b"\x16\x03\x01\x00\xa5\x01\r\n\r\n")  # TLS to a plain HTTP port
    assert status == 400 and answer["error"].startswith("Bad request syntax")
    assert raw_request(port, b"GET /health HTTP/2.0\r\n\r\n")[:2] == (505, {"error": "Invalid HTTP version (2.0)"})
    assert request(base, "/health")[0] == 200  # still serving


def test_short_body_is_400_and_a_stalled_one_408(base, started):
    port = int(base.rsplit(":", 1)[1])
    head = b"POST /embed HTTP/1.1\r\nHost: x\r\n" + MULTIPART + b"Content-Length: 1000\r\n\r\n--x\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(head)
        sock.shutdown(socket.SHUT_WR)  # the client is done: the body ends short
        status, answer, _ = read_answer(sock)
    assert (status, answer["error"]) == (400, "the request body ended after 5 of 1000 bytes (Content-Length)")
    server, port = started(timeout=1.0)  # the client sends at once: 1 s of silence is its own doing
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(head)  # and then nothing
        status, answer, headers = read_answer(sock)
    assert (status, answer["error"]) == (
        408,
        "the request body stalled: 5 of 1000 bytes (Content-Length) came, then nothing for 1 s (--timeout)",
    )
    assert headers["Connection"] == "close"
    with socket.create_connection(("127.0.0.1", port), timeout=60) as idle:  # a connection that says nothing
        assert idle.recv(100) == b""  # is closed
    until(lambda: server.connections.held == 0, "the connections' threads to end")
    assert request(f"http://127.0.0.1:{port}", "/health")[0] == 200


@pytest.mark.parametrize(
    "limits", [{}, {"workers": 2, "queue": 3, "max_connections": 10}], ids=["default-limits", "tight-limits"]
)
def test_200_concurrent_requests_all_get_an_answer(started, trained_run, limits):
    server, port = started(**limits)
    row = decisions(trained_run)[0]
    body, ctype = multipart(pair(trained_run, row))
    burst = threading.Barrier(100)  # each round of 100 connects at once

    def call(i):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            burst.wait(timeout=60)
            if i % 4 == 0:
                conn.request("POST", "/verify", body, {"Content-Type": ctype})
            else:
                conn.request("GET", "/health")
            answer = conn.getresponse()
            return answer.status, answer.getheader("Retry-After"), json.loads(answer.read())
        finally:
            conn.close()

    with ThreadPoolExecutor(max_workers=100) as pool:
        answers = list(pool.map(call, range(200)))  # a ConnectionResetError (no answer) would surface here
    statuses = [status for status, _, _ in answers]
    assert set(statuses) <= {200, 503} and 200 in statuses, statuses
    for i, (status, retry, answer) in enumerate(answers):
        if status == 503:
            assert retry == "1" and "--workers" in answer["error"] and "--queue" in answer["error"]
        elif i % 4 == 0:
            assert answer["score"] == pytest.approx(float(row["score"]), abs=1e-4)
        else:
            assert answer["status"] == "ok"
    assert request(f"http://127.0.0.1:{port}", "/health")[0] == 200


def test_saturated_service_answers_503_at_once(started):
    server, port = started(workers=1, queue=0)
    service = server.service
    with socket.create_connection(("127.0.0.1", port), timeout=60) as held:
        held.sendall(b"POST /embed HTTP/1.1\r\nHost: x\r\n" + MULTIPART + b"Content-Length: 1000\r\n\r\n--x\r\n")
        until(lambda: service.working.held == 1, "the held request to take the only worker")
        for data in (
            b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n",
            b"POST /embed HTTP/1.1\r\nHost: x\r\n" + MULTIPART + b"Content-Length: 4\r\n\r\n--x-",
        ):
            status, answer, headers = raw_request(port, data)
            assert (status, answer["error"]) == (
                503,
                "the service is busy: 1 request(s) being worked on (--workers)"
                " and 0 waiting (--queue); retry after 1 s",
            )
            assert headers["Retry-After"] == "1" and headers["Connection"] == "close"
        with socket.create_connection(("127.0.0.1", port), timeout=60) as waiting:  # waits for 100 Continue
            waiting.sendall(
                b"POST /embed HTTP/1.1\r\nHost: x\r\n"
                + MULTIPART
                + b"Content-Length: 10\r\nExpect: 100-continue\r\n\r\n"
            )
            assert waiting.makefile("rb").readline().startswith(b"HTTP/1.1 503 ")  # the 503 instead of 100
        held.sendall(b"z" * 995)  # the held request goes on: its (malformed) body is refused as usual
        status, answer, _ = read_answer(held)
        assert status == 400 and "malformed multipart body" in answer["error"]
    until(lambda: service.admitted.held == 0, "the worker to be free")
    assert request(f"http://127.0.0.1:{port}", "/health")[0] == 200


def test_connections_beyond_the_limit_wait_in_the_backlog(started):
    server, port = started(max_connections=1)
    with socket.create_connection(("127.0.0.1", port), timeout=60):  # holds the only connection, says nothing
        until(lambda: server.connections.held == 1, "the first connection to be taken")
        waiting = socket.create_connection(("127.0.0.1", port), timeout=60)  # taken by the system's backlog
        waiting.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert select.select([waiting], [], [], 0.2)[0] == []  # no answer while the one thread is taken
    with waiting:
        status, answer, headers = read_answer(waiting)  # served once the first one closes
    assert status == 200 and answer["status"] == "ok"
    assert headers["Connection"] == "close"  # at the limit, a connection is not kept alive


def test_server_close_ends_idle_and_stalled_connections(model):
    server, thread = _start(model)
    port = server.server_address[1]
    with (
        socket.create_connection(("127.0.0.1", port), timeout=60) as idle,
        socket.create_connection(("127.0.0.1", port), timeout=60) as stalled,
    ):
        stalled.sendall(b"POST /embed HTTP/1.1\r\nHost: x\r\n" + MULTIPART + b"Content-Length: 1000\r\n\r\n--x\r\n")
        until(lambda: server.connections.held == 2 and server.service.working.held == 1, "both connections")
        server.shutdown()
        closing = threading.Thread(target=server.server_close)
        closing.start()
        closing.join(60)
        assert not closing.is_alive()  # the connection threads ended: none is left to outlive the interpreter
        status, answer, _ = read_answer(stalled)  # the answer still went out
        assert (status, answer["error"]) == (400, "the request body ended after 5 of 1000 bytes (Content-Length)")
        assert idle.recv(100) == b""
    thread.join(5)
    assert server.connections.held == 0


def test_limits_are_options(model, capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert all(option in out for option in ("--workers", "--queue", "--max-connections", "--backlog", "--timeout"))
    assert "503 with Retry-After" in out
    with pytest.raises(SystemExit):
        main(["run", "--workers", "0"])
    assert "argument --workers: 0: must be at least 1" in capsys.readouterr().err
    with pytest.raises(BadValue, match="workers=0"):
        make_server(model, "127.0.0.1", 0, workers=0)
