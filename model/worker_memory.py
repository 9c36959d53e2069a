"""Memory of a loader worker process: batch buffers shared with the training process and reused.

A DataLoader worker hands each batch to the training process through shared memory. Fresh shared
memory for every batch is expensive: the kernel faults, allocates and zeroes each 4 KiB page of a new
segment (shared memory gets no transparent huge pages), about 6,000 pages per sample of LipFD inputs,
and the segment is torn down again when the batch is dropped. Measured with perf on 2 cores, that was a
third of the loader's CPU time. So each worker keeps a pool of shared buffers ("slots") and refills a
slot once the training process has dropped every tensor made from it.

The protocol is one byte per slot. The worker marks a slot LENT before filling it; the receiving
process wraps the slot in a lease that every tensor of the batch keeps alive (it is their numpy base),
and the lease marks the slot FREE when the last of them is gone. Nothing is overwritten while any
tensor of a batch lives: keeping batches (`list(loader)`) is safe and only makes the pool grow.

`tune_allocator` does the same for the worker's private memory: it keeps glibc from handing each
freed composite or decoded frame back to the kernel, only to fault it in again for the next sample.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import torch

__all__ = ["SlotPool", "SharedParts", "lend", "receive", "tune_allocator"]

_HEADER = 64  # bytes before the first part; byte 0 is the slot's state
_ALIGN = 64  # every part starts on a cache line
_FREE, _LENT = 0, 1


@dataclass(frozen=True)
class SharedParts:
    """Arrays lent from one slot, with what the receiving process needs to rebuild them as tensors."""

    slot: torch.Tensor  # uint8, the whole shared slot (pickled as a handle, not as data)
    layout: tuple[tuple[str, str, tuple[int, ...], int], ...]  # (name, numpy dtype, shape, byte offset)
    arrays: Mapping[str, np.ndarray]  # this process's views, to fill before the batch is sent


class SlotPool:
    """A worker's shared slots; a slot is reused once its receiver has released it."""

    def __init__(self) -> None:
        self._slots: list[tuple[torch.Tensor, np.ndarray]] = []  # (shared tensor, its bytes)

    def __len__(self) -> int:
        return len(self._slots)

    def acquire(self, nbytes: int) -> tuple[torch.Tensor, np.ndarray]:
        """A slot of at least `nbytes` past its header, marked LENT: a free one if any, else a new one."""
        for slot, raw in self._slots:
            if raw[0] == _FREE and raw.size - _HEADER >= nbytes:
                raw[0] = _LENT
                return slot, raw
        storage = torch.UntypedStorage._new_shared(_HEADER + nbytes)  # the process's sharing strategy
        slot = torch.empty(0, dtype=torch.uint8).set_(storage)
        raw = slot.numpy()
        raw[0] = _LENT
        self._slots.append((slot, raw))
        return slot, raw


def lend(pool: SlotPool, parts: Mapping[str, tuple[tuple[int, ...], Any]]) -> SharedParts:
    """Arrays of the given shapes and dtypes ({name: (shape, dtype)}) in one slot of the pool."""
    layout, offset = [], _HEADER
    for name, (shape, dtype) in parts.items():
        dtype = np.dtype(dtype)
        layout.append((name, dtype.str, tuple(int(n) for n in shape), offset))
        size = int(np.prod(shape)) * dtype.itemsize
        offset += (size + _ALIGN - 1) // _ALIGN * _ALIGN
    slot, raw = pool.acquire(offset - _HEADER)
    return SharedParts(slot, tuple(layout), _views(raw, tuple(layout)))


def receive(slot: torch.Tensor, layout: tuple[tuple[str, str, tuple[int, ...], int], ...]
            ) -> dict[str, torch.Tensor]:
    """The tensors of a lent slot in the receiving process; the slot is freed when all of them are gone."""
    lease = _Lease(slot)
    return {name: torch.from_numpy(array) for name, array in _views(np.asarray(lease), layout).items()}


def _views(raw: np.ndarray, layout: tuple[tuple[str, str, tuple[int, ...], int], ...]) -> dict[str, np.ndarray]:
    views = {}
    for name, dtype_str, shape, offset in layout:
        dtype = np.dtype(dtype_str)
        size = int(np.prod(shape)) * dtype.itemsize
        views[name] = raw[offset:offset + size].view(dtype).reshape(shape)
    return views


class _Lease:
    """Owner of a received slot's memory: numpy arrays made from it keep it alive, and its end frees the slot."""

    def __init__(self, slot: torch.Tensor) -> None:
        self._slot = slot  # keeps the mapping alive
        self._raw = slot.numpy()

    @property
    def __array_interface__(self) -> dict[str, Any]:
        return self._raw.__array_interface__

    def __del__(self, free: int = _FREE) -> None:  # bound now: module globals may be gone at shutdown
        self._raw[0] = free  # no tensor of this batch is left: the worker may refill the slot


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (glibc malloc.h)
_tuned: list[bool] = []


def tune_allocator() -> None:
    """Keep freed large blocks in this process for reuse (glibc only; a no-op elsewhere, and once per process).

    By default glibc serves blocks over ~128 KiB-32 MiB with fresh mmaps, or trims the heap top when
    they are freed, so a worker's 7.5 MB composites and 750 KB decoded frames are faulted in anew for
    every sample. Serving them from the heap and trimming only above 256 MiB keeps the worker's memory
    at its high-water mark (a few hundred MB) and makes those allocations nearly free.
    """
    if _tuned:
        return
    _tuned.append(True)
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, 32 * 1024 * 1024)  # glibc's maximum on 64-bit
        libc.mallopt(_M_TRIM_THRESHOLD, 256 * 1024 * 1024)
    except (OSError, AttributeError):  # not glibc (musl, macOS): the defaults stay
        pass
