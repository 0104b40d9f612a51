"""Contract checks for components, for the tests of vvframe and of every plugin package.

A plugin package's test suite checks each component it declares with one call::

    from vvframe.testing import check_component

    def test_tiny_tdnn_keeps_the_contract():
        check_component("models", "tiny_tdnn")

``check_component(kind, name)`` finds the installed entry point, runs the entry-point checks that
``vvframe plugins --check`` runs (it imports, it is callable, its signature is explicit, its defaults are inside
their own ranges, it asks only for values vvframe supplies to its kind; a stage's parameters are ``ctx`` and
declared sections), then builds the component with the values vvframe would supply and checks what its kind
promises (DESIGN section 3). A broken component raises ``ComponentCheckFailed`` (an ``AssertionError``, so
pytest shows it as a failed test) whose message names the component and what failed.

Importing this module imports no torch; the checks import it when they run.
"""

from __future__ import annotations

import inspect
import keyword
import logging
import math
import pickle
import random
import re
import typing
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from vvframe.core import registry
from vvframe.core.errors import ContractError, PluginImportError, VvframeError, did_you_mean
from vvframe.core.recipe import stage_contract
from vvframe.core.schema import CoercionError, Param, Range, coerce, parameters, type_name

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000  # the sample rate the checks supply to frontends, models and augmentors


class ComponentCheckFailed(AssertionError):
    """A component that breaks its kind's contract; the message names the component and what failed."""


# --- entry points (what `vvframe plugins --check` runs) -----------------------------------------------------


def check_entry_points() -> list[str]:
    """Import and validate every ``vvframe.*`` entry point of every installed distribution: each one's group is
    a kind, its name lowercase snake_case, it imports and is callable with an explicit signature, its defaults
    lie inside their own ranges, it requires no value vvframe supplies only to other kinds, a stage's parameters
    are ``ctx`` and declared sections, and no name is declared twice; the problems found (empty when all is
    well)."""
    eps = registry.entry_points()
    if not eps:
        return ["no vvframe components are installed; vvframe itself is probably not installed (pip install -e .)"]
    problems, stages = [], []
    targets: dict[tuple[str, str], set[str]] = {}
    for ep in eps:
        kind_name = ep.group[len(registry.GROUP_PREFIX) :]
        if kind_name in registry.KINDS:
            targets.setdefault((kind_name, ep.name), set()).add(f"{ep.value} (from {registry.where(ep)})")
        found, params = _entry_point_problems(ep)
        problems += found
        if kind_name == "stages" and params is not None:
            stages.append((ep, params))
    for (kind_name, name), values in targets.items():
        if len(values) > 1:
            problems.append(f"vvframe.{kind_name} '{name}' is declared twice: {' and '.join(sorted(values))}")
    problems += [m for ep, params in stages for m in _stage_problems(ep, params)]
    return problems


def limits(annotation: Any) -> list[Range]:
    """Every ``Range`` an annotation carries, inside unions and containers too."""
    if typing.get_origin(annotation) is typing.Annotated:
        return [a for a in annotation.__metadata__ if isinstance(a, Range)] + limits(typing.get_args(annotation)[0])
    return [r for arg in typing.get_args(annotation) if arg is not Ellipsis for r in limits(arg)]


def defaults_outside_limits(params: list[Param]) -> list[str]:
    """A default that its own annotation's ``Range`` refuses (a recipe leaving it out would get it unchecked)."""
    found = []
    for p in params:
        if p.required or p.default is None or not limits(p.annotation):
            continue
        try:
            coerce(p.default, p.annotation, p.default)
        except CoercionError as exc:
            found.append(
                f"the default {p.name}={p.default!r} is outside its own annotation ({type_name(p.annotation)}): {exc}"
            )
    return found


def _entry_point_problems(ep: metadata.EntryPoint) -> tuple[list[str], list[Param] | None]:
    """What is wrong with one entry point (a stage's sections aside: ``_stage_problems``), and its parameters
    when it could be loaded."""
    kind_name = ep.group[len(registry.GROUP_PREFIX) :]
    label = f"{ep.group} '{ep.name}' ({ep.value}, from {registry.where(ep)})"
    if kind_name not in registry.KINDS:
        groups = ", ".join(k.group for k in registry.KINDS.values())
        return [f"{label}: unknown group{did_you_mean(kind_name, registry.KINDS)}; the groups are {groups}"], None
    problems = []
    if not re.fullmatch(r"[a-z][a-z0-9_]*", ep.name) or keyword.iskeyword(ep.name):
        problems.append(f"{label}: the name must be lowercase snake_case")
    try:
        params = registry.signature(kind_name, registry.load(ep))
    except (PluginImportError, ContractError) as exc:
        return [*problems, str(exc)], None
    problems += [f"{label}: {m}" for m in defaults_outside_limits(params)]
    if kind_name != "stages":  # a stage's parameters name recipe sections: _stage_problems checks them
        own = registry.KINDS[kind_name].supplies
        elsewhere = {n for k in registry.KINDS.values() for n in k.supplies} - set(own)
        problems += [
            f"{label}: required parameter '{p.name}' is supplied by vvframe only to other kinds,"
            f" so nothing would pass it here (this kind gets: {', '.join(own) or 'none'})"
            for p in params
            if p.required and p.name in elsewhere
        ]
    return problems, params


