"""``vvframe data voxceleb``: the list files of the VoxCeleb recipes, made from the official folder layout.

Nothing is downloaded and no audio file is opened: the speaker trees are walked with ``os.scandir`` (VoxCeleb2
dev alone holds about 1.09 M files) and the official trial lists are rewritten. The usual layout under ROOT::

    voxceleb1/wav/id10001/1zcIwhmdeo4/00001.wav        VoxCeleb1 dev and test in one folder (or the two folders
                                                        vox1_dev_wav/wav and vox1_test_wav/wav)
    voxceleb2/dev/aac/id00012/21Uxsk56VDQ/00001.wav    VoxCeleb2 dev as .wav or .flac (.m4a needs converting)
    veri_test2.txt list_test_all2.txt list_test_hard2.txt   the cleaned VoxCeleb1-O, -E and -H trial lists

Written to the output folder, every path relative to ROOT (so a recipe sets ``data.root=ROOT``):

- ``train.txt`` and ``cohort.txt``: VoxCeleb2 dev (the cohort optionally capped per speaker);
- ``vox1_O.txt``, ``vox1_E.txt``, ``vox1_H.txt``: the trial lists found, each file checked to be on disk;
- ``train_vox1.txt`` on request: VoxCeleb1 dev, i.e. without the test speakers id10270-id10309;
- links ``musan`` and ``rirs`` to the augmentation corpora, when given.

Everything is found and checked before the first file is written; lists are written atomically, so a rerun
(or an interrupted run) never leaves a half-written list.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from vvframe.core.errors import BadValue
from vvframe.data import lists
from vvframe.tools.convert import NEEDS_CONVERTING

VOX1_SEARCH = ("voxceleb1/wav", "voxceleb1", "vox1/wav", "wav")
VOX1_SPLIT_SEARCH = (
    ("vox1_dev_wav/wav", "vox1_test_wav/wav"),
    ("voxceleb1/vox1_dev_wav/wav", "voxceleb1/vox1_test_wav/wav"),
)
VOX2_SEARCH = (
    "voxceleb2/dev/aac",
    "voxceleb2/dev/wav",
    "voxceleb2/dev/flac",
    "voxceleb2_wav/dev/aac",
    "voxceleb2/dev",
    "vox2/dev/aac",
    "dev/aac",
)
VOX2_CONVERTED = "voxceleb2/dev/flac"  # where the conversion hint suggests putting flac files (searched above)
VOX1_SPEAKER = re.compile(r"id1\d{4}")
VOX2_SPEAKER = re.compile(r"id0\d{4}")
VOX1_TEST_SPEAKERS = range(10270, 10310)  # id10270-id10309: VoxCeleb1's test split
TRIAL_LISTS = {  # written list -> (cleaned official file, original official file)
    "vox1_O.txt": ("veri_test2.txt", "veri_test.txt"),
    "vox1_E.txt": ("list_test_all2.txt", "list_test_all.txt"),
    "vox1_H.txt": ("list_test_hard2.txt", "list_test_hard.txt"),
}
UNREADABLE = NEEDS_CONVERTING  # VoxCeleb2 as distributed (.m4a) and the like: audio to convert first
SHOW_MISSING = 5
RECIPE = "recipes/voxceleb_resnet.yaml"
DEFAULT_OUT = Path("data/voxceleb")

Bar = Callable[[int | None, str, str], contextlib.AbstractContextManager]


@dataclass
class Tree:
    """A VoxCeleb speaker tree: its folder, that folder relative to ROOT (posix, ``""`` for ROOT itself) and the
    names of its speaker folders, sorted."""

    folder: Path
    rel: str
    speakers: list[str]

    def path(self, inside: str) -> str:
        """``inside`` (relative to this tree) relative to ROOT."""
        return posixpath.join(self.rel, inside) if self.rel else inside


@dataclass
class Written:
    """One output: its file name and a one-line description for the summary."""

    name: str
    note: str


@dataclass
class _Plan:
    lists: dict[str, Callable[[Path], None]] = field(default_factory=dict)  # file name -> writer
    notes: list[Written] = field(default_factory=list)
    links: dict[str, str] = field(default_factory=dict)  # link name -> target

    def add(self, name: str, write: Callable[[Path], None], note: str) -> None:
        self.lists[name] = write
        self.notes.append(Written(name, note))


def prepare(
    root: str | Path,
    out: str | Path = DEFAULT_OUT,
    *,
    vox1: Sequence[str | Path] | None = None,
    vox2: str | Path | None = None,
    trials_dir: str | Path | None = None,
    cohort_per_speaker: int = 0,
    vox1_train: bool = False,
    musan: str | Path | None = None,
    rirs: str | Path | None = None,
    bar: Bar | None = None,
) -> list[Written]:
    """Find the VoxCeleb trees under ``root``, write the recipes' lists into ``out``; returns what was written.

    ``vox1`` (one folder, or the dev and test folders) and ``vox2`` override the search. A ``BadValue`` names
    the path and what would be right for anything that cannot be used; nothing is written then.
    """
    bar = bar or _no_bar
    root, out = Path(root), Path(out)
    if not root.is_dir():
        raise BadValue(
            f"{root}: {_not_a_folder(root)}; expected the folder that"
            " holds the VoxCeleb data sets (e.g. voxceleb1/wav and voxceleb2/dev/aac)"
        )
    if cohort_per_speaker < 0:
        raise BadValue(f"--cohort-per-speaker {cohort_per_speaker}: expected 0 (every utterance) or a positive count")
    vox1_trees, vox1_looked = _find_vox1(root, vox1)
    vox2_tree, vox2_looked = _find_vox2(root, vox2)
    if not vox1_trees and vox2_tree is None:
        raise BadValue(
            f"no VoxCeleb data under {root}: no VoxCeleb1 wav tree (<id1xxxx>/<video>/<nnnnn>.wav) in "
            f"{_listing(vox1_looked)}, and no VoxCeleb2 dev tree (<id0xxxx>/<video>/<nnnnn>.wav|flac) in "
            f"{_listing(vox2_looked)}; pass --vox1 PATH and/or --vox2 PATH"
        )
    for tree in [*vox1_trees, *([vox2_tree] if vox2_tree else [])]:
        if tree.rel.startswith(".."):
            _warn(
                f"{tree.folder} is outside {root}: its list paths start with '..' (they still work with"
                f" data.root={root})"
            )

    plan = _Plan()
    plan.links = {
        name: check(given)
        for name, given, check in (("musan", musan, _check_musan), ("rirs", rirs, _check_rirs))
        if given is not None
    }
    for name, target in plan.links.items():
        _check_link(out / name, target, name)

    found_trials, absent = _find_trials(root, vox1_trees, trials_dir) if vox1_trees else ({}, {})
    if not vox2_tree and not found_trials and not vox1_train:
        raise BadValue(
            f"nothing to write: VoxCeleb1 is at {_listing(t.folder for t in vox1_trees)} but no official"
            f" trial list ({', '.join(cleaned for cleaned, _ in TRIAL_LISTS.values())}) is in "
            f"{_listing(_trial_dirs(root, vox1_trees, trials_dir))}, and there is no VoxCeleb2 dev tree"
            f" (looked in {_listing(vox2_looked)}); download the trial lists into {root} (or pass"
            " --trials-dir), or pass --vox2 PATH or --vox1-train"
        )

    if vox2_tree is not None:
        _plan_vox2(root, vox2_tree, cohort_per_speaker, plan, bar)
    if vox1_trees:
        _plan_vox1(root, vox1_trees, found_trials, vox1_train, plan, bar)

    with lists.written_together():  # a path with whitespace in any list: none of them is written
        for name, write in plan.lists.items():
            write(out / name)
    out.mkdir(parents=True, exist_ok=True)
    for name, target in plan.links.items():
        _make_link(out / name, target)

    _report(root, out, vox1_trees, vox2_tree, vox2_looked, vox1_looked, found_trials, absent, plan)
    return plan.notes


# --- finding the trees ------------------------------------------------------------------------------------------


def _find_vox1(root: Path, given: Sequence[str | Path] | None) -> tuple[list[Tree], list[Path]]:
    if given:
        return [_given_tree(root, Path(p), VOX1_SPEAKER, "--vox1", "id1xxxx", "voxceleb1/wav") for p in given], []
    looked = []
    for rel in VOX1_SEARCH:
        looked.append(root / rel)
        tree = _tree(root, root / rel, VOX1_SPEAKER)
        if tree is not None:
            return [tree], looked
    for pair in VOX1_SPLIT_SEARCH:
        looked += [root / rel for rel in pair]
        trees = [t for t in (_tree(root, root / rel, VOX1_SPEAKER) for rel in pair) if t is not None]
        if trees:
            return trees, looked
    return [], looked


def _find_vox2(root: Path, given: str | Path | None) -> tuple[Tree | None, list[Path]]:
    if given is not None:
        return _given_tree(root, Path(given), VOX2_SPEAKER, "--vox2", "id0xxxx", "voxceleb2/dev/aac"), []
    looked, first = [], None
    for rel in VOX2_SEARCH:
        looked.append(root / rel)
        tree = _tree(root, root / rel, VOX2_SPEAKER)
        if tree is not None:
            # a tree with .wav/.flac wins over an earlier one with only .m4a (the original next to its converted copy)
            if _readable(tree):
                return tree, looked
            first = first or tree
    return first, looked


def _given_tree(root: Path, folder: Path, pattern: re.Pattern, option: str, ids: str, usual: str) -> Tree:
    if not folder.is_dir():
        raise BadValue(
            f"{option} {folder}: {_not_a_folder(folder)}; expected the"
            f" folder that holds the speaker folders {ids} (such as ROOT/{usual})"
        )
    tree = _tree(root, folder, pattern)
    if tree is None:
        inner = next((p for p in _subdirs(folder) if _speaker_dirs(folder / p, pattern)), None)
        hint = f" (did you mean {option} {folder / inner}?)" if inner else ""
        raise BadValue(
            f"{option} {folder}: no speaker folders {ids} in it; expected the folder that holds them"
            f" (such as ROOT/{usual}){hint}"
        )
    return tree


def _tree(root: Path, folder: Path, pattern: re.Pattern) -> Tree | None:
    speakers = _speaker_dirs(folder, pattern)
    if not speakers:
        return None
    rel = Path(os.path.relpath(os.path.abspath(folder), os.path.abspath(root))).as_posix()
    return Tree(folder, "" if rel == "." else rel, speakers)


def _subdirs(folder: Path) -> list[str]:
    try:
        with os.scandir(folder) as it:
            return sorted(e.name for e in it if not e.name.startswith(".") and _is_dir(e))
    except OSError:
        return []


def _speaker_dirs(folder: Path, pattern: re.Pattern) -> list[str]:
    return [name for name in _subdirs(folder) if pattern.fullmatch(name)]


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()  # from the directory listing itself on most file systems: no stat call
    except OSError:
        return False


def _readable(tree: Tree) -> bool:
    """Whether one of the first three speakers holds .wav/.flac files."""
    for speaker in tree.speakers[:3]:
        audio: list[str] = []
        _walk(tree.folder / speaker, "", 3, audio, [])
        if audio:
            return True
    return False


# --- scanning ---------------------------------------------------------------------------------------------------


def _walk(folder: Path | str, rel: str, depth: int, audio: list[str], other: list[str]) -> None:
    """Audio under ``folder`` into ``audio`` (.wav/.flac) or ``other`` (.m4a, ...), as ``rel`` + path; no stat."""
    try:
        listing = os.scandir(folder)
    except OSError as exc:
        raise BadValue(f"{folder}: cannot be read ({exc.strerror or exc})") from None
    with listing:
        for entry in listing:
            name = entry.name
            if name.startswith("."):
                continue
            if _is_dir(entry):
                if depth > 0:
                    _walk(entry.path, f"{rel}{name}/", depth - 1, audio, other)
                continue
            suffix = _suffix(name)
            if suffix in lists.AUDIO_SUFFIXES:
                audio.append(rel + name)
            elif suffix in UNREADABLE:
                other.append(rel + name)


def _suffix(name: str) -> str:
    return name[name.rfind(".") :].lower() if "." in name else ""


def _scan_speaker(folder: Path) -> tuple[list[str], int]:
    """The speaker's .wav/.flac files relative to its folder, sorted (one per utterance: .wav over .flac), and
    how many .m4a files (and the like) have no readable copy."""
    audio: list[str] = []
    other: list[str] = []
    _walk(folder, "", 3, audio, other)
    audio.sort()
    stems = [f[: f.rfind(".")] for f in audio]
    unique = set(stems)
    if len(unique) < len(audio):
        chosen: dict[str, str] = {}
        for f, stem in zip(audio, stems):
            if stem not in chosen or f.lower().endswith(".wav"):
                chosen[stem] = f
        audio = sorted(chosen.values())
    unconverted = sum(1 for f in other if f[: f.rfind(".")] not in unique)
    return audio, unconverted


def _scan(tree: Tree, desc: str, bar: Bar) -> tuple[dict[str, list[str]], int]:
    found, unconverted = {}, 0
    with bar(len(tree.speakers), desc, "speaker") as update:
        for speaker in tree.speakers:
            files, left = _scan_speaker(tree.folder / speaker)
            unconverted += left
            if files:
                found[speaker] = files
            update(1)
    return found, unconverted


# --- VoxCeleb2: train.txt, cohort.txt ---------------------------------------------------------------------------


def _plan_vox2(root: Path, tree: Tree, per_speaker: int, plan: _Plan, bar: Bar) -> None:
    found, unconverted = _scan(tree, "scanning VoxCeleb2 dev", bar)
    if not found:
        if unconverted:
            target = tree.folder.parent / "flac" if tree.folder.name == "aac" else root / VOX2_CONVERTED
            raise BadValue(
                f"VoxCeleb2 dev at {tree.folder} holds {unconverted} .m4a files (and no .wav/.flac), which"
                " soundfile cannot read: convert them once with `vvframe data convert"
                f" {tree.folder} {target} --format flac --jobs 8` (needs ffmpeg), then pass"
                f" --vox2 {target}"
            )
        raise BadValue(
            f"VoxCeleb2 dev at {tree.folder}: its speaker folders hold no .wav or .flac files; expected"
            " <id0xxxx>/<video>/<nnnnn>.wav|flac"
        )
    if unconverted:
        _warn(f"{tree.folder}: left out {unconverted} .m4a files that have no .wav/.flac copy next to them")
    count = sum(len(v) for v in found.values())
    plan.add(
        "train.txt",
        lambda path: lists.write_utterances(path, _utterances(tree, found, 0)),
        f"{len(found)} speakers, {count} utterances (VoxCeleb2 dev)",
    )
    kept = sum(min(len(v), per_speaker) if per_speaker else len(v) for v in found.values())
    cap = f", at most {per_speaker} per speaker" if per_speaker else ""
    plan.add(
        "cohort.txt",
        lambda path: lists.write_utterances(path, _utterances(tree, found, per_speaker)),
        f"{len(found)} speakers, {kept} utterances (VoxCeleb2 dev{cap})",
    )


def _utterances(tree: Tree, found: dict[str, list[str]], per_speaker: int) -> Iterator[lists.Utterance]:
    for speaker in sorted(found):
        files = found[speaker][:per_speaker] if per_speaker else found[speaker]
        for f in files:
            yield lists.Utterance(speaker, tree.path(f"{speaker}/{f}"))


# --- VoxCeleb1: trials, train_vox1.txt --------------------------------------------------------------------------


def _trial_dirs(root: Path, trees: list[Tree], trials_dir: str | Path | None) -> list[Path]:
    if trials_dir is not None:
        return [Path(trials_dir)]
    dirs: dict[str, Path] = {}
    for d in [root, root / "voxceleb1", *(t.folder.parent for t in trees)]:
        dirs.setdefault(os.path.abspath(d), d)
    return list(dirs.values())


def _find_trials(
    root: Path, trees: list[Tree], trials_dir: str | Path | None
) -> tuple[dict[str, Path], dict[str, str]]:
    """Written list -> official file found, and written list -> why it is absent."""
    if trials_dir is not None and not Path(trials_dir).is_dir():
        raise BadValue(
            f"--trials-dir {trials_dir}: no such folder; expected the folder holding veri_test2.txt,"
            " list_test_all2.txt and list_test_hard2.txt"
        )
    dirs = _trial_dirs(root, trees, trials_dir)
    found, absent = {}, {}
    for name, (cleaned, original) in TRIAL_LISTS.items():
        for official in (cleaned, original):
            hit = next((d / official for d in dirs if (d / official).is_file()), None)
            if hit is not None:
                found[name] = hit
                if official == original:
                    _warn(
                        f"{name}: using {hit}; the cleaned list {cleaned} is the one papers report (download"
                        " it from the VoxCeleb site)"
                    )
                break
        else:
            absent[name] = f"neither {cleaned} nor {original} in {_listing(dirs)}"
    return found, absent


def _read_official(path: Path) -> list[tuple[int, int, str, str]]:
    """``(line, label, enroll, test)`` per trial of an official list."""
    out = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            fields = line.split()
            if not fields or fields[0].startswith("#"):
                continue
            if len(fields) != 3 or fields[0].lower() not in lists.LABELS:
                raise BadValue(
                    f"{path}:{number}: expected '<1|0> <enroll> <test>' (such as '1 id10270/x6uYqmx31kE/"
                    f"00001.wav id10270/8jEAjG6SegY/00008.wav'), got {line.strip()!r}"
                )
            out.append((number, lists.LABELS[fields[0].lower()], fields[1], fields[2]))
    if not out:
        raise BadValue(f"{path}: no trials in it; expected lines '<1|0> <enroll> <test>'")
    return out


def _is_test_speaker(name: str) -> bool:
    """Whether ``name`` is one of VoxCeleb1's test speakers id10270-id10309."""
    return bool(VOX1_SPEAKER.fullmatch(name)) and int(name[2:]) in VOX1_TEST_SPEAKERS


