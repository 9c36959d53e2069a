"""Block-wise occlusion (DeeperForensics-1.0 "BW"): grey 8x8 blocks at random places; not in AVLips' set."""
from __future__ import annotations

import numpy as np

from .base import Perturbation

BLOCK = 8  # block side in pixels
GREY = 128  # block colour: mid grey on every channel


def block_count(height: int, width: int, blocks_per_256px: int) -> int:
    """Blocks per frame: `min(h, w) // 256 * p`, at least `p` so frames under 256 px are perturbed too."""
    # The upstream formula gives 0 blocks below 256 px (e.g. a 224 face crop), which would make
    # every level a no-op; flooring the multiplier at 1 keeps the levels graded there.
    return max(1, min(height, width) // 256) * blocks_per_256px


class BlockWise(Perturbation):
    """Paint `block_count(h, w, p)` grey 8x8 blocks at uniformly random places in each frame."""

    version = 2  # 2: the reference code's computation (DeeperForensics-1.0 distortions.py)
    name = "block_wise"
    parameter = "blocks_per_256px"
    levels = (16, 32, 48, 64, 80)
    seeded = True

    def transform(self, window: np.ndarray, seed: int, *, blocks_per_256px: int) -> np.ndarray:
        """Occlude each frame independently; blocks lie wholly inside the frame and may overlap.

        With `rng = default_rng(seed)`, frame after frame draws the top-left rows
        `rng.integers(0, h - 8, n)` then columns `rng.integers(0, w - 8, n)`; so a lone frame
        gets the blocks of a window's first frame. Corners run over 0..h-9 as the reference's
        `randint(0, h - 1 - 8)` does, so the last row and column are never painted.
        """
        _, h, w, _ = window.shape
        n = block_count(h, w, int(blocks_per_256px))
        rng = np.random.default_rng(seed)
        offsets = np.arange(BLOCK)
        out = window.copy()
        for frame in out:
            # max(1, ...): an 8-pixel side (MIN_SIDE) has only corner 0, where the reference would fail.
            rows = rng.integers(0, max(1, h - BLOCK), size=n)
            cols = rng.integers(0, max(1, w - BLOCK), size=n)
            # One fancy-indexed write of all n blocks: indices broadcast to (n, 8, 8).
            frame[(rows[:, None] + offsets)[:, :, None], (cols[:, None] + offsets)[:, None, :]] = GREY
        return out
