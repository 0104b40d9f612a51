"""List formats, those of VoxCeleb: utterance lists, trials, test pairs; scanning, splitting and trial making.

- utterance list (training, cohort): ``<speaker> <path>`` per line
- trials: ``<0|1|target|nontarget> <enroll path> <test path>``
- test pairs: ``<enroll path> <test path>``

Paths are relative to a data root. Blank lines and lines starting with ``#`` are skipped. A line's fields are
split at whitespace, so **a speaker name or path may not contain whitespace**: the writers refuse such a name
(naming it; nothing is written) and the readers report a line with too many fields with that hint.
"""

from __future__ import annotations

import contextlib
import random
import threading
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from vvframe.core.errors import VvframeError

# the audio files vvframe trains on, embeds and scores (soundfile seeks in both, so a crop decodes only itself);
# every scan for audio uses this tuple, and a tool that reads more (`vvframe data convert`) adds to it
AUDIO_SUFFIXES = (".wav", ".flac")
LABELS = {"1": 1, "0": 0, "target": 1, "nontarget": 0}
SPACES_HINT = (
    "fields are separated by whitespace, so a speaker name or path may not contain spaces: rename such"
    " files, or copy the tree without them (`vvframe data convert SRC DST --replace-spaces`)"
)


class ListError(VvframeError, ValueError):
    """A malformed list file (named with its line) or files a list names that are not on disk."""


@dataclass(frozen=True)
class Utterance:
    """One line of an utterance list."""

    speaker: str
    path: str


@dataclass(frozen=True)
class Trial:
    """One line of a trial list; ``label`` is 1 (target), 0 (non-target) or None (a test pair)."""

    enroll: str
    test: str
    label: int | None = None


def _lines(path: str | Path) -> Iterable[tuple[int, list[str]]]:
    path = Path(path)
    if not path.is_file():
        raise ListError(f"{path}: no such list file")
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            text = line.strip()
            if text and not text.startswith("#"):
                yield number, text.split()


def read_utterances(path: str | Path) -> list[Utterance]:
    """An utterance list; a ``ListError`` naming file and line for a line that is not ``<speaker> <path>``."""
    out = []
    for number, fields in _lines(path):
        if len(fields) != 2:
            raise ListError(
                f"{path}:{number}: expected '<speaker> <path>', got {len(fields)} field"
                f"{'s' if len(fields) != 1 else ''}: {' '.join(fields)!r}{_hint(fields, 2)}"
            )
        out.append(Utterance(fields[0], fields[1]))
    if not out:
        raise ListError(f"{path}: the list is empty")
    return out


def read_trials(path: str | Path, labelled: bool | None = None) -> list[Trial]:
    """Trials ``<label> <enroll> <test>`` or, when unlabelled, pairs ``<enroll> <test>``.

    ``labelled=None`` decides from the first line; mixing the two forms in one file is an error.
    """
    out = []
    guessed = labelled is None
    for number, fields in _lines(path):
        if labelled is None:
            labelled = len(fields) == 3
        if labelled:
            if len(fields) != 3 or fields[0].lower() not in LABELS:
                # three fields on a first line that decided the form may be a pair with a space in a path
                names = 2 if guessed and not out else 3
                raise ListError(
                    f"{path}:{number}: expected '<0|1|target|nontarget> <enroll> <test>', got"
                    f" {' '.join(fields)!r}{_hint(fields, names)}"
                )
            out.append(Trial(fields[1], fields[2], LABELS[fields[0].lower()]))
        else:
            if len(fields) != 2:
                raise ListError(
                    f"{path}:{number}: expected '<enroll> <test>', got {' '.join(fields)!r}{_hint(fields, 2)}"
                )
            out.append(Trial(fields[0], fields[1]))
    if not out:
        raise ListError(f"{path}: the list is empty")
    return out