def _stage_problems(ep: metadata.EntryPoint, params: list[Param]) -> list[str]:
    """A stage's parameters against the recipe's rules (``ctx``, declared component sections, settings schemas)."""
    return [f"vvframe.stages '{ep.name}' ({ep.value}): {m}" for m in stage_contract(params)]


# --- one component -----------------------------------------------------------------------------------------


def check_component(kind: str, name: str, arguments: Mapping[str, Any] | None = None) -> None:
    """Check the installed component ``name`` of ``kind``: its entry point (as ``vvframe plugins --check`` does),
    then its behaviour, built from ``name`` plus ``arguments`` (a recipe entry's arguments: give those the
    component requires, such as a folder of noise files) and the values vvframe supplies to the kind.

    Raises ``ComponentCheckFailed`` naming the component and what failed; returns ``None`` when all is well.
    """
    try:
        ep = registry.find(kind, name)
    except VvframeError as exc:
        raise ComponentCheckFailed(f"{kind} '{name}' cannot be checked: {exc}") from exc
    label = f"{kind} '{name}' ({ep.value}, from {registry.where(ep)})"
    problems, params = _entry_point_problems(ep)
    if registry.is_reference(name):  # a module:attr reference has no entry-point name to spell right
        problems = [p for p in problems if not p.endswith("the name must be lowercase snake_case")]
    if params is not None and kind == "stages":
        problems += _stage_problems(ep, params)
    if problems:
        raise ComponentCheckFailed(f"{label} breaks the entry-point contract:\n  - " + "\n  - ".join(problems))
    behaviour = BEHAVIOUR.get(kind)
    if behaviour is None:
        raise ComponentCheckFailed(f"{label}: vvframe.testing has no behavioural check for kind {kind}")
    try:
        behaviour(_Subject(kind, name, registry.load(ep), params, dict(arguments or {})))
    except _Failure as exc:
        raise ComponentCheckFailed(f"{label}: {exc}") from exc.__cause__
    except Exception as exc:  # noqa: BLE001 - something the component gave back that the check could not use
        raise ComponentCheckFailed(f"{label}: the check stopped on {type(exc).__name__}: {exc}") from exc
    log.debug("%s keeps the contract of its kind", label)


def check_all_components(
    distribution: str | None = None, arguments: Mapping[tuple[str, str], Mapping[str, Any]] | None = None
) -> list[str]:
    """``check_component`` for every installed component (or those ``distribution`` declares), each with its
    ``arguments[(kind, name)]``; one message per component that fails (empty when all is well)."""
    arguments = arguments or {}
    failures, seen = [], set()
    for ep in registry.entry_points():
        kind_name = ep.group[len(registry.GROUP_PREFIX) :]
        key = (kind_name, ep.name)
        if key in seen or kind_name not in registry.KINDS:
            continue
        if distribution is not None and _normal(registry.distribution(ep)[0]) != _normal(distribution):
            continue
        seen.add(key)
        try:
            check_component(kind_name, ep.name, arguments.get(key))
        except ComponentCheckFailed as exc:
            failures.append(str(exc))
    return failures


def _normal(distribution: str) -> str:
    return re.sub(r"[-_.]+", "-", distribution).lower()


class _Failure(Exception):
    """What a behavioural check found wrong (``check_component`` adds the component's name)."""


def _expect(condition: Any, message: str) -> None:
    if not condition:
        raise _Failure(message)


@contextmanager
def _step(what: str) -> Iterator[None]:
    """Report an exception raised by the component while doing ``what`` as a failure of the check."""
    try:
        yield
    except _Failure:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever the component raises is what the check reports
        raise _Failure(f"{what} raised {type(exc).__name__}: {exc}") from exc


