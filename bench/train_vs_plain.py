"""vvframe's train stage against a plain PyTorch loop written like voxceleb_trainer's, on the same model and batch.

One training step of voxceleb_trainer's ResNetSE34L (40 log mels, SAP pooling, 512-d, an AM-softmax head over
5,994 speakers, Adam lr 1e-3; batches of 10 two-second crops already in memory): through the train stage as a run
does it (a ``Trainer`` assembled from a recipe, its ``Steps`` taking the batch: precision, memory format, fused
optimizer and malloc tuning as the settings choose them), and through a plain loop (torchaudio mel spectrogram,
instance norm, the same model class, AM-softmax written out, ``backward``, ``Adam.step``; float32, torch's
defaults). Each side runs in a process of its own (process-wide settings such as malloc's stay with their side);
this process asks them for one step each in turn, after warm-up steps, and each keeps its fastest (other work on
the machine only ever adds time). The train stage's side is measured lever by lever: the plain loop's choices
(float32, contiguous, Adam not fused), then with the fused Adam, channels_last, bf16 autocast (where the CPU has
native bf16), and what the defaults (``precision: auto``, ``memory_format: auto``) choose: the figure of record;
then ``trainer.compile`` over float32 and over the defaults (compiled in the warm-up steps; not in quick mode).

Then a short real run: ``vvframe run recipes/quickstart.yaml trainer.epochs=2 stages=[train]`` on a generated
corpus of 320 utterances of 40 speakers (``vvframe data synth``): the last epoch's utterances per second as the
train stage logs them, and the user and system CPU time (``getrusage``) of the run after its imports (the run's
process and its loader workers) and of its whole process tree. The system share should stay under 10 %; it is
compared with the same run on glibc's malloc as it comes (glibc itself in ``LD_PRELOAD``, so that
``keep_freed_memory`` leaves malloc be). Quick mode: fewer rounds, one epoch of 160 utterances, no comparison run.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import yaml
from common import Row, standalone, versus
from torch import nn

from vvframe.training.launch import native_bf16_cpu

RATE, SECONDS, BATCH, SPEAKERS, N_MELS = 16000, 2.0, 10, 5994, 40
MODEL = {"name": "resnet_se34l", "embed_dim": 512, "pooling": "sap"}
LOSS = {"name": "amsoftmax", "margin": 0.2, "scale": 30.0}
REPO = Path(__file__).resolve().parent.parent
VVFRAME = Path(sys.executable).parent / "vvframe"
PLAIN = "plain"
# the train stage's variants: (label, recipe sections merged into the bench's); "auto", the default, is the one
# the plain loop is measured against; the others show what each lever buys
UNFUSED = (
    "fp32, contiguous, Adam not fused (the plain loop's choices)",
    {"trainer": {"precision": "fp32", "memory_format": "contiguous"}, "optimizer": {"fused": False}},
)
FP32 = ("fp32, contiguous", {"trainer": {"precision": "fp32", "memory_format": "contiguous"}})
CHANNELS_LAST = ("fp32, channels_last", {"trainer": {"precision": "fp32", "memory_format": "channels_last"}})
BF16 = ("bf16 autocast, contiguous", {"trainer": {"precision": "bf16", "memory_format": "contiguous"}})
AUTO = (
    "precision auto, memory_format auto (the defaults)",
    {"trainer": {"precision": "auto", "memory_format": "auto"}},
)
# trainer.compile (not in quick mode: compiling takes a minute or more on 2 cores, in the side's warm-up steps)
FP32_COMPILED = (
    "fp32, contiguous, compiled",
    {"trainer": {"precision": "fp32", "memory_format": "contiguous", "compile": True}},
)
AUTO_COMPILED = ("the defaults, compiled", {"trainer": {"precision": "auto", "memory_format": "auto", "compile": True}})


# ---- the plain loop, as voxceleb_trainer writes it -----------------------------------------------------------
class PlainFeatures(nn.Module):
    """voxceleb_trainer's features: pre-emphasis, a 40-bin mel spectrogram, log, instance norm, without gradients."""

    def __init__(self):
        super().__init__()
        import torchaudio

        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=RATE, n_fft=512, win_length=400, hop_length=160, window_fn=torch.hamming_window, n_mels=N_MELS
        )
        self.norm = nn.InstanceNorm1d(N_MELS)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            wave = torch.cat([wave[:, :1], wave[:, 1:] - 0.97 * wave[:, :-1]], dim=1)
            return self.norm((self.mel(wave) + 1e-6).log())


