"""Pixelation (DeeperForensics-1.0's "JPEG" column): resize down by a factor, back up to the original size."""
from __future__ import annotations

import cv2
import numpy as np

from .base import Perturbation

# As the reference (DeeperForensics-1.0, perturbation/distortions.py, `jpeg_compression`): OpenCV's
# default bilinear interpolation both ways, down to (w // p, h // p) and back to (w, h). The result
# is a soft, aliased low-resolution look, not flat p x p blocks; on sides not divisible by p the
# floor in `w // p` stretches the image slightly, as it does in the reference.


class Pixelation(Perturbation):
    """Shrink each frame to (w // factor, h // factor) and enlarge it back, both bilinear (OpenCV)."""

    version = 2  # 2: the reference code's computation (DeeperForensics-1.0 distortions.py)
    name = "pixelation"
    parameter = "factor"
    levels = (2, 3, 4, 5, 6)

    def transform(self, window: np.ndarray, seed: int, *, factor: int) -> np.ndarray:
        """Bilinear down by the integer factor (floored sizes) and bilinear back up, frame by frame."""
        p = int(factor)
        _, h, w, _ = window.shape
        small = (max(1, w // p), max(1, h // p))  # frames are at least MIN_SIDE (8) > 6 px: never 0
        out = np.empty_like(window)
        for i, frame in enumerate(window):
            shrunk = cv2.resize(frame, small, interpolation=cv2.INTER_LINEAR)
            out[i] = cv2.resize(shrunk, (w, h), interpolation=cv2.INTER_LINEAR)
        return out