@dataclass
class _Subject:
    """The component under check: its kind, name, factory, parameters and the caller's arguments."""

    kind: str
    name: str
    factory: Callable
    params: list[Param]
    arguments: dict[str, Any] = field(default_factory=dict)

    def build(self, overrides: Mapping[str, Any] | None = None, **supplied: Any) -> Any:
        """The component built from the caller's arguments (``overrides`` on top) and ``supplied`` values."""
        args = {**self.arguments, **(overrides or {})}
        shown = ", ".join(f"{k}={v!r}" for k, v in {**args, **supplied}.items() if not _bulky(v))
        with _step(f"building it ({shown or 'no arguments'})"):
            return registry.build(self.kind, {"name": self.name, **args}, **supplied)

    def param(self, name: str) -> Param | None:
        """The factory's parameter ``name``, or ``None``."""
        return next((p for p in self.params if p.name == name), None)


def _bulky(value: Any) -> bool:
    """Whether a supplied value is too big to show in a message (parameters, an optimizer, a list of labels)."""
    return not isinstance(value, (int, float, str, bool, type(None)))


def _shape(x: Any) -> str:
    return str(tuple(x.shape)) if hasattr(x, "shape") else type(x).__name__


@contextmanager
def _global_rng(seed: int) -> Iterator[None]:
    """Run with Python's, NumPy's and torch's global generators seeded by ``seed``, restored afterwards: a
    component drawing from them instead of its own generator gives different results under another seed."""
    import numpy as np
    import torch

    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])


# --- what each kind promises ---------------------------------------------------------------------------------


def _frontends(s: _Subject) -> None:
    """Built with the sample rate, it maps waveforms ``(2, T)`` to finite ``(2, out_dim, frames)`` features, more
    frames for longer audio, the same for an utterance alone as in its batch (eval mode); training mode runs."""
    import torch

    frontend = s.build(sample_rate=SAMPLE_RATE)
    _expect(isinstance(frontend, torch.nn.Module), f"built a {type(frontend).__name__}, not a torch.nn.Module")
    out_dim = getattr(frontend, "out_dim", None)
    _expect(
        isinstance(out_dim, int) and not isinstance(out_dim, bool) and out_dim > 0,
        f"out_dim is {out_dim!r}, not a positive integer (the number of feature bins a model gets as in_dim)",
    )
    gen = torch.Generator().manual_seed(0)
    wave = (torch.rand(2, 12000, generator=gen) * 2 - 1) * 0.5
    frontend.eval()
    with torch.no_grad():
        with _step("computing features of (2, 8000) audio in eval mode"):
            feats = frontend(wave[:, :8000])
        _expect(
            isinstance(feats, torch.Tensor) and feats.dim() == 3 and feats.shape[:2] == (2, out_dim),
            f"waveforms (2, 8000) gave features {_shape(feats)}, not (2, {out_dim}, frames)",
        )
        _expect(feats.shape[2] > 0, f"waveforms (2, 8000) gave features {_shape(feats)}, with no frames")
        _expect(torch.isfinite(feats).all(), "features of (2, 8000) audio are not all finite")
        with _step("computing features of one utterance alone"):
            alone = frontend(wave[1:, :8000])
        _expect(
            isinstance(alone, torch.Tensor) and alone.shape == feats[1:].shape,
            f"one utterance gave features {_shape(alone)}, not {_shape(feats[1:])}",
        )
        _expect(torch.allclose(feats[1:], alone, atol=1e-4), "an utterance's features depend on the rest of its batch")
        with _step("computing features of (2, 12000) audio"):
            longer = frontend(wave)
        _expect(
            isinstance(longer, torch.Tensor) and longer.dim() == 3 and longer.shape[2] > feats.shape[2],
            f"longer audio (2, 12000) gave features {_shape(longer)}, not more frames than {_shape(feats)}",
        )
    with _step("computing features in training mode"):
        frontend.train()(wave)


IN_DIM = 80  # the feature bins the checks supply to models
LENGTHS = (50, 23)  # frames of features the checks give models: any number of frames must work


