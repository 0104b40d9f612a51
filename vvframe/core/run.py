"""Running a recipe's stages: the context they share, and each stage's status in the run directory's run.json."""

import copy
import datetime as _dt
import functools
import json
import logging
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from vvframe.core.atomic import atomic_json
from vvframe.core.errors import VvframeError
from vvframe.core.recipe import Resolved, Stage, dump, snapshot

STATUS_FILE = "run.json"
RECIPE_FILE = "recipe.yaml"
LOG_FILE = "log.txt"
TRACEBACKS = logging.getLogger("vvframe.run.traceback")  # a failed stage's traceback (for the log file, not a console)


class RunError(VvframeError, RuntimeError):
    """A run directory that cannot be used (exists already, is not a run, ...)."""


class StageFailed(Exception):
    """A stage raised ``cause``; its traceback is in log.txt (``log_file``), and the message says so in one line."""

    def __init__(self, stage: str, log_file: Path, cause: BaseException):
        what = f"{type(cause).__name__}: {cause}".splitlines()[0]
        super().__init__(f"stage '{stage}' failed: {what} (traceback in {log_file})")
        self.stage, self.log_file = stage, log_file


class RunContext:
    """What every stage of a run shares: the resolved recipe, the run directory, rank, logger, writer, progress."""

    def __init__(
        self, resolved: Resolved, run_dir: str | Path, *, rank: int = 0, world_size: int = 1, resumed: bool = False
    ):
        self.resolved, self.recipe = resolved, resolved.to_dict()
        self.name, self.seed = resolved.name, resolved.seed
        self.run_dir, self.rank, self.world_size, self.resumed = Path(run_dir), rank, world_size, resumed
        self.log = logging.getLogger("vvframe.run")
        self.started = False  # set when the first stage starts running (building them is not work yet)

    is_main = property(lambda self: self.rank == 0, doc="Whether this is rank 0 (which writes files, logs progress).")

    @functools.cached_property
    def writer(self):
        """TensorBoard ``SummaryWriter`` writing into the run directory (rank 0), else ``None``."""
        if not self.is_main:
            return None
        from torch.utils.tensorboard import SummaryWriter  # heavy: imported when first used

        return SummaryWriter(log_dir=str(self.run_dir))

    def path(self, *parts: str) -> Path:
        """A path inside the run directory, its parent folders created."""
        (p := self.run_dir.joinpath(*parts)).parent.mkdir(parents=True, exist_ok=True)
        return p

    def progress(self, iterable: Iterable | None = None, **kwargs: Any):
        """A tqdm progress bar, shown only on rank 0 and only when stderr is a terminal."""
        from tqdm.auto import tqdm

        kwargs.setdefault("disable", not (self.is_main and sys.stderr.isatty()))
        return tqdm(iterable, **{"dynamic_ncols": True, **kwargs})

    def __getstate__(self) -> dict[str, Any]:
        """Picklable for spawned ranks: the TensorBoard writer stays behind (each process opens its own)."""
        return {k: v for k, v in self.__dict__.items() if k != "writer"}

    def for_rank(self, rank: int, world_size: int) -> "RunContext":
        """This context as one rank of a distributed run sees it (itself when it is that rank's already)."""
        other = self if (rank, world_size) == (self.rank, self.world_size) else copy.copy(self)  # a copy has no writer
        other.rank, other.world_size = rank, world_size
        return other

    def close(self) -> None:
        """Close the TensorBoard writer (a later use opens a new one)."""
        if (writer := self.__dict__.pop("writer", None)) is not None:
            writer.close()


def read_status(run_dir: Path) -> dict[str, Any]:
    """The stage statuses of a run (``run.json``), empty for a new run."""
    if not (path := run_dir / STATUS_FILE).is_file():
        return {"stages": {}}
    aside = "move it aside to run every stage again (finished training resumes from its checkpoints)"
    try:
        status = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunError(f"{path}: unreadable ({exc}); it records which stages finished. {aside.capitalize()}") from None
    if not isinstance(status, dict) or not isinstance(status.get("stages"), dict):
        raise RunError(f'{path}: not a vvframe run status (expected {{"stages": {{...}}}}); {aside}')
    return status


