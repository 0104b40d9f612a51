"""Run a function on one device, under DataParallel, or as DDP ranks (spawned here or started by torchrun).

``launch(fn, args, launcher)`` calls ``fn(dist, *args)`` where ``dist`` is a :class:`Dist`: this process's
rank, world size, local rank and device, with collective helpers that are no-ops for a single process.

For ``ddp`` outside torchrun the ranks are new processes (start method ``spawn``), so ``fn`` must be a
module-level function and ``args`` picklable; rank 0's return value comes back to the caller through a pickle
file in a temporary directory (keep it small: metrics, paths, not models). A rank that raises brings the others
down and the caller gets a :class:`LaunchError` carrying that rank's exception and traceback.
"""

from __future__ import annotations

import ctypes
import datetime as _dt
import logging
import os
import pickle
import socket
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as tdist
import torch.multiprocessing as mp
from torch import nn
from torch.multiprocessing.spawn import ProcessException

from vvframe.core.errors import BadValue, VvframeError

log = logging.getLogger(__name__)

LAUNCHERS = ("single", "dp", "ddp")
DEFAULT_TIMEOUT_S = 1800.0  # collective timeout (init_process_group): a rank that waits longer fails
_GRACE_S = 2.0  # after a rank fails: how long the others may take to end by themselves before SIGTERM, then SIGKILL
_PORT_TRIES = 3  # a free port picked in the parent may be taken before rank 0 binds it: try again this often
_RESULT = "result.pkl"
_TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR")
_CPUINFO = Path("/proc/cpuinfo")  # read by native_bf16_cpu where torch has no probe of its own
_ALLOCATOR_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "LD_PRELOAD")  # keep_freed_memory leaves these be


class LaunchError(VvframeError, RuntimeError):
    """A DDP rank that failed: the message names the rank and carries its exception and traceback."""

    def __init__(self, message: str, rank: int | None = None, remote_traceback: str = ""):
        super().__init__(message)
        self.rank = rank
        self.remote_traceback = remote_traceback


@dataclass
class Dist:
    """This process's place in a run: rank, world size, local rank, device; helpers that are no-ops when world_size == 1."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0 (the process that writes files and logs progress)."""
        return self.rank == 0

    def barrier(self) -> None:
        """Wait until every rank gets here."""
        if self.world_size == 1:
            return
        if self.device.type == "cuda" and tdist.get_backend() == "nccl":
            tdist.barrier(device_ids=[self.device.index])
        else:
            tdist.barrier()

    def all_reduce_mean(self, tensor: torch.Tensor) -> torch.Tensor:
        """The mean of ``tensor`` over ranks, as a new tensor on its device (integers are averaged as float32)."""
        work = tensor.detach().clone()
        if not (work.is_floating_point() or work.is_complex()):
            work = work.float()
        if self.world_size == 1:
            return work
        on = self._collective_device()
        moved = work.to(on)
        tdist.all_reduce(moved, op=tdist.ReduceOp.SUM)
        moved /= self.world_size
        return moved.to(tensor.device)

    def all_gather_object(self, obj: Any) -> list:
        """Every rank's ``obj`` (picklable), in rank order; ``[obj]`` for a single process."""
        if self.world_size == 1:
            return [obj]
        out: list[Any] = [None] * self.world_size
        tdist.all_gather_object(out, obj)
        return out

    def broadcast_object(self, obj: Any, src: int = 0) -> Any:
        """Rank ``src``'s ``obj`` (picklable) on every rank; ``obj`` itself for a single process."""
        if self.world_size == 1:
            return obj
        box = [obj]
        tdist.broadcast_object_list(box, src=src)
        return box[0]

    def _collective_device(self) -> torch.device:
        if tdist.get_backend() == "nccl":
            return self.device
        return torch.device("cpu")


def under_torchrun() -> bool:
    """Whether torchrun (or another launcher setting RANK, WORLD_SIZE, LOCAL_RANK and MASTER_ADDR) started this process."""
    return all(os.environ.get(name) for name in _TORCHRUN_ENV)


