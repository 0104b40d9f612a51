"""``vvframe data``: build lists and trials, convert audio, pack shards, generate a synthetic corpus.

Each sub-command shows a progress bar on a terminal and leaves its sources untouched. A list that is there already
is replaced only with ``--force``; a path with whitespace (which a list line cannot hold) is refused before any list
is written.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from vvframe.cli import refuse_existing
from vvframe.core.errors import BadValue
from vvframe.data import lists

AUDIO = [suffix.lstrip(".") for suffix in lists.AUDIO_SUFFIXES]  # ["wav", "flac"]: what scans find, convert writes

COMMANDS = {
    "lists": f"scan ROOT/<speaker>/**/*.{{{','.join(AUDIO)}}} into train.txt and val.txt",
    "trials": "balanced target / non-target trials from an utterance list",
    "convert": "every audio file under SRC to mono at one rate, mirroring the tree under DST",
    "shards": "pack an utterance list into tar shards for streaming",
    "voxceleb": "the VoxCeleb recipes' lists and trials from the official VoxCeleb folder layout under ROOT",
    "synth": "a synthetic multi-speaker corpus with its lists and trials (tests, the quickstart)",
    "vad": "every audio file under SRC cut to its speech, mirroring the tree under DST, or a list of its speech",
}


def main(rest: list[str]) -> int:
    """Run one ``vvframe data`` sub-command; returns the exit code."""
    parser = argparse.ArgumentParser(
        prog="vvframe data", description="prepare data for recipes; `vvframe data COMMAND -h` shows a command's options"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("lists", help=COMMANDS["lists"], description=COMMANDS["lists"])
    p.add_argument("root", type=Path, metavar="ROOT")
    p.add_argument("--out", type=Path, required=True, metavar="DIR")
    p.add_argument(
        "--split-ratio",
        type=float,
        default=-1.0,
        metavar="R",
        help="fraction of each speaker held out for validation in (0, 1); -1: three files of each"
        " speaker (default); 0: no validation list",
    )
    p.add_argument("--min-utterances", type=int, default=2, metavar="N", help="leave out smaller speakers (2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="replace train.txt and val.txt if DIR has them")

    p = sub.add_parser("trials", help=COMMANDS["trials"], description=COMMANDS["trials"])
    p.add_argument("list", type=Path, metavar="LIST")
    p.add_argument("--out", type=Path, required=True, metavar="FILE")
    p.add_argument(
        "--per-utterance",
        type=int,
        default=2,
        metavar="K",
        help="target trials per enrollment utterance, and as many non-target ones (2)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="replace FILE if it exists")

    p = sub.add_parser("convert", help=COMMANDS["convert"], description=COMMANDS["convert"])
    p.add_argument("src", type=Path, metavar="SRC")
    p.add_argument("dst", type=Path, metavar="DST")
    p.add_argument("--sample-rate", type=int, default=16000)
    p.add_argument("--format", choices=AUDIO, default="wav")
    p.add_argument("--jobs", type=int, default=1, metavar="N")
    p.add_argument("--overwrite", action="store_true", help="convert files again even if DST has them")
    p.add_argument(
        "--replace-spaces",
        action="store_true",
        help="write each whitespace character of a path as '_' (lists cannot hold paths with spaces)",
    )
    p.add_argument("--report", type=Path, metavar="FILE", help="where the report goes (default DST/convert-report.txt)")

    p = sub.add_parser("shards", help=COMMANDS["shards"], description=COMMANDS["shards"])
    p.add_argument("list", type=Path, metavar="LIST")
    p.add_argument("--root", type=Path, default=Path("."), help="the folder the list's paths are relative to")
    p.add_argument("--out", type=Path, required=True, metavar="DIR")
    p.add_argument("--per-shard", type=int, default=1000, metavar="N")

    p = sub.add_parser(
        "voxceleb",
        help=COMMANDS["voxceleb"],
        description=COMMANDS["voxceleb"] + "; nothing is downloaded and no audio is opened",
    )
    p.add_argument(
        "root",
        type=Path,
        metavar="ROOT",
        help="the folder holding voxceleb1/, voxceleb2/ and the trial"
        " lists; the lists' paths are relative to it (the recipes' data.root)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path("data/voxceleb"),
        metavar="DIR",
        help="where the lists go (data/voxceleb, where the recipes read them)",
    )
    p.add_argument(
        "--vox1",
        type=Path,
        action="append",
        metavar="PATH",
        help="VoxCeleb1's wav folder (<id1xxxx>/<video>/<n>.wav); twice for separate dev and test folders"
        " (default: searched under ROOT)",
    )
    p.add_argument(
        "--vox2",
        type=Path,
        metavar="PATH",
        help="VoxCeleb2 dev as .wav/.flac (<id0xxxx>/<video>/<n>.wav) (default: searched under ROOT)",
    )
    p.add_argument(
        "--trials-dir",
        type=Path,
        metavar="DIR",
        help="the folder of veri_test2.txt, list_test_all2.txt, list_test_hard2.txt (default: ROOT,"
        " ROOT/voxceleb1 and the VoxCeleb1 folder's parent)",
    )
    p.add_argument(
        "--cohort-per-speaker",
        type=int,
        default=0,
        metavar="K",
        help="cohort.txt keeps the first K utterances of each speaker (0: all, the default)",
    )
    p.add_argument(
        "--vox1-train",
        action="store_true",
        help="also write train_vox1.txt: VoxCeleb1 dev (test speakers id10270-id10309 left out)",
    )
    p.add_argument("--musan", type=Path, metavar="PATH", help="MUSAN (music/, speech/, noise/): linked as DIR/musan")
    p.add_argument(
        "--rirs",
        type=Path,
        metavar="PATH",
        help="RIRS_NOISES (its simulated_rirs/) or a folder of RIRs: linked as DIR/rirs",
    )

    p = sub.add_parser("synth", help=COMMANDS["synth"], description=COMMANDS["synth"])
    p.add_argument("out", type=Path, metavar="OUT")
    p.add_argument("--speakers", type=int, required=True, metavar="N", help="training speakers")
    p.add_argument("--utterances", type=int, required=True, metavar="M", help="utterances per speaker")
    p.add_argument("--eval-speakers", type=int, default=20, metavar="E", help="other speakers, for trials (20)")
    p.add_argument(
        "--cohort-speakers",
        type=int,
        default=20,
        metavar="C",
        help="other speakers again, for score normalization (20; 0 for none)",
    )
    p.add_argument(
        "--val-speakers",
        type=int,
        default=0,
        metavar="V",
        help="other speakers again, for validation trials during training (0: none)",
    )
    p.add_argument("--seconds", default="2-4", metavar="A-B", help="utterance duration range in seconds (2-4)")
    p.add_argument("--sample-rate", type=int, default=16000)
    p.add_argument("--per-utterance", type=int, default=2, metavar="K", help="target trials per utterance (2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--force", action="store_true", help="replace the lists if OUT has them (its audio is written again)"
    )

    p = sub.add_parser(
        "vad",
        help=COMMANDS["vad"],
        description=COMMANDS["vad"] + " segments (voice activity detection); files without speech are listed",
    )
    p.add_argument("src", type=Path, metavar="SRC")
    p.add_argument(
        "dst",
        type=Path,
        nargs="?",
        metavar="DST",
        help="where the trimmed copies go: the same relative paths, rate and format, mono 16-bit",
    )
    p.add_argument(
        "--segments",
        type=Path,
        metavar="FILE",
        help="write the speech segments: '<path> <start> <end>' per segment (seconds; paths relative to SRC)",
    )
    p.add_argument(
        "--detector",
        choices=("energy", "silero"),
        default="energy",
        help="energy (built in, the default) or silero (pip install 'vvframe[vad]')",
    )
    p.add_argument("--jobs", type=int, default=1, metavar="N")
    p.add_argument("--force", action="store_true", help="replace the segment FILE and copies that DST has already")

    opts = parser.parse_args(rest)
    if opts.command == "vad" and opts.dst is None and opts.segments is None:
        p.error("give DST (trimmed copies), --segments FILE, or both")
    return globals()[f"_{opts.command}"](opts)


@contextlib.contextmanager
def _bar(total: int | None, desc: str, unit: str = "file") -> Iterator:
    from tqdm.auto import tqdm

    with tqdm(total=total, desc=desc, unit=unit, disable=None, file=sys.stderr, dynamic_ncols=True) as bar:
        yield bar.update


def _refuse(out: Path, names: Sequence[str], force: bool, flag: str) -> None:
    """An ``OutputExists`` naming the first of ``names`` that ``out`` holds and ``--force``, unless ``force``."""
    for name in names:
        refuse_existing(out / name, force, flag)


def _drop_stale(out: Path, names: Sequence[str], written: Sequence[str]) -> list[str]:
    """Remove the lists of ``names`` an earlier run left in ``out`` that this one did not write; returns them."""
    stale = [n for n in names if n not in written and (out / n).is_file()]
    for name in stale:
        (out / name).unlink()
    return stale


def _lists(opts: argparse.Namespace) -> int:
    with _bar(None, "scanning", "speaker") as update:
        by_speaker = lists.scan(opts.root, progress=update)
    if not by_speaker:
        raise BadValue(f"{opts.root}: no audio files found as {opts.root}/<speaker>/**/*.{'|'.join(AUDIO)}")
    train, val = lists.split(by_speaker, opts.split_ratio, opts.min_utterances, opts.seed)
    lists.check_no_whitespace([n for u in train + val for n in (u.speaker, u.path)], opts.out)
    _refuse(opts.out, ("train.txt", "val.txt"), opts.force, "--out")
    opts.out.mkdir(parents=True, exist_ok=True)
    lists.write_utterances(opts.out / "train.txt", train)
    written = [f"{opts.out / 'train.txt'} ({len(train)} utterances, {len({u.speaker for u in train})} speakers)"]
    if val:
        lists.write_utterances(opts.out / "val.txt", val)
        written.append(f"{opts.out / 'val.txt'} ({len(val)} utterances)")
    if not val and _drop_stale(opts.out, ["val.txt"], []):
        written.append(f"removed the earlier {opts.out / 'val.txt'}")
    left_out = len(by_speaker) - len({u.speaker for u in train})
    if left_out:
        written.append(f"left out {left_out} speaker(s) with fewer than {opts.min_utterances} utterances")
    print("wrote " + ", ".join(written))
    return 0


def _trials(opts: argparse.Namespace) -> int:
    refuse_existing(opts.out, opts.force)
    utterances = lists.read_utterances(opts.list)
    trials = lists.make_trials(utterances, opts.per_utterance, opts.seed)
    lists.write_trials(opts.out, trials)
    targets = sum(t.label for t in trials)
    print(f"wrote {opts.out}: {len(trials)} trials ({targets} target, {len(trials) - targets} non-target)")
    return 0


def _convert(opts: argparse.Namespace) -> int:
    from vvframe.tools.convert import convert_tree

    with _bar(None, "converting") as update:
        report = convert_tree(
            opts.src,
            opts.dst,
            opts.sample_rate,
            opts.format,
            opts.jobs,
            opts.overwrite,
            update,
            replace_spaces=opts.replace_spaces,
        )
    report_path = opts.report or opts.dst / "convert-report.txt"
    report.write(report_path)
    print(
        f"converted {report.converted}, up to date {report.skipped}, failed {len(report.failures)}"
        f" (report: {report_path})"
    )
    for path, reason in report.failures[:10]:
        print(f"  failed: {path}: {reason}", file=sys.stderr)
    return 1 if report.failures else 0


def _voxceleb(opts: argparse.Namespace) -> int:
    from vvframe.tools.voxceleb import prepare

    prepare(
        opts.root,
        opts.out,
        vox1=opts.vox1,
        vox2=opts.vox2,
        trials_dir=opts.trials_dir,
        cohort_per_speaker=opts.cohort_per_speaker,
        vox1_train=opts.vox1_train,
        musan=opts.musan,
        rirs=opts.rirs,
        bar=_bar,
    )
    return 0


def _shards(opts: argparse.Namespace) -> int:
    from vvframe.data.shards import write_shards

    utterances = lists.read_utterances(opts.list)
    lists.check_files([u.path for u in utterances], opts.root, str(opts.list))
    with _bar(len(utterances), "packing") as update:
        shards = write_shards(utterances, opts.root, opts.out, opts.per_shard, update)
    print(f"wrote {len(shards)} shards of up to {opts.per_shard} utterances to {opts.out}")
    return 0


SYNTH_LISTS = ("train.txt", "eval.txt", "cohort.txt", "val.txt", "trials.txt", "pairs.txt", "val_trials.txt")


def _synth(opts: argparse.Namespace) -> int:
    from vvframe.tools.synth import synthesize

    try:
        low, high = (float(x) for x in opts.seconds.split("-"))
    except ValueError:
        raise BadValue(f"--seconds {opts.seconds}: expected a range such as 2-4") from None
    if not 0 < low <= high:
        raise BadValue(f"--seconds {opts.seconds}: expected 0 < A <= B")
    from vvframe.data.audio import MIN_SECONDS

    if low < MIN_SECONDS:
        raise BadValue(
            f"--seconds {opts.seconds}: an utterance needs at least {MIN_SECONDS:g} s"
            " (vvframe.data.audio.MIN_SECONDS); shorter ones would be skipped in training and refused elsewhere"
        )
    _refuse(opts.out, SYNTH_LISTS, opts.force, "OUT")
    groups = {
        "train.txt": [f"spk{i:04d}" for i in range(opts.speakers)],
        "eval.txt": [f"eval{i:04d}" for i in range(opts.eval_speakers)],
        "cohort.txt": [f"coh{i:04d}" for i in range(opts.cohort_speakers)],
        "val.txt": [f"val{i:04d}" for i in range(opts.val_speakers)],
    }
    audio = opts.out / "audio"
    total = sum(len(v) for v in groups.values()) * opts.utterances
    written = {}
    with _bar(total, "synthesizing") as update:
        for group, speakers in groups.items():
            if not speakers:
                continue
            paths = synthesize(audio, speakers, opts.utterances, (low, high), opts.seed, opts.sample_rate, update)
            utterances = [lists.Utterance(s, p) for s in speakers for p in paths[s]]
            lists.write_utterances(opts.out / group, utterances)
            written[group] = utterances
    notes = [f"{opts.out / 'audio'} ({total} files)"]
    if len(groups["eval.txt"]) >= 2:
        trials = lists.make_trials(written["eval.txt"], opts.per_utterance, opts.seed)
        lists.write_trials(opts.out / "trials.txt", trials)
        lists.write_trials(opts.out / "pairs.txt", [lists.Trial(t.enroll, t.test) for t in trials])
        notes.append(f"trials.txt and pairs.txt ({len(trials)} trials)")
    if len(groups["val.txt"]) >= 2:
        trials = lists.make_trials(written["val.txt"], opts.per_utterance, opts.seed)
        lists.write_trials(opts.out / "val_trials.txt", trials)
        notes.append(f"val_trials.txt ({len(trials)} trials)")
    notes.append(", ".join(written) + " (paths relative to audio/)")
    made = [
        *written,
        *(["trials.txt", "pairs.txt"] if len(groups["eval.txt"]) >= 2 else []),
        *(["val_trials.txt"] if len(groups["val.txt"]) >= 2 else []),
    ]
    stale = _drop_stale(opts.out, SYNTH_LISTS, made)
    if stale:
        notes.append(f"removed the earlier {', '.join(stale)}")
    print("wrote " + "; ".join(notes))
    return 0


class NoSpeechAnywhere(BadValue):
    """``vvframe data vad`` on a tree in which no file holds speech (or none could be read)."""


def _vad(opts: argparse.Namespace) -> int:
    from vvframe.data import vad

    files = vad.audio_files(opts.src)
    if not files:
        raise BadValue(f"{opts.src}: no audio files found (*.{'|'.join(AUDIO)})")
    if opts.dst is not None:
        src_real, dst_real = opts.src.resolve(), opts.dst.resolve()
        if dst_real == src_real or src_real in dst_real.parents:
            raise BadValue(
                f"DST {opts.dst} is inside SRC {opts.src}: choose a folder outside it (sources are never modified)"
            )
        for rel in files:
            refuse_existing(opts.dst / rel, opts.force, "DST")
    if opts.segments is not None:
        lists.check_no_whitespace(files, opts.segments)
        refuse_existing(opts.segments, opts.force, "--segments FILE")
    with _bar(len(files), "detecting speech") as update:
        report = vad.trim_tree(opts.src, files, opts.dst, opts.detector, opts.jobs, update)
    for what, entries in (("no speech", report.no_speech), ("failed", report.failures)):
        for path, reason in entries[:10]:
            print(f"  {what}: {path}: {reason}", file=sys.stderr)
        if len(entries) > 10:
            print(f"  ... and {len(entries) - 10} more {what}", file=sys.stderr)
    if not report.segments:
        raise NoSpeechAnywhere(
            f"{opts.src}: the {opts.detector} detector found speech in none of its {len(files)} audio files"
            f" ({len(report.no_speech)} without speech, {len(report.failures)} unreadable); nothing written"
        )
    written = []
    if opts.segments is not None:
        from vvframe.core.atomic import atomic_write

        atomic_write(opts.segments, report.segment_lines())
        count = sum(len(v) for v in report.segments.values())
        written.append(f"{opts.segments} ({count} segments)")
    if opts.dst is not None:
        written.append(f"{len(report.segments)} trimmed copies under {opts.dst}")
    share = report.kept_seconds / report.seconds if report.seconds else 0.0
    print(
        f"wrote {', '.join(written)}: {report.kept_seconds:.1f} of {report.seconds:.1f} s kept ({share:.0%});"
        f" {len(report.no_speech)} file{'s' if len(report.no_speech) != 1 else ''} without speech,"
        f" {len(report.failures)} failed ({opts.detector} detector)"
    )
    return 1 if report.failures else 0