class PlainAMSoftmax(nn.Module):
    """AM-softmax as voxceleb_trainer writes it: cosines to normalised class weights, margin on the target, CE."""

    def __init__(self, embed_dim: int, classes: int, margin: float = 0.2, scale: float = 30.0):
        super().__init__()
        self.margin, self.scale = margin, scale
        self.W = nn.Parameter(torch.randn(embed_dim, classes))
        nn.init.xavier_normal_(self.W, gain=1)

    def forward(self, x: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        costh = nn.functional.normalize(x, dim=1) @ nn.functional.normalize(self.W, dim=0)
        margins = torch.zeros_like(costh).scatter_(1, label[:, None], self.margin)
        return nn.functional.cross_entropy(self.scale * (costh - margins), label)


def plain_step(waves: torch.Tensor, labels: torch.Tensor) -> Callable[[], None]:
    """One step of the plain loop: zero the gradients, forward, loss, backward, Adam, the loss read for the log."""
    from vvframe_plugins.models.resnet_se import ResNetSE34L

    features = PlainFeatures()
    model = ResNetSE34L(N_MELS, MODEL["embed_dim"], MODEL["pooling"])
    head = PlainAMSoftmax(MODEL["embed_dim"], SPEAKERS, LOSS["margin"], LOSS["scale"])
    optimizer = torch.optim.Adam(list(model.parameters()) + list(head.parameters()), lr=1e-3)
    model.train()

    def step() -> None:
        optimizer.zero_grad()
        loss = head(model(features(waves)), labels)
        loss.backward()
        optimizer.step()
        loss.item()

    return step


# ---- the train stage's step ----------------------------------------------------------------------------------
def stage_step(waves: torch.Tensor, labels: torch.Tensor, settings: dict, folder: Path) -> Callable[[], None]:
    """One step of the train stage's ``Steps`` on a ``Trainer`` assembled from a recipe as a run resolves it
    (``settings``: its ``trainer`` and ``optimizer`` sections' values)."""
    from vvframe.core import recipe as recipes
    from vvframe.core.run import RunContext
    from vvframe.training.launch import Dist
    from vvframe_plugins.stages.train import Job, Trainer

    folder.mkdir(parents=True, exist_ok=True)
    train_list = folder / "train.txt"  # one utterance per speaker; never read, the batch is in memory
    train_list.write_text("".join(f"spk{i:04d} spk{i:04d}/0.wav\n" for i in range(SPEAKERS)))
    trainer = {"epochs": 1, "batch_size": BATCH, "workers": 0, "device": "cpu", **settings.get("trainer", {})}
    recipe = {
        "name": "train_vs_plain",
        "seed": 0,
        "stages": ["train"],
        "data": {"root": str(folder), "train_list": str(train_list), "crop_seconds": SECONDS},
        "frontend": {"name": "melspec", "n_mels": N_MELS},
        "model": MODEL,
        "loss": LOSS,
        "optimizer": {"name": "adam", "lr": 1e-3, **settings.get("optimizer", {})},
        "trainer": trainer,
    }
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    resolved = recipes.check(path, [])
    (stage,) = resolved.stages
    t = Trainer(Dist(), Job(RunContext(resolved, folder / "run"), **resolved.stage_arguments(stage)))
    indices = torch.arange(BATCH)

    def step() -> None:
        t.train_batch(waves, labels, indices)

    return step


# ---- the sides, each in a process of its own, stepped in turns ------------------------------------------------
def _side(conn, kind: str, settings: dict, folder: str, warmup: int) -> None:
    """A side's process: build its step, warm up, then one timed step per request until told to stop."""
    g = torch.Generator().manual_seed(0)
    waves = (0.1 * torch.randn(BATCH, int(SECONDS * RATE), generator=g)).clamp(-1, 1)
    labels = torch.randint(0, SPEAKERS, (BATCH,), generator=g)
    try:
        step = plain_step(waves, labels) if kind == PLAIN else stage_step(waves, labels, settings, Path(folder))
        for _ in range(warmup):
            step()
        conn.send(("ready", ""))
        while conn.recv() == "step":
            start = time.perf_counter()
            step()
            conn.send(time.perf_counter() - start)
    except Exception as exc:  # noqa: BLE001 - the parent reports it
        conn.send(("failed", f"{type(exc).__name__}: {exc}"))


def fastest_in_turns(sides: list[tuple[str, dict]], rounds: int, warmup: int, folder: Path) -> list[float]:
    """The fastest of ``rounds`` steps of each side, one step of each in turn, each in a fresh spawned process."""
    context = multiprocessing.get_context("spawn")
    pipes, processes = [], []
    try:
        for i, (kind, settings) in enumerate(sides):
            parent, child = context.Pipe()
            process = context.Process(target=_side, args=(child, kind, settings, str(folder / str(i)), warmup))
            process.start()
            pipes.append(parent)
            processes.append(process)
            reply = parent.recv()  # one side warms up at a time: they do not slow each other down
            if reply[0] != "ready":
                raise RuntimeError(f"{kind} {settings}: {reply[1]}")
        best = [float("inf")] * len(sides)
        for _ in range(rounds):
            for i, pipe in enumerate(pipes):
                pipe.send("step")
                best[i] = min(best[i], pipe.recv())
        return best
    finally:
        for pipe in pipes:
            try:
                pipe.send("stop")
            except OSError:
                pass
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()


def step_rows(quick: bool, folder: Path, rounds: int | None = None) -> list[Row]:
    """ms per step of the plain loop and of the train stage's variants (the fastest of ``rounds`` each), each
    compared with the plain loop."""
    variants = [UNFUSED, FP32, CHANNELS_LAST] + ([BF16] if native_bf16_cpu() else []) + [AUTO]
    variants += [] if quick else [FP32_COMPILED, AUTO_COMPILED]
    sides = [(PLAIN, {})] + [("stage", settings) for _, settings in variants]
    seconds = fastest_in_turns(sides, rounds=rounds or (2 if quick else 8), warmup=1 if quick else 2, folder=folder)
    plain, what = seconds[0], f"ResNetSE34L train step, {BATCH} x {SECONDS:g} s"
    rows = [Row(f"{what}, plain PyTorch loop (voxceleb_trainer's), fp32", 1000 * plain, "ms/step", "")]
    for (label, _), s in zip(variants, seconds[1:]):
        rows.append(
            Row(
                f"{what}, vvframe train stage, {label}",
                1000 * s,
                "ms/step",
                versus("plain loop", 1000 * plain, "ms", 1000 * s, False),
            )
        )
    return rows


# ---- the real run --------------------------------------------------------------------------------------------
# the run's process: the heavy imports first, then `vvframe run` with its own CPU time (and that of its loader
# workers, reaped at the epoch's end) measured around it, printed as the last line
RUN = """
import json, resource, sys, time
import torch, torchaudio, vvframe_plugins.stages.train, torch.utils.tensorboard
from vvframe.cli import main

def used():
    mine, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return mine.ru_utime + children.ru_utime, mine.ru_stime + children.ru_stime

(user, system), start = used(), time.perf_counter()
code = main(sys.argv[1:])
(user2, system2), wall = used(), time.perf_counter() - start
print(json.dumps({"code": code, "wall": wall, "user": user2 - user, "system": system2 - system}))
"""


def real_run(corpus: Path, runs: Path, epochs: int, env: dict[str, str]) -> dict[str, float]:
    """``vvframe run`` of the quickstart's training, ``epochs`` on ``corpus``: utterances/s of the last epoch as
    the run logs them (``rate``), and the wall, user and system CPU seconds of the run after the imports (``wall``, ``user``,
    ``system``) and of its whole process tree (``all_user``, ``all_system``: ``getrusage`` of the children)."""
    command = [sys.executable, "-c", RUN, "run", str(REPO / "recipes" / "quickstart.yaml"), "--runs", str(runs)]
    command += [f"trainer.epochs={epochs}", "stages=[train]", f"data.root={corpus / 'audio'}"]
    command += [f"data.train_list={corpus / 'train.txt'}", "data.val_trials=null"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=runs)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"vvframe run failed ({done.returncode}): {done.stderr[-2000:]}")
    found = re.findall(r"([\d.]+) utterances/s", done.stderr)
    if not found:
        raise RuntimeError(f"no utterances/s in the run's log: {done.stderr[-2000:]}")
    return {
        **json.loads(lines[-1]),
        "rate": float(found[-1]),
        "all_user": after.ru_utime - before.ru_utime,
        "all_system": after.ru_stime - before.ru_stime,
    }