def execute(ctx: RunContext, only: Sequence[str] = ()) -> None:
    """Build the stages named in ``only`` (all if empty), then run them in order, skipping finished ones on resume."""
    names = [s.name for s in ctx.resolved.stages]
    for name in [name for name in only if name not in names]:
        raise RunError(f"--stage {name}: not a stage of this recipe (its stages: {', '.join(names)})")
    status = read_status(ctx.run_dir)
    before = snapshot(ctx.run_dir / RECIPE_FILE) if ctx.resumed else {}  # the recipe the run started with
    todo = []
    for stage in ctx.resolved.stages:
        done = status["stages"].get(stage.name, {}).get("status") == "done"
        changed = ", ".join(p.name for p in stage.sections() if before and before.get(p.name) != ctx.recipe.get(p.name))
        if only and stage.name not in only and done and todo:
            say = "stage %s: finished before %s runs again, so its results may be out of date; name it with --stage"
            ctx.log.warning(say + " too to bring it up to date", stage.name, todo[0].name)
        elif done and not only and changed:
            say = "stage %s: finished already, skipped, although %s changed since; name it with --stage %s"
            ctx.log.warning(say + " to run it again with the new values", stage.name, changed, stage.name)
        elif done and not only:
            ctx.log.info("stage %s: finished already, skipped (name it with --stage to run it again)", stage.name)
        elif not only or stage.name in only:
            todo.append(stage)
    # build every stage first, so that a mistake in a late one shows before hours of work
    runners = [(stage, _guard(ctx, stage, "building", lambda s=stage: _build(ctx, s), status)) for stage in todo]
    ctx.started = True
    if ctx.is_main:
        ctx.writer.add_text("recipe", "```\n" + dump(ctx.recipe) + "\n```")
    for stage, runner in runners:
        ctx.log.info("stage %s: started", stage.name)
        _set_status(ctx, status, stage.name, "running")
        start = time.monotonic()
        _guard(ctx, stage, "running", runner, status)
        _set_status(ctx, status, stage.name, "done", seconds=round(time.monotonic() - start, 3))
        ctx.log.info("stage %s: done in %.1f s", stage.name, time.monotonic() - start)


def _build(ctx: RunContext, stage: Stage):
    args = ctx.resolved.stage_arguments(stage)
    runner = stage.factory(**args, **({"ctx": ctx} if any(p.name == "ctx" for p in stage.params) else {}))
    if not callable(runner):
        raise TypeError(f"stage '{stage.name}' returned {type(runner).__name__}, not a callable to run")
    return runner


def _guard(ctx: RunContext, stage: Stage, doing: str, fn, status: dict):
    try:
        return fn()
    except KeyboardInterrupt:
        _set_status(ctx, status, stage.name, "interrupted")
        ctx.log.error("stage %s: interrupted while %s", stage.name, doing)
        raise
    except Exception as exc:
        if doing == "building" and isinstance(exc, VvframeError):  # a list naming missing files...: a user's mistake
            _set_status(ctx, status, stage.name, "failed", error=str(exc).splitlines()[0])
            raise
        # any other failure stops the run with StageFailed, its traceback in log.txt only
        exc.add_note(f"while {doing} stage '{stage.name}' ({stage.path})")
        _set_status(ctx, status, stage.name, "failed", error=f"{type(exc).__name__}: {exc}".splitlines()[0])
        TRACEBACKS.error("stage %s failed:", stage.name, exc_info=exc)  # the log set-up writes it to the file only
        raise StageFailed(stage.name, ctx.run_dir / LOG_FILE, exc) from exc


def _set_status(ctx: RunContext, status: dict, stage: str, state: str, **extra: Any) -> None:
    if ctx.is_main:
        entry = status["stages"].setdefault(stage, {})
        entry.update(status=state, updated=_dt.datetime.now().isoformat(timespec="seconds"), **extra)
        if state != "failed":
            entry.pop("error", None)
        atomic_json(ctx.run_dir / STATUS_FILE, status)
