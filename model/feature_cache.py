"""Per-window features looked up by the exact content they were computed from.

An audio perturbation leaves a window's frames as they were, a video one its audio. A detector's features
of the untouched half (LipFD's crop features, the sync expert's lip embeddings) are then those of the
clean window, so evaluate computes them once: the key is a hash of the input arrays themselves (xxh3-128 of
their bytes, with shape and dtype), not of a name, so a window whose pixels differ in one value misses.
A miss is only slower, never wrong, and the cache is bounded by bytes (least recently used dropped first).
"""
from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch
import xxhash

__all__ = ["FeatureCache", "content_key", "cache_from_setting"]


def content_key(*arrays: np.ndarray, context: tuple = ()) -> tuple:
    """A key for arrays' exact contents (and whatever else the features depend on, in `context`)."""
    digest = xxhash.xxh3_128()
    for array in arrays:
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array)
    return (digest.digest(), *context)


def cache_from_setting(megabytes: object, setting: str) -> "FeatureCache":
    """A cache of `megabytes` (a detector's `feature_cache_mb`); anything but an integer >= 0 is a DetectorError."""
    from avlips.model.detectors import DetectorError

    if isinstance(megabytes, bool) or not isinstance(megabytes, int) or megabytes < 0:
        raise DetectorError(f"{setting} must be an integer >= 0, got {megabytes!r}")
    return FeatureCache(megabytes << 20)


class FeatureCache:
    """Tensors by content key, at most `max_bytes` of them; `max_bytes` 0 keeps nothing."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = int(max_bytes)
        self._items: OrderedDict[tuple, torch.Tensor] = OrderedDict()
        self._bytes = 0
        self.hits = self.misses = 0

    def get(self, key: tuple) -> torch.Tensor | None:
        found = self._items.get(key)
        if found is None:
            self.misses += 1
            return None
        self.hits += 1
        self._items.move_to_end(key)
        return found

    def put(self, key: tuple, value: torch.Tensor) -> None:
        size = value.element_size() * value.nelement()
        if size > self.max_bytes:
            return
        if key in self._items:
            self._bytes -= self._size(self._items.pop(key))
        self._items[key] = value
        self._bytes += size
        while self._bytes > self.max_bytes:
            self._bytes -= self._size(self._items.popitem(last=False)[1])

    def clear(self) -> None:
        self._items.clear()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._items)

    @staticmethod
    def _size(value: torch.Tensor) -> int:
        return value.element_size() * value.nelement()