def _plan_vox1(
    root: Path, trees: list[Tree], found_trials: dict[str, Path], train: bool, plan: _Plan, bar: Bar
) -> None:
    official = {name: _read_official(path) for name, path in found_trials.items()}
    wanted = {p.split("/", 1)[0] for rows in official.values() for _, _, e, t in rows for p in (e, t)}
    if train:
        wanted |= {s for tree in trees for s in tree.speakers if not _is_test_speaker(s)}
    owners: dict[str, list[Tree]] = {}
    for tree in trees:
        for speaker in tree.speakers:
            owners.setdefault(speaker, []).append(tree)
    present: set[str] = set()
    by_speaker: dict[str, list[str]] = {}  # dev speaker -> files relative to ROOT
    todo = [(tree, speaker) for tree in trees for speaker in tree.speakers if speaker in wanted]
    with bar(len(todo), "scanning VoxCeleb1", "speaker") as update:
        for tree, speaker in todo:
            files, _ = _scan_speaker(tree.folder / speaker)
            full = [tree.path(f"{speaker}/{f}") for f in files]
            present.update(full)
            if train and not _is_test_speaker(speaker):
                by_speaker.setdefault(speaker, []).extend(full)
            update(1)

    def locate(path: str) -> str | None:
        for tree in owners.get(path.split("/", 1)[0], ()):
            full = tree.path(path)
            if full in present:
                return full
            stem, dot, _ = full.rpartition(".")
            if dot and stem + ".flac" in present:  # a VoxCeleb1 converted to flac
                return stem + ".flac"
        return None

    for name, rows in official.items():
        rewritten: dict[str, str] = {}
        missing: dict[str, int] = {}  # official path -> first line
        for number, _, enroll, test in rows:
            for p in (enroll, test):
                if p not in rewritten:
                    where = locate(p)
                    if where is None:
                        missing.setdefault(p, number)
                        where = p
                    rewritten[p] = where
        if missing:
            raise BadValue(_missing_message(root, found_trials[name], missing, len(rewritten), trees))
        trials = [lists.Trial(rewritten[e], rewritten[t], label) for _, label, e, t in rows]
        speakers = {p.split("/", 1)[0] for p in rewritten}
        targets = sum(t.label for t in trials)
        plan.add(
            name,
            lambda path, trials=trials: lists.write_trials(path, trials),
            f"{len(trials)} trials ({targets} target), {len(speakers)} speakers, {len(rewritten)} files"
            f" (from {found_trials[name].name})",
        )
    if train:
        if not by_speaker:
            raise BadValue(
                f"--vox1-train: no VoxCeleb1 dev speakers (any but id10270-id10309) with .wav/.flac files"
                f" in {_listing(t.folder for t in trees)}"
            )
        utterances = [lists.Utterance(s, f) for s in sorted(by_speaker) for f in sorted(by_speaker[s])]
        plan.add(
            "train_vox1.txt",
            lambda path: lists.write_utterances(path, utterances),
            f"{len(by_speaker)} speakers, {len(utterances)} utterances (VoxCeleb1 dev: test speakers"
            " id10270-id10309 left out)",
        )


