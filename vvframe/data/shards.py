"""``vvframe data shards``: an utterance list packed into tar shards, and the dataset that streams them back.

Millions of small files are slow to open on network filesystems; a few hundred tar files read front to back are
not. ``write_shards`` packs a list into ``out/shard-000000.tar``, ``out/shard-000001.tar``, ...: each utterance
is two members, ``<key>.flac`` (16-bit FLAC of the file's samples, mono, at the file's own rate) and
``<key>.spk`` (the speaker name, utf-8). Beside them, ``index.txt`` (``<shard> <key> <speaker>`` per line, in
shard order), ``speakers.txt`` (the speaker names, sorted: the label order of ``lists.speaker_labels``) and,
when some listed files could not be read, ``skipped.txt`` (``<path>: <reason>``).

**Keys.** :func:`utterance_key` turns a list path into a tar-safe key that contains no ``.`` (readers split a
member name at the first dot into key and extension) and no ``/``: the audio suffix is dropped, the path is
percent-encoded (``%``, ``.``, ``~``, spaces, non-ASCII become ``%XX``) and ``/`` becomes ``~``, so
``id10001/1zcIwhmdeo4/00001.wav`` is ``id10001~1zcIwhmdeo4~00001``. The encoding is reversible
(:func:`key_path`), so keys are unique exactly when the paths without their suffix are; a list naming one
file twice, or ``a.wav`` and ``a.flac``, is refused.

**Order.** The utterances are shuffled (``seed``) before packing, so each shard holds a mix of speakers and a
shuffle buffer over a few shards gives well-mixed batches; ``seed=None`` keeps the list's order.

**Reading** (:class:`ShardDataset`): each epoch the shard order is shuffled by ``(seed, epoch)``, the same on
every rank; shard ``i`` of that order goes to the global worker ``i % (world_size * num_workers)``, global worker
``rank * num_workers + worker_id``. No shard is read twice in an epoch. With fewer shards than global workers,
the workers beyond the shard count get nothing (a warning says so; nothing is duplicated): write smaller shards
(``per_shard``) for many GPUs and loader workers. Ranks can get unequal numbers of utterances (the shard counts
differ by one, the last shard is short), so a DDP trainer must end an epoch on every rank at once (a fixed
step count, or ``torch.distributed.algorithms.Join``).
"""

from __future__ import annotations

import functools
import io
import logging
import math
import random
import tarfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from urllib.parse import quote, unquote

import soundfile as sf
import torch

from vvframe.core.atomic import atomic_path, atomic_write
from vvframe.core.errors import BadValue, short
from vvframe.data import audio
from vvframe.data.lists import AUDIO_SUFFIXES, Utterance, check_files
from vvframe.data.workers import one_torch_thread, process_pool

log = logging.getLogger(__name__)

SHARD_NAME = "shard-{:06d}.tar"
# the member extensions the reader decodes: the lists' audio suffixes, flac (what write_shards writes) first
AUDIO_EXTENSIONS = ("flac", *(s[1:] for s in AUDIO_SUFFIXES if s != ".flac"))


def utterance_key(path: str) -> str:
    """The tar-safe key of a list path: no audio suffix, percent-encoded, ``/`` as ``~`` (no dots, no slashes)."""
    p = path.replace("\\", "/")
    for suffix in AUDIO_SUFFIXES:
        if p.lower().endswith(suffix):
            p = p[: -len(suffix)]
            break
    return quote(p, safe="/").replace("~", "%7E").replace(".", "%2E").replace("/", "~")


def key_path(key: str) -> str:
    """The list path a key came from, without its audio suffix (the inverse of :func:`utterance_key`)."""
    return unquote(key.replace("~", "/"))


