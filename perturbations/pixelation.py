"""Pixelation (DeeperForensics-1.0's "JPEG" column): resize down by a factor, back up to the original size."""
from __future__ import annotations

import cv2
import numpy as np

from .base import Perturbation

# Why not albumentations' Downscale: it shrinks with fx = 1/p (blocks of exactly p pixels) but
# enlarges back by W / round(W / p), so on sides not divisible by p (500 px at p = 3 or 6) the
# enlarged blocks drift off the averaged ones by up to p/2 pixels; on a 474 px photo that makes
# p = 4 damage more than p = 5. On divisible sides it computes the same as this (see the tests).


class Pixelation(Perturbation):
    """Replace every p x p block, aligned to the top-left corner, by its mean colour (p = `factor`)."""

    name = "pixelation"
    parameter = "factor"
    levels = (2, 3, 4, 5, 6)

    def transform(self, window: np.ndarray, seed: int, *, factor: int) -> np.ndarray:
        """Area-average each frame down by exactly `factor` and enlarge by `factor` with nearest neighbour.

        Blocks cut by the right or bottom edge take the mean of the pixels they hold.
        """
        p = int(factor)
        _, h, w, _ = window.shape
        rows, cols = -(-h // p), -(-w // p)  # blocks, counting partial ones
        # Zero padding to whole blocks keeps OpenCV's exact integer-factor area path; `weight`
        # then turns edge blocks' means over p*p back into means over the pixels inside.
        inside_rows = np.minimum(p, h - p * np.arange(rows))
        inside_cols = np.minimum(p, w - p * np.arange(cols))
        weight = (p * p / np.outer(inside_rows, inside_cols)).astype(np.float32)[:, :, None]
        out = np.empty_like(window)
        for i, frame in enumerate(window):
            padded = cv2.copyMakeBorder(frame, 0, rows * p - h, 0, cols * p - w, cv2.BORDER_CONSTANT, value=0)
            means = cv2.resize(padded.astype(np.float32), (cols, rows), interpolation=cv2.INTER_AREA) * weight
            small = np.rint(means).astype(np.uint8)
            # NEAREST_EXACT at an integer factor maps output x to block x // p exactly.
            out[i] = cv2.resize(small, (cols * p, rows * p), interpolation=cv2.INTER_NEAREST_EXACT)[:h, :w]
        return out
