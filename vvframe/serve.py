"""``vvframe serve RUN``: a speaker-verification service over HTTP (standard library only).

    vvframe serve runs/quickstart/2026-11-25_12-31-59 --port 8000
    curl -F a=@alice1.wav -F b=@alice2.wav http://127.0.0.1:8000/verify
    curl -F a=@alice1.wav -F b=@bob.wav 'http://127.0.0.1:8000/verify?threshold=mindcf@0.01'
    curl -F audio=@alice1.wav http://127.0.0.1:8000/embed
    curl http://127.0.0.1:8000/health

Endpoints (JSON answers; every error is ``{"error": "..."}`` with a 4xx/5xx status):

* ``GET /health``: the model's source, sample rate, embedding size and tuned thresholds.
* ``POST /verify``: two audio files as ``multipart/form-data`` (fields ``a`` and ``b``; any two file parts are
  taken in order) -> score, decision, threshold. ``?threshold=NAME`` (``eer``, ``mindcf@0.01``, ...) or a number
  picks the threshold (a form field ``threshold`` does the same).
* ``POST /embed``: one audio file (field ``audio``, or any single part) -> the unit-length embedding.

Uploads are decoded in memory by soundfile (any rate or channel count it reads), mixed to mono and resampled to
the model's rate. Requests are served in threads; decoding happens in parallel, the model runs under a lock.
"""
from __future__ import annotations

import argparse
import io
import json
import logging
import math
import re
import signal
import socket
import socketserver
import sys
import threading
import time
from dataclasses import dataclass
from email import policy
from email.parser import BytesHeaderParser
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import soundfile as sf

from .errors import BadValue, VvframeError, did_you_mean

log = logging.getLogger("vvframe.serve")

DEFAULT_MAX_BYTES = 50 * 1024 * 1024
DEFAULT_MAX_SECONDS = 600.0
DEFAULT_MIN_SECONDS = 0.0  # no floor of its own: SpeakerModel.samples refuses audio under api.MIN_SECONDS
MAX_PARTS = 16
DRAIN_LIMIT = 1024 * 1024  # bytes of an unread body read and dropped before closing, so the client sees the answer