def write_shards(
    utterances: Sequence[Utterance],
    root: Path,
    out: Path,
    per_shard: int = 1000,
    progress: Callable[[int], None] | None = None,
    *,
    seed: int | None = 0,
    jobs: int = 1,
) -> list[Path]:
    """Pack an utterance list into tar shards out/shard-000000.tar, ...: <key>.flac + <key>.spk per utterance.

    ``<key>.flac``: 16-bit FLAC of the file's samples, mono, at the file's rate; ``<key>.spk``: the speaker
    name, utf-8.

    ``root``: the folder the list's paths are relative to. Missing files are an error before anything is
    written; a file that exists but cannot be read (corrupt, empty, silent) is left out with a warning and
    listed in ``out/skipped.txt``. Each shard is written to a temporary file and renamed; shards of an earlier
    run in ``out`` that this one does not write are removed. ``progress(n)`` reports utterances done.
    ``seed``: the shuffle of the utterances before packing (``None``: list order). ``jobs``: processes.
    Returns the shard paths.
    """
    root, out = Path(root), Path(out)
    if per_shard < 1:
        raise BadValue(f"per_shard={per_shard}: expected at least 1")
    if jobs < 1:
        raise BadValue(f"jobs={jobs}: expected at least 1")
    if not utterances:
        raise BadValue("no utterances to pack")
    check_files((u.path for u in utterances), root, source="the utterance list")
    items = []
    seen: dict[str, str] = {}
    for u in utterances:
        key = utterance_key(u.path)
        if key in seen:
            raise BadValue(
                f"{u.path} and {seen[key]} give the same shard key {key!r}"
                f"{' (the list names it twice)' if seen[key] == u.path else ''}: a key must be unique"
            )
        seen[key] = u.path
        items.append((key, u.speaker, u.path))
    if seed is not None:
        random.Random(seed).shuffle(items)

    out.mkdir(parents=True, exist_ok=True)
    for leftover in out.glob(".shard-*.tar.*.tmp"):  # from a run that was killed mid-shard
        leftover.unlink(missing_ok=True)
    chunks = [items[i : i + per_shard] for i in range(0, len(items), per_shard)]
    paths = [out / SHARD_NAME.format(i) for i in range(len(chunks))]
    log.info("packing %d utterances into %d shards of up to %d in %s", len(items), len(chunks), per_shard, out)
    results: list[tuple[list[tuple[str, str]], list[tuple[str, str]]]] = []
    if jobs == 1 or len(chunks) == 1:
        with one_torch_thread():
            for path, chunk in zip(paths, chunks):
                results.append(_write_shard(path, chunk, str(root), progress))
    else:
        with process_pool(min(jobs, len(chunks))) as pool:
            for chunk, result in zip(chunks, pool.map(functools.partial(_write_shard, root=str(root)), paths, chunks)):
                results.append(result)
                if progress is not None:
                    progress(len(chunk))

    written = set(paths)
    for stale in out.glob("shard-*.tar"):
        if stale not in written:
            log.warning("removing %s, a shard of an earlier run that this one does not write", stale)
            stale.unlink()
    index, speakers, skipped = [], set(), []
    for path, (done, failed) in zip(paths, results):
        index += [f"{path.name} {key} {speaker}" for key, speaker in done]
        speakers.update(speaker for _, speaker in done)
        skipped += failed
    atomic_write(out / "index.txt", "".join(line + "\n" for line in index))
    atomic_write(out / "speakers.txt", "".join(name + "\n" for name in sorted(speakers)))
    if skipped:
        atomic_write(out / "skipped.txt", "".join(f"{p}: {reason}\n" for p, reason in skipped))
        log.warning(
            "%d of %d files could not be read and are not in the shards (listed in %s)",
            len(skipped),
            len(items),
            out / "skipped.txt",
        )
    else:
        (out / "skipped.txt").unlink(missing_ok=True)
    return paths


