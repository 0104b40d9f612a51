"""Embedding extraction for evaluation: whole utterances (or voxceleb_trainer's evenly spaced crops), batched by
length, cached on disk per model, split over DDP ranks.

Batching never changes an embedding: only utterances of exactly the same length (in samples, after the optional
``max_seconds`` cut) share a batch, so nothing is ever padded. Utterances are sorted by length and each run of
equal lengths is cut into batches of at most ``batch_seconds`` of audio; every other utterance goes alone.

Embeddings are returned as ``(D,)`` float32 CPU tensors, not normalised (see :func:`l2_normalize` and
:func:`subtract_mean`). With ``cache_dir`` each embedding is also stored in
``cache_dir/<model_id>/<sha1 of the path>.pt`` so that prepare, eval and test stages never embed a file twice;
``model_id`` must identify the weights *and* the extraction settings (``max_seconds``, ``crops``, ...).

:class:`EmbedSettings` (the back-end stages' ``embed:`` section) holds the one set of defaults for how utterances
are cut; a model card without them means these.
"""

from __future__ import annotations

import hashlib
import logging
import math
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
from torch import Tensor, nn

from vvframe.core.atomic import atomic_path
from vvframe.core.schema import Range
from vvframe.data import audio
from vvframe.data import vad as activity
from vvframe.scoring import ranks
from vvframe.training import checkpoint
from vvframe.training.launch import Dist

log = logging.getLogger(__name__)
# the folders of a run directory that the back-end stages write and the Python API reads (DESIGN section 6)
RUN_LAYOUT = {"cohort": "cohort", "eval": "eval", "test": "test"}


@dataclass
class EmbedSettings:
    """``embed:``: which weights, and how utterances become embeddings (the back-end stages' section; its
    defaults are also what a model card's missing ``embed`` settings mean)."""

    checkpoint: str | None = None  # a checkpoint file or a run directory; default: this run's avg/best/last
    crops: Annotated[int, Range(0, 1000)] = (
        0  # > 0: average this many evenly spaced crops (voxceleb_trainer's test mode)
    )
    crop_seconds: Annotated[float, Range(gt=0)] = 3.0
    max_seconds: Annotated[float, Range(gt=0)] | None = None
    mean_subtract: bool = True  # subtract the cohort mean (from prepare) before L2 normalisation
    vad: bool | Literal["energy", "silero"] = False  # cut each utterance to its speech first (true: energy)
    device: str = "auto"  # auto | cpu | cuda | cuda:N (ddp: each rank on cuda:LOCAL_RANK, or the cpu)
    launcher: Literal["single", "ddp"] = "single"  # ddp: nproc processes split the files (torchrun: always its own)
    nproc: Annotated[int, Range(1, 1024)] = 2  # DDP processes spawned locally by launcher ddp