def _missing_message(root: Path, official: Path, missing: dict[str, int], files: int, trees: list[Tree]) -> str:
    shown = lists.first_lines([f"line {line}: {path}" for path, line in missing.items()], SHOW_MISSING)
    text = (
        f"{official}: {len(missing)} of its {files} audio files {'is' if len(missing) == 1 else 'are'} missing"
        f" from the VoxCeleb1 tree ({_listing(t.folder for t in trees)}) under {root}:{shown}"
    )
    speakers = {p.split("/", 1)[0] for p in missing}
    if any(_is_test_speaker(s) for s in speakers):
        text += (
            "\nthe test speakers id10270-id10309 come in VoxCeleb1's test archive (vox1_test_wav.zip): extract"
            " it next to the dev speakers, or pass --vox1 twice (the dev and the test wav folder)"
        )
    return text


# --- MUSAN and RIRS_NOISES --------------------------------------------------------------------------------------
MUSAN_LAYOUT = ("music", "speech", "noise")  # MUSAN's own folders (one is named like the noise augmentor)


def _has_audio(folder: Path) -> bool:
    return any(
        _suffix(name) in lists.AUDIO_SUFFIXES for _, _, files in os.walk(folder, followlinks=True) for name in files
    )


def _check_musan(path: str | Path) -> str:
    folder = Path(path)
    if not folder.is_dir():
        raise BadValue(
            f"--musan {path}: {_not_a_folder(folder)}; expected MUSAN's"
            " folder, the one holding music/, speech/ and noise/"
        )
    problems = []
    for sub in MUSAN_LAYOUT:
        if not (folder / sub).is_dir():
            problems.append(f"no {sub}/")
        elif not _has_audio(folder / sub):
            problems.append(f"no .wav/.flac files in {sub}/")
    if problems:
        hint = f" (did you mean --musan {folder / 'musan'}?)" if (folder / "musan").is_dir() else ""
        raise BadValue(
            f"--musan {path}: not a MUSAN folder ({'; '.join(problems)}); expected music/, speech/ and"
            f" noise/ with audio files in them{hint}"
        )
    return os.path.abspath(folder)