def _models(s: _Subject) -> None:
    """Built with ``in_dim`` and the sample rate, it has an integer ``embed_dim`` (the recipe's value) and, in eval
    mode, maps features ``(2, in_dim, frames)`` of several lengths to finite float32 ``(2, embed_dim)``
    embeddings, the same for an utterance alone as in its batch; its docstring says what it is."""
    import torch

    _expect(
        (s.factory.__doc__ or "").strip(),  # its own: inspect.getdoc would find torch.nn.Module's
        f"no docstring; its first line is what `vvframe plugins models {s.name}` shows",
    )
    _expect(s.param("in_dim") is not None, "it takes no in_dim, the feature bins vvframe supplies to a model")
    model = s.build(in_dim=IN_DIM, sample_rate=SAMPLE_RATE)
    _expect(isinstance(model, torch.nn.Module), f"built a {type(model).__name__}, not a torch.nn.Module")
    embed_dim = getattr(model, "embed_dim", None)
    _expect(
        isinstance(embed_dim, int) and not isinstance(embed_dim, bool) and embed_dim > 0,
        f"embed_dim is {embed_dim!r}, not a positive integer",
    )
    declared = s.param("embed_dim")
    expected = s.arguments.get("embed_dim", declared.default if declared and not declared.required else embed_dim)
    _expect(embed_dim == expected, f"embed_dim is {embed_dim}, not the argument's value {expected}")
    gen = torch.Generator().manual_seed(0)
    model.eval()
    with torch.no_grad():
        for frames in LENGTHS:
            feats = torch.randn(2, IN_DIM, frames, generator=gen)
            with _step(f"embedding features {_shape(feats)} in eval mode"):
                out = model(feats)
            _expect(
                isinstance(out, torch.Tensor) and out.shape == (2, embed_dim),
                f"features {_shape(feats)} gave {_shape(out)}, not (2, {embed_dim})",
            )
            _expect(out.dtype == torch.float32, f"features {_shape(feats)} gave {out.dtype} embeddings, not float32")
            _expect(torch.isfinite(out).all(), f"embeddings of features {_shape(feats)} are not all finite")
            with _step(f"embedding one utterance of {frames} frames alone"):
                alone = model(feats[1:])
            _expect(
                isinstance(alone, torch.Tensor) and alone.shape == (1, embed_dim),
                f"features {_shape(feats[1:])} gave {_shape(alone)}, not (1, {embed_dim})",
            )
            tolerance = 1e-4 * (1.0 + out.abs().max().item())
            _expect(
                (alone[0] - out[1]).abs().max().item() <= tolerance,
                "an utterance's embedding depends on the rest of its batch (in eval mode)",
            )


def _losses(s: _Subject) -> None:
    """Built with ``embed_dim`` and ``num_classes``, it maps 5 speakers with ``min_per_speaker`` utterances each
    ``(5, P, 16)`` and labels ``arange(5)`` to ``(loss, accuracy)``: a finite scalar whose gradient reaches the
    embeddings, and ``None`` or a fraction in [0, 1]."""
    import torch

    loss_fn = s.build(embed_dim=16, num_classes=5)
    _expect(isinstance(loss_fn, torch.nn.Module), f"built a {type(loss_fn).__name__}, not a torch.nn.Module")
    per_speaker = getattr(loss_fn, "min_per_speaker", None)
    _expect(
        isinstance(per_speaker, int) and not isinstance(per_speaker, bool) and per_speaker >= 1,
        f"min_per_speaker is {per_speaker!r}, not an integer >= 1",
    )
    declared = getattr(s.factory, "min_per_speaker", per_speaker)
    _expect(declared == per_speaker, f"min_per_speaker is {declared} on the class but {per_speaker} when built")
    gen = torch.Generator().manual_seed(0)
    embeddings = torch.randn(5, per_speaker, 16, generator=gen, requires_grad=True)
    with _step(f"the loss of embeddings (5, {per_speaker}, 16)"):
        result = loss_fn(embeddings, torch.arange(5))
    _expect(
        isinstance(result, tuple) and len(result) == 2,
        f"returned {type(result).__name__}, not the pair (loss, accuracy or None)",
    )
    loss, accuracy = result
    _expect(isinstance(loss, torch.Tensor) and loss.dim() == 0, f"the loss is {_shape(loss)}, not a scalar tensor")
    _expect(torch.isfinite(loss), f"the loss is {loss.item()}, not finite")
    with _step("the backward pass"):
        loss.backward()
    grad = embeddings.grad
    _expect(grad is not None, "the loss is not differentiable: no gradient reaches the embeddings")
    _expect(torch.isfinite(grad).all(), "the gradient of the loss is not finite")
    _expect(grad.abs().sum() > 0, "the gradient of the loss is zero: it does not reach the embeddings")
    if accuracy is not None:
        value = float(accuracy)
        _expect(math.isfinite(value) and 0.0 <= value <= 1.0, f"accuracy {value} is not a fraction in [0, 1]")