def _hint(fields: list[str], names: int) -> str:
    """The whitespace hint, for a malformed line with more fields than the ``names`` it should hold."""
    return f" ({SPACES_HINT})" if len(fields) > names else ""


def write_utterances(path: str | Path, utterances: Iterable[Utterance]) -> None:
    """Write an utterance list; a ``ListError`` (nothing written) if a speaker or path contains whitespace."""
    utterances = list(utterances)
    check_no_whitespace([n for u in utterances for n in (u.speaker, u.path)], path)
    _write(path, (f"{u.speaker} {u.path}" for u in utterances))


def write_trials(path: str | Path, trials: Iterable[Trial]) -> None:
    """Write trials (``<label> <enroll> <test>``) or pairs when a trial has no label; a ``ListError`` (nothing
    written) if a path contains whitespace."""
    trials = list(trials)
    check_no_whitespace([p for t in trials for p in (t.enroll, t.test)], path)
    _write(path, (f"{t.enroll} {t.test}" if t.label is None else f"{t.label} {t.enroll} {t.test}" for t in trials))


def check_no_whitespace(names: Iterable[str], dest: str | Path, show: int = 5) -> None:
    """A ``ListError`` naming ``dest``, how many of ``names`` contain whitespace (which a list line cannot hold) and
    the first ``show`` of them, with the fix; nothing if there are none."""
    bad = list(dict.fromkeys(n for n in names if any(c.isspace() for c in n)))
    if bad:
        raise ListError(
            f"{dest}: nothing written: {len(bad)} path{'s' if len(bad) != 1 else ''} (or speaker"
            f" name{'s' if len(bad) != 1 else ''}) with whitespace, which a list line cannot hold (its"
            f" fields are split at whitespace):{first_lines([repr(n) for n in bad], show)}\nrename them, or copy"
            " the tree without spaces (`vvframe data convert SRC DST --replace-spaces`), and run again"
        )


_together = threading.local()


@contextlib.contextmanager
def written_together() -> Iterator[None]:
    """Hold the lists written inside the block and write them only when it ends without an error, so a command
    that writes several lists writes all of them or none."""
    held: list[tuple[str | Path, str]] = []
    outer = getattr(_together, "held", None)
    _together.held = held
    try:
        yield
    finally:
        _together.held = outer
    from vvframe.core.atomic import atomic_write

    for path, text in held:
        if outer is not None:
            outer.append((path, text))
        else:
            atomic_write(path, text)


def _write(path: str | Path, lines: Iterable[str]) -> None:
    text = "".join(line + "\n" for line in lines)
    held = getattr(_together, "held", None)
    if held is not None:
        held.append((path, text))
        return
    from vvframe.core.atomic import atomic_write

    atomic_write(path, text)


def missing_files(paths: Iterable[str], root: str | Path) -> list[str]:
    """The paths (relative to ``root``) that are not files on disk, in order, each once."""
    root = Path(root)
    seen, missing = set(), []
    for p in paths:
        if p not in seen:
            seen.add(p)
            if not (root / p).is_file():
                missing.append(p)
    return missing


def check_files(paths: Iterable[str], root: str | Path, source: str, show: int = 20) -> None:
    """A ``ListError`` listing the first ``show`` files of ``source`` that are absent under ``root``, and the count."""
    missing = missing_files(paths, root)
    if missing:
        raise ListError(
            f"{source}: {len(missing)} file{'s' if len(missing) != 1 else ''} missing under {root}:"
            f"{first_lines(missing, show)}"
        )


def first_lines(items: Sequence[str], show: int) -> str:
    """The first ``show`` of ``items``, each on a line of its own indented by two spaces, then ``... and N more``
    for the rest: the listing that ends a message about many files."""
    more = f"\n  ... and {len(items) - show} more" if len(items) > show else ""
    return "".join(f"\n  {item}" for item in items[:show]) + more


def trial_files(trials: Iterable[Trial]) -> list[str]:
    """Every distinct file of some trials, in order of first appearance."""
    return list(dict.fromkeys(p for t in trials for p in (t.enroll, t.test)))