class RequestError(Exception):
    """A request the service refuses: an HTTP status and a message for the client."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = int(status)
        self.message = message
        self.headers = dict(headers or {})


# ---- multipart/form-data -------------------------------------------------------------------------------------
@dataclass
class Part:
    """One part of a ``multipart/form-data`` body."""

    name: str | None
    filename: str | None
    data: bytes

    def label(self, index: int) -> str:
        """How error messages name this part: ``'a' (x.wav)``, or ``part 2`` when it has no name."""
        who = f"'{self.name}'" if self.name else f"part {index + 1}"
        return f"{who} ({self.filename})" if self.filename else who


_headers = BytesHeaderParser(policy=policy.HTTP)


def parse_multipart(body: bytes, boundary: str) -> list[Part]:
    """The parts of a ``multipart/form-data`` body (RFC 7578 / RFC 2046 framing, CRLF line ends).

    Raises :class:`RequestError` (400) for a body that does not follow the framing: no first boundary, a part
    without the blank line after its headers, or no closing boundary (a truncated upload).
    """
    if not boundary or len(boundary) > 70:
        raise RequestError(400, "multipart/form-data needs a boundary parameter of 1 to 70 characters")
    try:
        delim = b"--" + boundary.encode("ascii")
    except UnicodeEncodeError:
        raise RequestError(400, "the multipart boundary must be ASCII") from None
    if body.startswith(delim):
        pos = len(delim)
    else:
        first = body.find(b"\r\n" + delim)
        if first < 0:
            raise RequestError(400, "malformed multipart body: the boundary given in Content-Type never occurs")
        pos = first + 2 + len(delim)
    parts: list[Part] = []
    while True:
        if body.startswith(b"--", pos):  # the close delimiter; anything after it is the epilogue
            return parts
        eol = body.find(b"\r\n", pos)
        if eol < 0 or body[pos:eol].strip(b" \t"):
            raise RequestError(400, "malformed multipart body: a boundary line is followed by other text"
                                    " or the body ends after it")
        start = eol + 2
        end = body.find(b"\r\n" + delim, start)
        if end < 0:
            raise RequestError(400, f"malformed multipart body: part {len(parts) + 1} has no closing boundary"
                                    " (a truncated upload?)")
        if len(parts) >= MAX_PARTS:
            raise RequestError(400, f"too many parts: at most {MAX_PARTS}")
        parts.append(_part(body, start, end, len(parts)))
        pos = end + 2 + len(delim)


def _part(body: bytes, start: int, end: int, index: int) -> Part:
    if body.startswith(b"\r\n", start):  # no headers at all
        head, data_start = b"", start + 2
    else:
        split = body.find(b"\r\n\r\n", start, end)
        if split < 0:
            raise RequestError(400, f"malformed multipart body: part {index + 1} has no blank line after its headers")
        head, data_start = body[start:split], split + 4
    headers = _headers.parsebytes(head + b"\r\n\r\n")
    name = headers.get_param("name", header="content-disposition")
    return Part(None if name is None else str(name), headers.get_filename(), body[data_start:end])


def select(parts: list[Part], names: tuple[str, ...], options: tuple[str, ...],
           endpoint: str) -> list[tuple[str, Part]]:
    """The audio parts an endpoint takes, with their labels: the parts named ``names`` when all are there and
    nothing else is, else the parts (other than ``options``) in order, when there are exactly as many."""
    audio = [(i, p) for i, p in enumerate(parts) if p.name not in options]
    by_name = {p.name: (i, p) for i, p in audio if p.name in names}
    if len(audio) == len(names):
        chosen = [by_name[n] for n in names] if len(by_name) == len(names) else audio
        return [(p.label(i), p) for i, p in chosen]
    plural = "s" if len(names) > 1 else ""
    fields = " and ".join(f"'{n}'" for n in names)
    example = " ".join(f"-F {n}=@{n}.wav" for n in names)
    wanted = (f"{endpoint} takes {len(names)} audio file{plural} as multipart/form-data (field{plural} {fields},"
              f" e.g. curl {example}); got {', '.join(p.label(i) for i, p in audio) or 'no parts'}")
    if len(audio) > len(names):
        raise RequestError(400, f"{len(audio)} audio parts, expected {len(names)}: {wanted}")
    # parts without a wanted name fill the first missing fields; name the first one still missing
    missing = [n for n in names if n not in by_name][len(audio) - len(by_name)]
    raise RequestError(400, f"missing the audio part '{missing}': {wanted}")


# ---- the service --------------------------------------------------------------------------------------------
class Service:
    """The model and the request limits, shared by the handler threads; inference runs under ``lock``.

    ``min_seconds`` only raises the floor: the model itself refuses audio under ``api.MIN_SECONDS``."""

    def __init__(self, model, threshold: str = "eer", max_bytes: int = DEFAULT_MAX_BYTES,
                 max_seconds: float = DEFAULT_MAX_SECONDS, min_seconds: float = DEFAULT_MIN_SECONDS):
        if max_bytes <= 0:
            raise BadValue(f"max_bytes={max_bytes}: must be > 0")
        if not max_seconds > 0:
            raise BadValue(f"max_seconds={max_seconds}: must be > 0")
        if not 0 <= min_seconds <= max_seconds:
            raise BadValue(f"min_seconds={min_seconds}: must be >= 0 and at most max_seconds ({max_seconds})")
        self.model = model
        self.threshold = str(threshold)
        self.max_bytes = int(max_bytes)
        self.max_seconds = float(max_seconds)
        self.min_seconds = float(min_seconds)
        self.lock = threading.Lock()

    def health(self) -> dict[str, Any]:
        m = self.model
        return {"status": "ok", "model": m.source, "sample_rate": m.sample_rate, "embed_dim": m.embed_dim,
                "thresholds": dict(m.thresholds), "threshold": self.threshold,
                "normalized": m.normalizer is not None}

    def resolve_threshold(self, raw: str) -> tuple[str, float]:
        try:
            name, value = self.model.threshold(raw)
        except BadValue as exc:
            raise RequestError(400, f"{exc}{did_you_mean(raw, self.model.thresholds)}") from None
        if not math.isfinite(value):
            raise RequestError(400, f"threshold {raw!r}: must be a finite number or one of"
                                    f" {', '.join(sorted(self.model.thresholds)) or '(none tuned)'}")
        return name, value

    def decode(self, label: str, data: bytes):
        """An upload as ``(T,)`` float32 samples at the model's rate; 400 naming ``label`` when it cannot be.

        The length limits are checked here; :meth:`SpeakerModel.samples` refuses empty, silent, non-finite and
        too short audio and resamples."""
        if not data:
            raise RequestError(400, f"{label}: the upload is empty (0 bytes)")
        try:
            upload = sf.SoundFile(io.BytesIO(data))
        except Exception as exc:
            raise RequestError(400, f"{label}: not audio that soundfile can decode ({_sf_reason(exc)})") from None
        with upload:
            rate = upload.samplerate
            self._check_length(label, upload.frames / rate)  # what the header says: refused before decoding
            try:
                wave = upload.read(dtype="float32", always_2d=True)
            except Exception as exc:
                raise RequestError(400, f"{label}: the audio cannot be decoded ({_sf_reason(exc)})") from None
        seconds = len(wave) / rate
        self._check_length(label, seconds)  # what was decoded (a header can understate it)
        if seconds < self.min_seconds:
            raise RequestError(400, f"{label}: {seconds:.3f} s of audio, less than the minimum of"
                                    f" {self.min_seconds:g} s (--min-seconds)")
        try:
            return self.model.samples(wave.mean(axis=1) if wave.shape[1] > 1 else wave[:, 0], rate)
        except BadValue as exc:
            raise RequestError(400, f"{label}: {exc}") from None

    def _check_length(self, label: str, seconds: float) -> None:
        if seconds > self.max_seconds:
            raise RequestError(400, f"{label}: {seconds:.1f} s of audio, more than the limit of"
                                    f" {self.max_seconds:g} s (--max-seconds)")

    def verify(self, a, b, threshold: str) -> dict[str, Any]:
        with self.lock:
            result = self.model.verify(a, b, threshold=threshold)
        if not math.isfinite(result.score):
            raise RuntimeError(f"the model gave a non-finite score ({result.score})")
        return {"score": float(result.score), "accepted": bool(result.accepted), "threshold": result.threshold,
                "threshold_value": float(result.threshold_value), "normalized": bool(result.normalized)}

    def embed(self, x) -> dict[str, Any]:
        with self.lock:
            emb = self.model.embed(x)
        values = emb.tolist()  # (D,) float32 on the CPU
        if not all(math.isfinite(v) for v in values):
            raise RuntimeError("the model gave a non-finite embedding")
        return {"embedding": values, "dim": len(values), "sample_rate": self.model.sample_rate}


def _sf_reason(exc: BaseException) -> str:
    """soundfile's reason without the "Error opening <_io.BytesIO object at 0x...>: " in front."""
    reason = getattr(exc, "error_string", None) or re.sub(r"^Error opening <[^>]*>: ", "", str(exc))
    return _short(reason).rstrip(".")


