"""White Gaussian noise in YCbCr (DeeperForensics-1.0 "GNC")."""
from __future__ import annotations

import math

import cv2
import numpy as np

from .base import Perturbation
from .ycbcr import YCBCR_TO_RGB

# The reference (DeeperForensics-1.0, perturbation/distortions.py, `gaussian_noise_color`) adds the
# noise to YCbCr rescaled to the studio ranges, Y to (16..235)/255 and Cb, Cr to (16..240)/255, and
# undoes that scaling after: on the full-range 0..1 scale its noise has standard deviation
# sqrt(p) * 255/219 in Y and sqrt(p) * 255/224 in Cb and Cr (about 15% above sqrt(p)).
STUDIO_GAIN = np.array([255.0 / 219.0, 255.0 / 224.0, 255.0 / 224.0])


def standard_normal(rng: np.random.Generator, count: int) -> np.ndarray:
    """`count` float32 N(0, 1) draws: Box-Muller on `rng.random((2, ceil(count / 2)), float32)`.

    With (u, v) those two rows, the draws are r*cos(2*pi*v) followed by r*sin(2*pi*v),
    r = sqrt(-2 ln(1 - u)), truncated to `count`.
    """
    # Box-Muller with OpenCV's vectorised log/sqrt/polarToCart: about 2.5 ms per 500x500 RGB frame
    # on the dev machine against about 8 ms for Generator.standard_normal (ziggurat) alone.
    half = (count + 1) // 2
    u = rng.random((2, half), dtype=np.float32)
    radius, angle = u[0], u[1]
    # Element-wise steps in place: fewer fresh pages to fault in on these multi-megabyte arrays.
    np.subtract(np.float32(1.0), radius, out=radius)  # 1 - u is in (0, 1]: the log is finite
    cv2.log(radius, dst=radius)
    np.multiply(radius, np.float32(-2.0), out=radius)
    cv2.sqrt(radius, dst=radius)
    np.multiply(angle, np.float32(2.0 * math.pi), out=angle)
    out = np.empty((2, half), dtype=np.float32)  # not in place: polarToCart does not promise aliasing works
    cv2.polarToCart(radius, angle, x=out[0], y=out[1])
    return out.reshape(-1)[:count]


class GaussianNoise(Perturbation):
    """Add `sqrt(variance) * STUDIO_GAIN * N(0, 1)` to Y, Cb, Cr (0..1 scale), back to RGB, clip, truncate."""

    version = 2  # 2: the reference code's computation (DeeperForensics-1.0 distortions.py)
    name = "gaussian_noise"
    parameter = "variance"
    levels = (0.001, 0.002, 0.005, 0.01, 0.05)
    seeded = True

    def transform(self, window: np.ndarray, seed: int, *, variance: float) -> np.ndarray:
        """Add independent noise to every pixel and every YCbCr channel of every frame.

        With `rng = default_rng(seed)`, frame after frame draws `standard_normal(rng, H * W * 3)`
        laid out as (H, W, [Y, Cb, Cr]); so a lone frame gets the noise of a window's first frame.
        """
        rng = np.random.default_rng(seed)
        # Noise added in YCbCr and converted back is the same noise mapped by the linear part of
        # YCbCr->RGB (the offsets cancel); scale to 0..255 so it adds to the uint8 frames directly.
        to_rgb = 255.0 * math.sqrt(variance) * YCBCR_TO_RGB * STUDIO_GAIN[None, :]
        # The last column, -0.5, turns the add's rounding into the reference's truncation
        # (`np.clip(b, 0, 255).astype(np.uint8)`): round(x - 0.5) = floor(x) but at exact ties.
        affine = np.concatenate([to_rgb, np.full((3, 1), -0.5)], axis=1).astype(np.float32)
        out = np.empty_like(window)
        # Frame by frame keeps the float temporaries small enough to stay in cache (~1/3 faster).
        for i, frame in enumerate(window):
            z = standard_normal(rng, frame.size).reshape(frame.shape)
            # Mixed-depth add computes in float, rounds and saturates to uint8: the clip of the formula.
            out[i] = cv2.add(frame, cv2.transform(z, affine), dtype=cv2.CV_8U)
        return out
