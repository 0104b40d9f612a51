"""Run a function on one device, under DataParallel, or as DDP ranks (spawned here or started by torchrun).

``launch(fn, args, launcher)`` calls ``fn(dist, *args)`` where ``dist`` is a :class:`Dist`: this process's
rank, world size, local rank and device, with collective helpers that are no-ops for a single process.

For ``ddp`` outside torchrun the ranks are new processes started by torch's elastic launcher (the engine of
torchrun: ``torch.distributed.launcher.api.elastic_launch``, start method ``spawn``), so ``fn`` must be a
module-level function and ``args`` picklable; rank 0's return value comes back pickled (keep it small: metrics,
paths, not models). A rank that raises brings the others down and the caller gets a :class:`LaunchError`
carrying that rank's exception and traceback.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import datetime as _dt
import json
import logging
import os
import pickle
import signal
import sys
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import torch
import torch.distributed as tdist
from torch import nn

from vvframe.core.errors import BadValue, VvframeError
from vvframe.core.run import TRACEBACKS

if TYPE_CHECKING:
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

log = logging.getLogger(__name__)

LAUNCHERS = ("single", "dp", "ddp")
DEFAULT_TIMEOUT_S = 1800.0  # collective timeout (init_process_group): a rank that waits longer fails
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"  # the run's log file: with timestamps
_GRACE_S = 2  # after a signal: how long the ranks may take to end after it before SIGKILL (failures: torch waits 30 s)
_TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR")
_ELASTIC_SIGNALS = ("SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT")  # the elastic launcher handles these
_ELASTIC_SIGNALS_ENV = "TORCHELASTIC_SIGNALS_TO_HANDLE"  # ... and names them here, in this process's environment
_ELASTIC_LOGGERS = ("torch.distributed.elastic", "torch.distributed.launcher", "torch.multiprocessing")
_CPUINFO = Path("/proc/cpuinfo")  # read by native_bf16_cpu where torch has no probe of its own
_BF16_KERNELS = ("AVX512",)  # torch's CPU capabilities whose kernels can run bf16 natively (x86)
_ONEDNN_ISA_ENV = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")  # a cap on oneDNN's instruction sets
_ONEDNN_BF16_ISAS = ("BF16", "AMX", "FP16", "AVX10")  # ... that still allows native bf16 (AVX512_CORE_BF16, ...)
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


def torchrun_rank() -> tuple[int, int] | None:
    """(rank, world size) when torchrun, or a launcher like it, started this process; None otherwise.

    A launcher like torchrun sets RANK, WORLD_SIZE, LOCAL_RANK and MASTER_ADDR; all four must be there.
    """
    if not all(os.environ.get(name) for name in _TORCHRUN_ENV):
        return None
    return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])


def under_torchrun() -> bool:
    """Whether torchrun (or another launcher setting RANK, WORLD_SIZE, LOCAL_RANK and MASTER_ADDR) started this process."""
    return torchrun_rank() is not None


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
      otherwise start ``nproc`` ranks here with torch's elastic launcher (``fn`` must be a module-level function
      and ``args`` picklable; the result travels back pickled). A failing rank ends the others and raises
      :class:`LaunchError` here. ``timeout_s`` bounds every collective (a rank waiting longer than that fails).
    """
    if launcher not in LAUNCHERS:
        raise BadValue(f"launcher '{launcher}' is not one of {', '.join(repr(n) for n in LAUNCHERS)}")
    started = torchrun_rank()
    if launcher != "ddp":
        if started is not None and started[1] != 1:
            log.warning(
                "started by torchrun (rank %s of %s) with launcher '%s': every process runs the whole job;"
                " use launcher ddp",
                *started,
                launcher,
            )
        dist = Dist(0, 1, 0, pick_device(device))
        log.debug("launcher %s on %s", launcher, dist.device)
        return fn(dist, *args)
    use_cuda = _ddp_uses_cuda(device)
    if started is not None:
        return _run_rank(fn, args, use_cuda, timeout_s)
    return _spawn(fn, args, use_cuda, nproc, timeout_s)


def setup_logging(log_file: Path | None, *, rank: int = 0, verbose: bool = False) -> None:
    """Log to the console (rank 0: INFO; other ranks: WARNING, prefixed [rank N]) and, on rank 0, to ``log_file``.

    The file gets timestamps; ``verbose`` lets DEBUG through. The handlers set up here are marked, so that a
    second call replaces them (another rank, another run directory, or none).
    """
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "_vvframe", False)]:
        root.removeHandler(handler)
        handler.close()
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(logging.INFO if rank == 0 else logging.WARNING)
    console.setFormatter(logging.Formatter("%(message)s" if rank == 0 else f"[rank {rank}] %(message)s"))
    console.addFilter(lambda record: record.name != TRACEBACKS.name)  # a failed stage's traceback: the file only
    handlers: list[logging.Handler] = [console]
    if log_file is not None and rank == 0:
        log_file = Path(log_file)
        log_file.parent.mkdir(parents=True, exist_ok=True)
        file = logging.FileHandler(log_file, encoding="utf-8")
        file.setFormatter(logging.Formatter(LOG_FORMAT))
        handlers.append(file)
    for handler in handlers:
        handler._vvframe = True  # type: ignore[attr-defined]  # the mark: the next call replaces it
        root.addHandler(handler)