def make_noise_folder(folder: str | Path) -> Path:
    """A tiny MUSAN-like folder of 16 kHz noise, music and speech files in ``folder``, for augmentors that read
    them; returns ``folder``."""
    import numpy as np
    import soundfile as sf

    from vvframe.tools.voxceleb import MUSAN_LAYOUT  # MUSAN's folders

    folder, rng = Path(folder), np.random.default_rng(0)
    for category in MUSAN_LAYOUT:
        for i in range(2):
            path = folder / category / "part" / f"{category}{i}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, (0.1 * rng.standard_normal(6000 + 3000 * i)).astype("float32"), SAMPLE_RATE)
    return folder


def make_rir_folder(folder: str | Path) -> Path:
    """A folder of two short decaying 16 kHz room impulse responses, for augmentors that read them; returns
    ``folder``."""
    import numpy as np
    import soundfile as sf

    folder, rng = Path(folder), np.random.default_rng(1)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(2):
        rir = np.zeros(1600, dtype="float32")
        rir[20 + i] = 1.0
        tail = 1579 - i
        rir[21 + i :] += (0.2 * rng.standard_normal(tail) * np.exp(-np.arange(tail) / 200)).astype("float32")
        sf.write(folder / f"rir{i}.wav", rir, SAMPLE_RATE)
    return folder


def _augmentors(s: _Subject) -> None:
    """Built with the sample rate and ``prob: 1``, it says where it runs (``on``) and how many labels it makes
    (``label_multiplier``); on a batch (with its speaker labels when its call takes ``labels``) it keeps the shape
    and dtype, stays finite, gives the same batch for the same generator seed whatever the global generators, and
    the same after a round trip through pickle; with ``prob: 0`` it leaves the batch as it was. One that runs on
    the device (``runs_on: 'device'``, or built with ``on: device`` when it takes ``on``) has ``plan`` and
    ``apply``, and ``apply(x, plan(x, generator))`` gives what its call, and the same augmentor in the loader
    workers, give for the same seed."""
    import torch

    from vvframe.data.dataset import PLACES, call_augmentor

    _expect(s.param("prob") is not None, "it takes no prob, the probability that an utterance is augmented")
    aug = s.build({"prob": 1.0}, sample_rate=SAMPLE_RATE)
    on = getattr(aug, "on", None)
    _expect(on in ("waveform", "features"), f"on is {on!r}; it says where it runs: 'waveform' or 'features'")
    multiplier = getattr(aug, "label_multiplier", None)
    _expect(
        isinstance(multiplier, int) and not isinstance(multiplier, bool) and multiplier >= 1,
        f"label_multiplier is {multiplier!r}, not an integer >= 1",
    )
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(2, 8000, generator=gen) * 0.1 if on == "waveform" else torch.randn(2, 40, 50, generator=gen)
    labels = torch.tensor([0, 1])  # two speakers: an augmentor mixing in other speakers has one to take

    def checked(result: Any, what: str) -> tuple[Any, Any]:
        k = None
        if multiplier > 1:
            _expect(
                isinstance(result, tuple) and len(result) == 2,
                f"label_multiplier is {multiplier}, but it returned {type(result).__name__}, not (batch, k)",
            )
            result, k = result
            _expect(
                isinstance(k, torch.Tensor) and k.shape == (2,) and k.dtype == torch.long,
                f"k is {_shape(k)} {getattr(k, 'dtype', '')}, not a (2,) long tensor",
            )
            _expect(0 <= int(k.min()) and int(k.max()) < multiplier, f"k {k.tolist()} is outside [0, {multiplier})")
        _expect(
            isinstance(result, torch.Tensor) and result.shape == x.shape and result.dtype == x.dtype,
            f"a batch {_shape(x)} {x.dtype} came back as {_shape(result)} {getattr(result, 'dtype', '')}",
        )
        _expect(torch.isfinite(result).all(), f"the augmented batch is not all finite ({what})")
        return result, k

    def run(augmentor: Any, seed: int, rng: int, what: str) -> tuple[Any, Any]:
        with _global_rng(rng), _step(f"augmenting a batch {_shape(x)} ({what})"):
            result = call_augmentor(augmentor, x.clone(), torch.Generator().manual_seed(seed), labels)
        return checked(result, what)

    def on_device(augmentor: Any, seed: int, what: str) -> tuple[Any, Any]:
        """``apply(x, plan(x, g))``: the device path, run here on the CPU."""
        for method in ("plan", "apply"):
            _expect(callable(getattr(augmentor, method, None)), f"it runs on the device but has no {method} method")
        with _global_rng(1), _step(f"planning a batch {_shape(x)} ({what})"):
            plan = call_augmentor(augmentor.plan, x.clone(), torch.Generator().manual_seed(seed), labels)
        with _global_rng(2), _step(f"applying the plan ({what})"):
            result = augmentor.apply(x.clone(), plan)
        k = None
        if multiplier > 1:
            _expect(isinstance(plan, dict) and "k" in plan, "it changes labels but its plan holds no 'k'")
            k = plan["k"]
        return checked((result, k) if multiplier > 1 else result, what)

    def same(a: tuple[Any, Any], b: tuple[Any, Any]) -> bool:
        tolerance = 1e-5 * (1.0 + float(a[0].abs().max()))
        close = bool((a[0] - b[0]).abs().max() <= tolerance)
        return close and (a[1] is None or torch.equal(a[1].cpu(), b[1].cpu()))

    first, k = run(aug, 0, 1, "seed 0")
    again, k_again = run(aug, 0, 2, "seed 0 again, other global generators")
    _expect(
        torch.equal(first, again) and (k is None or torch.equal(k, k_again)),
        "the same generator seed gave another batch: every random number must come from the generator it is given",
    )
    with _step("pickling it (augmentors are sent to loader workers)"):
        copy = pickle.loads(pickle.dumps(aug))
    unpickled, k_unpickled = run(copy, 0, 1, "after pickling")
    _expect(
        torch.equal(first, unpickled) and (k is None or torch.equal(k, k_unpickled)),
        "it behaves differently after a round trip through pickle",
    )
    idle = s.build({"prob": 0.0}, sample_rate=SAMPLE_RATE)
    kept, k_kept = run(idle, 0, 1, "prob 0")
    _expect(torch.equal(kept, x), "with prob 0 it still changed the batch")
    if k_kept is not None:
        _expect(not k_kept.any(), f"with prob 0 it still gave labels k={k_kept.tolist()}, not all 0")
    if on != "waveform":
        return
    place = getattr(aug, "runs_on", "workers")
    _expect(place in PLACES, f"runs_on is {place!r}; it says where it runs: 'workers' or 'device'")
    if place == "device":
        _expect(same(on_device(aug, 0, "seed 0"), (first, k)), "apply(x, plan(x, generator)) differs from its call")
    if s.param("on") is not None:
        device = s.build({"prob": 1.0, "on": "device"}, sample_rate=SAMPLE_RATE)
        _expect(
            getattr(device, "runs_on", None) == "device",
            f"built with on: device, its runs_on is {getattr(device, 'runs_on', None)!r}, not 'device'",
        )
        moved = on_device(pickle.loads(pickle.dumps(device)), 0, "on: device, seed 0")
        _expect(same(moved, (first, k)), "built with on: device it gives another batch than in the loader workers")


