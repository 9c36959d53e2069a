"""Gaussian blur (DeeperForensics-1.0 "GB"): a k x k kernel with sigma k / 6."""
from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from .base import Perturbation


class GaussianBlur(Perturbation):
    """Blur each frame with a `kernel_size` x `kernel_size` Gaussian of sigma `kernel_size / 6`."""

    version = 2  # 2: the reference code's computation (DeeperForensics-1.0 distortions.py)
    name = "gaussian_blur"
    parameter = "kernel_size"
    levels = (7, 9, 13, 17, 21)

    def params(self, level: int, sample: str | None = None) -> dict[str, Any]:
        """Kernel size from the table and its sigma, k / 6."""
        k = int(self.value(level, sample))
        return {"kernel_size": k, "sigma": k / 6.0}

    def transform(self, window: np.ndarray, seed: int, *, kernel_size: int, sigma: float) -> np.ndarray:
        """Blur every uint8 frame with cv2.GaussianBlur (reflect-101 borders), as the reference does.

        The reference (DeeperForensics-1.0, perturbation/distortions.py, `gaussian_blur`) calls
        cv2.GaussianBlur on the uint8 frame: OpenCV's fixed-point path, within 2 grey levels of the
        exact float convolution; these are the reference's pixels.
        """
        k, s = int(kernel_size), float(sigma)
        out = np.empty_like(window)
        for i, frame in enumerate(window):
            out[i] = cv2.GaussianBlur(frame, (k, k), s)
        return out
