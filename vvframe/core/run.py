"""The run directory, its logging, TensorBoard writer and progress bars, and running stages in order."""

from __future__ import annotations

import copy
import datetime as _dt
import json
import logging
import sys
import time
import traceback
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from vvframe.core import recipe as recipes
from vvframe.core.atomic import atomic_json, atomic_write
from vvframe.core.errors import VvframeError, add_note

log = logging.getLogger(__name__)

STATUS_FILE = "run.json"
RECIPE_FILE = "recipe.yaml"
LOG_FILE = "log.txt"


# DESIGN section 6: the folders of a run directory, written by the stages and read by the Python API
RUN_LAYOUT = {"checkpoints": "checkpoints", "cohort": "cohort", "eval": "eval", "test": "test"}


class RunError(VvframeError, RuntimeError):
    """A run directory that cannot be used (exists already, is not a run, ...)."""


class StageFailed(Exception):
    """A stage raised; the traceback is in log.txt and ``__cause__`` holds the original exception."""

    def __init__(self, stage: str, log_file: Path):
        self.stage = stage
        self.log_file = log_file
        super().__init__(stage)

    def summary(self) -> str:
        cause = self.__cause__
        what = f"{type(cause).__name__}: {cause}".splitlines()[0] if cause else "failed"
        return f"stage '{self.stage}' failed: {what} (traceback in {self.log_file})"


class RunContext:
    """What every stage of a run shares: the resolved recipe, the run directory, rank, logger, writer, progress.

    Only rank 0 writes files, logs progress and owns the TensorBoard writer; other ranks get a writer of
    ``None`` and disabled progress bars.
    """

    def __init__(
        self,
        resolved: recipes.Resolved,
        run_dir: str | Path,
        *,
        rank: int = 0,
        world_size: int = 1,
        resumed: bool = False,
    ):
        self.resolved = resolved
        self.recipe: dict[str, Any] = resolved.to_dict()
        self.name = resolved.name
        self.seed = resolved.seed
        self.run_dir = Path(run_dir)
        self.rank = rank
        self.world_size = world_size
        self.resumed = resumed
        self.log = logging.getLogger("vvframe.core.run")
        self.started = False  # set when the first stage starts running (building them is not work yet)
        self._writer = None

    @property
    def is_main(self) -> bool:
        """Whether this process is rank 0 (the one that writes files and logs progress)."""
        return self.rank == 0

    @property
    def writer(self):
        """TensorBoard ``SummaryWriter`` writing into the run directory (rank 0), else ``None``."""
        if self._writer is None and self.is_main:
            from torch.utils.tensorboard import SummaryWriter  # heavy: imported when first used

            self._writer = SummaryWriter(log_dir=str(self.run_dir))
        return self._writer

    def path(self, *parts: str) -> Path:
        """A path inside the run directory, its parent folders created."""
        p = self.run_dir.joinpath(*parts)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def progress(self, iterable: Iterable | None = None, **kwargs: Any):
        """A tqdm progress bar, shown only on rank 0 and only when stderr is a terminal."""
        from tqdm.auto import tqdm

        kwargs.setdefault("disable", not (self.is_main and sys.stderr.isatty()))
        kwargs.setdefault("dynamic_ncols", True)
        return tqdm(iterable, **kwargs)

    def __getstate__(self) -> dict[str, Any]:
        """Picklable for spawned ranks: the TensorBoard writer stays behind (each process opens its own)."""
        return {**self.__dict__, "_writer": None}

    def for_rank(self, rank: int, world_size: int) -> RunContext:
        """This context as seen by one rank of a distributed run (only rank 0 writes files and logs progress)."""
        other = copy.copy(self)
        other.rank, other.world_size, other._writer = rank, world_size, None
        return other

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


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