def _short(exc: BaseException | str, limit: int = 200) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."


# ---- HTTP ---------------------------------------------------------------------------------------------------
ROUTES = {"/verify": ("POST",), "/embed": ("POST",), "/health": ("GET", "HEAD")}  # path -> methods; handler _<name>
ENDPOINTS = ", ".join(f"{methods[0]} {path}" for path, methods in ROUTES.items())


class Handler(BaseHTTPRequestHandler):
    """Routes requests to the server's :class:`Service`; every answer is JSON."""

    protocol_version = "HTTP/1.1"
    server_version = "vvframe-serve"
    timeout = 60  # seconds a connection may stay silent (idle keep-alive, a stalled upload)
    server: "Server"

    # -- plumbing --
    def parse_request(self) -> bool:
        self._t0 = time.perf_counter()
        self._body_state = "unread"
        return super().parse_request()

    def handle_expect_100(self) -> bool:
        # refuse an oversized body before the client sends it (curl waits for "100 Continue" on large uploads)
        try:
            self._content_length()
        except RequestError as exc:
            self._body_state = "done"  # the client waits for "100 Continue" and has sent no body
            self._send(exc.status, {"error": exc.message}, exc.headers, close=True)
            return False
        return super().handle_expect_100()

    def log_request(self, code="-", size="-") -> None:
        pass  # _send logs each request once, with its time

    def log_message(self, format: str, *args) -> None:
        log.warning("%s: %s", self.address_string(), format % args)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The base class's errors (bad request line, oversized headers, ...) as JSON too."""
        if code < 200 or code in (204, 304):
            super().send_error(code, message, explain)
            return
        self._body_state = "done"  # a request the base class could not parse: answer and close, read nothing
        self._send(code, {"error": message or HTTPStatus(code).phrase}, close=True)

    def _send(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None,
              close: bool = False) -> None:
        body = json.dumps(payload).encode("utf-8") + b"\n"
        state = self._body_state
        if state == "reading" or (state == "unread" and not self._drain()):
            close = True  # the rest of the body is still on the wire
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        ms = (time.perf_counter() - getattr(self, "_t0", time.perf_counter())) * 1000
        log.info("%s %s %d %.1f ms", getattr(self, "command", None) or "-", getattr(self, "path", None) or "-",
                 status, ms)  # before the answer goes out, so whoever reads the answer finds the line logged
        self.end_headers()
        if getattr(self, "command", None) != "HEAD":
            self.wfile.write(body)
        self.wfile.flush()

    def _content_length(self) -> int:
        """The body's size from Content-Length; 411/400/413 when it is missing, malformed or too large."""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            raise RequestError(411, "chunked uploads are not supported: send a Content-Length")
        raw = self.headers.get("Content-Length")
        if raw is None:
            if self.command in ("POST", "PUT", "PATCH"):
                raise RequestError(411, "a Content-Length header is required")
            return 0
        if not raw.strip().isdigit():
            raise RequestError(400, f"Content-Length {raw!r} is not a number of bytes")
        length = int(raw)
        limit = self.server.service.max_bytes
        if length > limit:
            raise RequestError(413, f"the request body is {length} bytes, more than the limit of {limit} bytes"
                                    " (--max-bytes)")
        return length

    def _drain(self) -> bool:
        """Read and drop an unread request body (so the connection stays usable and the client reads the answer);
        False when it is too large, malformed or does not arrive, so the connection must close."""
        self._body_state = "done"
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            return False
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            return False
        if length > min(DRAIN_LIMIT, self.server.service.max_bytes):
            self._linger()
            return False
        try:
            return len(self.rfile.read(length)) == length
        except OSError:
            return False

    def _linger(self) -> None:
        """Before closing on an unread body, take what already arrived (briefly, bounded) so the close does not
        reset the connection under the answer."""
        try:
            self.connection.settimeout(0.2)
            left = DRAIN_LIMIT
            while left > 0:
                chunk = self.rfile.read1(min(65536, left))
                if not chunk:
                    break
                left -= len(chunk)
        except OSError:
            pass
        finally:
            try:
                self.connection.settimeout(self.timeout)
            except OSError:
                pass

    def _body(self) -> bytes:
        length = self._content_length()
        self._body_state = "reading"
        try:
            body = self.rfile.read(length)
        except TimeoutError:
            raise RequestError(408, f"the request body did not arrive within {self.timeout} s") from None
        if len(body) != length:
            raise RequestError(400, f"the request body ended after {len(body)} of {length} bytes")
        self._body_state = "done"
        return body

    def _form(self) -> list[Part]:
        if self.headers.get_content_type() != "multipart/form-data":
            raise RequestError(400, f"Content-Type {self.headers.get('Content-Type') or '(none)'}: uploads must be"
                                    " multipart/form-data (curl -F a=@x.wav ...)")
        boundary = self.headers.get_param("boundary")
        return parse_multipart(self._body(), boundary if isinstance(boundary, str) else "")

    # -- dispatch --
    def _dispatch(self) -> None:
        status, headers = 200, {}
        try:
            try:
                target = urlsplit(self.path)
            except ValueError as exc:
                raise RequestError(400, f"malformed request target {self.path!r}: {exc}") from None
            path = target.path
            methods = ROUTES.get(path)
            if methods is None:
                raise RequestError(404, f"no endpoint {path}; this service has {ENDPOINTS}")
            if self.command not in methods:
                raise RequestError(405, f"{path} takes {' or '.join(m for m in methods if m != 'HEAD')},"
                                        f" not {self.command}", {"Allow": ", ".join(methods)})
            payload = getattr(self, "_" + path.strip("/"))(parse_qs(target.query, keep_blank_values=True))
        except RequestError as exc:
            status, payload, headers = exc.status, {"error": exc.message}, exc.headers
        except VvframeError as exc:
            status, payload, headers = 400, {"error": _short(exc, 500)}, {}
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
            return
        except Exception as exc:
            log.exception("%s %s failed", self.command, self.path)
            status, payload, headers = 500, {"error": f"internal error: {type(exc).__name__}: {_short(exc)}"}, {}
        try:
            self._send(status, payload, headers, close=status >= 500)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    # every method the base class would answer with 501 gets a JSON 404/405 instead
    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _dispatch

    # -- endpoints: the query's parameters -> the answer --
    def _health(self, query: dict[str, list[str]]) -> dict[str, Any]:
        return self.server.service.health()

    def _verify(self, query: dict[str, list[str]]) -> dict[str, Any]:
        service = self.server.service
        parts = self._form()
        _only(query, ("threshold",), "/verify")
        threshold = query.get("threshold", [None])[-1]
        if threshold is None:
            fields = [p for p in parts if p.name == "threshold"]
            threshold = fields[-1].data.decode("utf-8", "replace").strip() if fields else service.threshold
        name, _ = service.resolve_threshold(threshold)
        chosen = select(parts, ("a", "b"), ("threshold",), "POST /verify")
        a, b = (service.decode(label, part.data) for label, part in chosen)
        return service.verify(a, b, name)

    def _embed(self, query: dict[str, list[str]]) -> dict[str, Any]:
        service = self.server.service
        parts = self._form()
        _only(query, (), "/embed")
        (label, part), = select(parts, ("audio",), (), "POST /embed")
        return service.embed(service.decode(label, part.data))


