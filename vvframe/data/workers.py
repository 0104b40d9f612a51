"""Parallel per-file work (packing shards, converting audio): one torch thread per job, fresh worker processes.

Per-file work (a resample, a silence check) is small, so the parallelism is the processes, never torch's threads:
:func:`one_torch_thread` for a job done in this process, :func:`process_pool` for several. torch is imported only
when one of them is used.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import multiprocessing
from collections.abc import Iterator


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """Run the block with one torch thread, then restore the count.

    Per-file work (a resample, a silence check) is small: threads only add synchronisation, which costs 20-50x
    on a busy machine (a 4 s, 16 kHz resample on 2 loaded cores: 31 ms with 2 threads, 0.6 ms with 1).
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def process_pool(workers: int) -> concurrent.futures.ProcessPoolExecutor:
    """A pool of fresh ("spawn") processes with one torch thread each.

    Not "fork": a child forked after the parent ran a multi-threaded torch operation can deadlock in OpenMP.
    """
    return concurrent.futures.ProcessPoolExecutor(
        max_workers=workers, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker
    )


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)  # the pool is the parallelism; threads per process would oversubscribe the cores
