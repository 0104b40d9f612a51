"""Launchers: single, dp without GPUs, ddp spawned here (2 gloo ranks on the cpu) and under torchrun."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import torch
from conftest import HANG_GUARD
from torch import nn

from vvframe.core.errors import BadValue, VvframeError
from vvframe.training.launch import (
    Dist,
    LaunchError,
    launch,
    setup_logging,
    setup_rank_logging,
    torchrun_rank,
    under_torchrun,
    unwrap,
    wrap_model,
)

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- functions the spawned ranks run: module-level, so that they pickle -----------------------------------
def _collectives(dist: Dist, out: str, offset: float) -> dict:
    mean = dist.all_reduce_mean(torch.tensor([float(dist.rank), 10.0 * dist.rank]) + offset)
    as_int = dist.all_reduce_mean(torch.tensor([dist.rank]))
    gathered = dist.all_gather_object({"rank": dist.rank, "env": os.environ["RANK"]})
    told = dist.broadcast_object(f"from rank {dist.rank}", src=1)
    model = wrap_model(nn.Linear(3, 2), "ddp", dist)
    model(torch.ones(4, 3)).sum().backward()  # DDP averages the gradients: a collective of its own
    dist.barrier()
    mine = {
        "rank": dist.rank,
        "world_size": dist.world_size,
        "local_rank": dist.local_rank,
        "is_main": dist.is_main,
        "device": str(dist.device),
        "mean": mean.tolist(),
        "int_mean": as_int.tolist(),
        "gathered": gathered,
        "told": told,
        "wrapper": type(model).__name__,
        "inner": type(unwrap(model)).__name__,
    }
    Path(out, f"rank{dist.rank}.json").write_text(json.dumps(mine))
    return mine


def _one_fails(dist: Dist, rank: int) -> None:
    if dist.rank == rank:
        raise ValueError(f"rank {rank} cannot go on")
    dist.barrier()  # the other rank waits here for a peer that never comes
    time.sleep(60)


def _one_dies(dist: Dist, rank: int) -> None:
    if dist.rank == rank:
        os._exit(3)  # no Python exception: nothing recorded
    time.sleep(60)  # not in a collective: the launcher's SIGTERM ends it


def _rank0_waits(dist: Dist, flag: str) -> None:
    if dist.rank == 0:
        Path(flag).write_text("started")
    time.sleep(60)


class _Stopped(Exception):
    pass


# ---- in-process launchers ------------------------------------------------------------------------------
def _here(dist: Dist, a: int, b: int) -> tuple:
    return dist.rank, dist.world_size, str(dist.device), a + b


def test_single_runs_fn_here_and_returns_its_value():
    assert launch(_here, (2, 3), "single", device="cpu") == (0, 1, "cpu", 5)
    rank, world, device, _ = launch(_here, (0, 0))
    assert (rank, world) == (0, 1) and device == ("cuda:0" if torch.cuda.is_available() else "cpu")


def test_dp_runs_here_and_wrap_model_without_gpus_is_plain(caplog):
    dist = launch(lambda d: d, (), "dp")
    assert dist.world_size == 1 and dist.is_main
    module = nn.Linear(2, 2)
    if torch.cuda.device_count() >= 2:
        pytest.skip("this machine has 2+ GPUs")
    with caplog.at_level(logging.INFO, logger="vvframe.training.launch"):
        wrapped = wrap_model(module, "dp", Dist())
    assert wrapped is module
    assert "DataParallel needs 2+ GPUs" in caplog.text and "running the plain module" in caplog.text
    assert wrap_model(module, "single", Dist()) is module


def test_single_process_helpers_are_no_ops():
    dist = Dist()
    tensor = torch.tensor([1, 2])
    mean = dist.all_reduce_mean(tensor)
    assert mean is not tensor and mean.tolist() == [1.0, 2.0]
    assert dist.all_gather_object("x") == ["x"]
    assert dist.broadcast_object({"a": 1}) == {"a": 1}
    dist.barrier()


def test_unwrap_returns_the_inner_module():
    inner = nn.Linear(2, 2)
    assert unwrap(nn.DataParallel(inner)) is inner
    assert unwrap(inner) is inner


def test_unknown_launcher_and_device_are_bad_values():
    with pytest.raises(BadValue, match="'single', 'dp', 'ddp'"):
        launch(_here, (1, 2), "horovod")
    with pytest.raises(BadValue, match="'single', 'dp', 'ddp'"):
        wrap_model(nn.Linear(1, 1), "fsdp", Dist())
    with pytest.raises(BadValue, match="device 'gpu"):
        launch(_here, (1, 2), "single", device="gpu")
    if not torch.cuda.is_available():
        with pytest.raises(BadValue, match="0 CUDA devices visible"):
            launch(_here, (1, 2), "single", device="cuda")


def test_wrap_model_ddp_outside_launch_is_an_error():
    with pytest.raises(LaunchError, match="inside launch"):
        wrap_model(nn.Linear(1, 1), "ddp", Dist())


def test_under_torchrun_reads_the_environment(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR"):
        monkeypatch.delenv(name, raising=False)
    assert not under_torchrun()
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert not under_torchrun()
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    assert under_torchrun()


def test_torchrun_rank_is_rank_and_world_size_or_none(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR"):
        monkeypatch.delenv(name, raising=False)
    assert torchrun_rank() is None
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert torchrun_rank() is None  # no MASTER_ADDR: not a launcher's process
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    assert torchrun_rank() == (1, 4)


def test_native_bf16_cpu_asks_torch_and_else_reads_cpuinfo(monkeypatch, tmp_path):
    import vvframe.training.launch as launch_module

    monkeypatch.setattr(launch_module, "_kernel_capability", lambda: "AVX512")  # whatever this machine's
    for name in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert launch_module.native_bf16_cpu() == "amx_bf16"
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert launch_module.native_bf16_cpu() is None
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported")  # a torch without the probes: /proc/cpuinfo
    cpuinfo = tmp_path / "cpuinfo"
    monkeypatch.setattr(launch_module, "_CPUINFO", cpuinfo)
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512bw\n")  # AVX-512, but no BF16
    assert launch_module.native_bf16_cpu() is None
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 avx512_vnni\n")
    assert launch_module.native_bf16_cpu() == "avx512_bf16"
    cpuinfo.unlink()  # not Linux
    assert launch_module.native_bf16_cpu() is None


def test_native_bf16_cpu_is_none_where_torch_or_onednn_kernels_are_held_below_bf16(monkeypatch):
    import vvframe.training.launch as launch_module

    for name in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    monkeypatch.setattr(launch_module, "_kernel_capability", lambda: "AVX512")
    assert launch_module.native_bf16_cpu() == "avx512_bf16"
    for capped in ("AVX2", "DEFAULT"):  # ATEN_CPU_CAPABILITY=avx2 or default: torch's own bf16 kernels are emulated
        monkeypatch.setattr(launch_module, "_kernel_capability", lambda capped=capped: capped)
        assert launch_module.native_bf16_cpu() is None
        assert launch_module.auto_precision("cpu") == ("fp32", "no native bf16 on this CPU")
    monkeypatch.setattr(launch_module, "_kernel_capability", lambda: None)  # a torch that does not say: the probes
    assert launch_module.native_bf16_cpu() == "avx512_bf16"
    for isa, native in [
        ("AVX2", None),
        ("avx512_core", None),
        ("AVX512_CORE_BF16", "avx512_bf16"),
        ("ALL", "avx512_bf16"),
    ]:
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", isa)  # oneDNN's convolutions held to an instruction set
        assert launch_module.native_bf16_cpu() == native, isa


def test_kernel_capability_follows_aten_cpu_capability():
    code = "import vvframe.training.launch as l; print(l._kernel_capability(), l.native_bf16_cpu())"
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "avx2"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    capability, native = out.split()
    assert capability != "AVX512" and native == "None"


def test_auto_precision_on_cpu_and_cuda(monkeypatch):
    import vvframe.training.launch as launch_module

    monkeypatch.setattr(launch_module, "native_bf16_cpu", lambda: "avx512_bf16")
    assert launch_module.auto_precision("cpu") == ("bf16", "the CPU has native bf16: avx512_bf16")
    monkeypatch.setattr(launch_module, "native_bf16_cpu", lambda: None)
    assert launch_module.auto_precision(torch.device("cpu")) == ("fp32", "no native bf16 on this CPU")
    asked = []
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Some GPU")
    monkeypatch.setattr(
        torch.cuda,
        "is_bf16_supported",
        lambda including_emulation=True: asked.append(including_emulation) or len(asked) == 1,
    )
    assert launch_module.auto_precision("cuda:0") == ("bf16", "Some GPU supports bf16")
    assert launch_module.auto_precision("cuda:0") == ("fp16", "Some GPU has no native bf16")
    assert asked == [False, False]  # emulated bf16 (GPUs before Ampere) does not count
    assert launch_module.auto_precision("meta")[0] == "fp32"


def test_keep_freed_memory_tunes_glibc_unless_the_environment_chose(monkeypatch):
    from vvframe.training.launch import keep_freed_memory

    for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "LD_PRELOAD"):
        monkeypatch.delenv(name, raising=False)
    import platform

    if sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc":
        assert keep_freed_memory()
    monkeypatch.setenv("LD_PRELOAD", "/usr/lib/libjemalloc.so.2")
    assert not keep_freed_memory()
    monkeypatch.delenv("LD_PRELOAD")
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "131072")
    assert not keep_freed_memory()


def test_release_freed_memory_hands_freed_memory_back_on_glibc():
    import platform

    from vvframe.training.launch import keep_freed_memory, release_freed_memory

    if not (sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"):
        assert not release_freed_memory()
        return

    def resident() -> int:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    if not keep_freed_memory():  # freed memory stays with malloc ...
        pytest.skip("the environment chose malloc's settings or another allocator")
    block = torch.ones(16 << 20)  # 64 MiB, from the heap
    del block
    kept = resident()
    assert release_freed_memory()  # ... until it is handed back
    assert resident() < kept - (32 << 20)


def test_setup_rank_logging(tmp_path):
    root = logging.getLogger()
    level = root.level
    try:
        setup_rank_logging(Dist(rank=1, world_size=2, local_rank=1), tmp_path / "elsewhere.txt")
        ours = [h for h in root.handlers if getattr(h, "_vvframe", False)]
        assert len(ours) == 1 and ours[0].level == logging.WARNING
        assert ours[0].formatter.format(logging.makeLogRecord({"msg": "hi"})) == "[rank 1] hi"
        assert not (tmp_path / "elsewhere.txt").exists()
        for name in ("elsewhere.txt", "log.txt"):
            setup_rank_logging(Dist(), tmp_path / name)
            logging.getLogger("vvframe.test").info("to %s", name)
            assert "to " + name in (tmp_path / name).read_text()
    finally:
        for handler in [h for h in root.handlers if getattr(h, "_vvframe", False)]:
            root.removeHandler(handler)
            handler.close()
        root.setLevel(level)


def test_setup_logging_writes_rank_0_to_the_file_and_replaces_itself(tmp_path):
    root = logging.getLogger()
    level = root.level
    log_file = tmp_path / "run" / "log.txt"  # its folder is made
    try:
        setup_logging(log_file, verbose=True)
        assert root.level == logging.DEBUG
        logging.getLogger("vvframe.test").info("first")
        setup_logging(log_file)  # again: the same two handlers, not four
        ours = [h for h in root.handlers if getattr(h, "_vvframe", False)]
        assert len(ours) == 2 and root.level == logging.INFO
        logging.getLogger("vvframe.test").info("second")
        lines = log_file.read_text().splitlines()
        assert [line.split(" INFO vvframe.test: ")[1] for line in lines] == ["first", "second"]
        assert lines[0][:4].isdigit()  # a timestamp first
        setup_logging(log_file, rank=2)  # another rank: a console that warns, no file
        ours = [h for h in root.handlers if getattr(h, "_vvframe", False)]
        assert [type(h) for h in ours] == [logging.StreamHandler] and ours[0].level == logging.WARNING
    finally:
        for handler in [h for h in root.handlers if getattr(h, "_vvframe", False)]:
            root.removeHandler(handler)
            handler.close()
        root.setLevel(level)


# ---- spawned ranks -------------------------------------------------------------------------------------
def test_ddp_spawn_two_gloo_ranks(tmp_path):
    start = time.monotonic()
    result = launch(_collectives, (str(tmp_path), 1.0), "ddp", device="cpu", nproc=2)
    logging.getLogger(__name__).info("2 gloo ranks: %.2f s", time.monotonic() - start)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert result == ranks[0]  # rank 0's return value comes back
    for r, mine in enumerate(ranks):
        assert (mine["rank"], mine["world_size"], mine["local_rank"], mine["is_main"]) == (r, 2, r, r == 0)
        assert mine["device"] == "cpu"
        assert mine["mean"] == [1.5, 6.0]  # ([1, 1] + [2, 11]) / 2
        assert mine["int_mean"] == [0.5]
        assert mine["gathered"] == [{"rank": 0, "env": "0"}, {"rank": 1, "env": "1"}]
        assert mine["told"] == "from rank 1"
        assert (mine["wrapper"], mine["inner"]) == ("DistributedDataParallel", "Linear")


def test_ddp_rank_that_raises_ends_the_run_without_hanging():
    start = time.monotonic()
    with pytest.raises(LaunchError) as info:
        launch(_one_fails, (1,), "ddp", device="cpu", nproc=2, timeout_s=HANG_GUARD)
    elapsed = time.monotonic() - start
    # the waiting rank was ended by the failing one, not by its collective's timeout (a hang guard, not a speed test)
    assert elapsed < HANG_GUARD / 2, f"took {elapsed:.1f} s"
    error = info.value
    assert isinstance(error, VvframeError) and isinstance(error, RuntimeError)
    assert error.rank == 1
    text = str(error)
    assert text.startswith("ddp rank 1 of 2 failed: ValueError: rank 1 cannot go on")
    assert "Traceback" in text and "_one_fails" in text and "_one_fails" in error.remote_traceback


def test_ddp_rank_that_dies_without_an_exception_is_named_and_the_launcher_stays_quiet(capfd):
    start = time.monotonic()
    with pytest.raises(LaunchError) as info:
        launch(_one_dies, (1,), "ddp", device="cpu", nproc=2, timeout_s=HANG_GUARD)
    assert time.monotonic() - start < HANG_GUARD / 2
    assert info.value.rank == 1
    assert str(info.value) == "ddp rank 1 of 2 died without a Python exception (exit code 3)"
    err = capfd.readouterr().err
    assert "Closing process" not in err and "failed (exitcode" not in err  # the launcher's own log lines


def test_a_signal_during_ddp_ends_the_ranks_and_reaches_this_process_handler(tmp_path):
    flag = tmp_path / "started"

    def stop(signum, frame):
        raise _Stopped(signal.Signals(signum).name)

    previous = signal.signal(signal.SIGTERM, stop)
    int_handler = signal.getsignal(signal.SIGINT)
    env = os.environ.get("TORCHELASTIC_SIGNALS_TO_HANDLE")

    def send() -> None:
        deadline = time.monotonic() + HANG_GUARD
        while not flag.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)

    sender = threading.Thread(target=send, daemon=True)
    try:
        sender.start()
        start = time.monotonic()
        with pytest.raises(_Stopped, match="SIGTERM"):
            launch(_rank0_waits, (str(flag),), "ddp", device="cpu", nproc=2, timeout_s=HANG_GUARD)
        assert time.monotonic() - start < HANG_GUARD / 2
        assert not multiprocessing.active_children()  # the ranks are gone
        assert signal.getsignal(signal.SIGTERM) is stop and signal.getsignal(signal.SIGINT) is int_handler
        assert os.environ.get("TORCHELASTIC_SIGNALS_TO_HANDLE") == env
    finally:
        sender.join(1)
        signal.signal(signal.SIGTERM, previous)


# ---- torchrun -------------------------------------------------------------------------------------------
SCRIPT = """
import json, os, sys
from pathlib import Path
import torch
from vvframe.training.launch import launch, under_torchrun

def fn(dist, out):
    mean = dist.all_reduce_mean(torch.tensor([float(dist.rank + 1)]))
    Path(out, f"rank{dist.rank}.json").write_text(json.dumps(
        {"rank": dist.rank, "world_size": dist.world_size, "local_rank": dist.local_rank,
         "mean": mean.item(), "under_torchrun": under_torchrun(), "pid": os.getpid()}))
    return dist.rank

if __name__ == "__main__":
    result = launch(fn, (sys.argv[1],), "ddp", device="cpu")
    Path(sys.argv[1], f"returned{os.environ['RANK']}").write_text(str(result))
"""


def test_ddp_under_torchrun(tmp_path):
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(SCRIPT))
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(_free_port()),
        str(script),
        str(out),
    ]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=HANG_GUARD)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [(m["rank"], m["world_size"], m["local_rank"]) for m in ranks] == [(0, 2, 0), (1, 2, 1)]
    assert all(m["mean"] == 1.5 and m["under_torchrun"] for m in ranks)
    assert ranks[0]["pid"] != ranks[1]["pid"]
    assert [(out / f"returned{r}").read_text() for r in (0, 1)] == ["0", "1"]
