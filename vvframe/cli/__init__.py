"""The ``vvframe`` command: run | check | show | plugins | data | embed | verify | export | serve.

Exit codes: 0 success; 2 a mistake in the recipe or the arguments (a message, no traceback unless
``--traceback``); 1 a failure during a run (traceback in the run's log.txt, one line on the console).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
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
    "data": "prepare data: lists, trials, voxceleb, convert, shards, synth, vad (`vvframe data -h`)",
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


class OutputExists(VvframeError, FileExistsError):
    """An output that is there already: no command replaces one unless given ``--force``."""


def refuse_existing(path: str | Path, force: bool, flag: str = "--out") -> None:
    """Raise ``OutputExists`` when ``path`` exists and ``force`` is not set, naming the path and the way out."""
    if Path(path).exists() and not force:
        raise OutputExists(f"{path} exists; choose another {flag} or pass --force to replace it")


def model_options(parser: argparse.ArgumentParser, *, device: bool = True) -> None:
    """The options of every command that loads a trained run or an exported model: ``--device``,
    ``--checkpoint`` and ``--trust-recipe``."""
    if device:
        parser.add_argument("--device", default="auto", help="auto (CUDA when there is one), cpu, cuda, cuda:N")
    parser.add_argument("--checkpoint", metavar="FILE", help="other weights for the run (a checkpoint file)")
    parser.add_argument(
        "--trust-recipe",
        action="store_true",
        help="allow the run's model card (or the model file) to name Python objects (module:attr):"
        " only for runs you trust",
    )


@contextlib.contextmanager
def checking_warnings():
    """Collect the warnings logged while a recipe is checked (a stage's ``check`` hook may log some, e.g. an epoch
    that would use a small part of the list): a list of messages, filled when the block ends."""
    found: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            found.append(record.getMessage())

    handler, root = Collect(logging.WARNING), logging.getLogger()
    root.addHandler(handler)
    try:
        yield found
    finally:
        root.removeHandler(handler)


def vad_option(parser: argparse.ArgumentParser) -> None:
    """``--vad [DETECTOR]`` of the commands that embed audio (``embed``, ``verify``, ``serve``)."""
    parser.add_argument(
        "--vad",
        nargs="?",
        const="energy",
        choices=("energy", "silero", "off"),
        metavar="DETECTOR",
        help="cut each utterance to its speech first: energy (built in, what a bare --vad means), silero"
        " (pip install 'vvframe[vad]') or off; default: as the run's back end did (its embed.vad)",
    )


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
    from vvframe.cli.run import main as run_main

    return run_main(rest, _recipe_parser("run"))


def _resolve(command: str, rest: list[str]):
    """Parse ``RECIPE [overrides]``, load and validate; warnings go to stderr."""
    parser = _recipe_parser(command)
    path, overrides = _split(parser, parser.parse_intermixed_args(rest).args)
    from vvframe.cli.plugins import compare_plugins
    from vvframe.core import recipe as recipes

    with checking_warnings() as warnings:
        resolved = recipes.check(path, overrides)
    for warning in [*warnings, *compare_plugins(resolved)]:
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
    from vvframe.cli.plugins import main as plugins_main

    return plugins_main(rest, COMMANDS["plugins"])


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
    from vvframe.cli.export import main as export_main

    return export_main(rest)


def _serve(rest: list[str]) -> int:
    from vvframe.cli.serve import main as serve_main

    return serve_main(rest)


if __name__ == "__main__":
    sys.exit(main())
