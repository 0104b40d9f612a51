"""The ``vvframe`` command: run | check | show | plugins | data | embed | verify | export | serve.

Exit codes: 0 success; 2 a mistake in the recipe or the arguments (a message, no traceback unless
``--traceback``); 1 a failure during a run (traceback in the run's log.txt, one line on the console).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

from vvframe import __version__
from vvframe.core.errors import VvframeError

COMMANDS = {
    "run": "validate a recipe, then run its stages in a new run directory",
    "check": "validate and resolve a recipe; build nothing",
    "show": "print the resolved recipe with defaults filled in",
    "plugins": "list installed components, describe one, or --check them all",
    "data": "prepare data: lists, trials, voxceleb, convert, shards, synth (`vvframe data -h`)",
    "embed": "embeddings of audio files with a trained run or an exported model",
    "verify": "score two audio files and decide: same speaker or not",
    "export": "a trained run as one TorchScript or ONNX file (features, network, mean, metadata)",
    "serve": "an HTTP verification service for a trained run or an exported model",
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    top = argparse.ArgumentParser(
        prog="vvframe",
        description="speaker-verification experiments from recipes",
        epilog="commands:\n"
        + "\n".join(f"  {c:<8} {h}" for c, h in COMMANDS.items())
        + "\n\n`vvframe COMMAND -h` shows a command's options.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    top.add_argument("--version", action="version", version=f"vvframe {__version__}")
    top.add_argument("--traceback", action="store_true", help="show Python tracebacks for recipe mistakes too")
    top.add_argument("command", choices=list(COMMANDS), metavar="COMMAND")
    top.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    if not argv:
        top.print_help(sys.stderr)
        return 2
    opts = top.parse_args(argv)
    handler = globals()[f"_{opts.command}"]
    try:
        return handler(opts.rest)
    except VvframeError as exc:
        if opts.traceback:
            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _recipe_parser(command: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"vvframe {command}", description=COMMANDS[command])
    parser.add_argument(
        "args",
        nargs="*",
        metavar="RECIPE [KEY=VALUE ...]",
        help="a recipe file, then overrides such as trainer.epochs=2 (YAML values)",
    )
    return parser


def _split(
    parser: argparse.ArgumentParser, args: list[str], *, recipe_optional: bool = False
) -> tuple[str | None, list[str]]:
    if args and not ("=" in args[0] and not args[0].endswith((".yaml", ".yml"))):
        return args[0], args[1:]
    if recipe_optional:
        return None, args
    parser.error(f"the recipe file is missing (vvframe {parser.prog.split()[-1]} RECIPE [KEY=VALUE ...])")
    raise AssertionError  # unreachable: parser.error exits


def _run(rest: list[str]) -> int:
    parser = _recipe_parser("run")
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

    from vvframe.core import recipe as recipes
    from vvframe.core import run as runs

    # under torchrun every process runs this command; they share one run directory, which rank 0 owns
    rank = int(os.environ.get("RANK", "0")) if "LOCAL_RANK" in os.environ else 0
    if "LOCAL_RANK" in os.environ and not (opts.resume or opts.run_dir):
        parser.error("under torchrun, give every process the same --run-dir DIR (or --resume RUN_DIR)")
    path = path or runs.resume_recipe_path(opts.resume)
    resolved = recipes.check(path, overrides)
    made = None  # folders this command made (a mistake found before any work removes them): how many parents
    if opts.resume:
        run_dir = runs.resume_recipe_path(opts.resume).parent
    elif opts.run_dir and rank > 0:
        run_dir = Path(opts.run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
    elif opts.run_dir:
        made = -1 if Path(opts.run_dir).exists() else 0  # an empty folder given by the user stays
        run_dir = runs.claim_run_dir(opts.run_dir)
    else:
        made = 2  # runs/<name>/<time>, and runs/<name> and runs when it made them
        run_dir = runs.new_run_dir(resolved.name, opts.runs)
    runs.setup_logging(run_dir, rank=rank)
    world_size = int(os.environ.get("WORLD_SIZE", "1")) if "LOCAL_RANK" in os.environ else 1
    ctx = runs.RunContext(resolved, run_dir, resumed=bool(opts.resume), rank=rank, world_size=world_size)
    ctx.log.info("vvframe %s: %s %s in %s", __version__, "resuming" if opts.resume else "running", path, run_dir)
    for warning in resolved.warnings:
        ctx.log.warning(warning)
    previous = signal.signal(signal.SIGTERM, _terminated)  # a SIGTERM ends the run the way Ctrl-C does
    try:
        if ctx.is_main:
            runs.write_snapshot(ctx)
        runs.execute(ctx, opts.stage)
    except runs.StageFailed as exc:
        print(f"error: {exc.summary()}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:
        print(f"{exc or 'interrupted'}; continue with: vvframe run --resume {run_dir}", file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130
    except VvframeError:
        if made is not None and not ctx.started:  # found before any work: leave no run directory behind
            ctx.close()
            runs.setup_logging(None, rank=rank)
            runs.discard_run_dir(run_dir, max(made, 0))
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


def _resolve(command: str, rest: list[str]):
    """Parse ``RECIPE [overrides]``, load and validate; warnings go to stderr."""
    parser = _recipe_parser(command)
    path, overrides = _split(parser, parser.parse_intermixed_args(rest).args)
    from vvframe.core import recipe as recipes

    resolved = recipes.check(path, overrides)
    for warning in resolved.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return path, resolved


def _check(rest: list[str]) -> int:
    path, resolved = _resolve("check", rest)
    comps = [c for v in resolved.components.values() for c in (v if isinstance(v, list) else [v]) if c is not None]
    print(
        f"ok: {path}: stages {', '.join(s.name for s in resolved.stages)};"
        f" {len(comps)} component{'s' if len(comps) != 1 else ''}, {len(resolved.settings)} settings"
        f" section{'s' if len(resolved.settings) != 1 else ''}"
    )
    return 0


def _show(rest: list[str]) -> int:
    from vvframe.core.recipe import dump

    print(dump(_resolve("show", rest)[1].to_dict()), end="")
    return 0


def _plugins(rest: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="vvframe plugins", description=COMMANDS["plugins"])
    parser.add_argument("kind", nargs="?", metavar="KIND", help="one kind (models, losses, ...)")
    parser.add_argument("name", nargs="?", metavar="NAME", help="describe this component")
    parser.add_argument("--check", action="store_true", help="import and validate every entry point (for CI)")
    opts = parser.parse_args(rest)
    from vvframe.core import registry

    if opts.check:
        return _check_plugins()
    if opts.name:
        registry.kind(opts.kind)
        print(registry.describe(opts.kind, opts.name))
        return 0
    rows = registry.listing(opts.kind)
    kinds = [opts.kind] if opts.kind else list(registry.KINDS)
    table = [("KIND", "NAME", "TARGET", "DISTRIBUTION")]
    for k in kinds:
        mine = [r for r in rows if r[0] == k]
        table += [(r[0], r[1], r[2], f"{r[3]} {r[4]}".strip()) for r in mine] or [(k, "-", "(none installed)", "")]
    table += [(r[0], r[1], r[2], f"{r[3]} {r[4]} (unknown kind)") for r in rows if r[0] not in registry.KINDS]
    widths = [max(len(row[i]) for row in table) for i in range(3)]
    for row in table:
        print(("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[3]).rstrip())
    print("\n`vvframe plugins KIND NAME` describes one; `vvframe plugins --check` imports and checks them all.")
    return 0


def _data(rest: list[str]) -> int:
    from vvframe.cli.data import main as data_main

    return data_main(rest)


def _embed(rest: list[str]) -> int:
    from vvframe.cli.infer import embed

    return embed(rest, COMMANDS["embed"])


def _verify(rest: list[str]) -> int:
    from vvframe.cli.infer import verify

    return verify(rest, COMMANDS["verify"])


def _export(rest: list[str]) -> int:
    from vvframe.inference.export import main as export_main

    return export_main(rest)


def _serve(rest: list[str]) -> int:
    from vvframe.inference.serve import main as serve_main

    return serve_main(rest)


def _check_plugins() -> int:
    from vvframe.core import recipe as recipes
    from vvframe.core import registry
    from vvframe.core.schema import parameters

    problems = registry.check_all()
    for ep in registry.entry_points("stages"):
        try:
            params = parameters(registry.load(ep))
        except VvframeError:
            continue  # already reported by check_all
        problems += [f"vvframe.stages '{ep.name}' ({ep.value}): {m}" for m in recipes.stage_contract(params)]
    count = len(registry.entry_points())
    if problems:
        print(f"{len(problems)} problem{'s' if len(problems) != 1 else ''} in {count} entry points:", file=sys.stderr)
        for p in problems:
            print(f"  - {p}", file=sys.stderr)
        return 1
    print(f"ok: {count} entry points import and have explicit signatures")
    return 0


if __name__ == "__main__":
    sys.exit(main())