def launch(
    fn: Callable[..., Any],
    args: tuple = (),
    launcher: str = "single",
    device: str = "auto",
    nproc: int = 2,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> Any:
    """Run ``fn(dist, *args)`` under ``launcher`` ('single', 'dp' or 'ddp') and return rank 0's return value.

    - ``single``: in this process on ``device`` ('auto' = cuda:0 if available else cpu, or 'cpu', 'cuda', 'cuda:1').
    - ``dp``: in this process too (DataParallel is a model wrapper: :func:`wrap_model`); 'auto' = cuda:0 or cpu.
    - ``ddp``: under torchrun, join its process group (nccl on GPUs, gloo on cpu) and run this process's rank
      (``nproc`` is ignored: torchrun's ``--nproc_per_node`` decides; each process returns its own rank's value);
      otherwise spawn ``nproc`` ranks here (``fn`` must be a module-level function and ``args`` picklable; the
      result travels back pickled). A failing rank ends the others and raises :class:`LaunchError` here.
      ``timeout_s`` bounds every collective (a rank waiting longer than that fails).
    """
    if launcher not in LAUNCHERS:
        raise BadValue(f"launcher '{launcher}' is not one of {', '.join(repr(n) for n in LAUNCHERS)}")
    if launcher != "ddp":
        if under_torchrun() and os.environ["WORLD_SIZE"] != "1":
            log.warning(
                "started by torchrun (rank %s of %s) with launcher '%s': every process runs the whole job;"
                " use launcher ddp",
                os.environ["RANK"],
                os.environ["WORLD_SIZE"],
                launcher,
            )
        dist = Dist(0, 1, 0, pick_device(device))
        log.debug("launcher %s on %s", launcher, dist.device)
        return fn(dist, *args)
    use_cuda = _ddp_uses_cuda(device)
    if under_torchrun():
        return _run_torchrun_rank(fn, args, use_cuda, timeout_s)
    return _spawn(fn, args, use_cuda, nproc, timeout_s)


def setup_rank_logging(dist: Dist, log_file: Path | None = None, *, verbose: bool = False) -> None:
    """Rank 0 logs INFO to the console and to ``log_file`` (when given); other ranks log WARNING and up, prefixed [rank N]."""
    from vvframe.core.run import LOG_FILE, setup_logging

    log_file = Path(log_file) if log_file is not None else None
    if log_file is not None and log_file.name == LOG_FILE:
        setup_logging(log_file.parent, rank=dist.rank, verbose=verbose)
        return
    setup_logging(None, rank=dist.rank, verbose=verbose)
    if log_file is not None and dist.is_main:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(log_file, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler._vvframe = True  # type: ignore[attr-defined]  # so that setup_logging replaces it next time
        logging.getLogger().addHandler(handler)


def wrap_model(module: nn.Module, launcher: str, dist: Dist) -> nn.Module:
    """The module moved to dist.device and wrapped: 'ddp' → DistributedDataParallel, 'dp' → DataParallel on 2+ GPUs, 'single' → plain."""
    if launcher not in LAUNCHERS:
        raise BadValue(f"launcher '{launcher}' is not one of {', '.join(repr(n) for n in LAUNCHERS)}")
    module = module.to(dist.device)
    if launcher == "ddp":
        if not (tdist.is_available() and tdist.is_initialized()):
            raise LaunchError("wrap_model(..., 'ddp') needs a process group: call it inside launch(fn, args, 'ddp')")
        if dist.device.type == "cuda":
            return nn.parallel.DistributedDataParallel(
                module, device_ids=[dist.device.index], output_device=dist.device.index
            )
        return nn.parallel.DistributedDataParallel(module)
    if launcher == "dp":
        count = torch.cuda.device_count()
        if dist.device.type == "cuda" and count >= 2:
            first = dist.device.index or 0
            ids = [first] + [i for i in range(count) if i != first]
            log.info("DataParallel over %d GPUs (%s)", count, ", ".join(f"cuda:{i}" for i in ids))
            return nn.DataParallel(module, device_ids=ids, output_device=first)
        if count < 2:
            log.warning("DataParallel needs 2+ GPUs; %d visible: running the plain module", count)
        else:
            log.warning("DataParallel asked for on %s: running the plain module", dist.device)
    return module


def unwrap(module: nn.Module) -> nn.Module:
    """The inner module of DataParallel / DistributedDataParallel (and torch.compile) wrappers."""
    while True:
        if isinstance(module, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            module = module.module
        elif type(module).__name__ == "OptimizedModule" and isinstance(getattr(module, "_orig_mod", None), nn.Module):
            module = module._orig_mod
        else:
            return module


def native_bf16_cpu() -> str | None:
    """The feature that gives this CPU native bf16 arithmetic ('avx512_bf16' or 'amx_bf16'), or None.

    Asks torch's own probes (``torch.cpu._is_avx512_bf16_supported``, ``_is_amx_tile_supported``) where this torch
    has them, else the flags of /proc/cpuinfo (Linux). AVX-512 without its BF16 extension does not count: there
    bf16 autocast is emulated and runs several times slower than fp32.
    """
    probes = [
        (flag, getattr(torch.cpu, name, None))
        for flag, name in (("avx512_bf16", "_is_avx512_bf16_supported"), ("amx_bf16", "_is_amx_tile_supported"))
    ]
    if all(callable(probe) for _, probe in probes):
        return next((flag for flag, probe in probes if probe()), None)
    try:
        flags = set(_CPUINFO.read_text(encoding="utf-8", errors="replace").split())
    except OSError:
        return None
    return next((flag for flag in ("avx512_bf16", "amx_bf16") if flag in flags), None)


def auto_precision(device: str | torch.device) -> tuple[str, str]:
    """What ``precision: auto`` means on ``device``: ('bf16' | 'fp16' | 'fp32', the reason in words).

    CUDA: bf16 where the GPU computes in bf16 natively, else fp16 (with a gradient scaler); CPU: bf16 only where
    :func:`native_bf16_cpu` finds native bf16, else fp32; any other device: fp32.
    """
    device = torch.device(device)
    if device.type == "cuda":
        try:
            native = torch.cuda.is_bf16_supported(including_emulation=False)
        except TypeError:  # a torch without the argument counts emulation in anyway
            native = torch.cuda.is_bf16_supported()
        name = torch.cuda.get_device_name(device)
        return ("bf16", f"{name} supports bf16") if native else ("fp16", f"{name} has no native bf16")
    if device.type == "cpu":
        feature = native_bf16_cpu()
        return ("bf16", f"the CPU has native bf16: {feature}") if feature else ("fp32", "no native bf16 on this CPU")
    return "fp32", f"no mixed precision is chosen automatically on {device.type} devices"


def keep_freed_memory() -> bool:
    """Let glibc's malloc keep freed memory for reuse instead of handing it back to the kernel; True if it did.

    Training on the CPU frees and allocates the same large activations every iteration. With glibc's defaults each
    comes back as fresh pages that the kernel must fault in and zero: measured on 2 cores (ecapa_tdnn, 20 x 1.5 s
    batches, 10 iterations), a million page faults and 2.4-3.6 s of system time; with this, 315,000 and 1.0 s, for
    about 13 % more resident memory. It sets what MALLOC_MMAP_THRESHOLD_ and MALLOC_TRIM_THRESHOLD_ set (1 GiB
    each, or glibc's largest mmap threshold where 1 GiB is refused), and does nothing where the libc is not glibc
    or where the environment chose already (those variables, an allocator in LD_PRELOAD such as jemalloc).
    """
    if not sys.platform.startswith("linux") or any(os.environ.get(name) for name in _ALLOCATOR_ENV):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # musl, or no libc.so.6
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    mapped = mallopt(m_mmap_threshold, 1 << 30) or mallopt(m_mmap_threshold, 32 << 20)
    return bool(mapped and mallopt(m_trim_threshold, 1 << 30))


# ----------------------------------------------------------------------------------------------------------
def pick_device(device: str | torch.device) -> torch.device:
    """'auto' → cuda:0 if available else cpu; 'cuda' → cuda:0; otherwise the named device, which must exist."""
    name = str(device)
    if name == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as exc:
        raise BadValue(f"device '{name}' is not a device name (use 'auto', 'cpu', 'cuda' or 'cuda:N')") from exc
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = 0 if dev.index is None else dev.index
        if index >= count:
            raise BadValue(f"device '{name}': {count} CUDA device{'s' if count != 1 else ''} visible")
        return torch.device("cuda", index)
    return dev


def _ddp_uses_cuda(device: str | torch.device) -> bool:
    """Whether DDP ranks run on GPUs (one each, cuda:LOCAL_RANK) rather than on the cpu."""
    dev = pick_device(device)
    if dev.type == "cuda" and dev.index not in (None, 0):
        log.info("ddp puts each rank on cuda:LOCAL_RANK; device '%s' only says to use GPUs", device)
    if dev.type not in ("cpu", "cuda"):
        raise BadValue(f"device '{device}': ddp runs on 'cpu' or 'cuda'")
    return dev.type == "cuda"


def _free_port() -> int:
    """A TCP port that nothing listens on now (the OS picks it; another process may take it before rank 0 does)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _init_group(dist: Dist, backend: str, timeout_s: float) -> bool:
    """Join the process group (from the environment); False if one exists already (then it is not ours to end)."""
    if tdist.is_initialized():
        return False
    if dist.device.type == "cuda":
        torch.cuda.set_device(dist.device)
    tdist.init_process_group(
        backend=backend,
        init_method="env://",
        rank=dist.rank,
        world_size=dist.world_size,
        timeout=_dt.timedelta(seconds=timeout_s),
    )
    return True


def _run_torchrun_rank(fn: Callable[..., Any], args: tuple, use_cuda: bool, timeout_s: float) -> Any:
    rank, world, local = (int(os.environ[n]) for n in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    dist = Dist(rank, world, local, torch.device("cuda", local) if use_cuda else torch.device("cpu"))
    owned = _init_group(dist, "nccl" if use_cuda else "gloo", timeout_s)
    log.info("ddp under torchrun: rank %d of %d on %s", rank, world, dist.device)
    result = fn(dist, *args)  # on failure torchrun ends the other ranks; the group dies with the process
    if owned:
        tdist.destroy_process_group()
    return result


def _spawn(fn: Callable[..., Any], args: tuple, use_cuda: bool, nproc: int, timeout_s: float) -> Any:
    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1:
        raise BadValue(f"nproc must be a whole number >= 1, not {nproc!r}")
    if use_cuda and nproc > torch.cuda.device_count():
        raise BadValue(
            f"ddp with {nproc} ranks needs {nproc} GPUs; {torch.cuda.device_count()} visible (set nproc, or device=cpu)"
        )
    backend = "nccl" if use_cuda else "gloo"
    verbose = logging.getLogger().getEffectiveLevel() <= logging.DEBUG
    with tempfile.TemporaryDirectory(prefix="vvframe-launch-") as tmp:
        for attempt in range(1, _PORT_TRIES + 1):
            folder = Path(tmp, f"attempt{attempt}")
            folder.mkdir()
            port = _free_port()
            log.info("ddp: spawning %d %s ranks (127.0.0.1:%d)", nproc, backend, port)
            context = mp.start_processes(
                _rank_main,
                nprocs=nproc,
                join=False,
                start_method="spawn",
                args=(nproc, port, backend, use_cuda, timeout_s, str(folder), fn, args, verbose),
            )
            try:
                while not context.join(grace_period=_GRACE_S):
                    pass
            except ProcessException as exc:
                error = _failure(folder, nproc, exc)
                if attempt < _PORT_TRIES and _port_taken(folder):
                    log.warning("ddp: port %d was taken before rank 0 could use it; trying another", port)
                    continue
                raise error from None
            except BaseException:  # KeyboardInterrupt in the parent: take the ranks down with it
                _stop(context)
                raise
            return _result(folder, nproc)
    raise AssertionError("unreachable")  # pragma: no cover


def _rank_main(
    index: int,
    nproc: int,
    port: int,
    backend: str,
    use_cuda: bool,
    timeout_s: float,
    folder: str,
    fn: Callable[..., Any],
    args: tuple,
    verbose: bool,
) -> None:
    """One spawned rank: join the group, run ``fn``, hand rank 0's result back; on failure record it and exit 1."""
    os.environ.update(
        RANK=str(index),
        WORLD_SIZE=str(nproc),
        LOCAL_RANK=str(index),
        LOCAL_WORLD_SIZE=str(nproc),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    dist = Dist(index, nproc, index, torch.device("cuda", index) if use_cuda else torch.device("cpu"))
    setup_rank_logging(dist, None, verbose=verbose)
    stage = "init"
    try:
        _init_group(dist, backend, timeout_s)
        if not use_cuda and "OMP_NUM_THREADS" not in os.environ:
            cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
            torch.set_num_threads(max(1, cores // nproc))  # ranks share the cores they may use, as torchrun does
        stage = "run"
        result = fn(dist, *args)
        if index == 0:
            stage = "return"
            tmp = Path(folder, _RESULT + ".tmp")
            with open(tmp, "wb") as f:
                pickle.dump(result, f, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(tmp, Path(folder, _RESULT))
        stage = "finish"
        tdist.destroy_process_group()
    except BaseException as exc:  # noqa: BLE001 - a rank reports whatever ended it
        record = {
            "rank": index,
            "stage": stage,
            "time": time.time(),
            "type": type(exc).__name__,
            "message": str(exc),
            "traceback": "".join(traceback.format_exception(exc)),
        }
        with open(Path(folder, f"error{index}.pkl"), "wb") as f:
            pickle.dump(record, f)
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)  # not a normal exit: destructors of a process group with peers mid-collective may block
    # the rank's work is done and saved: leave without the interpreter's teardown, where gloo's threads can still
    # be running and abort the process now and then ("terminate called without an active exception")
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _errors(folder: Path) -> list[dict]:
    records = []
    for path in folder.glob("error*.pkl"):
        try:
            with open(path, "rb") as f:
                records.append(pickle.load(f))
        except Exception:  # noqa: BLE001 - a rank killed while writing: its record is lost, the others still say what happened
            continue
    return sorted(records, key=lambda r: r["time"])


def _failure(folder: Path, nproc: int, exc: ProcessException) -> LaunchError:
    """The error of the rank that failed first (others often fail after it, e.g. 'connection closed by peer')."""
    records = _errors(folder)
    if not records:
        return LaunchError(
            f"ddp rank {exc.error_index} of {nproc} died without a Python exception: {exc}", rank=exc.error_index
        )
    first = records[0]
    doing = {"init": "joining the process group", "return": "handing back its result"}.get(first["stage"])
    lines = [
        f"ddp rank {first['rank']} of {nproc} failed{' while ' + doing if doing else ''}:"
        f" {first['type']}: {first['message']}"
    ]
    lines += [
        f"(then rank {r['rank']} failed too: {r['type']}: {r['message'].splitlines()[0] if r['message'] else ''})"
        for r in records[1:]
    ]
    lines += [f"traceback of rank {first['rank']}:", first["traceback"].rstrip()]
    return LaunchError("\n".join(lines), rank=first["rank"], remote_traceback=first["traceback"])


def _port_taken(folder: Path) -> bool:
    records = _errors(folder)
    if not records or records[0]["stage"] != "init":
        return False
    text = records[0]["message"].lower()
    return "address already in use" in text or "eaddrinuse" in text


def _result(folder: Path, nproc: int) -> Any:
    path = folder / _RESULT
    if not path.is_file():
        records = _errors(folder)
        if records:
            first = records[0]
            raise LaunchError(
                f"ddp rank {first['rank']} of {nproc} was interrupted: {first['type']}",
                rank=first["rank"],
                remote_traceback=first["traceback"],
            )
        raise LaunchError(f"ddp rank 0 of {nproc} ended without handing back a result", rank=0)
    with open(path, "rb") as f:
        return pickle.load(f)


def _stop(context: Any) -> None:
    for process in context.processes:
        if process.is_alive():
            process.terminate()
    for process in context.processes:
        process.join(_GRACE_S)
        if process.is_alive():
            process.kill()
            process.join()