def setup_rank_logging(dist: Dist, log_file: Path | None = None, *, verbose: bool = False) -> None:
    """:func:`setup_logging` for ``dist``'s rank: rank 0 logs INFO to the console and ``log_file``, the others warn."""
    setup_logging(log_file, rank=dist.rank, verbose=verbose)


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
    bf16 autocast is emulated and runs several times slower than fp32 (6 times, a quickstart epoch on an AVX2
    CPU). Nor does a CPU whose torch kernels are held below AVX-512 (``ATEN_CPU_CAPABILITY=avx2``), or whose oneDNN
    convolutions are held to an instruction set without bf16 (``ONEDNN_MAX_CPU_ISA=AVX2``, ``AVX512_CORE``): None.
    """
    capability = _kernel_capability()
    if capability is not None and capability not in _BF16_KERNELS:
        log.debug("torch's CPU kernels run at %s: bf16 would be emulated", capability)
        return None
    for name in _ONEDNN_ISA_ENV:
        isa = os.environ.get(name, "").strip().upper()
        if isa and isa != "ALL" and not any(part in isa for part in _ONEDNN_BF16_ISAS):
            log.debug("%s=%s: oneDNN's bf16 would be emulated", name, isa)
            return None
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


def _kernel_capability() -> str | None:
    """The instruction set torch's own CPU kernels dispatch to ('AVX2', 'AVX512', ...), None where it does not say."""
    probe = getattr(getattr(torch.backends, "cpu", None), "get_cpu_capability", None)
    return probe() if callable(probe) else None


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


