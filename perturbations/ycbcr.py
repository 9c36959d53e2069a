"""The YCbCr colour space the perturbations use: full-range BT.601 (JPEG/JFIF) on a 0..1 scale.

With RGB in 0..1, Y lies in 0..1 and Cb, Cr are centred on 0.5, which is the scale the
DeeperForensics formulas (`Cb, Cr = 0.5 + (C - 0.5) * p`) assume. It is OpenCV's
COLOR_RGB2YCrCb on float input, whose channel order is Y, Cr, Cb and whose coefficients are
these rounded to three decimals; here the order is Y, Cb, Cr and the coefficients are exact.
"""
from __future__ import annotations

import numpy as np

KR = 0.299  # BT.601 luma weight of red
KB = 0.114  # BT.601 luma weight of blue
KG = 1.0 - KR - KB

# Rows give Y, Cb - 0.5, Cr - 0.5 from R, G, B (all on 0..1).
RGB_TO_YCBCR = np.array(
    [
        [KR, KG, KB],
        [-KR / (2 * (1 - KB)), -KG / (2 * (1 - KB)), 0.5],
        [0.5, -KG / (2 * (1 - KR)), -KB / (2 * (1 - KR))],
    ]
)
CHROMA_OFFSET = np.array([0.0, 0.5, 0.5])
YCBCR_TO_RGB = np.linalg.inv(RGB_TO_YCBCR)


def rgb_matrix(ycbcr_matrix: np.ndarray) -> np.ndarray:
    """The RGB-space matrix of a linear map on centred YCbCr (Y, Cb - 0.5, Cr - 0.5)."""
    return YCBCR_TO_RGB @ np.asarray(ycbcr_matrix, dtype=np.float64) @ RGB_TO_YCBCR
