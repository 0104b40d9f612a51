"""vvframe.testing: each kind's contract check passes a good component and fails a broken one, naming what broke.

The components below are reached through hand-made entry points (``test_testing:Name``), as a plugin's would be.
"""

from __future__ import annotations

import random
import subprocess
import sys
from dataclasses import dataclass
from typing import Annotated, Any

import pytest
import torch
from conftest import ROOT, make_entry_points
from torch import nn

from vvframe import BadValue, Component, RunContext, kind
from vvframe.core import registry
from vvframe.testing import (
    BEHAVIOUR,
    ComponentCheckFailed,
    check_all_components,
    check_component,
    check_entry_points,
    describe_checks,
)

# --- frontends ---------------------------------------------------------------------------------------------


class Frames(nn.Module):
    """A frontend: the waveform cut into 10 ms frames, each projected to ``n_bins`` features."""

    def __init__(self, sample_rate: int, n_bins: int = 8):
        super().__init__()
        self.hop = sample_rate // 100
        self.out_dim = n_bins
        self.project = nn.Linear(self.hop, n_bins)

    def features(self, wave: torch.Tensor) -> torch.Tensor:
        frames = wave.unfold(-1, self.hop, self.hop)  # (B, frames, hop)
        return self.project(frames).transpose(1, 2)  # (B, n_bins, frames)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return self.features(wave)


class FramesTransposed(Frames):
    """Broken: features come out as (B, frames, n_bins)."""

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return self.features(wave).transpose(1, 2)


class FramesBatchNormalized(Frames):
    """Broken: each feature is normalized over the whole batch, so an utterance depends on the others."""

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        feats = self.features(wave)
        return feats - feats.mean(dim=0, keepdim=True)


class FramesFixedLength(Frames):
    """Broken: every waveform gives 20 frames, however long it is."""

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return nn.functional.interpolate(self.features(wave), size=20)


class FramesWithoutOutDim(Frames):
    """Broken: no out_dim for the model's in_dim."""

    def __init__(self, sample_rate: int, n_bins: int = 8):
        super().__init__(sample_rate, n_bins)
        del self.out_dim


class FramesNaN(Frames):
    """Broken: log of negative numbers."""

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return torch.log(-self.features(wave).abs() - 1)


# --- models ------------------------------------------------------------------------------------------------


class MeanModel(nn.Module):
    """A model: the features' mean over frames, projected to ``embed_dim``."""

    def __init__(self, in_dim: int, embed_dim: int = 16):
        super().__init__()
        self.embed_dim = embed_dim
        self.project = nn.Linear(in_dim, embed_dim)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.project(features.mean(dim=-1))


class MeanModelWrongShape(MeanModel):
    """Broken: one more embedding dimension than ``embed_dim`` says."""

    def __init__(self, in_dim: int, embed_dim: int = 16):
        super().__init__(in_dim, embed_dim + 1)
        self.embed_dim = embed_dim


class FixedLengthModel(nn.Module):
    """Broken: a linear layer over all frames, so only 50 frames fit."""

    def __init__(self, in_dim: int, embed_dim: int = 16):
        super().__init__()
        self.embed_dim = embed_dim
        self.project = nn.Linear(in_dim * 50, embed_dim)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.project(features.flatten(1))


class BatchMixingModel(MeanModel):
    """Broken: the batch's mean embedding is subtracted, so an utterance depends on the others."""

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        out = super().forward(features)
        return out - out.mean(dim=0, keepdim=True)


class IgnoresEmbedDim(MeanModel):
    """Broken: embed_dim is always 8, whatever the argument says."""

    def __init__(self, in_dim: int, embed_dim: int = 16):
        super().__init__(in_dim, 8)


class NoInDim(nn.Module):
    """Broken: takes no in_dim, so it cannot know the features' size."""

    def __init__(self, embed_dim: int = 16):
        super().__init__()
        self.embed_dim = embed_dim

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features.mean(dim=-1)[:, : self.embed_dim]