def _check_rirs(path: str | Path) -> str:
    folder = Path(path)
    if not folder.is_dir():
        raise BadValue(
            f"--rirs {path}: {_not_a_folder(folder)}; expected"
            " RIRS_NOISES (its simulated_rirs/ is used) or a folder of room impulse responses"
        )
    used = folder / "simulated_rirs" if (folder / "simulated_rirs").is_dir() else folder
    if not _has_audio(used):
        hint = f" (did you mean --rirs {folder / 'RIRS_NOISES'}?)" if (folder / "RIRS_NOISES").is_dir() else ""
        raise BadValue(
            f"--rirs {path}: no .wav files in {used}; expected RIRS_NOISES (its simulated_rirs/ is used)"
            f" or a folder of room impulse responses{hint}"
        )
    return os.path.abspath(used)


def _check_link(link: Path, target: str, option: str) -> None:
    if link.is_symlink() or not link.exists():
        return
    if os.path.samefile(link, target):
        return  # the corpus itself sits there already
    kind = "folder" if link.is_dir() else "file"
    raise BadValue(
        f"{link} is a real {kind}, not a link: not replacing it with a link to {target}; move it away,"
        f" or pass --{option} {link} to use it as it is"
    )


def _make_link(link: Path, target: str) -> None:
    if not link.is_symlink() and link.exists():
        return  # the same folder as the target (checked before anything was written)
    tmp = link.with_name(f".{link.name}.{os.getpid()}.tmp")
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(target, tmp, target_is_directory=True)
    os.replace(tmp, link)  # replaces an old link in one step


