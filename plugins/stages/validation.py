"""Validation during training: the EER and minDCF on ``data.val_trials`` of the network as it is now.

Utterances are embedded by ``vvframe.scoring.embed.Extractor`` (batched by length, cut to ``data.val_max_seconds``),
L2-normalised and scored by cosine similarity.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vvframe.data.lists import read_trials, trial_files
from vvframe.scoring.embed import Extractor, l2_normalize, score_pairs
from vvframe.scoring.metrics import eer, min_dcf
from vvframe_plugins.stages.assembly import Net
from vvframe_plugins.stages.settings import DataSettings

P_TARGET = 0.01  # the minDCF's prior of a target trial


@dataclass
class Validation:
    """One validation: its EER and minDCF(0.01), and the trials' scores and labels (1 target, 0 non-target)."""

    eer: float
    min_dcf: float
    scores: torch.Tensor
    labels: torch.Tensor


def validate(net: Net, data: DataSettings, device: torch.device) -> Validation:
    """Embed every file of ``data.val_trials`` with ``net``'s frontend and model, score the trials, and measure."""
    trials = read_trials(data.val_trials)
    extractor = Extractor(
        net.frontend,
        net.model,
        data.root,
        data.sample_rate,
        device=device,
        max_seconds=data.val_max_seconds,
        progress=False,
    )
    embeddings = {path: l2_normalize(e) for path, e in extractor(trial_files(trials)).items()}
    scores, _ = score_pairs([(t.enroll, t.test) for t in trials], embeddings)
    labels = torch.tensor([t.label for t in trials])
    return Validation(eer(scores, labels)[0], min_dcf(scores, labels, P_TARGET)[0], scores, labels)