class Extractor:
    """Embeddings of audio files with a frontend and a model in eval mode: batched by length, cached, DDP-aware.

    ``root``: the folder the paths are relative to. ``max_seconds``: cut whole utterances to their first
    ``max_seconds`` (None: whole). ``crops``: 0 for whole utterances, N > 0 for voxceleb_trainer's test mode
    (N evenly spaced crops of ``crop_seconds``, short files repeated, embedded as one batch and averaged).
    ``batch_seconds``: the most audio in one batch. ``cache_dir``/``model_id``: the on-disk cache (``model_id``
    required with ``cache_dir``). ``dist``: with ``world_size > 1`` every rank must call with the same paths; the
    ranks read the files' headers a share each, then split the batches one process would make (whole batches,
    the most audio first to the least loaded rank) and gather the embeddings: with ``gather="all"`` every rank
    returns the full dict, with ``"main"`` rank 0 does and the others return ``{}`` (nothing travels to them).
    So each embedding is computed exactly as by one process (bit for bit with the same number of threads). The
    cache is read and written by rank 0 only, so it need not be shared between nodes.
    ``progress``: show a bar (on rank 0, on a terminal), or a factory of bars such as ``RunContext.progress``;
    ``False`` also logs the summary at debug level only. ``vad``: cut each utterance to its speech right after
    reading it, before it is cut to ``max_seconds`` or cropped (:mod:`vvframe.data.vad`; ``True`` is the energy
    detector); a file without speech is a ``NoSpeech`` error naming it.
    """

    def __init__(
        self,
        frontend: nn.Module,
        model: nn.Module,
        root: str | Path,
        sample_rate: int,
        *,
        device: torch.device | str = "cpu",
        max_seconds: float | None = EmbedSettings.max_seconds,
        crops: int = EmbedSettings.crops,
        crop_seconds: float = EmbedSettings.crop_seconds,
        batch_seconds: float = 120.0,
        cache_dir: str | Path | None = None,
        model_id: str = "",
        dist: Dist | None = None,
        gather: Literal["all", "main"] = "all",
        progress: bool | Callable[..., Any] = True,
        vad: bool | str | None = EmbedSettings.vad,
    ):
        if gather not in ("all", "main"):
            raise ValueError(f"gather={gather!r}: must be 'all' (every rank) or 'main' (rank 0)")
        if crops < 0:
            raise ValueError(f"crops={crops}: must be 0 (whole utterances) or a positive number of crops")
        if crops and crop_seconds <= 0:
            raise ValueError(f"crop_seconds={crop_seconds}: must be > 0")
        if max_seconds is not None and max_seconds <= 0:
            raise ValueError(f"max_seconds={max_seconds}: must be > 0 or None")
        if batch_seconds <= 0:
            raise ValueError(f"batch_seconds={batch_seconds}: must be > 0")
        if cache_dir is not None and (not model_id or "/" in model_id or "\\" in model_id or model_id in (".", "..")):
            raise ValueError(
                f"model_id={model_id!r}: a cache needs a model_id naming the weights and settings (a plain folder name)"
            )
        self.device = torch.device(device)
        self.frontend = frontend.to(self.device)
        self.model = model.to(self.device)
        self.root = Path(root)
        self.sample_rate = int(sample_rate)
        self.max_frames = None if max_seconds is None else max(1, int(max_seconds * sample_rate))
        self.crops = int(crops)
        self.crop_frames = max(1, int(crop_seconds * sample_rate))
        self.batch_frames = batch_seconds * sample_rate
        self.cache = None if cache_dir is None else Path(cache_dir) / model_id
        self.dist = dist or Dist()
        self.gather = gather
        self.progress = progress
        self.memory: dict[str, Tensor] = {}
        chosen = activity.choice(vad)
        self.vad = None if chosen is None else activity.default(chosen)
        self.speech: dict[str, list[tuple[int, int]]] = {}  # the spans _length found, until _waves uses them

    def __call__(self, paths: Sequence[str]) -> dict[str, Tensor]:
        """``{path: (D,) float32 CPU embedding}`` for every path (relative to root), from cache where possible."""
        wanted = list(dict.fromkeys(str(p) for p in paths))
        dist = self.dist
        start = time.monotonic()
        found: dict[str, Tensor] = {}
        pending: list[str] = []
        if dist.is_main:
            for path in wanted:
                hit = self._cached(path)
                if hit is None:
                    pending.append(path)
                else:
                    found[path] = hit
        everywhere = self.gather == "all"
        pending = dist.broadcast_object(pending)
        # each rank reads the headers of its share (checking the files), then all know every length
        lengths = ranks.gather_values(dist, {path: self._length(path) for path in ranks.share(pending, dist)})
        order = sorted(pending, key=lambda p: (lengths[p], p))
        # the batches one process would make, dealt out whole: each embedding is computed as one process would
        batches = list(self._batches(order, lengths))
        owners = ranks.deal([len(b) * lengths[b[0]] * max(1, self.crops) for b in batches], dist.world_size)
        computed = self._embed([b for b, owner in zip(batches, owners) if owner == dist.rank], lengths)
        if everywhere and dist.is_main:
            computed.update(found)  # the cached ones travel to the other ranks too
        found.update(ranks.gather_rows(dist, computed, everywhere=everywhere))
        if self.cache is not None and dist.is_main:
            for path in pending:
                self._store(path, found[path])
        self.memory.update(found)
        if not (everywhere or dist.is_main):
            return {}
        if pending and dist.is_main:
            elapsed = max(time.monotonic() - start, 1e-9)
            log.log(
                logging.INFO if self.progress else logging.DEBUG,  # quiet where a caller embeds as a side task
                "embedded %d files (%d cached) in %.1f s: %.1f files/s",
                len(pending),
                len(wanted) - len(pending),
                elapsed,
                len(pending) / elapsed,
            )
        return {path: found[path] for path in wanted}

    # ---- cache -------------------------------------------------------------------------------------------
    def _cache_file(self, path: str) -> Path:
        assert self.cache is not None
        return self.cache / f"{hashlib.sha1(path.encode('utf-8')).hexdigest()}.pt"

    def _cached(self, path: str) -> Tensor | None:
        if path in self.memory:
            return self.memory[path]
        if self.cache is None:
            return None
        file = self._cache_file(path)
        if not file.is_file():
            return None
        try:
            emb = torch.load(file, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - a damaged cache entry is recomputed, not fatal
            log.warning("cached embedding %s of %s is unreadable (%s): computing it again", file, path, exc)
            return None
        self.memory[path] = emb
        return emb

    def _store(self, path: str, emb: Tensor) -> None:
        with atomic_path(self._cache_file(path)) as tmp:
            torch.save(emb, tmp)

    # ---- extraction --------------------------------------------------------------------------------------
    def _length(self, path: str) -> int:
        """Samples this utterance yields at the recipe's rate (crops mode: the crop length)."""
        meta = audio.utterance_info(self.root / path)  # fail before any work, naming the file (or too short)
        if self.vad is not None:  # the speech's length; a file without speech fails here, before any work
            file = self.root / path
            self.speech[path] = self.vad.speech(audio.read(file, self.sample_rate), self.sample_rate, file)
        if self.crops:
            return self.crop_frames
        if self.vad is not None:
            total = sum(end - start for start, end in self.speech[path])
        else:
            total = math.floor(meta.frames * self.sample_rate / meta.sample_rate)
        return total if self.max_frames is None else min(total, self.max_frames)

    def _batches(self, order: list[str], lengths: dict[str, int]) -> Iterator[list[str]]:
        """Runs of equal length cut to at most ``batch_seconds`` of audio (crops: counting every crop)."""
        run: list[str] = []
        for path in order:
            per_file = lengths[path] * max(1, self.crops)
            limit = max(1, int(self.batch_frames // per_file))
            if run and (lengths[run[0]] != lengths[path] or len(run) >= limit):
                yield run
                run = []
            run.append(path)
        if run:
            yield run

    def _waves(self, path: str, length: int) -> Tensor:
        """``(1, T)`` for a whole utterance, ``(crops, crop_frames)`` in crops mode."""
        file = self.root / path
        if self.vad is not None:  # the spans _length found (found again where another rank measured the file)
            wave = audio.read(file, self.sample_rate)
            spans = self.speech.pop(path, None) or self.vad.speech(wave, self.sample_rate, file)
            return self.rows(activity.cut(wave, spans))
        if not self.crops:
            return audio.read(file, self.sample_rate, 0, length).unsqueeze(0)
        return self.rows(audio.read(file, self.sample_rate))

    def rows(self, wave: Tensor) -> Tensor:
        """One utterance's ``(T,)`` samples as the rows the network embeds: ``(1, T)`` for a whole utterance (cut to
        ``max_seconds``), ``(crops, crop_frames)`` evenly spaced crops in crops mode (a short one repeated)."""
        if not self.crops:
            return (wave if self.max_frames is None else wave[: self.max_frames]).unsqueeze(0)
        if len(wave) < self.crop_frames:  # voxceleb_trainer pads short files by wrapping them
            wave = wave.repeat(math.ceil(self.crop_frames / len(wave)))[: self.crop_frames]
        starts = torch.linspace(0, len(wave) - self.crop_frames, self.crops).long().tolist()
        return torch.stack([wave[s : s + self.crop_frames] for s in starts])

    def embed_waves(self, waves: Sequence[Tensor]) -> Tensor:
        """``(N, D)`` embeddings of in-memory utterances (``(T,)`` float tensors at ``sample_rate``), batched and
        cut exactly as files are, so a file and its samples get the same embedding."""
        if self.vad is not None:
            waves = [self.vad.trim(w, self.sample_rate, f"utterance {i}") for i, w in enumerate(waves)]
        shaped = [self.rows(w.float()) for w in waves]
        keys = [str(i) for i in range(len(shaped))]
        lengths = {k: r.shape[-1] for k, r in zip(keys, shaped)}
        order = sorted(keys, key=lambda k: (lengths[k], int(k)))
        out = self._embed(list(self._batches(order, lengths)), lengths, lambda key, _: shaped[int(key)])
        return torch.stack([out[k] for k in keys])

    def _embed(self, batches: list[list[str]], lengths: dict[str, int], load=None) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        total = sum(len(batch) for batch in batches)
        if not total:
            return out
        load = load or self._waves
        modes = (self.frontend.training, self.model.training)
        self.frontend.eval()
        self.model.eval()
        if callable(self.progress):  # a run context's progress bars (rank 0, on a terminal)
            bar = self.progress(total=total, desc="embed", unit="file", leave=False)
        else:
            from tqdm import tqdm

            shown = self.progress and self.dist.is_main and sys.stderr.isatty()
            bar = tqdm(total=total, desc="embed", unit="file", leave=False, disable=not shown)
        try:
            with torch.inference_mode(), torch.autocast(self.device.type, enabled=False):
                for batch in batches:
                    waves = torch.cat([load(p, lengths[p]) for p in batch]).to(self.device)
                    emb = self.model(self.frontend(waves)).float().cpu()
                    per = max(1, self.crops)
                    emb = emb.reshape(len(batch), per, -1).mean(dim=1)
                    out.update(zip(batch, emb))
                    bar.update(len(batch))
        finally:
            bar.close()
            self.frontend.train(modes[0])
            self.model.train(modes[1])
        return {path: row.clone() for path, row in out.items()}  # cloned outside inference mode: plain tensors


def l2_normalize(x: Tensor) -> Tensor:
    """``x`` scaled to unit length along its last dimension (zero vectors stay zero)."""
    return torch.nn.functional.normalize(x, p=2.0, dim=-1, eps=1e-12)


def subtract_mean(x: Tensor, mean: Tensor) -> Tensor:
    """``x`` minus ``mean`` (e.g. the cohort's mean embedding), broadcast over leading dimensions."""
    return x - mean


def finish(raw: dict[str, Tensor], mean: Tensor | None) -> dict[str, Tensor]:
    """Raw embeddings made ready for cosine scoring: ``mean`` subtracted (when given), then L2-normalised."""
    return {key: l2_normalize(e if mean is None else subtract_mean(e, mean)) for key, e in raw.items()}


# scoring trial pairs lives in scores.py (sparse dot products at the trials, one matrix for both sides)
from vvframe.scoring.scores import score_pairs  # noqa: E402, F401  (re-exported: the public name stays here)


class Embedder(nn.Module):
    """Waveforms to scoring-ready embeddings in one module: frontend, network, mean subtraction, L2 norm.

    ``forward(waves)``: ``(B, T)`` float32 samples at the training rate -> ``(B, D)`` unit-length embeddings.
    ``centered(waves)``: the same before normalisation (network output minus the mean). The mean is a buffer
    (zeros when the run has none), so a state dict, TorchScript or ONNX export carries it.
    """

    def __init__(self, frontend: nn.Module, model: nn.Module, mean: Tensor | None = None):
        super().__init__()
        self.frontend = frontend
        self.model = model
        dim = int(model.embed_dim)
        self.register_buffer("mean", torch.zeros(dim) if mean is None else mean.detach().float().reshape(dim).clone())

    def centered(self, waves: Tensor) -> Tensor:
        return self.model(self.frontend(waves)).float() - self.mean

    def forward(self, waves: Tensor) -> Tensor:
        return l2_normalize(self.centered(waves))


# ---- what the back end leaves in a run directory (DESIGN section 6), read again by the stages and the API ----
def cohort_files(run_dir: str | Path) -> tuple[Path, Path]:
    """Where :func:`save_cohort` puts the cohort embeddings and the mean embedding of a run: ``cohort/*.pt``."""
    folder = Path(run_dir) / RUN_LAYOUT["cohort"]
    return folder / "embeddings.pt", folder / "mean.pt"


def save_cohort(run_dir: str | Path, speakers: list[str], embeddings: Tensor, mean: Tensor) -> None:
    """The cohort's unit-length embeddings (with their speakers) and the mean embedding, as ``cohort/*.pt``."""
    embeddings_file, mean_file = cohort_files(run_dir)
    checkpoint.save(embeddings_file, {"speakers": speakers, "embeddings": embeddings})
    checkpoint.save(mean_file, {"mean": mean})


def read_cohort(
    embeddings_file: str | Path | None, mean_file: str | Path | None
) -> tuple[Tensor | None, Tensor | None]:
    """``(cohort embeddings, mean)`` from files written by :func:`save_cohort`; None for a file not given.
    A file that is not one of them is a ``CheckpointError`` naming it."""
    found: list[Tensor | None] = []
    for path, key in ((embeddings_file, "embeddings"), (mean_file, "mean")):
        state = None if path is None else checkpoint.load(path)
        if state is not None and not isinstance(state.get(key), Tensor):
            raise checkpoint.CheckpointError(f"{path}: not a cohort file of the prepare stage (no '{key}' tensor)")
        found.append(None if state is None else state[key])
    return found[0], found[1]


def load_cohort(run_dir: str | Path) -> tuple[Tensor | None, Tensor | None]:
    """``(cohort embeddings, mean)`` saved by :func:`save_cohort` in ``run_dir``; None for what it does not have."""
    return read_cohort(*(path if path.is_file() else None for path in cohort_files(run_dir)))


def thresholds_file(run_dir: str | Path) -> Path:
    """Where the tuned thresholds are (``eval/thresholds.json``: name -> value, and ``tuned_on``)."""
    return Path(run_dir) / RUN_LAYOUT["eval"] / "thresholds.json"
