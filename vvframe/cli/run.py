"""``vvframe run``: validate a recipe, give it a run directory (new, named, or resumed) and run its stages.

The run directory is the command's business, not the kernel's: ``runs/<name>/<timestamp>`` for a new run, an
empty ``--run-dir``, or ``--resume RUN_DIR``. A mistake found before any stage starts removes the directory
this command made, so that "the newest run" of ``runs/<name>`` is always one that ran.
"""

from __future__ import annotations

import datetime as _dt
import shutil
import signal
import sys
from pathlib import Path

from vvframe import __version__
from vvframe.cli.plugins import compare_plugins
from vvframe.core import recipe as recipes
from vvframe.core import run as runs
from vvframe.core.atomic import atomic_write
from vvframe.core.errors import VvframeError
from vvframe.core.run import RECIPE_FILE, RunError


def main(rest: list[str], parser) -> int:
    """Run the recipe (or resume the run) that ``rest`` names; ``parser`` is the command's argument parser."""
    from vvframe.cli import _split, checking_warnings
    from vvframe.training.launch import setup_logging, torchrun_rank

    parser.add_argument(
        "--stage",
        action="append",
        default=[],
        metavar="NAME",
        help="run only this stage (repeatable); on --resume it runs again even if finished",
    )
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue a run in its own directory")
    parser.add_argument("--run-dir", metavar="DIR", help="a new, empty directory for this run (default runs/NAME/TIME)")
    parser.add_argument("--runs", default="runs", metavar="ROOT", help="where new run directories go (default: runs)")
    opts = parser.parse_intermixed_args(rest)
    path, overrides = _split(parser, opts.args, recipe_optional=bool(opts.resume))
    if opts.resume and opts.run_dir:
        parser.error("--resume and --run-dir exclude each other: --resume continues RUN_DIR itself")
    # under torchrun every process runs this command; they share one run directory, which rank 0 owns
    torchrun = torchrun_rank()
    rank, world_size = torchrun or (0, 1)
    if torchrun and not (opts.resume or opts.run_dir):
        parser.error("under torchrun, give every process the same --run-dir DIR (or --resume RUN_DIR)")
    path = path or resume_recipe_path(opts.resume)
    with checking_warnings() as warnings:
        resolved = recipes.check(path, overrides)
    made = None  # folders this command made (a mistake found before any work removes them): how many parents
    if opts.resume:
        run_dir = resume_recipe_path(opts.resume).parent
    elif opts.run_dir and rank > 0:
        run_dir = Path(opts.run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
    elif opts.run_dir:
        made = -1 if Path(opts.run_dir).exists() else 0  # an empty folder given by the user stays
        run_dir = claim_run_dir(opts.run_dir)
    else:
        made = 2  # runs/<name>/<time>, and runs/<name> and runs when it made them
        run_dir = new_run_dir(resolved.name, opts.runs)
    setup_logging(run_dir / runs.LOG_FILE, rank=rank)
    ctx = runs.RunContext(resolved, run_dir, resumed=bool(opts.resume), rank=rank, world_size=world_size)
    ctx.log.info("vvframe %s: %s %s in %s", __version__, "resuming" if opts.resume else "running", path, run_dir)
    for warning in [*warnings, *compare_plugins(resolved)]:
        ctx.log.warning(warning)
    previous = signal.signal(signal.SIGTERM, _terminated)  # a SIGTERM ends the run the way Ctrl-C does
    try:
        if ctx.is_main:
            write_snapshot(ctx)
        runs.execute(ctx, opts.stage)
    except runs.StageFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:
        print(f"{exc or 'interrupted'}; continue with: vvframe run --resume {run_dir}", file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130
    except VvframeError:
        if made is not None and not ctx.started:  # found before any work: leave no run directory behind
            ctx.close()
            setup_logging(None, rank=rank)
            discard_run_dir(run_dir, max(made, 0))
            if made < 0:
                run_dir.mkdir()  # the empty folder the user gave, as it was
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
        ctx.close()
    ctx.log.info("run finished: %s", run_dir)
    return 0


class Terminated(KeyboardInterrupt):
    """SIGTERM while running: handled like Ctrl-C (status ``interrupted``, the resume hint), exit code 143."""


def _terminated(signum, frame) -> None:
    raise Terminated("terminated (SIGTERM)")


def new_run_dir(name: str, root: str | Path = "runs") -> Path:
    """Create ``<root>/<name>/<timestamp>`` (a suffix ``-1``, ``-2``... if that second is taken); never reuses one."""
    base = Path(root) / name
    base.mkdir(parents=True, exist_ok=True)
    stamp = _dt.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    for n in range(1000):
        candidate = base / (stamp if n == 0 else f"{stamp}-{n}")
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        return candidate
    raise RunError(f"cannot create a new run directory under {base}")


def claim_run_dir(path: str | Path) -> Path:
    """Use ``path`` (from ``--run-dir``) for a new run: it must not exist or be an empty directory."""
    path = Path(path)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise RunError(
            f"--run-dir {path} exists and is not empty; a new run never writes into an old run's"
            f" directory (continue that run with --resume {path})"
        )
    path.mkdir(parents=True, exist_ok=True)
    return path


def discard_run_dir(run_dir: Path, parents: int = 0) -> None:
    """Remove a run directory that this command made and in which nothing ran (its snapshot, an empty log), and
    up to ``parents`` of its folders (``runs/<name>``, ``runs``) that it alone filled."""
    shutil.rmtree(run_dir, ignore_errors=True)
    for parent in run_dir.parents[:parents]:
        if parent.is_dir() and not any(parent.iterdir()):
            parent.rmdir()


def resume_recipe_path(run_dir: str | Path) -> Path:
    """The recipe snapshot of a run to resume; a ``RunError`` if ``run_dir`` is not a run directory."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise RunError(f"--resume {run_dir}: no such directory (give a run directory, e.g. runs/NAME/TIMESTAMP)")
    if not run_dir.is_dir():
        raise RunError(f"--resume {run_dir}: a file, not a run directory")
    if not (run_dir / RECIPE_FILE).is_file():
        raise RunError(f"--resume {run_dir}: not a run directory (no {RECIPE_FILE} in it)")
    return run_dir / RECIPE_FILE


def write_snapshot(ctx: runs.RunContext) -> None:
    """Write the resolved recipe into the run directory; never overwrite one (a changed recipe is saved beside it)."""
    text = f"# resolved by vvframe from {ctx.resolved.recipe.source}\n" + recipes.dump(ctx.recipe)
    target = ctx.run_dir / RECIPE_FILE
    if target.exists():
        if _body(target.read_text(encoding="utf-8")) == _body(text):
            return
        target = ctx.run_dir / f"recipe.{_dt.datetime.now().strftime('%Y-%m-%d_%H-%M-%S')}.yaml"
        ctx.log.warning("the recipe differs from the one this run started with; saved as %s", target.name)
    atomic_write(target, text)


def _body(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.startswith("#"))