def _only(query: dict[str, list[str]], allowed: tuple[str, ...], endpoint: str) -> None:
    for key in query:
        if key not in allowed:
            takes = f"takes only {', '.join(allowed)}" if allowed else "takes none"
            raise RequestError(400, f"unknown query parameter {key!r}{did_you_mean(key, allowed)}: {endpoint} {takes}")


class Server(ThreadingHTTPServer):
    """A :class:`ThreadingHTTPServer` (one daemon thread per connection) holding the :class:`Service`."""

    daemon_threads = True
    service: Service

    def server_bind(self) -> None:
        # HTTPServer.server_bind also looks the host's name up (socket.getfqdn), which can stall on a machine
        # without working reverse DNS; the name is not needed
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])


class Server6(Server):
    address_family = socket.AF_INET6


def make_server(model, host: str = "127.0.0.1", port: int = 8000, *, threshold: str = "eer",
                max_bytes: int = DEFAULT_MAX_BYTES, max_seconds: float = DEFAULT_MAX_SECONDS,
                min_seconds: float = DEFAULT_MIN_SECONDS) -> Server:
    """A bound, not yet serving HTTP server for ``model`` (a :class:`vvframe.api.SpeakerModel`); run it with
    ``serve_forever()`` (in a thread if need be) and stop it with ``shutdown()`` and ``server_close()``.
    ``port`` 0 picks a free port: ``server.server_address[1]`` says which."""
    service = Service(model, threshold, max_bytes, max_seconds, min_seconds)
    server = (Server6 if ":" in host else Server)((host, int(port)), Handler)
    server.service = service
    return server