# --- output -----------------------------------------------------------------------------------------------------


def _report(
    root: Path,
    out: Path,
    vox1: list[Tree],
    vox2: Tree | None,
    vox2_looked: list[Path],
    vox1_looked: list[Path],
    found_trials: dict[str, Path],
    absent: dict[str, str],
    plan: _Plan,
) -> None:
    print(
        f"VoxCeleb1: {_listing(t.folder for t in vox1)}"
        if vox1
        else f"VoxCeleb1: not found (looked in {_listing(vox1_looked)}; pass --vox1 PATH): no trial lists written"
    )
    print(
        f"VoxCeleb2 dev: {vox2.folder}"
        if vox2
        else f"VoxCeleb2 dev: not found (looked in {_listing(vox2_looked)}; pass --vox2 PATH):"
        " train.txt and cohort.txt not written"
    )
    for name in TRIAL_LISTS:
        if name in found_trials:
            print(f"{name}: from {found_trials[name]}")
        elif vox1:
            print(f"{name}: not written: {absent[name]}")
    print(f"wrote {out}/ (paths relative to {root}):")
    width = max(len(w.name) for w in plan.notes) if plan.notes else 0
    for w in plan.notes:
        print(f"  {w.name:<{width}}  {w.note}")
    for name, target in plan.links.items():
        print(f"  {name:<{width}}  -> {target}")
    missing = [n for n in ("musan", "rirs") if n not in plan.links]
    for name in missing:
        link = out / name
        if link.is_symlink():
            print(f"  {name:<{width}}  -> {os.readlink(link)} (from an earlier run)")
        elif link.exists():
            print(f"  {name:<{width}}  (a folder)")
        else:
            print(
                f"note: the recipes' augmentors read {link}: pass --{name} PATH to link it"
                f" ({'MUSAN' if name == 'musan' else 'RIRS_NOISES'})"
            )
    if os.path.abspath(out) != os.path.abspath(DEFAULT_OUT):
        print(f"note: the VoxCeleb recipes read their lists from {DEFAULT_OUT}/; point their list paths at {out}/")
    print(f"next: vvframe run {RECIPE} data.root={os.path.abspath(root)}")


def _not_a_folder(path: Path) -> str:
    """Why ``path`` cannot serve as a folder: ``not a folder`` (something else is there) or ``no such folder``."""
    return "not a folder" if path.exists() else "no such folder"


def _listing(paths: Iterable[str | Path]) -> str:
    return ", ".join(str(p) for p in paths) or "(nowhere)"


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


@contextlib.contextmanager
def _no_bar(total: int | None, desc: str, unit: str = "file") -> Iterator[Callable[[int], None]]:
    yield lambda n: None
