"""What the loader keeps per process, in one object: `this_process`.

The loader runs in the training process (num_workers=0, validation, `composite_inputs`) and in
DataLoader worker processes. A few things are made once per process and reused; they are listed here
so that none hides in a module global:

- `fast_path`: whether the CPU resize kernels match torch in this process (checked on first use by
  `model.composite_inputs`; a DataLoader's workers are handed the parent's answer instead of checking
  again, see `adopt_fast_path`).
- the thread pools that run the resize kernels over a batch, one per thread count.
- in a worker, the pool of shared-memory batch buffers (`model.worker_memory.SlotPool`) and glibc's
  allocator settings (`tune_allocator`).
- how workers are started: a forkserver that preloads `avlips.model.loader_worker_template`, so each
  worker starts with the kernels and colormap loaded (spawn where there is no forkserver).

A forked child has none of its parent's threads and must not lend its parent's batch buffers: at fork
the pools and buffers are forgotten (`forget_after_fork`); the kernel check stays.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .worker_memory import SlotPool, tune_allocator

__all__ = ["LoaderProcess", "this_process", "WORKER_TEMPLATE"]

WORKER_TEMPLATE = "avlips.model.loader_worker_template"  # imported once by the forkserver


class LoaderProcess:
    """The loader's per-process state (one instance per process: `this_process`)."""

    def __init__(self) -> None:
        self.fast_path: bool | None = None  # None until checked in (or handed to) this process
        self._resize_pools: dict[int, ThreadPoolExecutor] = {}
        self._batch_slots: SlotPool | None = None

    # -- the CPU resize path

    def adopt_fast_path(self, checked: bool | None) -> None:
        """Take the parent's kernel check (a worker need not check again); an answer of our own is kept."""
        if self.fast_path is None and checked is not None:
            self.fast_path = checked

    def resize_pool(self, threads: int) -> ThreadPoolExecutor:
        """A thread pool of `threads` threads for the resize kernels (made on first use)."""
        if threads not in self._resize_pools:
            self._resize_pools[threads] = ThreadPoolExecutor(threads, thread_name_prefix="lipfd-resize")
        return self._resize_pools[threads]

    # -- a DataLoader worker

    def enter_worker(self, fast_path: bool | None) -> None:
        """Called when a stream starts in a worker: keep freed memory for reuse, take the parent's kernel check."""
        tune_allocator()
        self.adopt_fast_path(fast_path)

    def batch_slots(self) -> SlotPool:
        """This worker's shared batch buffers, reused once the training process has dropped a batch."""
        if self._batch_slots is None:
            self._batch_slots = SlotPool()
        return self._batch_slots

    @staticmethod
    def worker_context() -> Any:
        """How loader workers start: from a clean forkserver (spawn where there is none), never a plain fork.

        A fork copies every lock that this process's other threads (Beam, Dask, numba, gRPC) hold at that
        instant; a worker that then needs one waits forever (seen: a worker stuck in torch.manual_seed).
        The server imports WORKER_TEMPLATE once, which loads the resize kernels and the colormap, so each
        worker starts in milliseconds, not seconds.
        """
        import multiprocessing

        if "forkserver" not in multiprocessing.get_all_start_methods():
            return multiprocessing.get_context("spawn")
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload([WORKER_TEMPLATE])
        return context

    def forget_after_fork(self) -> None:
        """In a forked child: drop the parent's thread pools (their threads are not here) and batch buffers."""
        self._resize_pools = {}
        self._batch_slots = None


this_process = LoaderProcess()

if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=this_process.forget_after_fork)