def _write_shard(
    path: Path, chunk: Sequence[tuple[str, str, str]], root: str, progress: Callable[[int], None] | None = None
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Write one shard atomically: ``(written (key, speaker) pairs, skipped (path, reason) pairs)``."""
    done, skipped = [], []
    with atomic_path(path) as tmp:
        with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
            for key, speaker, rel in chunk:
                try:
                    rate = audio.utterance_info(Path(root) / rel).sample_rate
                    wave = audio.read(Path(root) / rel)
                except audio.AudioError as exc:
                    log.warning("leaving out %s: %s", rel, exc.reason)
                    skipped.append((rel, exc.reason))
                else:
                    buf = io.BytesIO()
                    sf.write(buf, audio.pcm16(wave.numpy()), rate, format="FLAC", subtype="PCM_16")
                    _add(tar, f"{key}.flac", buf.getvalue())
                    _add(tar, f"{key}.spk", speaker.encode("utf-8"))
                    done.append((key, speaker))
                if progress is not None:
                    progress(1)
    return done, skipped


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    member = tarfile.TarInfo(name)
    member.size = len(data)
    member.mode = 0o644
    member.mtime = 0  # shards of the same list are byte-identical
    tar.addfile(member, io.BytesIO(data))


def _resolve_shards(shards: Sequence[str | Path] | str | Path) -> list[Path]:
    if isinstance(shards, (str, Path)):
        where = Path(shards)
        if where.is_dir():
            index = where / "index.txt"
            if index.is_file():
                names = dict.fromkeys(
                    line.split()[0] for line in index.read_text(encoding="utf-8").splitlines() if line.strip()
                )
                found = [where / name for name in names]
            else:
                found = sorted(where.glob("*.tar"))
            if not found:
                raise BadValue(f"{where}: no shards (no index.txt naming any, no *.tar)")
        elif where.is_file():
            found = [where]
        else:
            raise BadValue(f"{where}: no such shard folder or file")
    else:
        found = [Path(s) for s in shards]
        if not found:
            raise BadValue("no shards given")
    missing = [str(p) for p in found if not p.is_file()]
    if missing:
        raise BadValue(
            f"{len(missing)} shard{'s' if len(missing) != 1 else ''} missing: {', '.join(missing[:10])}"
            f"{' ...' if len(missing) > 10 else ''}"
        )
    return found


class ShardDataset(torch.utils.data.IterableDataset):
    """Utterances from tar shards, read sequentially through a shuffle buffer; shards split across DDP ranks and
    loader workers without overlap.

    ``shards``: a folder written by :func:`write_shards` (its ``index.txt`` names the shards; without one, every
    ``*.tar`` in it), one tar, or a list of tar paths. ``sample_rate``: the rate yielded (resampled if a shard
    holds another). ``crop_frames``: a random crop of that many samples (short utterances are repeated to fill
    it); ``None`` yields whole utterances. ``shuffle_buffer``: utterances held to shuffle (``<= 1``: shard
    order). Randomness is seeded by ``(seed, epoch, rank, worker id)``, so an epoch replays exactly. Call
    :meth:`set_epoch` before each epoch (with ``persistent_workers=False``, the DataLoader default, the workers
    see it). Yields ``{"key": str, "speaker": str, "wave": Tensor (T,) float32}``. A corrupt member is skipped
    with a warning that names the shard and the member.
    """

    def __init__(
        self,
        shards: Sequence[str | Path] | str | Path,
        sample_rate: int,
        crop_frames: int | None = None,
        shuffle_buffer: int = 1000,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ):
        super().__init__()
        if world_size < 1 or not 0 <= rank < world_size:
            raise BadValue(f"rank={rank}, world_size={world_size}: expected 0 <= rank < world_size")
        if crop_frames is not None and crop_frames < 1:
            raise BadValue(f"crop_frames={crop_frames}: expected a positive number of samples, or None")
        if sample_rate < 1:
            raise BadValue(f"sample_rate={sample_rate}: expected a positive rate (Hz)")
        self.shards = _resolve_shards(shards)
        self.sample_rate = int(sample_rate)
        self.crop_frames = crop_frames
        self.shuffle_buffer = int(shuffle_buffer)
        self.seed = int(seed)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch: it reshuffles the shard order, the buffer and the crops."""
        self.epoch = int(epoch)

    def shards_for(self, worker_id: int = 0, num_workers: int = 1) -> list[Path]:
        """The shards one loader worker of this rank reads this epoch, in reading order."""
        order = list(range(len(self.shards)))
        random.Random(f"vvframe-shard-order/{self.seed}/{self.epoch}").shuffle(order)
        workers = self.world_size * num_workers
        me = self.rank * num_workers + worker_id
        return [self.shards[order[i]] for i in range(me, len(order), workers)]

    def __iter__(self) -> Iterator[dict]:
        """The utterances of this rank and loader worker, shuffled through the buffer."""
        info = torch.utils.data.get_worker_info()
        worker_id, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        workers = self.world_size * num_workers
        if len(self.shards) < workers and self.rank == 0 and worker_id == 0:
            log.warning(
                "%d shards for %d readers (%d ranks x %d loader workers): %d readers get no shard and stay"
                " idle; write smaller shards (per_shard) to use them all",
                len(self.shards),
                workers,
                self.world_size,
                num_workers,
                workers - len(self.shards),
            )
        rng = random.Random(f"vvframe-shards/{self.seed}/{self.epoch}/{self.rank}/{worker_id}")
        raw = self._members(self.shards_for(worker_id, num_workers))
        for shard, key, parts in _shuffle(raw, self.shuffle_buffer, rng):
            sample = self._decode(shard, key, parts, rng)
            if sample is not None:
                yield sample

    def _members(self, shards: Sequence[Path]) -> Iterator[tuple[Path, str, dict[str, bytes]]]:
        """``(shard, key, {extension: bytes})`` per utterance, streaming each shard front to back."""
        for shard in shards:
            key, parts, count = None, {}, 0
            try:
                with open(shard, "rb") as f, tarfile.open(fileobj=f, mode="r|") as tar:
                    for member in tar:
                        if not member.isfile():
                            continue
                        folder, _, base = member.name.rpartition("/")
                        stem, _, ext = base.partition(".")
                        this = f"{folder}/{stem}" if folder else stem
                        if this != key:
                            if key is not None:
                                yield shard, key, parts
                            key, parts = this, {}
                        parts[ext] = tar.extractfile(member).read()
                        count += 1
            except (tarfile.TarError, EOFError, OSError) as exc:
                log.warning(
                    "shard %s: unreadable after %d members (%s); going on with the next shard", shard, count, exc
                )
            if key is not None:
                yield shard, key, parts

    def _decode(self, shard: Path, key: str, parts: dict[str, bytes], rng: random.Random) -> dict | None:
        ext = next((e for e in AUDIO_EXTENSIONS if e in parts), None)
        if ext is None or "spk" not in parts:
            log.warning(
                "shard %s: utterance %s has no %s member; skipped",
                shard,
                key,
                "audio (.flac)" if ext is None else ".spk",
            )
            return None
        try:
            speaker = parts["spk"].decode("utf-8").strip()
            wave = self._wave(parts[ext], rng)
        except (RuntimeError, sf.LibsndfileError, UnicodeDecodeError, ValueError) as exc:
            log.warning(
                "shard %s: member %s.%s is corrupt (%s); skipped",
                shard,
                key,
                "spk" if isinstance(exc, UnicodeDecodeError) else ext,
                short(exc),
            )
            return None
        return {"key": key, "speaker": speaker, "wave": wave}

    def _wave(self, data: bytes, rng: random.Random) -> torch.Tensor:
        crop = self.crop_frames
        with sf.SoundFile(io.BytesIO(data)) as f:
            rate, frames = f.samplerate, f.frames
            if frames <= 0:
                raise ValueError("no samples")
            if crop is not None and rate == self.sample_rate and frames > crop:
                f.seek(rng.randrange(frames - crop + 1))  # decode only the crop
                samples = f.read(crop, dtype="float32", always_2d=True)
                crop = None
            else:
                samples = f.read(dtype="float32", always_2d=True)
        if len(samples) == 0:
            raise ValueError("no samples decoded")
        wave = torch.from_numpy(audio.mono(samples))
        if rate != self.sample_rate:
            wave = audio.resampler(rate, self.sample_rate)(wave)
        if crop is not None:
            if len(wave) > crop:
                start = rng.randrange(len(wave) - crop + 1)
                wave = wave[start : start + crop]
            elif len(wave) < crop:
                wave = wave.repeat(math.ceil(crop / len(wave)))[:crop]
        return wave.contiguous()


def _shuffle(items: Iterator, size: int, rng: random.Random) -> Iterator:
    """A shuffle buffer: hold ``size`` items, emit a random one as each new one arrives, then the rest shuffled."""
    if size <= 1:
        yield from items
        return
    buffer: list = []
    for item in items:
        if len(buffer) < size:
            buffer.append(item)
            continue
        i = rng.randrange(size)
        yield buffer[i]
        buffer[i] = item
    rng.shuffle(buffer)
    yield from buffer