def release_freed_memory() -> bool:
    """Hand the memory that malloc keeps free (:func:`keep_freed_memory`) back to the kernel now; True if it did.

    For a loader worker just forked from the training process: a forked child shares every page of its parent
    copy-on-write, the free ones too, so each page the training loop wrote afterwards would be copied first. Once
    the child has let go of its free pages, the parent's stay its own and are written in place (its first write to
    each still faults once). Measured on 2 cores (the quickstart, 2 workers, 10 batches an epoch), the training
    process spent 1.5-1.8 s in the kernel in each epoch after the first without this; 0.4 s with this called in it
    before the fork (its pages come back fresh); 0.2 s with this called in the workers; 0.03 s without workers.
    Nothing where the libc is not glibc.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        malloc_trim = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return False
    return bool(malloc_trim(0))


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


def _run_rank(fn: Callable[..., Any], args: tuple, use_cuda: bool, timeout_s: float, *, spawned: bool = False) -> Any:
    """This process's rank as the environment describes it (torchrun's, or the elastic launcher's of :func:`_spawn`)."""
    rank, world, local = (int(os.environ[n]) for n in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    dist = Dist(rank, world, local, torch.device("cuda", local) if use_cuda else torch.device("cpu"))
    owned = _init_group(dist, "nccl" if use_cuda else "gloo", timeout_s)
    if not spawned:
        log.info("ddp under torchrun: rank %d of %d on %s", rank, world, dist.device)
    result = fn(dist, *args)  # on failure the launcher ends the other ranks; the group dies with the process
    if owned:
        tdist.destroy_process_group()
    return result


def _spawn(fn: Callable[..., Any], args: tuple, use_cuda: bool, nproc: int, timeout_s: float) -> Any:
    """Start ``nproc`` ranks with torch's elastic launcher (torchrun's engine, here in-process); rank 0's value."""
    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs, SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1:
        raise BadValue(f"nproc must be a whole number >= 1, not {nproc!r}")
    if use_cuda and nproc > torch.cuda.device_count():
        raise BadValue(
            f"ddp with {nproc} ranks needs {nproc} GPUs; {torch.cuda.device_count()} visible (set nproc, or device=cpu)"
        )
    verbose = logging.getLogger().getEffectiveLevel() <= logging.DEBUG
    log.info("ddp: starting %d %s ranks", nproc, "nccl" if use_cuda else "gloo")
    try:
        with tempfile.TemporaryDirectory(prefix="vvframe-launch-") as logs, _signals_kept(), _elastic_quiet(verbose):
            config = LaunchConfig(
                min_nodes=1,
                max_nodes=1,
                nproc_per_node=nproc,
                run_id=uuid.uuid4().hex,
                rdzv_backend="c10d",  # the launcher hosts the ranks' store itself, on a port the OS picks
                rdzv_endpoint="127.0.0.1:0",
                local_addr="127.0.0.1",
                max_restarts=0,
                start_method="spawn",
                logs_specs=DefaultLogsSpecs(log_dir=logs),  # each rank's error.json, read by _failure
                shutdown_timeout=_GRACE_S,
            )
            try:
                returned = elastic_launch(config, _rank_main)(fn, args, use_cuda, timeout_s, verbose)
            except ChildFailedError as exc:
                raise _failure(exc, Path(logs), nproc) from None
    except SignalException as exc:  # SIGINT, SIGTERM ...: the ranks are down; the signal now does what it did before
        signal.raise_signal(exc.sigval)  # e.g. KeyboardInterrupt, or the handler of the command line
        raise KeyboardInterrupt(str(exc)) from None  # a signal that this process ignores
    return pickle.loads(returned[0])


def _rank_main(fn: Callable[..., Any], args: tuple, use_cuda: bool, timeout_s: float, verbose: bool) -> bytes | None:
    """One rank started by :func:`_spawn`: run it as under torchrun; rank 0's value, pickled, or its error recorded."""
    from torch.distributed.elastic.multiprocessing.errors import get_error_handler

    rank, world = torchrun_rank() or (0, 1)
    setup_logging(None, rank=rank, verbose=verbose)
    try:
        if not use_cuda and "OMP_NUM_THREADS" not in os.environ:
            cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
            torch.set_num_threads(max(1, cores // world))  # ranks share the cores they may use, as torchrun does
        result = _run_rank(fn, args, use_cuda, timeout_s, spawned=True)
        returned = pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL) if rank == 0 else None
    except BaseException as exc:  # noqa: BLE001 - a rank reports whatever ended it
        with contextlib.suppress(Exception):  # the error.json that _failure reads (what @record writes)
            get_error_handler().record_exception(exc)
        _leave(1)  # no interpreter teardown: a process group's destructor may wait for peers mid-collective
    # once the launcher has the value, leave without the interpreter's teardown, where gloo's threads can still be
    # running and abort the process now and then ("terminate called without an active exception")
    atexit.register(_leave, 0)
    return returned


def _leave(code: int) -> NoReturn:
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _failure(exc: ChildFailedError, logs: Path, nproc: int) -> LaunchError:
    """The error of the rank that failed first: the oldest error.json (its peers fail after it, e.g. 'connection
    closed by peer', and the launcher names whichever it noticed first)."""
    found = []
    for path in sorted(logs.glob("*/attempt_*/*/error.json"), key=lambda p: p.stat().st_mtime_ns):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))["message"]
            found.append((int(path.parent.name), record["message"], record["extraInfo"]["py_callstack"]))
        except (OSError, ValueError, KeyError, TypeError):  # a rank killed while writing: the others still tell
            continue
    if not found:
        rank, failure = exc.get_first_failure()
        how = f"signal {failure.signal_name()}" if failure.exitcode < 0 else f"exit code {failure.exitcode}"
        return LaunchError(f"ddp rank {rank} of {nproc} died without a Python exception ({how})", rank=rank)
    (rank, message, trace), *later = found
    lines = [f"ddp rank {rank} of {nproc} failed: {message}"]
    lines += [f"(then rank {r} failed too: {m.splitlines()[0] if m else ''})" for r, m, _ in later]
    lines += [f"traceback of rank {rank}:", trace.rstrip()]
    return LaunchError("\n".join(lines), rank=rank, remote_traceback=trace)


@contextlib.contextmanager
def _elastic_quiet(verbose: bool) -> Iterator[None]:
    """Keep the elastic launcher's own log lines (a failed rank's traceback, 'Closing process ...') off the console
    unless ``verbose``: :class:`LaunchError` says what happened, once."""
    loggers = [] if verbose else [logging.getLogger(name) for name in _ELASTIC_LOGGERS]
    kept = [(logger, logger.propagate) for logger in loggers]
    quiet = logging.NullHandler()
    for logger in loggers:
        logger.propagate = False
        logger.addHandler(quiet)
    try:
        yield
    finally:
        for logger, propagate in kept:
            logger.removeHandler(quiet)
            logger.propagate = propagate


@contextlib.contextmanager
def _signals_kept() -> Iterator[None]:
    """Give back this process's signal handlers (and environment) after the elastic launcher replaced them."""
    names = [name for name in _ELASTIC_SIGNALS if hasattr(signal, name)]
    main = threading.current_thread() is threading.main_thread()
    handlers = {name: signal.getsignal(getattr(signal, name)) for name in names} if main else {}
    env = os.environ.get(_ELASTIC_SIGNALS_ENV)
    try:
        yield
    finally:
        for name, handler in handlers.items():
            if handler is not None:
                signal.signal(getattr(signal, name), handler)
        if env is None:
            os.environ.pop(_ELASTIC_SIGNALS_ENV, None)
        else:
            os.environ[_ELASTIC_SIGNALS_ENV] = env
