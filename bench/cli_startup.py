"""How long the `vvframe` command takes to answer: listing, describing, and rejecting a misspelled recipe.

The median wall time of each command over several runs, in fresh processes, against a bare Python start-up
(`python -c pass`) and, for the commands that must read a signature from torch, against `import torch` alone.
A throw-away distribution in a temporary folder adds a loss that points straight at torch, so the
misspelled-argument case has to import torch to read the signature, as a real recipe would.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from common import Row, median_seconds, number, standalone


def median_run(argv: list[str], env: dict, cwd: Path, repeat: int) -> tuple[float, int]:
    """The median wall time of running ``argv`` ``repeat`` times, and the last exit status."""
    codes = []

    def once() -> None:
        codes.append(subprocess.run(argv, env=env, cwd=cwd, capture_output=True).returncode)

    return median_seconds(once, repeat, warmup=0), codes[-1]


def run(quick: bool = False) -> list[Row]:
    """Rows: median seconds of each `vvframe` command, against bare Python or `import torch`."""
    repeat = 1 if quick else 3
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        info = tmp / "site" / "bench_losses-0.1.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text("Metadata-Version: 2.1\nName: bench-losses\nVersion: 0.1\n")
        (info / "entry_points.txt").write_text("[vvframe.losses]\ncross_entropy = torch.nn:CrossEntropyLoss\n")
        env = dict(os.environ, PYTHONPATH=str(tmp / "site"))
        (tmp / "typo.yaml").write_text(
            "stages: [train]\noptimizer: {name: sdg, lr: 0.1}\nloss: {name: cross_entropy, label_smothing: 0.1}\n"
        )
        bare, _ = median_run([sys.executable, "-c", "pass"], env, tmp, repeat)
        torch_only, _ = median_run([sys.executable, "-c", "import torch"], env, tmp, repeat)
        cases = [  # (label, arguments, expected exit status, needs torch)
            ("vvframe --version", ["--version"], 0, False),
            ("vvframe plugins", ["plugins"], 0, False),
            ("vvframe plugins optimizers sgd", ["plugins", "optimizers", "sgd"], 0, True),
            ("vvframe run typo.yaml (2 typos)", ["run", "typo.yaml"], 2, True),
        ]
        rows = []
        for label, args, expected, needs_torch in cases:
            seconds, code = median_run([sys.executable, "-m", "vvframe", *args], env, tmp, repeat)
            base_label, base = ("`python -c 'import torch'`", torch_only) if needs_torch else ("`python -c pass`", bare)
            compared = f"{base_label}: {number(base)} s ({seconds - base:+.3f} s)"
            if code != expected:
                compared += f"; EXIT STATUS {code}, expected {expected}"
            rows.append(Row(f"{label}, median of {repeat}", seconds, "s", compared))
        return rows


if __name__ == "__main__":
    standalone("cli_startup", run, __doc__)
