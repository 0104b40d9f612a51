"""One of several augmentors per utterance (WeSpeaker's reverb-or-noise), chosen by weight."""

from __future__ import annotations

import logging
from typing import Annotated, Any

import torch

from vvframe import BadValue
from vvframe.core import registry
from vvframe.core.schema import Range
from vvframe.data.dataset import call_augmentor

from .common import Probability, check_prob, chosen_rows

log = logging.getLogger(__name__)


class Choice:
    """One of several augmentors per utterance, by ``weights``; each option's own ``prob`` applies after the choice."""

    label_multiplier = 1

    def __init__(
        self,
        sample_rate: int,
        options: list[dict],
        weights: Annotated[list[float], Range(0)] | None = None,
        prob: Probability = 1.0,
    ):
        self.prob = check_prob(prob, "choice")
        if not options:
            raise BadValue(
                "choice: options is empty; expected a list of augmentor entries,"
                " e.g. [{name: reverb, root: ...}, {name: noise, root: ...}]"
            )
        self.options = [registry.build("augmentors", entry, sample_rate=sample_rate) for entry in options]
        self.names = [_name(entry) for entry in options]
        kinds = {getattr(opt, "on", None) for opt in self.options}
        if len(kinds) != 1 or None in kinds:
            where = ", ".join(f"{n} ({getattr(o, 'on', 'no on attribute')})" for n, o in zip(self.names, self.options))
            raise BadValue(
                f"choice: every option must run on the same input (all 'waveform' or all 'features'); got {where}"
            )
        self.on = kinds.pop()
        places = {getattr(opt, "runs_on", "workers") for opt in self.options}
        if len(places) != 1:
            where = ", ".join(f"{n} ({getattr(o, 'runs_on', 'workers')})" for n, o in zip(self.names, self.options))
            raise BadValue(
                f"choice: every option must run in the same place (all on: workers or all on: device); got {where}"
            )
        self.runs_on = places.pop()
        if self.runs_on == "device":
            lacking = [n for n, o in zip(self.names, self.options) if not (hasattr(o, "plan") and hasattr(o, "apply"))]
            if lacking:
                raise BadValue(f"choice: {', '.join(lacking)} cannot run on the device (no plan and apply methods)")
        changing = [n for n, o in zip(self.names, self.options) if getattr(o, "label_multiplier", 1) != 1]
        if changing:
            raise BadValue(
                f"choice: {', '.join(changing)} change speaker labels (label_multiplier > 1), which a"
                " choice cannot pass on; list it in augment on its own"
            )
        if weights is None:
            weights = [1.0] * len(self.options)
        weights = [float(w) for w in weights]
        if len(weights) != len(self.options) or any(w < 0 for w in weights) or sum(weights) <= 0:
            raise BadValue(
                f"choice: weights={weights}; expected {len(self.options)} non-negative numbers, one per"
                " option, not all zero"
            )
        self.weights = weights

    def draw(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        """``(batch,)`` option indices on the CPU, -1 for an utterance left alone (``prob``)."""
        chosen = chosen_rows(batch, self.prob, generator)
        pick = torch.multinomial(
            torch.tensor(self.weights, dtype=torch.float64, device=generator.device),
            batch,
            replacement=True,
            generator=generator,
        ).cpu()
        return torch.where(chosen, pick, torch.full_like(pick, -1))

    def plan(self, x: torch.Tensor, generator: torch.Generator, labels: torch.Tensor | None = None) -> dict[str, Any]:
        """``{"pick": (B,), "options": [plan or {} per option]}``: each utterance's option, and each option's
        plan for the utterances it got (drawn in the options' order, as a call draws them)."""
        pick = self.draw(x.shape[0], generator)
        plans: list[Any] = []
        for index, option in enumerate(self.options):
            rows = (pick == index).nonzero().flatten()
            part = labels[rows] if labels is not None else None
            plans.append(call_augmentor(option.plan, x[rows.to(x.device)], generator, part) if len(rows) else {})
        return {"pick": pick, "options": plans}

    def apply(self, x: torch.Tensor, plan: dict[str, Any]) -> torch.Tensor:
        """``x`` with each utterance augmented by its planned option, on ``x``'s device."""
        pick = plan["pick"].to(x.device)
        out = x
        for index, (option, part) in enumerate(zip(self.options, plan["options"])):
            rows = (pick == index).nonzero().flatten()
            if not len(rows):
                continue
            if out is x:
                out = x.clone()
            out[rows] = option.apply(x[rows], part)
        return out

    def __call__(self, x: torch.Tensor, generator: torch.Generator, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Each chosen utterance of the batch augmented by its one drawn option (an option that takes ``labels``
        gets those of its utterances: ``babble`` in a choice mixes talkers from among them)."""
        pick = self.draw(x.shape[0], generator)
        out = x
        for index, option in enumerate(self.options):
            rows = (pick == index).nonzero().flatten()
            if not len(rows):
                continue
            if out is x:
                out = x.clone()
            part = labels[rows] if labels is not None else None
            out[rows.to(x.device)] = call_augmentor(option, x[rows.to(x.device)], generator, part)
        return out

    def __repr__(self) -> str:
        return f"Choice({', '.join(map(repr, self.options))}, weights={self.weights}, prob={self.prob})"


def _name(entry: Any) -> str:
    return entry if isinstance(entry, str) else str(entry.get("name", "?")) if isinstance(entry, dict) else repr(entry)
