"""Run every benchmark in `bench/` and print one table: benchmark, figure, value, unit, what it was compared with.

`make bench` runs this (`make bench BENCH_ARGS=--quick` passes options). Each benchmark is a module here with
`run(quick) -> list[Row]`; a module that is not in ORDER still runs, after the others. A benchmark that fails
is reported as a row and the run goes on; the exit status is then 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import sys
import time
import traceback
from pathlib import Path

from common import Row, load_average, machine, summary, table

ORDER = ["cli_startup", "loader", "frontends", "train_step", "extraction", "scoring", "metrics"]
NOT_BENCHMARKS = {"common", "run_all"}


def benchmark_names() -> list[str]:
    """The benchmark modules of this folder: ORDER first, then any others by name."""
    here = sorted(p.stem for p in Path(__file__).resolve().parent.glob("*.py") if p.stem not in NOT_BENCHMARKS)
    return [n for n in ORDER if n in here] + [n for n in here if n not in ORDER]


def main() -> int:
    names = benchmark_names()
    parser = argparse.ArgumentParser(description=summary(__doc__))
    parser.add_argument("--quick", action="store_true", help="smaller sizes: a smoke run of under a minute or so")
    parser.add_argument(
        "--only",
        action="append",
        metavar="NAME",
        choices=names,
        help=f"run only this benchmark (repeatable): {', '.join(names)}",
    )
    parser.add_argument("--markdown", action="store_true", help="print the table as markdown (for bench/README.md)")
    args = parser.parse_args()
    chosen = [n for n in names if not args.only or n in args.only]

    print(f"machine: {machine()}", flush=True)
    rows: list[Row] = []
    failed = []
    start = time.perf_counter()
    for name in chosen:
        began = time.perf_counter()
        print(f"running {name} ...", end=" ", file=sys.stderr, flush=True)
        try:
            module = importlib.import_module(name)
            found = module.run(args.quick)
        except Exception as exc:  # noqa: BLE001 - one failing benchmark must not hide the others' figures
            traceback.print_exc()
            failed.append(name)
            found = [Row("FAILED", float("nan"), "", f"{type(exc).__name__}: {exc}")]
        rows += [dataclasses.replace(r, benchmark=name) for r in found]
        print(f"{time.perf_counter() - began:.0f} s (load average {load_average()})", file=sys.stderr, flush=True)
    print(table(rows, args.markdown))
    mode = "quick" if args.quick else "full"
    print(
        f"{mode} run of {len(chosen)} benchmarks in {time.perf_counter() - start:.0f} s; "
        f"load average at the end {load_average()}" + (f"; FAILED: {', '.join(failed)}" if failed else "")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
