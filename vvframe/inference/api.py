"""Using a trained model from Python: ``vvframe.load(RUN_DIR or MODEL_FILE)`` -> :class:`SpeakerModel`.

    import vvframe
    model = vvframe.load("runs/quickstart/2026-11-25_12-31-59")
    model.verify("a.wav", "b.wav")                   # Verification(score=0.71, accepted=True, threshold='eer', ...)
    model.embed(samples, sample_rate=8000)           # (D,) unit-length embedding; resampled and mixed to mono
    model.enroll("alice", ["a1.wav", "a2.wav"]); model.identify("x.wav")

A run directory is read through its model card (``card.json``, :mod:`vvframe.inference.card`) and nothing else of
its recipe: the frontend and network entries, the sample rate, how utterances are cut, the weights (the card's
``weights``, else ``checkpoints/avg.pt``, ``best.pt``, ``last.pt``), the cohort and mean vector, the score
normalizer, the tuned thresholds and the score calibration. Nothing in the recipe's data paths needs to exist,
and a run written by any stage that writes a card loads. An exported file (``vvframe export``: TorchScript or
ONNX) carries the same things in its metadata and loads the same way (:mod:`vvframe.inference.exported`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from vvframe.core import registry
from vvframe.inference import card as cards
from vvframe.inference import exported
from vvframe.inference.card import ModelError, references, refuse_references
from vvframe.inference.model import CenteredEmbedder, Identification, SpeakerModel, Verification
from vvframe.scoring.embed import Embedder, read_cohort
from vvframe.training import checkpoint as ckpt
from vvframe.training.launch import pick_device

log = logging.getLogger(__name__)

__all__ = [
    "Identification",
    "ModelError",
    "SpeakerModel",
    "Verification",
    "load",
    "references",
    "refuse_references",
]


def load(
    source: str | Path,
    device: str | torch.device = "auto",
    checkpoint: str | Path | None = None,
    *,
    trust_recipe: bool = False,
) -> SpeakerModel:
    """A run directory (its card, weights, cohort and thresholds) or an exported model file, ready to use.
    A recipe's folder of runs (``runs/quickstart``) means its newest usable run (one with weights).

    ``checkpoint``: other weights for a run directory (a checkpoint file). ``device``: ``auto`` (CUDA when
    there is one), ``cpu``, ``cuda``, ``cuda:N``.

    What is loaded is data: only installed components (entry points) are built from it, and a ``module:attr``
    reference in its card or metadata is refused unless ``trust_recipe=True`` (only for runs you would run).
    """
    path = Path(source)
    dev = pick_device(device)
    if path.is_dir():
        run_dir = ckpt.latest_run(path) or ckpt.latest_run(path, cards.CARD_FILE) or path
        return _from_run(run_dir, dev, checkpoint, trust_recipe)
    if not path.exists():
        raise ModelError(f"{path}: no such run directory or model file")
    return exported.load_exported(path, dev, trust_recipe=trust_recipe)


def _build(card: cards.Card, kind: str, field: str, entry: dict[str, Any], trust_recipe: bool, **supplied: Any):
    """The component ``entry`` of the card's ``field``, an installed entry point unless ``trust_recipe``."""
    comp, problems = registry.resolve(kind, entry, field, references=trust_recipe)
    if problems or comp is None:
        listed = "; ".join(f"{p}: {m}" for p, m in problems) or f"{field}: cannot be resolved"
        raise ModelError(f"{card.path}: {listed}")
    return comp.build(**supplied)


def _from_run(run_dir: Path, device: torch.device, checkpoint: str | Path | None, trust_recipe: bool) -> SpeakerModel:
    card = cards.read(run_dir, trust_recipe=trust_recipe)
    rate = card.sample_rate
    try:
        weights = ckpt.for_inference(checkpoint or card.weights or run_dir)
    except ckpt.CheckpointError as exc:
        raise ModelError(f"{run_dir}: {exc}") from None
    state = ckpt.load(weights)
    if "model" not in state:
        raise ModelError(f"{weights}: not a vvframe training checkpoint (it has no 'model' weights)")
    front = _build(card, "frontends", "frontend", card.frontend, trust_recipe, sample_rate=rate)
    net = _build(card, "models", "model", card.model, trust_recipe, in_dim=front.out_dim, sample_rate=rate)
    ckpt.load_state(net, state["model"], f"{weights} (model)")

    card.check_cohort()
    try:
        cohort, mean = read_cohort(card.cohort, card.mean)
    except ckpt.CheckpointError as exc:
        raise ModelError(f"{card.path}: its cohort: {exc}") from None
    if not card.mean_subtract:
        mean = None
    normalizer = None
    if card.normalizer is not None and cohort is not None:
        normalizer = _build(card, "normalizers", "normalizer", card.normalizer, trust_recipe)
    meta = {
        "sample_rate": rate,
        "embed_dim": int(net.embed_dim),
        "thresholds": dict(card.thresholds),
        "tuned_on": card.tuned_on,
        "calibration": card.calibration,
        "crops": card.crops,
        "crop_seconds": card.crop_seconds,
        "max_seconds": card.max_seconds,
        "vad": card.vad,
        "mean_subtracted": mean is not None,
        "normalizer": card.normalizer if normalizer is not None else None,
        "weights": str(weights),
        "frontend": card.frontend,
        "model": card.model,
    }
    embedder = Embedder(front, net, mean).to(device).eval()
    log.info(
        "loaded %s: weights %s, %s%s",
        run_dir,
        weights,
        f"cohort of {len(cohort)}, " if cohort is not None else "",
        f"thresholds {', '.join(card.thresholds)}" if card.thresholds else "no tuned thresholds",
    )
    return SpeakerModel(
        CenteredEmbedder(embedder), meta, cohort=cohort, normalizer=normalizer, device=device, source=str(run_dir)
    )
