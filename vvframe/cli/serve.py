"""``vvframe serve RUN [--host H] [--port N] ...``: the HTTP verification service of
:mod:`vvframe.inference.serve` for a trained run or an exported model, until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import logging
import math
import re
import signal
import sys
import threading

from vvframe.cli import model_options, vad_option
from vvframe.core.errors import BadValue, did_you_mean
from vvframe.inference.serve import (
    DEFAULT_BACKLOG,
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_SECONDS,
    DEFAULT_MIN_SECONDS,
    DEFAULT_QUEUE,
    DEFAULT_TIMEOUT,
    DEFAULT_WORKERS,
    ENDPOINTS,
    RETRY_AFTER,
    make_server,
    url,
)

log = logging.getLogger(__name__)

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


def _count(least: int):
    """An argparse type: a whole number >= ``least``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"{value}: must be at least {least}")
        return value

    return parse


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
        prog="vvframe serve",
        description="an HTTP verification service for a trained run or an exported model",
        epilog="endpoints: POST /verify (multipart fields a, b; ?threshold=NAME|NUMBER), POST /embed (field audio),"
        " GET /health.  Example: curl -F a=@x.wav -F b=@y.wav http://127.0.0.1:8000/verify",
    )
    parser.add_argument("model", metavar="RUN", help="a run directory or an exported model file")
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 for every interface)",
    )
    parser.add_argument("--port", type=_port, default=8000, help="port (default 8000; 0: any free port)")
    model_options(parser)
    vad_option(parser)
    parser.add_argument(
        "--threshold",
        default="eer",
        help="the default threshold: a tuned one's name (eer, mindcf@0.01, far@0.001) or a number",
    )
    parser.add_argument(
        "--max-bytes",
        type=parse_size,
        default=DEFAULT_MAX_BYTES,
        metavar="SIZE",
        help="largest request body (default 50M); larger uploads get 413",
    )
    parser.add_argument(
        "--max-seconds",
        type=_seconds,
        default=DEFAULT_MAX_SECONDS,
        metavar="S",
        help="longest audio per file in seconds (default 600)",
    )
    parser.add_argument(
        "--min-seconds",
        type=_seconds,
        default=DEFAULT_MIN_SECONDS,
        metavar="S",
        help="shortest audio per file in seconds (default: only the model's own minimum, 0.1 s)",
    )
    limits = parser.add_argument_group("limits under load")
    limits.add_argument(
        "--workers",
        type=_count(1),
        default=DEFAULT_WORKERS,
        metavar="N",
        help=f"requests worked on at once (default {DEFAULT_WORKERS}); each holds up to --max-bytes",
    )
    limits.add_argument(
        "--queue",
        type=_count(0),
        default=DEFAULT_QUEUE,
        metavar="N",
        help=f"requests that may wait for a worker (default {DEFAULT_QUEUE}); a request beyond"
        f" --workers + --queue gets 503 with Retry-After: {RETRY_AFTER} at once",
    )
    limits.add_argument(
        "--max-connections",
        type=_count(1),
        default=DEFAULT_MAX_CONNECTIONS,
        metavar="N",
        help=f"connections served at once, one thread each (default {DEFAULT_MAX_CONNECTIONS});"
        " further ones wait in the listen backlog",
    )
    limits.add_argument(
        "--backlog",
        type=_count(1),
        default=DEFAULT_BACKLOG,
        metavar="N",
        help=f"connections the system holds while all are busy (default {DEFAULT_BACKLOG}; capped"
        " by net.core.somaxconn)",
    )
    limits.add_argument(
        "--timeout",
        type=_seconds,
        default=DEFAULT_TIMEOUT,
        metavar="S",
        help=f"seconds a connection may stay silent (an idle keep-alive, a stalled upload: 408)"
        f" before it is closed (default {DEFAULT_TIMEOUT:g})",
    )
    opts = parser.parse_args(rest)

    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s")
    from vvframe.inference.api import load  # imports torch: only once the arguments are good

    model = load(opts.model, device=opts.device, checkpoint=opts.checkpoint, trust_recipe=opts.trust_recipe)
    try:
        model.threshold(opts.threshold)
    except BadValue as exc:
        if model.thresholds:
            raise BadValue(f"--threshold: {exc}{did_you_mean(opts.threshold, model.thresholds)}") from None
        log.warning(
            "%s has no tuned thresholds: POST /verify needs ?threshold=NUMBER (or start with --threshold NUMBER)",
            model.source,
        )
    try:
        server = make_server(
            model,
            opts.host,
            opts.port,
            threshold=opts.threshold,
            max_bytes=opts.max_bytes,
            max_seconds=opts.max_seconds,
            min_seconds=opts.min_seconds,
            workers=opts.workers,
            queue=opts.queue,
            max_connections=opts.max_connections,
            backlog=opts.backlog,
            timeout=opts.timeout,
            vad=opts.vad,
        )
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
