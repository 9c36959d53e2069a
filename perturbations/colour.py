"""Colour saturation and colour contrast (DeeperForensics-1.0 "CS" and "CC")."""
from __future__ import annotations

from functools import lru_cache
from typing import Any

import cv2
import numpy as np

from ._albumentations import albumentations
from .base import Perturbation
from .ycbcr import rgb_matrix


class Saturation(Perturbation):
    """Scale chroma toward grey in YCbCr: `Cb, Cr = 0.5 + (C - 0.5) * chroma_scale`, Y unchanged."""

    version = 2  # 2: the reference code's computation (DeeperForensics-1.0 distortions.py)
    name = "saturation"
    parameter = "chroma_scale"
    levels = (0.4, 0.3, 0.2, 0.1, 0.0)

    def transform(self, window: np.ndarray, seed: int, *, chroma_scale: float) -> np.ndarray:
        """Desaturate every frame by one 3x3 RGB matrix in float, clipped and truncated to uint8."""
        # The YCbCr round trip is linear, so it folds into one RGB matrix
        # (chroma_scale * rgb + (1 - chroma_scale) * Y). The reference (DeeperForensics-1.0,
        # perturbation/distortions.py, `color_saturation`) ends with `.astype(np.uint8)`, which
        # truncates; cv2.transform on uint8 would round (half a level brighter on average) and
        # through 10-bit fixed-point coefficients, so the matrix is applied in float32.
        matrix = _saturation_matrix(float(chroma_scale))
        out = np.empty_like(window)
        for i, frame in enumerate(window):  # frame by frame: the float temporaries stay small
            rgb = cv2.transform(frame.astype(np.float32), matrix)
            np.clip(rgb, 0.0, 255.0, out=rgb)
            out[i] = rgb.astype(np.uint8)  # toward zero, as the reference
        return out


@lru_cache(maxsize=None)
def _saturation_matrix(chroma_scale: float) -> np.ndarray:
    return rgb_matrix(np.diag([1.0, chroma_scale, chroma_scale])).astype(np.float32)


class Contrast(Perturbation):
    """Multiply pixel values by `factor` (albumentations' contrast with no brightness change)."""

    name = "contrast"
    parameter = "factor"
    levels = (0.85, 0.725, 0.6, 0.475, 0.35)

    def transform(self, window: np.ndarray, seed: int, *, factor: float) -> np.ndarray:
        """Multiply every value by the factor through albumentations' uint8 lookup table (truncating)."""
        return _contrast_transform(float(factor))(images=window)["images"]


@lru_cache(maxsize=None)
def _contrast_transform(factor: float) -> Any:
    A = albumentations()
    # In albumentations 2.0.8 the contrast is `img * (1 + c)` about 0 (not the mean), with beta 0
    # when brightness is 0; a degenerate range fixes c. tests/perturbations checks the effect.
    return A.RandomBrightnessContrast(brightness_limit=(0.0, 0.0), contrast_limit=(factor - 1.0, factor - 1.0), p=1.0)