def speaker_labels(utterances: Sequence[Utterance]) -> tuple[list[int], list[str]]:
    """Integer labels per utterance and the speaker names they index (sorted, so a list's order does not matter)."""
    names = sorted({u.speaker for u in utterances})
    index = {n: i for i, n in enumerate(names)}
    return [index[u.speaker] for u in utterances], names


def scan(root: str | Path, suffixes: Sequence[str] = AUDIO_SUFFIXES, progress=None) -> dict[str, list[str]]:
    """``<root>/<speaker>/**/*.{wav,flac}`` as speaker -> sorted relative paths (posix)."""
    root = Path(root)
    if not root.is_dir():
        raise ListError(f"{root}: not a directory")
    found: dict[str, list[str]] = {}
    for speaker_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(
            p.relative_to(root).as_posix()
            for p in speaker_dir.rglob("*")
            if p.suffix.lower() in suffixes and p.is_file()
        )
        if files:
            found[speaker_dir.name] = files
        if progress is not None:
            progress(1)
    return found


def split(
    by_speaker: dict[str, list[str]], ratio: float, min_utterances: int = 1, seed: int = 0
) -> tuple[list[Utterance], list[Utterance]]:
    """Train and validation utterances: ``ratio`` in (0, 1) holds out that fraction of each speaker's files,
    ``-1`` three files of each speaker; speakers with fewer than ``min_utterances`` files are left out."""
    if not (0 < ratio < 1 or ratio == -1 or ratio == 0):
        raise ListError(
            f"split ratio {ratio}: expected a fraction in (0, 1), 0 (no validation) or -1 (three files of each speaker)"
        )
    rng = random.Random(seed)
    train, val = [], []
    for speaker in sorted(by_speaker):
        files = list(by_speaker[speaker])
        if len(files) < min_utterances:
            continue
        rng.shuffle(files)
        held = 3 if ratio == -1 else round(len(files) * ratio)
        held = min(held, len(files) - 1)  # every speaker keeps at least one training file
        val += [Utterance(speaker, p) for p in sorted(files[:held])]
        train += [Utterance(speaker, p) for p in sorted(files[held:])]
    return train, val


def make_trials(utterances: Sequence[Utterance], per_utterance: int = 2, seed: int = 0) -> list[Trial]:
    """Balanced trials: for each utterance as enrollment, ``per_utterance`` target and as many non-target tests.

    A target test is another utterance of the same speaker; a non-target one is an utterance of another
    speaker. Each unordered pair appears at most once. A speaker's only utterance is never an enrollment
    (it has no target), but it serves as a non-target test of others.
    """
    rng = random.Random(seed)
    by_speaker: dict[str, list[str]] = defaultdict(list)
    for u in utterances:
        by_speaker[u.speaker].append(u.path)
    speakers = sorted(by_speaker)
    if len(speakers) < 2:
        raise ListError("trials need at least two speakers")
    seen: set[frozenset[str]] = set()
    trials = []
    for u in utterances:
        same = [p for p in by_speaker[u.speaker] if p != u.path]
        rng.shuffle(same)
        targets = [p for p in same if frozenset((u.path, p)) not in seen][:per_utterance]
        others: list[str] = []
        for _ in range(len(targets) * 8):  # as many non-targets as targets, keeping the trials balanced
            if len(others) == len(targets):
                break
            speaker = rng.choice(speakers)
            if speaker == u.speaker:
                continue
            p = rng.choice(by_speaker[speaker])
            if frozenset((u.path, p)) not in seen and p not in others:
                others.append(p)
        for label, tests in ((1, targets), (0, others)):
            for p in tests:
                seen.add(frozenset((u.path, p)))
                trials.append(Trial(u.path, p, label))
    if not trials:
        raise ListError("no trials: no speaker has two utterances, so there is no target pair")
    return trials
