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

import cv2
import numpy as np

from avlips.media.sample import SampleError

# JFIF RGB -> YCbCr (ITU-R BT.601, full range), the conversion the JPEG encoder applies.
_RGB_TO_YCBCR = np.array([[0.299, 0.587, 0.114],
                          [-0.168736, -0.331264, 0.5],
                          [0.5, -0.418688, -0.081312]])


def noise_steps(noisy: np.ndarray, clean: np.ndarray, step_fraction: float) -> tuple[int, int]:
    """(luma step, chroma step): `step_fraction` x the noise's standard deviation in Y and in Cb/Cr, in 1..255."""
    if noisy.shape != clean.shape or noisy.ndim != 3 or noisy.shape[-1] != 3:
        raise SampleError(f"noisy and clean frames must be the same (H, W, 3) shape, got {noisy.shape} and {clean.shape}")
    difference = cv2.subtract(noisy, clean, dtype=cv2.CV_16S)
    count = difference.shape[0] * difference.shape[1]
    # The RGB noise's sums and cross products are integers far below 2**53, so float64 holds them exactly
    # whatever the summation order: the steps, and so the bytes, are the same on any machine.
    sums = np.array(cv2.sumElems(difference)[:3])
    products = cv2.mulTransposed(difference.reshape(-1, 3), True, dtype=cv2.CV_64F)  # difference.T @ difference
    covariance = (products - np.outer(sums, sums) / count) / count
    variances = np.einsum("ij,jk,ik->i", _RGB_TO_YCBCR, covariance, _RGB_TO_YCBCR)  # of the noise in Y, Cb, Cr
    luma, chroma = float(variances[0]), float((variances[1] + variances[2]) / 2)

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
