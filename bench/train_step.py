"""Training-step speed of the first-party train path: utterances per second and milliseconds per step.

One step is what the train stage does with a batch already in memory: `Net` (fbank frontend, model, loss head)
forward under autocast, backward, an Adam step (fused where torch has the kernel, as the train stage builds it)
and zeroing the gradients; reading and augmenting crops is `bench/loader.py`'s. Batches of 2-second crops of noise,
labels among 5,994 speakers (VoxCeleb2's), an `aamsoftmax` head. On the CPU: ECAPA-TDNN C=256 with 40 fbanks (the
quickstart's model) at batch 16 and ResNet34 with 80 fbanks at batch 4, each in float32 and under bfloat16
autocast, ResNet34 also with channels_last weights in both; each variant is compared with float32
(`bench/train_vs_plain.py` compares the whole train stage with a plain loop). On CUDA when there is one:
ECAPA-TDNN C=512 and ResNet34 at batch 128. The variants of a model take turns, one step each, after their
warm-up steps, and each keeps its fastest step (on a shared machine other work only ever adds time, and taking
turns spreads it over all variants). Quick mode: smaller batches, one timed step.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from common import Row, devices, standalone, timed, versus

from vvframe.core import registry
from vvframe_plugins.stages.assembly import fused_optimizer
from vvframe_plugins.stages.train import Net

RATE, SECONDS, SPEAKERS = 16000, 2.0, 5994
ECAPA_CPU = ("ECAPA-TDNN C=256", {"name": "ecapa_tdnn", "channels": 256, "embed_dim": 128}, 40)
ECAPA_GPU = ("ECAPA-TDNN C=512", {"name": "ecapa_tdnn", "channels": 512, "embed_dim": 192}, 80)
RESNET = ("ResNet34", {"name": "resnet34", "embed_dim": 256}, 80)


def build(model: dict, n_mels: int, device: str, channels_last: bool) -> tuple[Net, torch.optim.Optimizer]:
    """The train stage's ``Net`` (no feature augmentation, one utterance per speaker) and its Adam optimizer, fused
    where it can be (as the train stage builds it)."""
    frontend = registry.build("frontends", {"name": "fbank", "n_mels": n_mels}, sample_rate=RATE)
    network = registry.build("models", model, in_dim=frontend.out_dim, sample_rate=RATE)
    loss = registry.build(
        "losses", {"name": "aamsoftmax", "margin": 0.2, "scale": 30}, embed_dim=network.embed_dim, num_classes=SPEAKERS
    )
    net = Net(frontend, network, loss, [], per_speaker=1).to(device)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    adam, _ = registry.resolve("optimizers", {"name": "adam", "lr": 1e-3, "weight_decay": 1e-5})
    optimizer = fused_optimizer(adam, [p for p in net.parameters() if p.requires_grad])
    return net.train(), optimizer


def training_step(
    model: dict, n_mels: int, device: str, batch: int, dtype: torch.dtype | None, channels_last: bool
) -> Callable[[], None]:
    """A function doing one training step of a fresh network on a fixed batch, as the train stage does it."""
    net, optimizer = build(model, n_mels, device, channels_last)
    g = torch.Generator().manual_seed(0)
    waves = (0.1 * torch.randn(batch, int(SECONDS * RATE), generator=g)).clamp(-1, 1).to(device)
    labels = torch.randint(0, SPEAKERS, (batch,), generator=g).to(device)
    count = [0]

    def step() -> None:
        count[0] += 1
        with torch.autocast(torch.device(device).type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss, _ = net(waves, labels, count[0])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def fastest_steps(steps: list[Callable[[], None]], rounds: int, warmup: int, device: str) -> list[float]:
    """The fastest of ``rounds`` timed calls of each function, taking turns, after ``warmup`` calls of each."""
    for step in steps:
        for _ in range(warmup):
            step()
    best = [float("inf")] * len(steps)
    for _ in range(rounds):
        for i, step in enumerate(steps):
            best[i] = min(best[i], timed(device, step)[1])
    return best


def run(quick: bool = False) -> list[Row]:
    """Rows: ms per step and utterances per second of each model and precision, on each device."""
    rows = []
    fp32, bf16 = (None, False), (torch.bfloat16, False)
    for device in devices():
        # (model, batch, warm-up steps, timed rounds, [(autocast dtype, channels_last)]); on the CPU ECAPA-TDNN's
        # first two steps are several times slower than the rest
        if device == "cpu":
            plans = [
                (ECAPA_CPU, 8 if quick else 16, 2, 1 if quick else 3, [fp32, bf16]),
                (RESNET, 2 if quick else 4, 1, 1 if quick else 3, [fp32, bf16, (None, True), (torch.bfloat16, True)]),
            ]
        else:
            plans = [
                (ECAPA_GPU, 32 if quick else 128, 3, 3 if quick else 10, [fp32, bf16]),
                (RESNET, 32 if quick else 128, 3, 3 if quick else 10, [fp32, bf16, (torch.bfloat16, True)]),
            ]
        benchmark = torch.backends.cudnn.benchmark
        torch.backends.cudnn.benchmark = True
        try:
            for (label, model, n_mels), batch, warmup, rounds, variants in plans:
                steps = [training_step(model, n_mels, device, batch, dtype, cl) for dtype, cl in variants]
                seconds = fastest_steps(steps, rounds, warmup, device)
                del steps
                baseline = batch / seconds[0]
                for (dtype, channels_last), s in zip(variants, seconds):
                    what = "bf16 autocast" if dtype is not None else "fp32"
                    what += ", channels_last" if channels_last else ""
                    name = f"{label} train step, {batch} x {SECONDS:g} s, {what}, {device}"
                    rate = batch / s
                    rows.append(Row(name, 1000 * s, "ms/step", ""))
                    rows.append(
                        Row(
                            name,
                            rate,
                            "utt/s",
                            versus("fp32", baseline, "utt/s", rate, True) if (dtype, channels_last) != fp32 else "",
                        )
                    )
        finally:
            torch.backends.cudnn.benchmark = benchmark
    return rows


if __name__ == "__main__":
    standalone("train_step", run, __doc__)
