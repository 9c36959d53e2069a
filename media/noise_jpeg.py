"""JPEG for frames that carry added noise: full chroma, quantised in proportion to the noise.

A frame with white noise added is mostly incompressible detail. Stored losslessly (PNG) it costs about
3 MB per five 500x500 frames at every level; stored as the clean frames are (4:2:0 JPEG at q92) it loses
about half the noise's variance, most of it the chroma noise that subsampling averages away.

Here the frame is written as a baseline JPEG with 4:4:4 sampling and flat quantisation tables: every DCT
coefficient of a component gets the same step, `step_fraction` times the standard deviation of the noise
in that component (luma: Y; chroma: the mean of the Cb and Cr variances), computed from the noisy frame
minus the clean one. White noise puts equal variance in every coefficient, so a flat table is the one that
spends bits evenly on it; uniform rounding with step d adds about d^2 / 12 of variance, so with a fraction
f the stored noise's variance is about (1 + f^2 / 12) times the applied one plus the 8-bit roundings of the
colour conversion (about +2.5% at f = 0.5 on the demo's and the shared videos' face crops, level 1).
Clipping at 0 and 255 pulls the other way at the highest level. benchmarks/perturb_storage.py measures it.

Any JPEG decoder reads the result (the tables travel in the file); `media.sample.decode_image` does.
"""
from __future__ import annotations

import io

import numpy as np

from avlips.media.sample import SampleError

# JFIF RGB -> YCbCr weights (ITU-R BT.601, full range) times 1000: integer sums keep the statistics exact,
# so the chosen steps, and the bytes, do not depend on floating-point summation order (int64 holds the
# sum of squares up to about 10^8 pixels).
_WEIGHTS = np.array([[299, 587, 114],      # Y
                     [-169, -331, 500],    # Cb
                     [500, -419, -81]],    # Cr
                    dtype=np.int64)
_SCALE = 1000


def noise_steps(noisy: np.ndarray, clean: np.ndarray, step_fraction: float) -> tuple[int, int]:
    """(luma step, chroma step): `step_fraction` x the noise's standard deviation in Y and in Cb/Cr, in 1..255."""
    if noisy.shape != clean.shape or noisy.ndim != 3 or noisy.shape[-1] != 3:
        raise SampleError(f"noisy and clean frames must be the same (H, W, 3) shape, got {noisy.shape} and {clean.shape}")
    difference = noisy.astype(np.int64).reshape(-1, 3) - clean.astype(np.int64).reshape(-1, 3)
    components = difference @ _WEIGHTS.T  # exact integers: the noise in Y, Cb, Cr times _SCALE
    count = components.shape[0]
    sums = [int(s) for s in components.sum(axis=0)]
    squares = [int(s) for s in np.einsum("ij,ij->j", components, components)]
    # n * variance * n, in Python integers (no overflow), then one division.
    scaled = [count * square - total * total for square, total in zip(squares, sums)]
    luma = scaled[0] / (count * count * _SCALE**2)
    chroma = (scaled[1] + scaled[2]) / (2 * count * count * _SCALE**2)

    def step(variance: float) -> int:
        return int(min(255, max(1, round(step_fraction * max(variance, 0.0) ** 0.5))))

    return step(luma), step(chroma)


def encode_noisy_frame(noisy: np.ndarray, clean: np.ndarray, step_fraction: float = 0.5) -> bytes:
    """`noisy` (RGB uint8) as a 4:4:4 JPEG with flat tables sized to its noise over `clean`."""
    from PIL import Image

    if noisy.dtype != np.uint8:
        raise SampleError(f"frames must be uint8, got {noisy.dtype}")
    luma, chroma = noise_steps(noisy, clean, step_fraction)
    buffer = io.BytesIO()
    # subsampling=0 is 4:4:4; optimize builds Huffman tables for this image (about 9% smaller on noise).
    Image.fromarray(np.ascontiguousarray(noisy), "RGB").save(
        buffer, "JPEG", qtables=[[luma] * 64, [chroma] * 64], subsampling=0, optimize=True)
    return buffer.getvalue()