def url(server: Server) -> str:
    host, port = server.server_address[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


# ---- the command --------------------------------------------------------------------------------------------
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmg]?)(?:i?b)?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """``52428800``, ``50M``, ``50MB``, ``512k``, ``1G`` (binary units) -> bytes."""
    match = _SIZE.match(text)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size (e.g. 50M, 512k, 1G or a number of bytes)")
    value = float(match.group(1)) * 1024 ** " kmg".index((match.group(2) or " ").lower())
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: must be at least one byte")
    return int(value)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"{text!r}: must be a positive number of seconds")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value}: a port is 0 (any free one) to 65535")
    return value


def main(rest: list[str]) -> int:
    """``vvframe serve RUN [--host H] [--port N] ...``: serve until Ctrl-C (exit 0)."""
    parser = argparse.ArgumentParser(
        prog="vvframe serve", description="an HTTP verification service for a trained run or an exported model",
        epilog="endpoints: POST /verify (multipart fields a, b; ?threshold=NAME|NUMBER), POST /embed (field audio),"
               " GET /health.  Example: curl -F a=@x.wav -F b=@y.wav http://127.0.0.1:8000/verify")
    parser.add_argument("model", metavar="RUN", help="a run directory or an exported model file")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine"
                                                             " only; 0.0.0.0 for every interface)")
    parser.add_argument("--port", type=_port, default=8000, help="port (default 8000; 0: any free port)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when there is one), cpu, cuda, cuda:N")
    parser.add_argument("--checkpoint", metavar="FILE", help="other weights for a run directory")
    parser.add_argument("--threshold", default="eer",
                        help="the default threshold: a tuned one's name (eer, mindcf@0.01, far@0.001) or a number")
    parser.add_argument("--max-bytes", type=parse_size, default=DEFAULT_MAX_BYTES, metavar="SIZE",
                        help="largest request body (default 50M); larger uploads get 413")
    parser.add_argument("--max-seconds", type=_seconds, default=DEFAULT_MAX_SECONDS, metavar="S",
                        help="longest audio per file in seconds (default 600)")
    parser.add_argument("--min-seconds", type=_seconds, default=DEFAULT_MIN_SECONDS, metavar="S",
                        help="shortest audio per file in seconds (default: only the model's own minimum, 0.1 s)")
    opts = parser.parse_args(rest)

    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s")
    from .api import load
    model = load(opts.model, device=opts.device, checkpoint=opts.checkpoint)
    try:
        model.threshold(opts.threshold)
    except BadValue as exc:
        if model.thresholds:
            raise BadValue(f"--threshold: {exc}{did_you_mean(opts.threshold, model.thresholds)}") from None
        log.warning("%s has no tuned thresholds: POST /verify needs ?threshold=NUMBER (or start with"
                    " --threshold NUMBER)", model.source)
    try:
        server = make_server(model, opts.host, opts.port, threshold=opts.threshold, max_bytes=opts.max_bytes,
                             max_seconds=opts.max_seconds, min_seconds=opts.min_seconds)
    except OSError as exc:
        print(f"error: cannot listen on {opts.host}:{opts.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1

    def stop(signum, frame):  # Ctrl-C, and SIGTERM (docker stop, systemd): stop cleanly
        raise KeyboardInterrupt

    # set SIGINT too: a shell starts background jobs with it ignored, which would leave Ctrl-C/kill -INT no way in
    in_main = threading.current_thread() is threading.main_thread()
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)} if in_main else {}
    print(f"serving {model.source} on {url(server)} ({ENDPOINTS})", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        log.info("stopping")
    finally:
        server.server_close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
