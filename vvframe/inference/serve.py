"""``vvframe serve RUN``: a speaker-verification service over HTTP (standard library only).

    vvframe serve runs/quickstart/2026-11-25_12-31-59 --port 8000
    curl -F a=@alice1.wav -F b=@alice2.wav http://127.0.0.1:8000/verify
    curl -F a=@alice1.wav -F b=@bob.wav 'http://127.0.0.1:8000/verify?threshold=mindcf@0.01'
    curl -F audio=@alice1.wav http://127.0.0.1:8000/embed
    curl http://127.0.0.1:8000/health

Endpoints (JSON answers; every error is ``{"error": "..."}`` with a 4xx/5xx status):

* ``GET /health``: the model's source, sample rate, embedding size and tuned thresholds.
* ``POST /verify``: two audio files as ``multipart/form-data`` (fields ``a`` and ``b``; any two file parts are
  taken in order) -> score, decision, threshold. ``?threshold=NAME`` (``eer``, ``mindcf@0.01``, ``bayes@0.01``
  with a calibrated run, ...) or a number picks the threshold (a form field ``threshold`` does the same). A
  calibrated run also answers ``llr`` and ``posterior``, P(same speaker) for ``?prior=P`` (default: the P of
  ``bayes@P``, else the prior the calibration was fitted at).
* ``POST /embed``: one audio file (field ``audio``, or any single part) -> the unit-length embedding.

Uploads are decoded in memory by soundfile (any rate or channel count it reads), mixed to mono and resampled to
the model's rate; with ``vad`` (``energy`` or ``silero``; default: the model's own setting) each is then cut to its
speech, and one without speech gets a 400 saying what was found. Each connection is served in its own thread;
decoding happens in parallel, the model (and the detector) runs under a lock.

Limits under load (``vvframe serve --help``): at most ``--max-connections`` connections are served at once; further
ones wait in the listen backlog (``--backlog``) until one closes. At most ``--workers`` requests are worked on at
once and ``--queue`` more wait for a worker; a request beyond those gets 503 with ``Retry-After`` at once. A
connection silent for ``--timeout`` seconds (an idle keep-alive, a stalled upload) is closed.
"""

from __future__ import annotations

import io
import json
import logging
import math
import re
import socket
import socketserver
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

from vvframe.core.errors import BadValue, VvframeError, did_you_mean, short
from vvframe.scoring.thresholds import bayes_prior

log = logging.getLogger("vvframe.inference.serve")

DEFAULT_MAX_BYTES = 50 * 1024 * 1024
DEFAULT_MAX_SECONDS = 600.0
DEFAULT_MIN_SECONDS = (
    0.0  # no floor of its own: SpeakerModel.samples refuses audio under vvframe.data.audio.MIN_SECONDS
)
DEFAULT_WORKERS = 8  # requests worked on at once (body read, decoded, run): bounds the memory in use
DEFAULT_QUEUE = 32  # requests waiting for a worker; one more gets 503 at once
DEFAULT_MAX_CONNECTIONS = 128  # connections served at once, one thread each
DEFAULT_BACKLOG = 1024  # the listen backlog: connections the kernel holds while all the threads are busy
DEFAULT_TIMEOUT = 60.0  # seconds a connection may stay silent
RETRY_AFTER = 1  # seconds, in the Retry-After header of a 503
MAX_PARTS = 16
DRAIN_LIMIT = 1024 * 1024  # bytes of an unread body read and dropped, so the client sees the answer
LINGER_SECONDS = 2.0  # at most this long reading what a client still sends after the answer, before closing