def share(user: float, system: float) -> float:
    """The system share of the CPU time, in percent."""
    return 100 * system / max(user + system, 1e-9)


def real_rows(quick: bool, folder: Path) -> list[Row]:
    """Utterances/s and the system share of the CPU time of quickstart training epochs on a generated corpus (two:
    from the second on, the loader's workers are forked from a process that has trained)."""
    corpus, runs = folder / "corpus", folder / "runs"
    runs.mkdir(parents=True)
    speakers, utterances = (40, 4) if quick else (40, 8)  # the quickstart's batch of 32 needs 32 speakers
    synth = [str(VVFRAME), "data", "synth", str(corpus), "--speakers", str(speakers), "--utterances"]
    synth += [str(utterances), "--eval-speakers", "2", "--cohort-speakers", "0", "--seconds", "2-4", "--seed", "0"]
    subprocess.run(synth, check=True, capture_output=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "LD_PRELOAD"}
    epochs = 1 if quick else 2
    ours = real_run(corpus, runs, epochs, env)
    what = (
        f"quickstart training, {epochs} epoch{'s' if epochs > 1 else ''} of {speakers * utterances} utterances"
        " (ecapa_tdnn C=128, batch 32, 2 workers)"
    )
    rate_vs, share_vs = "", "target: under 10 %"
    if not quick and platform.libc_ver()[0] == "glibc":
        # glibc's malloc as it comes: an allocator in LD_PRELOAD (glibc's own, already loaded: a no-op) makes
        # keep_freed_memory leave malloc be
        theirs = real_run(corpus, runs, epochs, {**env, "LD_PRELOAD": "libc.so.6"})
        rate_vs = versus("glibc's malloc defaults", theirs["rate"], "utt/s", ours["rate"], True)
        share_vs += (
            f"; glibc's malloc defaults: {share(theirs['user'], theirs['system']):.1f} % of"
            f" {theirs['user'] + theirs['system']:.1f} s"
        )
    cpu, everything = ours["user"] + ours["system"], ours["all_user"] + ours["all_system"]
    return [
        Row(f"{what}, utterances/s of the last epoch as logged", ours["rate"], "utt/s", rate_vs),
        Row(
            f"{what}, system share of the run's CPU time after imports",
            share(ours["user"], ours["system"]),
            "%",
            share_vs,
        ),
        Row(
            f"{what}, the run's CPU time after imports (user + system)",
            cpu,
            "s",
            f"wall {ours['wall']:.1f} s; the whole process, start-up included: {everything:.1f} s,"
            f" {share(ours['all_user'], ours['all_system']):.1f} % system",
        ),
    ]


def run(quick: bool = False) -> list[Row]:
    """Rows: the train step of each side and variant, then the real run's rate and CPU time."""
    with tempfile.TemporaryDirectory(prefix="vvframe-bench-train-") as tmp:
        return step_rows(quick, Path(tmp) / "steps") + real_rows(quick, Path(tmp) / "real")


if __name__ == "__main__":
    standalone("train_vs_plain", run, __doc__)
