"""Shared batch slots: a slot is refilled only after every tensor made from it is gone."""

from __future__ import annotations

import gc
import io
import pickle
from multiprocessing.reduction import ForkingPickler

import numpy as np
import torch.multiprocessing  # noqa: F401  (registers the shared-memory reductions of tensors)

from avlips.model.worker_memory import SlotPool, lend, receive, tune_allocator

PARTS = {"x": ((2, 3), np.float32), "y": ((5,), np.uint8)}


def _send(parts):
    """What a worker's queue does with the slot: pickle it as a shared-memory handle, then unpickle."""
    buffer = io.BytesIO()
    ForkingPickler(buffer, pickle.HIGHEST_PROTOCOL).dump((parts.slot, parts.layout))
    return receive(*pickle.loads(buffer.getvalue()))


def test_received_tensors_hold_the_slot_until_the_last_view_is_gone():
    pool = SlotPool()
    first = lend(pool, PARTS)
    first.arrays["x"][...] = np.arange(6).reshape(2, 3)
    first.arrays["y"][...] = 7
    tensors = _send(first)
    assert tensors["x"].tolist() == [[0, 1, 2], [3, 4, 5]] and tensors["y"].tolist() == [7] * 5
    # Every part starts on its own cache line, after the header.
    assert all(offset % 64 == 0 and offset >= 64 for *_, offset in first.layout)

    kept = tensors["x"][1]  # a view outlives the batch's own tensors
    del tensors
    gc.collect()
    assert len(pool) == 1 and lend(pool, PARTS).slot.data_ptr() != first.slot.data_ptr()  # still lent: a new slot
    assert kept.tolist() == [3, 4, 5]

    del kept
    gc.collect()
    again = lend(pool, PARTS)
    assert again.slot.data_ptr() == first.slot.data_ptr() and len(pool) == 2  # the first slot, refilled


def test_a_larger_request_gets_a_larger_slot():
    pool = SlotPool()
    small = lend(pool, {"x": ((4,), np.float32)})
    del small
    _ = lend(pool, {"x": ((1000,), np.float32)})  # the free slot is too small
    assert len(pool) == 2


def test_tune_allocator_is_harmless_to_call_twice():
    tune_allocator()
    tune_allocator()
    assert np.empty(10_000_000, np.uint8).size == 10_000_000