def _samplers(s: _Subject) -> None:
    """With the values vvframe supplies it gives two ranks disjoint shares of utterance indices, the same number
    of batches each, ``len()`` of them, an order that ``(seed, epoch)`` fixes and ``set_epoch`` changes, and an
    integer ``per_speaker``; on a corpus whose batches can all hold distinct speakers it uses every utterance
    (an utterance whose speaker is in the batch already waits for a later batch, it is not dropped)."""

    def share(labels: list[int], batch_size: int, rank: int, epoch: int) -> list[list[int]]:
        sampler = s.build(labels=labels, batch_size=batch_size, rank=rank, world_size=2, seed=1)
        with _step(f"set_epoch({epoch}) and the batches of rank {rank} of 2"):
            sampler.set_epoch(epoch)
            batches = [list(batch) for batch in sampler]
        with _step("len()"):
            count = len(sampler)
        _expect(len(batches) == count, f"rank {rank} got {len(batches)} batches, but len() says {count}")
        flat = [i for batch in batches for i in batch]
        _expect(
            all(isinstance(i, int) and not isinstance(i, bool) for i in flat),
            f"rank {rank}'s batches hold {sorted({type(i).__name__ for i in flat})}, not Python ints",
        )
        _expect(
            all(0 <= i < len(labels) for i in flat), f"rank {rank}'s batches hold indices outside the {len(labels)}"
        )
        return batches

    labels = [i % 10 for i in range(200)]  # 10 speakers x 20 utterances
    first, second = share(labels, 8, 0, 0), share(labels, 8, 1, 0)
    _expect(len(first) > 0, "rank 0 of 2 got no batches from 200 utterances in batches of 8")
    _expect(len(first) == len(second), f"the ranks got {len(first)} and {len(second)} batches, not the same number")
    flat = [i for batch in first + second for i in batch]
    _expect(len(flat) == len(set(flat)), "the ranks' shares overlap: an utterance appears twice in an epoch")
    _expect(share(labels, 8, 0, 0) == first, "the same (seed, epoch) gave another order")
    _expect(share(labels, 8, 0, 1) != first, "set_epoch(1) gave the same batches as epoch 0")
    per_speaker = getattr(s.build(labels=labels, batch_size=8), "per_speaker", None)
    _expect(
        isinstance(per_speaker, int) and not isinstance(per_speaker, bool) and per_speaker >= 1,
        f"per_speaker is {per_speaker!r}, not an integer >= 1",
    )
    # 4 speakers x 8 groups of per_speaker, shuffled: 8 batches of all 4 speakers take every utterance
    import numpy as np

    rng = np.random.default_rng(0)
    few = rng.permutation(np.repeat(np.arange(4), 8 * per_speaker)).tolist()
    batch_size = 4 * per_speaker
    used = [i for rank in (0, 1) for batch in share(few, batch_size, rank, 0) for i in batch]
    _expect(
        len(used) == len(few),
        f"of {len(few)} utterances of 4 speakers, which batches of {batch_size} can take whole (each speaker"
        f" {per_speaker} at a time), an epoch used {len(used)}: an utterance whose speaker is already in the batch"
        " must wait for a later batch, not be dropped",
    )


