"""What the benchmarks share: a result row, comparisons between two timings, timing helpers, generated audio,
the machine line and the table.

Every benchmark module in ``bench/`` exposes ``run(quick: bool = False) -> list[Row]`` (``quick``: smaller sizes,
for a smoke run) and, run as a script, prints the machine line and its own table through :func:`standalone`;
``bench/run_all.py`` imports them all and prints one table.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Row:
    """One measured figure: what it is, its value and unit, and what it was compared with (free text)."""

    figure: str
    value: float
    unit: str
    compared_with: str = ""
    benchmark: str = ""


def number(value: float) -> str:
    """``value`` to about three significant figures, with thousands separators (1,286; 84.0; 2.52; 0.0221)."""
    if value == 0 or not math.isfinite(value):
        return f"{value:g}"
    digits = max(0, 2 - math.floor(math.log10(abs(value))))
    return f"{value:,.{digits}f}"


def ratio(ours: float, theirs: float, higher_is_better: bool) -> str:
    """How ``ours`` fares against ``theirs``: ``"3.1x faster"``, ``"1.4x slower"`` or ``"same"``."""
    if ours <= 0 or theirs <= 0:
        return "n/a"
    gain = ours / theirs if higher_is_better else theirs / ours
    if abs(gain - 1.0) < 0.005:
        return "same"
    return f"{number(gain)}x faster" if gain > 1 else f"{number(1 / gain)}x slower"


def versus(label: str, theirs: float, unit: str, ours: float, higher_is_better: bool) -> str:
    """The "compared with" text, ``"<label>: <theirs> <unit> (Nx faster)"``: how ``ours`` fares against ``theirs``."""
    return f"{label}: {number(theirs)}{' ' + unit if unit else ''} ({ratio(ours, theirs, higher_is_better)})"


def sync(device: str) -> None:
    """Wait for queued CUDA work, so that a timer around it measures the work."""
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def timed(device: str, fn: Callable, *args):
    """``(fn(*args), seconds)``, waiting for the device before and after."""
    sync(device)
    start = time.perf_counter()
    out = fn(*args)
    sync(device)
    return out, time.perf_counter() - start


def call_seconds(fn: Callable[[], object], repeat: int, warmup: int = 1, device: str = "cpu") -> list[float]:
    """The wall time of each of ``repeat`` calls of ``fn`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    return [timed(device, fn)[1] for _ in range(repeat)]


def median_seconds(fn: Callable[[], object], repeat: int, warmup: int = 1, device: str = "cpu") -> float:
    """The median wall time of ``repeat`` calls of ``fn`` after ``warmup`` untimed ones."""
    return statistics.median(call_seconds(fn, repeat, warmup, device))


def best_seconds(fn: Callable[[], object], repeat: int, warmup: int = 1, device: str = "cpu") -> float:
    """The shortest wall time of ``repeat`` calls (on a shared machine other work only ever adds time)."""
    return min(call_seconds(fn, repeat, warmup, device))


def write_tone(path: Path, seconds: float, rate: int, rng: np.random.Generator, low_hz: float, spread_hz: float) -> int:
    """Write a 16-bit WAV or FLAC (by suffix) of a sine at a random pitch in [low_hz, low_hz + spread_hz) plus
    noise, creating its folder; returns its length in samples."""
    import torch

    from vvframe.data.audio import write

    n = int(seconds * rate)
    t = np.arange(n) / rate
    x = 0.2 * np.sin(2 * np.pi * (low_hz + spread_hz * rng.random()) * t) + 0.05 * rng.standard_normal(n)
    write(path, torch.from_numpy(x.astype(np.float32)), rate)
    return n


def devices() -> list[str]:
    """``["cpu"]``, plus ``"cuda"`` when a CUDA device is present."""
    import torch

    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ram_gib() -> float | None:
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


def load_average() -> str:
    """The 1-, 5- and 15-minute load averages, or "n/a" where the system does not say."""
    try:
        return ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except (AttributeError, OSError):
        return "n/a"


def machine() -> str:
    """One line on where the figures were taken: CPU, cores, threads, RAM, GPU, versions, date and load."""
    import torch

    ram = _ram_gib()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    date = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    return (
        f"{_cpu_model()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}, "
        f"RAM {f'{ram:.0f} GiB' if ram is not None else 'n/a'}, GPU {gpu}; Python {platform.python_version()}, "
        f"torch {torch.__version__}, {platform.system()} {platform.release()}; {date}; "
        f"load average {load_average()}"
    )


COLUMNS = ("benchmark", "figure", "value", "unit", "compared with")


def table(rows: Sequence[Row], markdown: bool = False) -> str:
    """The rows as an aligned text table (or a markdown table), one line per row."""
    cells = [(r.benchmark, r.figure, number(r.value), r.unit, r.compared_with or "-") for r in rows]
    if markdown:
        lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join(("---", "---", "---:", "---", "---")) + "|"]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in cells]
        return "\n".join(lines)
    widths = [max(len(c[i]) for c in [COLUMNS, *cells]) for i in range(len(COLUMNS))]
    lines = []
    for row in [COLUMNS, *cells]:
        parts = [
            row[0].ljust(widths[0]),
            row[1].ljust(widths[1]),
            row[2].rjust(widths[2]),
            row[3].ljust(widths[3]),
            row[4],
        ]
        lines.append("  ".join(parts).rstrip())
    lines.insert(1, "  ".join("-" * w for w in widths[:4]) + "  " + "-" * len(COLUMNS[4]))
    return "\n".join(lines)


def summary(docstring: str | None) -> str:
    """The first paragraph of a docstring, on one line."""
    return " ".join((docstring or "").strip().split("\n\n")[0].split())


def standalone(name: str, run: Callable[[bool], list[Row]], description: str | None) -> None:
    """The command line of one benchmark script: ``--quick``, then the machine line and its table."""
    parser = argparse.ArgumentParser(prog=f"bench/{name}.py", description=summary(description))
    parser.add_argument("--quick", action="store_true", help="smaller sizes: a smoke run of a few seconds")
    parser.add_argument("--markdown", action="store_true", help="print the table as markdown")
    args = parser.parse_args()
    print(f"machine: {machine()}", flush=True)
    start = time.perf_counter()
    rows = [dataclasses.replace(r, benchmark=r.benchmark or name) for r in run(args.quick)]
    print(table(rows, args.markdown), flush=True)
    print(f"{name}: {time.perf_counter() - start:.0f} s", file=sys.stderr)