class Undocumented(MeanModel):
    pass


Undocumented.__doc__ = None


# --- losses ------------------------------------------------------------------------------------------------


class CentroidLoss(nn.Module):
    """A loss: cross-entropy of the embeddings against learned class centres, with its accuracy."""

    min_per_speaker = 1

    def __init__(self, embed_dim: int, num_classes: int):
        super().__init__()
        self.centres = nn.Linear(embed_dim, num_classes)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        logits = self.centres(embeddings.mean(dim=1))
        accuracy = (logits.argmax(dim=1) == labels).float().mean()
        return nn.functional.cross_entropy(logits, labels), accuracy


class NaNLoss(CentroidLoss):
    """Broken: the loss is NaN."""

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        loss, accuracy = super().forward(embeddings, labels)
        return loss * float("nan"), accuracy


class DetachedLoss(CentroidLoss):
    """Broken: the loss is cut off from the graph."""

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        loss, accuracy = super().forward(embeddings.detach(), labels)
        return loss.detach().requires_grad_(), accuracy


class BareLoss(CentroidLoss):
    """Broken: returns the loss alone, not (loss, accuracy)."""

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return super().forward(embeddings, labels)[0]


class PercentLoss(CentroidLoss):
    """Broken: the accuracy is a percentage."""

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        loss, _ = super().forward(embeddings, labels)
        return loss, torch.tensor(100.0)


class WordyLoss(CentroidLoss):
    """Broken: the accuracy is a word."""

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, str]:
        return super().forward(embeddings, labels)[0], "high"


class ChangingLoss(CentroidLoss):
    """Broken: the class says one utterance per speaker, the instance two."""

    def __init__(self, embed_dim: int, num_classes: int):
        super().__init__(embed_dim, num_classes)
        self.min_per_speaker = 2


# --- augmentors --------------------------------------------------------------------------------------------


