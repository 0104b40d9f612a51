"""How long the `vvframe` command takes to answer: listing, describing, and rejecting a misspelled recipe.

Run by hand (`make bench`); prints a table of the median wall time of each command over several runs.
A throw-away distribution in a temporary folder adds a loss that points straight at torch, so the
misspelled-argument case has to import torch to read the signature, as a real recipe would.
"""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPEAT = 5
ROOT = Path(__file__).resolve().parent.parent


def timed(args: list[str], env: dict, cwd: Path) -> tuple[float, int]:
    times, code = [], 0
    for _ in range(REPEAT):
        start = time.perf_counter()
        code = subprocess.run([sys.executable, "-m", "vvframe", *args], env=env, cwd=cwd,
                              capture_output=True).returncode
        times.append(time.perf_counter() - start)
    return statistics.median(times), code


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        info = tmp / "site" / "bench_losses-0.1.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text("Metadata-Version: 2.1\nName: bench-losses\nVersion: 0.1\n")
        (info / "entry_points.txt").write_text("[vvframe.losses]\ncross_entropy = torch.nn:CrossEntropyLoss\n")
        env = dict(os.environ, PYTHONPATH=str(tmp / "site"))
        (tmp / "typo.yaml").write_text("stages: [train]\noptimizer: {name: sdg, lr: 0.1}\n"
                                       "loss: {name: cross_entropy, label_smothing: 0.1}\n")
        cases = [
            ("python -c pass", None),
            ("vvframe --version", ["--version"]),
            ("vvframe plugins", ["plugins"]),
            ("vvframe plugins optimizers sgd", ["plugins", "optimizers", "sgd"]),
            ("vvframe run typo.yaml (2 typos)", ["run", "typo.yaml"]),
        ]
        print(f"{'command':<34} {'median s':>9} {'exit':>5}   ({REPEAT} runs each, {sys.platform}, "
              f"{os.cpu_count()} cpus)")
        for label, args in cases:
            if args is None:
                times = []
                for _ in range(REPEAT):
                    start = time.perf_counter()
                    subprocess.run([sys.executable, "-c", "pass"], check=True)
                    times.append(time.perf_counter() - start)
                seconds, code = statistics.median(times), 0
            else:
                seconds, code = timed(args, env, tmp)
            print(f"{label:<34} {seconds:>9.3f} {code:>5}")


if __name__ == "__main__":
    main()