def latest_run(folder: str | Path, needs: str = "checkpoints") -> Path | None:
    """The newest usable run directory under ``folder`` (``runs/<recipe name>``: timestamped runs): one that
    holds ``needs`` (for ``checkpoints``: at least one checkpoint file, so a failed or empty attempt never
    counts); ``folder`` itself when it is such a run; None when there is none. The choice is logged."""
    folder = Path(folder)

    def usable(run: Path) -> bool:
        target = run / needs
        if needs == "checkpoints":
            return target.is_dir() and any(p.suffix == ".pt" for p in target.iterdir())
        return target.exists()

    if usable(folder):
        return folder
    runs = (
        sorted((p for p in folder.iterdir() if p.is_dir() and usable(p)), key=lambda p: p.name)
        if folder.is_dir()
        else []
    )
    if runs:
        log.info("%s: using its newest usable run, %s", folder, runs[-1])
    return runs[-1] if runs else None


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
    import shutil

    shutil.rmtree(run_dir, ignore_errors=True)
    for parent in run_dir.parents[:parents]:
        if parent.is_dir() and not any(parent.iterdir()):
            parent.rmdir()


def resume_recipe_path(run_dir: str | Path) -> Path:
    """The recipe snapshot of a run to resume; a ``RunError`` if ``run_dir`` is not a run directory."""
    run_dir = Path(run_dir)
    snapshot = run_dir / RECIPE_FILE
    if not run_dir.exists():
        raise RunError(f"--resume {run_dir}: no such directory (give a run directory, e.g. runs/NAME/TIMESTAMP)")
    if not run_dir.is_dir():
        raise RunError(f"--resume {run_dir}: a file, not a run directory")
    if not snapshot.is_file():
        raise RunError(f"--resume {run_dir}: not a run directory (no {RECIPE_FILE} in it)")
    return snapshot