def _normalizers(s: _Subject) -> None:
    """Built with no engine values, it maps ``(T,)`` scores with their enroll and test sides and a cohort to finite
    ``(T,)`` scores, trial by trial (a subset of the trials, reordered, gives the same scores) whatever the
    cohort's order; without a cohort it refuses with a ``ValueError`` (``vvframe.BadValue``) or, needing none,
    is the identity, with a cohort as well."""
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(0)
    files = F.normalize(torch.randn(12, 16, generator=g), dim=1)
    cohort = F.normalize(torch.randn(9, 16, generator=g), dim=1)
    e_idx = torch.randint(0, 6, (40,), generator=g)
    t_idx = torch.randint(0, 6, (40,), generator=g)
    enroll, test = (files[:6], e_idx), (files[6:], t_idx)
    scores = (enroll[0][e_idx] * test[0][t_idx]).sum(1)

    norm = s.build()
    with _step("normalizing 40 scores"):
        out = norm(scores.clone(), enroll, test, cohort)
    _expect(
        isinstance(out, torch.Tensor) and out.shape == scores.shape,
        f"40 scores came back as {_shape(out)}, not (40,)",
    )
    _expect(torch.isfinite(out).all(), "the normalized scores are not all finite")
    some = torch.arange(39, 0, -3)
    with _step("normalizing a subset of the trials"):
        part = norm(scores[some], (enroll[0], e_idx[some]), (test[0], t_idx[some]), cohort)
    _expect(
        isinstance(part, torch.Tensor) and part.shape == some.shape and torch.allclose(part, out[some], atol=1e-5),
        "a subset of the trials, reordered, got other scores: a trial's score must depend on its own embeddings"
        " and the cohort only, all trials at once",
    )
    order = torch.randperm(len(cohort), generator=g)
    with _step("normalizing against the cohort reordered"):
        shuffled = norm(scores, enroll, test, cohort[order])
    _expect(torch.allclose(shuffled, out, atol=1e-5), "the scores depend on the order of the cohort")
    try:
        alone = norm(scores.clone(), enroll, test, None)
    except ValueError:
        return  # it needs a cohort and says so
    except Exception as exc:  # noqa: BLE001 - anything else is an unclear refusal
        raise _Failure(
            f"without a cohort it raised {type(exc).__name__}: {exc}; it should raise vvframe.BadValue saying"
            " it needs one, or need none and return the scores unchanged"
        ) from exc
    _expect(
        isinstance(alone, torch.Tensor) and torch.equal(alone, scores),
        "without a cohort it changed the scores: with nothing to normalize against it must return them unchanged"
        " (or raise vvframe.BadValue saying it needs a cohort)",
    )
    _expect(
        torch.equal(out, scores),
        "it needs no cohort, so it is the identity, but given one it changed the scores",
    )


def _optimizers(s: _Subject) -> None:
    """Built on the parameters of a small regression (``lr`` 0.05 unless given), it is a
    ``torch.optim.Optimizer`` and twenty steps lower the loss by a tenth at least."""
    import torch

    torch_state = torch.get_rng_state()
    torch.manual_seed(0)
    try:
        net = torch.nn.Linear(4, 1)
        x, y = torch.randn(32, 4), torch.randn(32, 1)
    finally:
        torch.set_rng_state(torch_state)
    opt = s.build({"lr": s.arguments.get("lr", 0.05)}, params=net.parameters())
    _expect(isinstance(opt, torch.optim.Optimizer), f"built a {type(opt).__name__}, not a torch.optim.Optimizer")
    losses = []
    with _step("twenty steps on a small regression"):
        for _ in range(20):
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(net(x), y)
            loss.backward()
            opt.step()
            losses.append(loss.item())
    _expect(
        losses[-1] < losses[0] * 0.9,
        f"twenty steps took the loss from {losses[0]:.4g} to {losses[-1]:.4g}, not 10% lower",
    )