class RequestError(Exception):
    """A request the service refuses: an HTTP status and a message for the client."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = int(status)
        self.message = message
        self.headers = dict(headers or {})


class Slots:
    """At most ``size`` holders at once: :meth:`take` one (waiting up to ``timeout`` s; None: as long as it takes),
    :meth:`give` it back."""

    def __init__(self, size: int):
        self.size = int(size)
        self.held = 0
        self._free = threading.Condition()

    def take(self, timeout: float | None = 0.0) -> bool:
        with self._free:
            if not self._free.wait_for(lambda: self.held < self.size, timeout):
                return False
            self.held += 1
            return True

    def give(self) -> None:
        with self._free:
            self.held -= 1
            self._free.notify()

    @property
    def full(self) -> bool:
        return self.held >= self.size


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
            raise RequestError(
                400, "malformed multipart body: a boundary line is followed by other text or the body ends after it"
            )
        start = eol + 2
        end = body.find(b"\r\n" + delim, start)
        if end < 0:
            raise RequestError(
                400, f"malformed multipart body: part {len(parts) + 1} has no closing boundary (a truncated upload?)"
            )
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


def select(
    parts: list[Part], names: tuple[str, ...], options: tuple[str, ...], endpoint: str
) -> list[tuple[str, Part]]:
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
    wanted = (
        f"{endpoint} takes {len(names)} audio file{plural} as multipart/form-data (field{plural} {fields},"
        f" e.g. curl {example}); got {', '.join(p.label(i) for i, p in audio) or 'no parts'}"
    )
    if len(audio) > len(names):
        raise RequestError(400, f"{len(audio)} audio parts, expected {len(names)}: {wanted}")
    # parts without a wanted name fill the first missing fields; name the first one still missing
    missing = [n for n in names if n not in by_name][len(audio) - len(by_name)]
    raise RequestError(400, f"missing the audio part '{missing}': {wanted}")


# ---- the service --------------------------------------------------------------------------------------------
class Service:
    """The model and the request limits, shared by the handler threads; inference runs under ``lock``.

    ``min_seconds`` only raises the floor: the model itself refuses audio under ``vvframe.data.audio.MIN_SECONDS``.
    A request is worked on by one of ``workers`` at a time, after waiting (``queue`` at most) for one:
    :meth:`admit`. ``vad``: the voice activity detector each upload is cut to its speech with (``True``/
    ``"energy"``, ``"silero"``, ``False``; None: the model's own setting, ``model.meta["vad"]``)."""

    def __init__(
        self,
        model,
        threshold: str = "eer",
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_seconds: float = DEFAULT_MAX_SECONDS,
        min_seconds: float = DEFAULT_MIN_SECONDS,
        workers: int = DEFAULT_WORKERS,
        queue: int = DEFAULT_QUEUE,
        timeout: float = DEFAULT_TIMEOUT,
        vad: bool | str | None = None,
    ):
        if max_bytes <= 0:
            raise BadValue(f"max_bytes={max_bytes}: must be > 0")
        if not max_seconds > 0:
            raise BadValue(f"max_seconds={max_seconds}: must be > 0")
        if not 0 <= min_seconds <= max_seconds:
            raise BadValue(f"min_seconds={min_seconds}: must be >= 0 and at most max_seconds ({max_seconds})")
        if workers < 1 or queue < 0:
            raise BadValue(f"workers={workers}, queue={queue}: workers must be >= 1 and queue >= 0")
        if not (timeout > 0 and math.isfinite(timeout)):
            raise BadValue(f"timeout={timeout}: must be a positive number of seconds")
        self.model = model
        self.threshold = str(threshold)
        self.max_bytes = int(max_bytes)
        self.max_seconds = float(max_seconds)
        self.min_seconds = float(min_seconds)
        self.timeout = float(timeout)
        self.lock = threading.Lock()
        self.admitted = Slots(int(workers) + int(queue))  # working or waiting
        self.working = Slots(int(workers))
        from vvframe.data import vad as activity  # (imports torch, which the model has loaded already)

        own = activity.choice((getattr(model, "meta", None) or {}).get("vad"))
        self.vad = own if vad is None else activity.choice(vad)
        self.detector = None if self.vad is None else activity.default(self.vad)  # silero missing: said now
        self._as_cut = {"vad": False} if own else {}  # decode cuts the uploads: the model must not again

    def admit(self) -> None:
        """Wait for a worker; 503 at once when all the workers are busy and the queue is full. Pair with
        :meth:`done`."""
        if not self.admitted.take():
            workers = self.working.size
            raise RequestError(
                503,
                f"the service is busy: {workers} request(s) being worked on (--workers) and"
                f" {self.admitted.size - workers} waiting (--queue); retry after {RETRY_AFTER} s",
                {"Retry-After": str(RETRY_AFTER)},
            )
        self.working.take(None)

    def done(self) -> None:
        self.working.give()
        self.admitted.give()

    def health(self) -> dict[str, Any]:
        m = self.model
        cal = getattr(m, "calibration", None)
        return {
            "status": "ok",
            "model": m.source,
            "sample_rate": m.sample_rate,
            "embed_dim": m.embed_dim,
            "thresholds": dict(m.thresholds),
            "threshold": self.threshold,
            "normalized": m.normalizer is not None,
            "calibration": None if cal is None else {"prior": cal.prior, "features": list(cal.features)},
            "vad": self.vad,
        }

    def resolve_threshold(self, raw: str) -> tuple[str, float]:
        """``(name, value)`` of the threshold a request names; NaN for ``bayes@P`` of a calibration with quality
        measures (each trial is decided on its own LLR)."""
        cal = getattr(self.model, "calibration", None)
        try:
            if cal is not None and cal.quality and bayes_prior(raw) is not None:
                return str(raw), float("nan")
            name, value = self.model.threshold(raw)
        except BadValue as exc:
            raise RequestError(400, f"{exc}{did_you_mean(raw, self.model.thresholds)}") from None
        if not math.isfinite(value):
            raise RequestError(
                400,
                f"threshold {raw!r}: must be a finite number or one of"
                f" {', '.join(sorted(self.model.thresholds)) or '(none tuned)'}",
            )
        return name, value

    def decode(self, label: str, data: bytes):
        """An upload as ``(T,)`` float32 samples at the model's rate; 400 naming ``label`` when it cannot be.

        The length limits are checked here; :meth:`SpeakerModel.samples` refuses empty, silent, non-finite and
        too short audio and resamples."""
        if not data:
            raise RequestError(400, f"{label}: the upload is empty (0 bytes)")
        try:
            upload = sf.SoundFile(io.BytesIO(data))
        except Exception as exc:  # noqa: BLE001 - any decoding failure of an upload is the client's 400
            raise RequestError(400, f"{label}: not audio that soundfile can decode ({_sf_reason(exc)})") from None
        with upload:
            rate = upload.samplerate
            self._check_length(label, upload.frames / rate)  # what the header says: refused before decoding
            try:
                wave = upload.read(dtype="float32", always_2d=True)
            except Exception as exc:  # noqa: BLE001 - as above
                raise RequestError(400, f"{label}: the audio cannot be decoded ({_sf_reason(exc)})") from None
        seconds = len(wave) / rate
        self._check_length(label, seconds)  # what was decoded (a header can understate it)
        if seconds < self.min_seconds:
            raise RequestError(
                400,
                f"{label}: {seconds:.3f} s of audio, less than the minimum of {self.min_seconds:g} s (--min-seconds)",
            )
        try:
            from vvframe.data.audio import mono  # torch is imported once a model is served, not before

            samples = self.model.samples(mono(wave), rate)
        except BadValue as exc:
            raise RequestError(400, f"{label}: {exc}") from None
        if self.detector is None:
            return samples
        from vvframe.data.vad import NoSpeech

        try:
            with self.lock:  # with the model's work, not beside it: silero keeps state, and threads share the cores
                return self.detector.trim(samples, self.model.sample_rate, label)
        except NoSpeech as exc:
            raise RequestError(400, str(exc)) from None

    def _check_length(self, label: str, seconds: float) -> None:
        if seconds > self.max_seconds:
            raise RequestError(
                400, f"{label}: {seconds:.1f} s of audio, more than the limit of {self.max_seconds:g} s (--max-seconds)"
            )

    def verify(self, a, b, threshold: str, prior: float | None = None) -> dict[str, Any]:
        with self.lock:
            result = self.model.verify(a, b, threshold=threshold, prior=prior, **self._as_cut)
        if not math.isfinite(result.score):
            raise RuntimeError(f"the model gave a non-finite score ({result.score})")
        answer = {
            "score": float(result.score),
            "accepted": bool(result.accepted),
            "threshold": result.threshold,
            "threshold_value": float(result.threshold_value),
            "normalized": bool(result.normalized),
        }
        if result.llr is not None:
            answer.update(llr=float(result.llr), posterior=float(result.posterior), prior=float(result.prior))
        return answer

    def embed(self, x) -> dict[str, Any]:
        with self.lock:
            emb = self.model.embed(x, **self._as_cut)
        values = emb.tolist()  # (D,) float32 on the CPU
        if not all(math.isfinite(v) for v in values):
            raise RuntimeError("the model gave a non-finite embedding")
        return {"embedding": values, "dim": len(values), "sample_rate": self.model.sample_rate}


def _sf_reason(exc: BaseException) -> str:
    """soundfile's reason without the "Error opening <_io.BytesIO object at 0x...>: " in front."""
    reason = getattr(exc, "error_string", None) or re.sub(r"^Error opening <[^>]*>: ", "", str(exc))
    return short(reason).rstrip(".")


def _one_line(exc: BaseException, limit: int = 200) -> str:
    """The whole message on one line (a JSON answer's ``error``), cut to ``limit`` characters."""
    return short(" ".join(str(exc).split()) or type(exc).__name__, limit)


# ---- HTTP ---------------------------------------------------------------------------------------------------
ROUTES = {"/verify": ("POST",), "/embed": ("POST",), "/health": ("GET", "HEAD")}  # path -> methods; handler _<name>
ENDPOINTS = ", ".join(f"{methods[0]} {path}" for path, methods in ROUTES.items())


class Handler(BaseHTTPRequestHandler):
    """Routes requests to the server's :class:`Service`; every answer is JSON."""

    protocol_version = "HTTP/1.1"
    default_request_version = "HTTP/1.0"  # an unparsable request line still gets a status line and headers
    server_version = "vvframe-serve"
    server: Server

    # -- plumbing --
    def setup(self) -> None:
        self.timeout = self.server.service.timeout  # seconds the connection may stay silent (read by setup)
        super().setup()

    def handle_one_request(self) -> None:
        self._admitted = False
        try:
            super().handle_one_request()
        finally:
            if self._admitted:  # however the request ended
                self.server.service.done()

    def parse_request(self) -> bool:
        self._t0 = time.perf_counter()
        self._body_state = "unread"  # unread -> reading -> done; "unframed": its end cannot be known
        self._length = 0
        if not super().parse_request():
            return False
        try:
            self._length = self._framing()
        except RequestError as exc:
            self._refuse(exc)
            return False
        return True

    def handle_expect_100(self) -> bool:
        # refuse before the client sends the body (curl waits for "100 Continue" on large uploads): a body too
        # large or malformed framing, or no room for the request
        try:
            self._content_length()
            self._admit()
        except RequestError as exc:
            self._refuse(exc)
            return False
        return super().handle_expect_100()

    def _refuse(self, exc: RequestError) -> None:
        """Answer a request refused before its body was read, and close (what the client still sends is
        dropped by the server's lingering close)."""
        self._body_state = "done"
        self._send(exc.status, {"error": exc.message}, exc.headers, close=True)

    def _admit(self) -> None:
        if not self._admitted:
            self.server.service.admit()
            self._admitted = True

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

    def _send(
        self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None, close: bool = False
    ) -> None:
        body = json.dumps(payload).encode("utf-8") + b"\n"
        state = self._body_state
        if state in ("reading", "unframed") or (state == "unread" and not self._drain()):
            close = True  # the rest of the body is still on the wire
        self._body_state = "done"
        if self.server.connections.full:
            close = True  # let a connection waiting in the backlog in
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        ms = (time.perf_counter() - getattr(self, "_t0", time.perf_counter())) * 1000
        log.info(
            "%s %s %d %.1f ms", getattr(self, "command", None) or "-", getattr(self, "path", None) or "-", status, ms
        )  # before the answer goes out, so whoever reads the answer finds the line logged
        self.end_headers()
        if getattr(self, "command", None) != "HEAD":
            self.wfile.write(body)
        self.wfile.flush()

    def _framing(self) -> int:
        """The body's declared size (0 without a Content-Length); 400 for a malformed Content-Length, 411 for a
        Transfer-Encoding (chunked bodies are not supported)."""
        coding = self.headers.get("Transfer-Encoding")
        if coding is not None:
            self._body_state = "unframed"
            raise RequestError(
                411,
                f"Transfer-Encoding {coding[:40]!r} is not supported (no chunked"
                " uploads): send the body with a Content-Length header",
            )
        values = self.headers.get_all("Content-Length") or []
        if len(values) > 1 or any("," in v for v in values):
            raise RequestError(
                400,
                f"several Content-Length values ({', '.join(values)[:80]}): send one"
                " Content-Length header, the body's size in bytes",
            )
        if not values:
            return 0
        raw = values[0].strip()
        if not (raw.isascii() and raw.isdigit()):
            raise RequestError(
                400,
                f"Content-Length {values[0][:40]!r} is not valid: it must be the body's"
                " size in bytes, a whole number >= 0 (e.g. Content-Length: 1024)",
            )
        digits = raw.lstrip("0") or "0"
        return int(digits) if len(digits) <= 30 else 10**30  # past any limit, and int() of 4300+ digits fails

    def _content_length(self) -> int:
        """The body's size; 411/400/413 when it is missing on a POST, malformed or too large."""
        length = self._framing()
        if self.headers.get("Content-Length") is None and self.command in ("POST", "PUT", "PATCH"):
            self._body_state = "unframed"
            raise RequestError(411, f"{self.command} needs a Content-Length header (the body's size in bytes)")
        limit = self.server.service.max_bytes
        if length > limit:
            size = f"{length} bytes" if length < 10**30 else "over 10**30 bytes"
            raise RequestError(413, f"the request body is {size}, more than the limit of {limit} bytes (--max-bytes)")
        return length

    def _drain(self) -> bool:
        """Read and drop an unread request body (so the connection stays usable and the client reads the answer);
        False when it is too large or does not arrive, so the connection must close."""
        self._body_state = "done"
        if self._length > min(DRAIN_LIMIT, self.server.service.max_bytes):
            return False
        try:
            return len(self.rfile.read(self._length)) == self._length
        except OSError:
            return False

    def _body(self) -> bytes:
        length = self._content_length()
        self._body_state = "reading"
        chunks, got = [], 0
        try:
            while got < length:
                chunk = self.rfile.read1(min(length - got, 1 << 20))
                if not chunk:
                    raise RequestError(400, f"the request body ended after {got} of {length} bytes (Content-Length)")
                chunks.append(chunk)
                got += len(chunk)
        except TimeoutError:
            raise RequestError(
                408,
                f"the request body stalled: {got} of {length} bytes (Content-Length) came,"
                f" then nothing for {self.timeout:g} s (--timeout)",
            ) from None
        self._body_state = "done"
        return b"".join(chunks)

    def _form(self) -> list[Part]:
        if self.headers.get_content_type() != "multipart/form-data":
            raise RequestError(
                400,
                f"Content-Type {self.headers.get('Content-Type') or '(none)'}: uploads must be"
                " multipart/form-data (curl -F a=@x.wav ...)",
            )
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
                raise RequestError(
                    405,
                    f"{path} takes {' or '.join(m for m in methods if m != 'HEAD')}, not {self.command}",
                    {"Allow": ", ".join(methods)},
                )
            self._admit()
            payload = getattr(self, "_" + path.strip("/"))(parse_qs(target.query, keep_blank_values=True))
        except RequestError as exc:
            status, payload, headers = exc.status, {"error": exc.message}, exc.headers
        except VvframeError as exc:
            status, payload, headers = 400, {"error": _one_line(exc, 500)}, {}
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
            return
        except Exception as exc:
            log.exception("%s %s failed", self.command, self.path)
            status, payload, headers = 500, {"error": f"internal error: {type(exc).__name__}: {_one_line(exc)}"}, {}
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
        _only(query, ("threshold", "prior"), "/verify")

        def option(key: str) -> str | None:  # the query's value, else the form field's
            fields = [p for p in parts if p.name == key]
            found = fields[-1].data.decode("utf-8", "replace").strip() if fields else None
            return query.get(key, [found])[-1]

        threshold = option("threshold")
        name, _ = service.resolve_threshold(service.threshold if threshold is None else threshold)
        prior = _prior(option("prior"))
        chosen = select(parts, ("a", "b"), ("threshold", "prior"), "POST /verify")
        a, b = (service.decode(label, part.data) for label, part in chosen)
        return service.verify(a, b, name, prior)

    def _embed(self, query: dict[str, list[str]]) -> dict[str, Any]:
        service = self.server.service
        parts = self._form()
        _only(query, (), "/embed")
        ((label, part),) = select(parts, ("audio",), (), "POST /embed")
        return service.embed(service.decode(label, part.data))


def _prior(raw: str | None) -> float | None:
    """A request's ``prior``: None when not given; 400 unless it is a probability in (0, 1)."""
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not 0.0 < value < 1.0:
        raise RequestError(400, f"prior {raw[:40]!r}: expected the probability of a target trial, in (0, 1)")
    return value


def _only(query: dict[str, list[str]], allowed: tuple[str, ...], endpoint: str) -> None:
    for key in query:
        if key not in allowed:
            takes = f"takes only {', '.join(allowed)}" if allowed else "takes none"
            raise RequestError(400, f"unknown query parameter {key!r}{did_you_mean(key, allowed)}: {endpoint} {takes}")


class Server(ThreadingHTTPServer):
    """A :class:`ThreadingHTTPServer` holding the :class:`Service`: one thread per connection, at most
    ``max_connections`` at once. While all are busy the server stops accepting, and new connections wait in the
    kernel's listen queue (``backlog`` long) instead of being reset.

    The threads are not daemons: :meth:`server_close` ends them and waits. (A daemon thread still holding the
    model at interpreter exit could free its tensors during finalization, which aborts the process.)"""

    daemon_threads = False
    service: Service

    def __init__(
        self, address, handler, max_connections: int = DEFAULT_MAX_CONNECTIONS, backlog: int = DEFAULT_BACKLOG
    ):
        if max_connections < 1 or backlog < 1:
            raise BadValue(f"max_connections={max_connections}, backlog={backlog}: both must be >= 1")
        self.request_queue_size = int(backlog)  # what server_activate passes to listen()
        self.connections = Slots(max_connections)
        self._open: set[socket.socket] = set()  # the connections being served
        self._stopping = False
        super().__init__(address, handler)

    def process_request(self, request, client_address) -> None:
        while not self.connections.take(timeout=0.1):  # the accepting waits; shutdown() still gets through
            if self._stopping:
                self.shutdown_request(request)
                return
        try:
            super().process_request(request, client_address)  # starts the connection's thread
        except BaseException:
            self.connections.give()
            raise

    def process_request_thread(self, request, client_address) -> None:
        self._open.add(request)
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._open.discard(request)
            self.connections.give()

    def shutdown_request(self, request) -> None:
        """Close a connection without resetting it under the answer: send FIN, then read and drop what the client
        still sends (at most DRAIN_LIMIT bytes, LINGER_SECONDS) until it closes its end too."""
        try:
            request.shutdown(socket.SHUT_WR)
            deadline, left = time.monotonic() + LINGER_SECONDS, DRAIN_LIMIT
            while left > 0 and (wait := deadline - time.monotonic()) > 0:
                request.settimeout(wait)
                chunk = request.recv(min(65536, left))
                if not chunk:
                    break
                left -= len(chunk)
        except OSError:
            pass
        self.close_request(request)

    def shutdown(self) -> None:
        self._stopping = True
        super().shutdown()

    def server_close(self) -> None:
        """Stop listening and wait for the connections' threads, after ending their reading: an idle keep-alive
        or a stalled upload ends at once, an answer being worked on still goes out."""
        for request in list(self._open):
            try:
                request.shutdown(socket.SHUT_RD)
            except OSError:
                pass
        super().server_close()  # ThreadingMixIn's: closes the socket, joins the threads

    def server_bind(self) -> None:
        # HTTPServer.server_bind also looks the host's name up (socket.getfqdn), which can stall on a machine
        # without working reverse DNS; the name is not needed
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])


class Server6(Server):
    address_family = socket.AF_INET6


def make_server(
    model,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    threshold: str = "eer",
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_seconds: float = DEFAULT_MAX_SECONDS,
    min_seconds: float = DEFAULT_MIN_SECONDS,
    workers: int = DEFAULT_WORKERS,
    queue: int = DEFAULT_QUEUE,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    backlog: int = DEFAULT_BACKLOG,
    timeout: float = DEFAULT_TIMEOUT,
    vad: bool | str | None = None,
) -> Server:
    """A bound, not yet serving HTTP server for ``model`` (a :class:`vvframe.inference.model.SpeakerModel`); run it with
    ``serve_forever()`` (in a thread if need be) and stop it with ``shutdown()`` and ``server_close()``.
    ``port`` 0 picks a free port: ``server.server_address[1]`` says which. The limits are ``vvframe serve``'s
    options of the same names."""
    service = Service(model, threshold, max_bytes, max_seconds, min_seconds, workers, queue, timeout, vad=vad)
    server = (Server6 if ":" in host else Server)((host, int(port)), Handler, max_connections, backlog)
    server.service = service
    return server


def url(server: Server) -> str:
    host, port = server.server_address[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