def setup_logging(run_dir: Path | None, *, rank: int = 0, verbose: bool = False) -> None:
    """Log to the console and (rank 0) to ``run_dir/log.txt`` with timestamps."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_vvframe", False):
            root.removeHandler(handler)
            handler.close()
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(logging.INFO if rank == 0 else logging.WARNING)
    console.setFormatter(logging.Formatter("%(message)s" if rank == 0 else f"[rank {rank}] %(message)s"))
    console._vvframe = True  # type: ignore[attr-defined]
    root.addHandler(console)
    if run_dir is not None and rank == 0:
        file = logging.FileHandler(run_dir / LOG_FILE, encoding="utf-8")
        file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        file._vvframe = True  # type: ignore[attr-defined]
        root.addHandler(file)


def write_snapshot(ctx: RunContext) -> None:
    """Write the resolved recipe into the run directory; never overwrite one (a changed recipe is saved beside it)."""
    text = f"# resolved by vvframe from {ctx.resolved.recipe.source}\n" + recipes.dump(ctx.recipe)
    target = ctx.run_dir / RECIPE_FILE
    if target.exists():
        if _body(target.read_text(encoding="utf-8")) == _body(text):
            return
        target = ctx.run_dir / f"recipe.{_dt.datetime.now().strftime('%Y-%m-%d_%H-%M-%S')}.yaml"
        ctx.log.warning("the recipe differs from the one this run started with; saved as %s", target.name)
    atomic_write(target, text)


def _snapshot(run_dir: Path) -> dict[str, Any]:
    """The recipe a run started with (its ``recipe.yaml``), or ``{}`` when it cannot be read."""
    import yaml

    try:
        data = yaml.safe_load((run_dir / RECIPE_FILE).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def _body(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.startswith("#"))


def read_status(run_dir: Path) -> dict[str, Any]:
    """The stage statuses of a run (``run.json``), empty for a new run."""
    path = run_dir / STATUS_FILE
    if not path.is_file():
        return {"stages": {}}
    try:
        status = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunError(
            f"{path}: unreadable ({exc}); it records which stages finished. Move it aside to run every"
            " stage again (finished training resumes from its checkpoints)"
        ) from None
    if not isinstance(status, dict) or not isinstance(status.get("stages"), dict):
        raise RunError(
            f'{path}: not a vvframe run status (expected {{"stages": {{...}}}}); move it aside to run'
            " every stage again (finished training resumes from its checkpoints)"
        )
    return status


def execute(ctx: RunContext, only: Sequence[str] = ()) -> None:
    """Build the selected stages, then run them in recipe order; finished stages are skipped on resume.

    ``only`` names stages to run (each must be in the recipe); empty means all. A stage that raises
    stops the run with ``StageFailed`` after its traceback has gone to the log.
    """
    names = [s.name for s in ctx.resolved.stages]
    for name in only:
        if name not in names:
            raise RunError(f"--stage {name}: not a stage of this recipe (its stages: {', '.join(names)})")
    status = read_status(ctx.run_dir)
    started_with = _snapshot(ctx.run_dir) if ctx.resumed else {}
    todo = []
    for stage in ctx.resolved.stages:
        done = status["stages"].get(stage.name, {}).get("status") == "done"
        if only and stage.name not in only:
            if done and todo:
                ctx.log.warning(
                    "stage %s: finished before %s runs again, so its results may be out of date; name it"
                    " with --stage too to bring it up to date",
                    stage.name,
                    todo[0].name,
                )
            continue
        if done and not only:
            changed = [
                p.name
                for p in stage.params
                if p.name != "ctx" and started_with and started_with.get(p.name) != ctx.recipe.get(p.name)
            ]
            if changed:
                ctx.log.warning(
                    "stage %s: finished already, skipped, although %s changed since; name it with --stage"
                    " %s to run it again with the new values",
                    stage.name,
                    ", ".join(changed),
                    stage.name,
                )
            else:
                ctx.log.info("stage %s: finished already, skipped (name it with --stage to run it again)", stage.name)
            continue
        todo.append(stage)
    runners = []
    for stage in todo:  # build every stage first, so a mistake in a late one shows before hours of work
        runners.append((stage, _guard(ctx, stage, "building", lambda s=stage: _build(ctx, s), status)))
    ctx.started = True
    if ctx.is_main:
        ctx.writer.add_text("recipe", "```\n" + recipes.dump(ctx.recipe) + "\n```")
    for stage, runner in runners:
        ctx.log.info("stage %s: started", stage.name)
        _set_status(ctx, status, stage.name, "running")
        start = time.monotonic()
        _guard(ctx, stage, "running", runner, status)
        _set_status(ctx, status, stage.name, "done", seconds=round(time.monotonic() - start, 3))
        ctx.log.info("stage %s: done in %.1f s", stage.name, time.monotonic() - start)


def _build(ctx: RunContext, stage: recipes.Stage):
    from vvframe.core import registry

    factory = registry.load(stage.entry_point)
    args = ctx.resolved.stage_arguments(stage)
    if any(p.name == "ctx" for p in stage.params):
        args["ctx"] = ctx
    runner = factory(**args)
    if not callable(runner):
        raise TypeError(f"stage '{stage.name}' returned {type(runner).__name__}, not a callable to run")
    return runner


def _guard(ctx: RunContext, stage: recipes.Stage, doing: str, fn, status: dict):
    try:
        return fn()
    except KeyboardInterrupt:
        _set_status(ctx, status, stage.name, "interrupted")
        ctx.log.error("stage %s: interrupted while %s", stage.name, doing)
        raise
    except VvframeError as exc:
        if doing != "building":
            raise _failed(ctx, stage, doing, exc, status) from exc
        # a mistake found while building (a list naming missing files, ...): reported like a recipe mistake
        _set_status(ctx, status, stage.name, "failed", error=str(exc).splitlines()[0])
        raise
    except Exception as exc:
        raise _failed(ctx, stage, doing, exc, status) from exc


def _failed(ctx: RunContext, stage: recipes.Stage, doing: str, exc: Exception, status: dict) -> StageFailed:
    """Record a stage's failure, its traceback in log.txt only; the ``StageFailed`` to raise from ``exc``."""
    add_note(exc, f"while {doing} stage '{stage.name}' ({stage.path})")
    _set_status(ctx, status, stage.name, "failed", error=f"{type(exc).__name__}: {exc}".splitlines()[0])
    _log_file_only(ctx, "".join(traceback.format_exception(exc)))
    return StageFailed(stage.name, ctx.run_dir / LOG_FILE)


def _log_file_only(ctx: RunContext, text: str) -> None:
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(
                logging.LogRecord("vvframe.core.run", logging.ERROR, __file__, 0, "traceback:\n%s", (text,), None)
            )


def _set_status(ctx: RunContext, status: dict, stage: str, state: str, **extra: Any) -> None:
    if not ctx.is_main:
        return
    entry = status["stages"].setdefault(stage, {})
    entry.update(status=state, updated=_dt.datetime.now().isoformat(timespec="seconds"), **extra)
    if state != "failed":
        entry.pop("error", None)
    atomic_json(ctx.run_dir / STATUS_FILE, status)