class Louder:
    """An augmentor: each chosen utterance (``prob``) scaled by a random gain from the generator."""

    on = "waveform"
    label_multiplier = 1

    def __init__(self, prob: float = 0.5):
        self.prob = prob

    def gains(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        chosen = torch.rand(x.shape[0], generator=generator) < self.prob
        gain = 0.5 + torch.rand(x.shape[0], generator=generator)
        return torch.where(chosen, gain, torch.ones_like(gain)).unsqueeze(1)

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return x * self.gains(x, generator)


class GlobalRandomLouder(Louder):
    """Broken: draws its gains from torch's global generator."""

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return x * (0.5 + torch.rand(x.shape[0], 1))


class Cropping(Louder):
    """Broken: drops the last 100 samples."""

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return super().__call__(x, generator)[:, :-100]


class AlwaysLouder(Louder):
    """Broken: augments every utterance whatever ``prob`` says."""

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return x * 2


class HoldsALambda(Louder):
    """Broken: holds a lambda, which cannot be sent to a loader worker."""

    def __init__(self, prob: float = 0.5):
        super().__init__(prob)
        self.shape = lambda g: g


class Nowhere(Louder):
    """Broken: says it runs on spectrograms, which is no place vvframe knows."""

    on = "spectrogram"


def exploding(in_dim: int, embed_dim: int = 16) -> nn.Module:
    """Broken: refuses to be built."""
    raise ValueError(f"embed_dim {embed_dim} is too small")


def without_prob(level: float = 1.0) -> Louder:
    """Broken: takes no prob."""
    return Louder(1.0)


# --- samplers ----------------------------------------------------------------------------------------------


class Shuffled:
    """A sampler: every utterance once per epoch, shuffled by (seed, epoch), whole rounds split across ranks."""

    per_speaker = 1

    def __init__(self, labels: list[int], batch_size: int, rank: int = 0, world_size: int = 1, seed: int = 0):
        self.labels, self.batch_size, self.rank, self.world_size, self.seed = labels, batch_size, rank, world_size, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def global_batches(self) -> list[list[int]]:
        order = list(range(len(self.labels)))
        random.Random(self.seed * 1000 + self.epoch).shuffle(order)
        return [order[i : i + self.batch_size] for i in range(0, len(order) - self.batch_size + 1, self.batch_size)]

    def mine(self) -> list[list[int]]:
        batches = self.global_batches()
        whole = len(batches) // self.world_size * self.world_size
        return batches[self.rank : whole : self.world_size]

    def __iter__(self):
        return iter(self.mine())

    def __len__(self) -> int:
        return len(self.mine())


class EveryRankEverything(Shuffled):
    """Broken: every rank gets all the batches."""

    def mine(self) -> list[list[int]]:
        return self.global_batches()


class RankZeroGetsMore(Shuffled):
    """Broken: rank 0 gets one batch more than the others."""

    def mine(self) -> list[list[int]]:
        batches = self.global_batches()
        return batches[: len(batches) // 2 + 1] if self.rank == 0 else batches[len(batches) // 2 + 1 :][:-1]


class DropsRepeatedSpeakers(Shuffled):
    """Broken (voxceleb_trainer's sampler): an utterance whose speaker is in the batch already is dropped."""

    def global_batches(self) -> list[list[int]]:
        order = list(range(len(self.labels)))
        random.Random(self.seed * 1000 + self.epoch).shuffle(order)
        batches, batch = [], []
        for i in order:
            if self.labels[i] in {self.labels[j] for j in batch}:
                continue  # dropped for the whole epoch
            batch.append(i)
            if len(batch) == self.batch_size:
                batches.append(batch)
                batch = []
        return batches


class IgnoresEpoch(Shuffled):
    """Broken: set_epoch does nothing, so every epoch has the same order."""

    def set_epoch(self, epoch: int) -> None:
        pass


class MiscountedSampler(Shuffled):
    """Broken: len() counts the batches of all ranks."""

    def __len__(self) -> int:
        return len(self.global_batches())


# --- normalizers -------------------------------------------------------------------------------------------


class Unchanged:
    """A normalizer: the raw scores (it needs no cohort)."""

    def __init__(self) -> None:
        pass

    def __call__(self, scores: torch.Tensor, enroll: Any, test: Any, cohort: torch.Tensor | None) -> torch.Tensor:
        return scores


class EnrollCentred:
    """A normalizer: each score minus its enrollment embedding's mean cohort score."""

    def __init__(self) -> None:
        pass

    def __call__(self, scores: torch.Tensor, enroll: Any, test: Any, cohort: torch.Tensor | None) -> torch.Tensor:
        if cohort is None:
            raise BadValue("enroll_centred needs a cohort")
        emb, index = enroll
        return scores - (emb @ cohort.T).mean(dim=1)[index]


class Shifted(Unchanged):
    """Broken: needs no cohort, yet adds one to every score."""

    def __call__(self, scores: torch.Tensor, enroll: Any, test: Any, cohort: torch.Tensor | None) -> torch.Tensor:
        return scores + 1


class ShiftedWithCohort(Unchanged):
    """Broken: needs no cohort, but shifts the scores when it has one."""

    def __call__(self, scores: torch.Tensor, enroll: Any, test: Any, cohort: torch.Tensor | None) -> torch.Tensor:
        return scores if cohort is None else scores - 0.5


class TrialMean(EnrollCentred):
    """Broken: normalizes by the mean of all the trials' scores, so a trial depends on the others."""

    def __call__(self, scores: torch.Tensor, enroll: Any, test: Any, cohort: torch.Tensor | None) -> torch.Tensor:
        return super().__call__(scores, enroll, test, cohort) - scores.mean()


class FirstInCohort(EnrollCentred):
    """Broken: uses only the cohort's first embedding."""

    def __call__(self, scores: torch.Tensor, enroll: Any, test: Any, cohort: torch.Tensor | None) -> torch.Tensor:
        return super().__call__(scores, enroll, test, None if cohort is None else cohort[:1])


class CrashesWithoutCohort(EnrollCentred):
    """Broken: without a cohort it fails with an AttributeError instead of saying what it needs."""

    def __call__(self, scores: torch.Tensor, enroll: Any, test: Any, cohort: torch.Tensor | None) -> torch.Tensor:
        emb, index = enroll
        return scores - (emb @ cohort.T).mean(dim=1)[index]


class Column(Unchanged):
    """Broken: the scores come back as a (T, 1) column."""

    def __call__(self, scores: torch.Tensor, enroll: Any, test: Any, cohort: torch.Tensor | None) -> torch.Tensor:
        return scores[:, None]


# --- optimizers and schedulers -----------------------------------------------------------------------------


class Frozen(torch.optim.SGD):
    """Broken: an SGD whose step does nothing."""

    def step(self, closure: Any = None) -> None:
        return None


def not_an_optimizer(params: Any, lr: float = 0.1) -> dict:
    """Broken: returns settings, not a torch.optim.Optimizer."""
    return {"params": list(params), "lr": lr}


def decay(optimizer: Any, steps_per_epoch: int, epochs: int, gamma: float = 0.95) -> Any:
    """A scheduler: the lr times ``gamma`` every iteration."""
    return torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma)


def negative(optimizer: Any, steps_per_epoch: int, epochs: int) -> Any:
    """Broken: the lr changes sign every iteration."""
    return torch.optim.lr_scheduler.ExponentialLR(optimizer, -0.5)


class Forgetful(torch.optim.lr_scheduler.ExponentialLR):
    """Broken: ``load_state_dict`` restores nothing."""

    def __init__(self, optimizer: Any, steps_per_epoch: int, epochs: int):
        super().__init__(optimizer, 0.9)

    def load_state_dict(self, state_dict: dict) -> None:
        pass


# --- stages ------------------------------------------------------------------------------------------------


@dataclass
class CountSettings:
    """Settings of the counting stage."""

    frames: int = 200


def count(ctx: RunContext, count: CountSettings, model: Annotated[Component, kind("models")]):
    """A stage that builds the model."""
    return lambda: None


def context_last(count: CountSettings, ctx: RunContext):
    """Broken: the run context is not the first parameter."""
    return lambda: None


def loose_settings(ctx: RunContext, count: dict):
    """Broken: a settings section without a schema."""
    return lambda: None


def undeclared_kind(ctx: RunContext, model: Component):
    """Broken: a component section that does not say its kind."""
    return lambda: None


class Checked:
    """A stage with a check of its sections."""

    def __init__(self, ctx: RunContext, model: Annotated[Component, kind("models")]):
        self.ctx = ctx

    @staticmethod
    def check(model: Component) -> list[tuple[str, str]]:
        """Nothing to say about the model."""
        return []

    def __call__(self) -> None:
        pass


class CheckedOutside(Checked):
    """Broken: its check asks for a section the stage does not read."""

    @staticmethod
    def check(model: Component, loss: Component) -> list[tuple[str, str]]:
        """Asks for loss, which the stage never reads."""
        return []


# --- the registry of all of them ---------------------------------------------------------------------------

GOOD = {
    "frontends": {"frames": "test_testing:Frames"},
    "models": {"mean": "test_testing:MeanModel"},
    "losses": {"centroid": "test_testing:CentroidLoss"},
    "augmentors": {"louder": "test_testing:Louder"},
    "samplers": {"shuffled": "test_testing:Shuffled"},
    "normalizers": {"unchanged": "test_testing:Unchanged", "enroll_centred": "test_testing:EnrollCentred"},
    "optimizers": {"sgd": "torch.optim:SGD"},
    "schedulers": {"decay": "test_testing:decay"},
    "stages": {"count": "test_testing:count", "checked": "test_testing:Checked"},
}

# (kind, name, target, what the message must say)
BROKEN = [
    ("frontends", "transposed", "FramesTransposed", "waveforms (2, 8000) gave features (2, 50, 8), not (2, 8, frames)"),
    ("frontends", "batch_normalized", "FramesBatchNormalized", "features depend on the rest of its batch"),
    ("frontends", "fixed_length", "FramesFixedLength", "(2, 12000) gave features (2, 8, 20), not more frames"),
    ("frontends", "without_out_dim", "FramesWithoutOutDim", "out_dim is None, not a positive integer"),
    ("frontends", "nan", "FramesNaN", "features of (2, 8000) audio are not all finite"),
    ("models", "wrong_shape", "MeanModelWrongShape", "features (2, 80, 50) gave (2, 17), not (2, 16)"),
    ("models", "fixed_length", "FixedLengthModel", "embedding features (2, 80, 23) in eval mode raised RuntimeError"),
    ("models", "batch_mixing", "BatchMixingModel", "embedding depends on the rest of its batch"),
    ("models", "ignores_embed_dim", "IgnoresEmbedDim", "embed_dim is 8, not the argument's value 16"),
    ("models", "no_in_dim", "NoInDim", "it takes no in_dim"),
    ("models", "undocumented", "Undocumented", "no docstring"),
    ("losses", "nan", "NaNLoss", "the loss is nan, not finite"),
    ("losses", "detached", "DetachedLoss", "not differentiable: no gradient reaches the embeddings"),
    ("losses", "bare", "BareLoss", "returned Tensor, not the pair (loss, accuracy or None)"),
    ("losses", "percent", "PercentLoss", "accuracy 100.0 is not a fraction in [0, 1]"),
    ("losses", "changing", "ChangingLoss", "min_per_speaker is 1 on the class but 2 when built"),
    ("losses", "wordy", "WordyLoss", "the check stopped on ValueError: could not convert string to float"),
    ("augmentors", "global_random", "GlobalRandomLouder", "every random number must come from the generator"),
    ("augmentors", "cropping", "Cropping", "a batch (2, 8000) torch.float32 came back as (2, 7900)"),
    ("augmentors", "always", "AlwaysLouder", "with prob 0 it still changed the batch"),
    ("augmentors", "holds_lambda", "HoldsALambda", "pickling it (augmentors are sent to loader workers) raised"),
    ("augmentors", "nowhere", "Nowhere", "on is 'spectrogram'"),
    ("augmentors", "without_prob", "without_prob", "it takes no prob"),
    ("samplers", "everything", "EveryRankEverything", "the ranks' shares overlap"),
    ("samplers", "unequal", "RankZeroGetsMore", "the ranks got 13 and 11 batches, not the same number"),
    ("samplers", "dropping", "DropsRepeatedSpeakers", "not be dropped"),
    ("samplers", "same_every_epoch", "IgnoresEpoch", "set_epoch(1) gave the same batches as epoch 0"),
    ("samplers", "miscounted", "MiscountedSampler", "rank 0 got 12 batches, but len() says 25"),
    ("normalizers", "shifted", "Shifted", "without a cohort it changed the scores"),
    ("normalizers", "shifted_with_cohort", "ShiftedWithCohort", "it needs no cohort, so it is the identity"),
    ("normalizers", "trial_mean", "TrialMean", "a subset of the trials, reordered, got other scores"),
    ("normalizers", "first_in_cohort", "FirstInCohort", "the scores depend on the order of the cohort"),
    ("normalizers", "crashes", "CrashesWithoutCohort", "without a cohort it raised AttributeError"),
    ("normalizers", "column", "Column", "40 scores came back as (40, 1), not (40,)"),
    ("optimizers", "frozen", "Frozen", "twenty steps took the loss from"),
    ("optimizers", "settings", "not_an_optimizer", "built a dict, not a torch.optim.Optimizer"),
    ("schedulers", "negative", "negative", "not finite numbers >= 0"),
    ("schedulers", "forgetful", "Forgetful", "restored from state_dict() its lr is"),
    ("stages", "context_last", "context_last", "the first must be ctx"),
    ("stages", "loose_settings", "loose_settings", "parameter 'count' names a settings section"),
    ("stages", "undeclared_kind", "undeclared_kind", "parameter 'model' is a component: declare its kind"),
    ("stages", "checked_outside", "CheckedOutside", "its check takes loss, which the stage does not read"),
]


def spec_with(kind_name: str, name: str, target: str) -> dict[str, dict[str, str]]:
    """GOOD plus one broken component."""
    spec = {k: dict(v) for k, v in GOOD.items()}
    spec[kind_name][name] = target if ":" in target else f"test_testing:{target}"
    return spec


def test_every_kind_has_a_behavioural_check_and_each_says_what_it_asserts():
    assert set(BEHAVIOUR) == set(registry.KINDS)
    assert all(text.strip() for text in describe_checks().values())
    assert {kind_name for kind_name, *_ in BROKEN} == set(registry.KINDS)  # each check is shown to fail below


@pytest.mark.parametrize("kind_name, name", [(k, n) for k, names in GOOD.items() for n in names])
def test_a_good_component_passes(fake_registry, kind_name, name):
    fake_registry(GOOD)
    check_component(kind_name, name)


@pytest.mark.parametrize("kind_name, name, target, says", BROKEN, ids=[f"{k}:{n}" for k, n, *_ in BROKEN])
def test_a_broken_component_fails_naming_what_broke(fake_registry, kind_name, name, target, says):
    fake_registry(spec_with(kind_name, name, target))
    with pytest.raises(ComponentCheckFailed) as info:
        check_component(kind_name, name)
    message = str(info.value)
    assert isinstance(info.value, AssertionError)
    assert message.startswith(f"{kind_name} '{name}' (test_testing:{target}, from -)"), message
    assert says in message, message


def test_arguments_build_the_component_and_are_checked_against_it(fake_registry):
    fake_registry(GOOD)
    check_component("models", "mean", {"embed_dim": 12})
    with pytest.raises(ComponentCheckFailed) as info:
        check_component("models", "mean", {"embed_dm": 12})
    assert "models 'mean'" in str(info.value) and "unknown argument 'embed_dm'" in str(info.value)
    assert "(did you mean 'embed_dim'?)" in str(info.value)


def test_a_reference_is_checked_like_an_entry_point(fake_registry):
    fake_registry(GOOD)
    check_component("models", "test_testing:MeanModel")
    with pytest.raises(ComponentCheckFailed) as info:
        check_component("models", "test_testing:MeanModelWrongShape")
    assert "gave (2, 17), not (2, 16)" in str(info.value)


def test_an_error_inside_the_component_is_reported_with_its_step(fake_registry):
    fake_registry({"models": {"exploding": "test_testing:exploding"}})
    with pytest.raises(ComponentCheckFailed) as info:
        check_component("models", "exploding", {"embed_dim": 4})
    assert str(info.value) == (
        "models 'exploding' (test_testing:exploding, from -): building it (embed_dim=4, in_dim=80,"
        " sample_rate=16000) raised ValueError: embed_dim 4 is too small"
    )
    assert isinstance(info.value.__cause__, ValueError)


@pytest.mark.parametrize(
    "spec, says",
    [
        ({"models": {"missing": "broken_plugin:Net"}}, "models 'missing' (broken_plugin:Net, from -) failed to import"),
        ({"augmentors": {"bag": "fake_components:with_kwargs"}}, "takes **extra"),
        ({"augmentors": {"bag": "fake_components:needs_embed_dim"}}, "required parameter 'embed_dim' is supplied"),
        ({"augmentors": {"bag": "ranged_components:bad_default"}}, "the default prob=2.0 is outside its own"),
        ({"models": {"Bag": "test_testing:MeanModel"}}, "the name must be lowercase snake_case"),
    ],
)
def test_the_entry_point_checks_come_first(fake_registry, spec, says):
    fake_registry(spec)
    ((kind_name, names),) = spec.items()
    (name,) = names
    with pytest.raises(ComponentCheckFailed) as info:
        check_component(kind_name, name)
    assert f"{kind_name} '{name}'" in str(info.value) and "breaks the entry-point contract" in str(info.value)
    assert says in str(info.value), str(info.value)


def test_a_component_that_is_not_installed(fake_registry):
    fake_registry(GOOD)
    with pytest.raises(ComponentCheckFailed) as info:
        check_component("models", "maen")
    assert str(info.value) == (
        "models 'maen' cannot be checked: no models component named 'maen' is installed (did you mean 'mean'?)"
        " (`vvframe plugins models` lists all 1)"
    )


def test_check_all_components_reports_each_broken_one(fake_registry):
    spec = spec_with("samplers", "dropping", "DropsRepeatedSpeakers")
    spec["models"]["wrong_shape"] = "test_testing:MeanModelWrongShape"
    fake_registry(spec)
    failures = check_all_components()
    assert len(failures) == 2, failures
    assert failures[0].startswith("models 'wrong_shape'") and failures[1].startswith("samplers 'dropping'")
    assert check_all_components(distribution="no-such-distribution") == []


# --- the whole registry: what `vvframe plugins --check` prints -----------------------------------------------


def test_check_entry_points_flags_each_broken_contract(fake_registry):
    fake_registry(
        {
            "models": {
                "tiny": "fake_components:Model",
                "Bad-Name": "fake_components:Model",
                "broken": "broken_plugin:Net",
            },
            "augmentors": {"bag": "fake_components:with_kwargs", "wrong_supply": "fake_components:needs_embed_dim"},
            "model": {"typo_group": "fake_components:Model"},
            "stages": {"loose": "test_testing:loose_settings", "good": "test_testing:count"},
        }
    )
    problems = check_entry_points()
    text = "\n".join(problems)
    assert len(problems) == 6, text
    assert "vvframe.models 'Bad-Name'" in text and "lowercase snake_case" in text
    assert "models 'broken' (broken_plugin:Net, from -) failed to import" in text
    assert "takes **extra" in text
    assert "required parameter 'embed_dim' is supplied by vvframe only to other kinds" in text
    assert "vvframe.model 'typo_group'" in text and "did you mean 'models'" in text
    assert problems[-1].startswith("vvframe.stages 'loose' (test_testing:loose_settings): parameter 'count' names")


def test_check_entry_points_passes_on_good_components(fake_registry):
    assert check_entry_points() == []
    fake_registry(GOOD)
    assert check_entry_points() == []


def test_check_entry_points_flags_a_default_outside_its_own_range(fake_registry):
    fake_registry({"augmentors": {"hiss": "ranged_components:hiss", "bad": "ranged_components:bad_default"}})
    assert check_entry_points() == [
        "vvframe.augmentors 'bad' (ranged_components:bad_default, from -): the default prob=2.0 is outside its own"
        " annotation (float in [0, 1]): expected a number in [0, 1], got 2.0"
    ]


def test_check_entry_points_flags_a_name_declared_twice(monkeypatch):
    twice = make_entry_points({"models": {"mean": "test_testing:MeanModel"}})
    twice += make_entry_points({"models": {"mean": "fake_components:Model"}})
    monkeypatch.setattr(registry, "_entry_points", lambda: twice)
    registry.refresh()
    try:
        assert check_entry_points() == [
            "vvframe.models 'mean' is declared twice: fake_components:Model (from -) and test_testing:MeanModel"
            " (from -)"
        ]
    finally:
        monkeypatch.undo()
        registry.refresh()


def test_no_installed_components_at_all(fake_registry):
    fake_registry({})
    assert check_entry_points() == [
        "no vvframe components are installed; vvframe itself is probably not installed (pip install -e .)"
    ]


def test_importing_vvframe_testing_imports_no_torch():
    code = "import sys, vvframe.testing; assert 'torch' not in sys.modules, 'torch imported'"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
