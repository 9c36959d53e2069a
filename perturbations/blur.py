"""Gaussian blur (DeeperForensics-1.0 "GB"): a k x k kernel with sigma k / 6."""
from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

from ._albumentations import albumentations
from .base import Perturbation


class GaussianBlur(Perturbation):
    """Blur each frame with a `kernel_size` x `kernel_size` Gaussian of sigma `kernel_size / 6`."""

    name = "gaussian_blur"
    parameter = "kernel_size"
    levels = (7, 9, 13, 17, 21)

    def params(self, level: int, sample: str | None = None) -> dict[str, Any]:
        """Kernel size from the table and its sigma, k / 6."""
        k = int(self.value(level, sample))
        return {"kernel_size": k, "sigma": k / 6.0}

    def transform(self, window: np.ndarray, seed: int, *, kernel_size: int, sigma: float) -> np.ndarray:
        """Blur every frame (albumentations' separable float kernel, reflect-101 borders)."""
        return _blur_transform(int(kernel_size), float(sigma))(images=window)["images"]


@lru_cache(maxsize=None)
def _blur_transform(kernel_size: int, sigma: float) -> Any:
    A = albumentations()
    # Degenerate ranges fix k and sigma. albumentations 2.0.8 convolves with a float kernel, which
    # matches the exact formula; cv2.GaussianBlur's uint8 fixed-point path is up to 2 levels off.
    return A.GaussianBlur(blur_limit=(kernel_size, kernel_size), sigma_limit=(sigma, sigma), p=1.0)