def _schedulers(s: _Subject) -> None:
    """Built with the values vvframe supplies and stepped once per iteration for a whole run (3 epochs of 10), every
    lr is finite and >= 0, ``get_last_lr()`` is the optimizer's, and one restored half-way as a resumed run restores
    it (the optimizer's ``state_dict()``, then its own) continues with the same lrs."""
    import torch

    def make() -> Any:
        opt = torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=0.1)
        return s.build(optimizer=opt, steps_per_epoch=10, epochs=3)

    def advance(scheduler: Any, start: int, stop: int) -> list[float]:
        seen = []
        with _step(f"steps {start} to {stop}"):
            for t in range(start, stop):
                scheduler.optimizer.step()
                scheduler.step()
                if t % 10 == 9 and callable(getattr(scheduler, "report", None)):
                    scheduler.report(0.1)  # a validation that does not improve: a plateau scheduler may cut
                seen += [float(lr) for lr in scheduler.get_last_lr()]
                seen += [float(g["lr"]) for g in scheduler.optimizer.param_groups]
        return seen

    whole = make()
    _expect(hasattr(whole, "optimizer"), "it has no optimizer attribute (the optimizer it steps)")
    seen = advance(whole, 0, 30)
    bad = [lr for lr in seen if not (math.isfinite(lr) and lr >= 0)]
    _expect(not bad, f"stepping a whole run gave the learning rates {bad[:3]}, not finite numbers >= 0")
    lrs, groups = whole.get_last_lr(), [g["lr"] for g in whole.optimizer.param_groups]
    _expect(lrs == groups, f"get_last_lr() says {lrs}, but the optimizer's lr is {groups}")
    first = make()
    head = advance(first, 0, 15)
    second = make()
    with _step("load_state_dict(state_dict()) into a new one"):  # in the trainer's order: optimizer, scheduler
        second.optimizer.load_state_dict(first.optimizer.state_dict())
        second.load_state_dict(first.state_dict())
    _expect(
        second.get_last_lr() == first.get_last_lr(),
        f"restored from state_dict() its lr is {second.get_last_lr()}, not {first.get_last_lr()}",
    )
    _expect(head + advance(second, 15, 30) == seen, "restored from state_dict() half-way, it continues differently")


def _stages(s: _Subject) -> None:
    """Its first parameter is the run context ``ctx`` (the sections are checked with the entry point), and its
    ``check``, if it has one, takes only sections the stage reads, by name."""
    names = [p.name for p in s.params]
    _expect(names[:1] == ["ctx"], f"its parameters are ({', '.join(names)}); the first must be ctx, the run context")
    check = getattr(s.factory, "check", None)
    if check is None:
        return
    _expect(callable(check), f"its check is a {type(check).__name__}, not a callable")
    try:
        wanted = [p.name for p in parameters(check)]
    except ContractError as exc:
        raise _Failure(f"its check has no explicit signature: {exc}") from exc
    strangers = [n for n in wanted if n not in names[1:]]
    _expect(
        not strangers,
        f"its check takes {', '.join(strangers)}, which the stage does not read; check takes sections of the"
        f" stage ({', '.join(names[1:]) or 'none'}) by name",
    )


BEHAVIOUR: dict[str, Callable[[_Subject], None]] = {
    "frontends": _frontends,
    "models": _models,
    "losses": _losses,
    "augmentors": _augmentors,
    "samplers": _samplers,
    "normalizers": _normalizers,
    "optimizers": _optimizers,
    "schedulers": _schedulers,
    "stages": _stages,
}


def describe_checks() -> dict[str, str]:
    """What the behavioural check of each kind asserts, kind by kind (the checks' docstrings)."""
    return {k: inspect.getdoc(check) or "" for k, check in BEHAVIOUR.items()}


__all__ = [
    "ComponentCheckFailed",
    "check_component",
    "check_all_components",
    "check_entry_points",
    "defaults_outside_limits",
    "limits",
    "describe_checks",
    "make_noise_folder",
    "make_rir_folder",
    "BEHAVIOUR",
    "SAMPLE_RATE",
]
