"""Each perturbation at each level equals its DeeperForensics-1.0 formula, written here independently.

The formulas are those of the reference code (DeeperForensics-1.0, perturbation/distortions.py), not
only of its paper: float results truncated to uint8 (`astype(np.uint8)`), YCbCr noise scaled by the
studio-range round trip, OpenCV's uint8 Gaussian blur, and bilinear down- and up-scaling for the
"JPEG" (pixelation) type. Where the package delegates to albumentations (contrast), these tests are
the proof that albumentations 2.0.8, as configured, computes the formula: they check the pixels.
"""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from avlips.perturbations import CATALOGUE, apply
from avlips.perturbations.block_wise import block_count
from avlips.perturbations.compression import decode_h264, encode_h264

TOLERANCE = 1  # grey levels: rounding and fixed-point differences


def random_window(shape: tuple[int, ...] = (2, 40, 48, 3), seed: int = 7) -> np.ndarray:
    """Uniform random uint8 frames: the worst case for rounding differences."""
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def max_diff(a: np.ndarray, b: np.ndarray) -> float:
    """Largest absolute difference of two arrays, as float."""
    return float(np.abs(a.astype(np.float64) - np.asarray(b, dtype=np.float64)).max())


def truncate_uint8(rgb01: np.ndarray) -> np.ndarray:
    """0..1 RGB -> uint8 as the reference does it: clip, then `astype(np.uint8)` (toward zero)."""
    return np.floor(np.clip(rgb01 * 255.0, 0.0, 255.0))


# Full-range BT.601 (JFIF) written as the textbook equations, not as the package's matrices.
def ycbcr(rgb01: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r, g, b = rgb01[..., 0], rgb01[..., 1], rgb01[..., 2]
    y = 0.299 * r + 0.587 * g + 0.114 * b
    return y, 0.5 + (b - y) / 1.772, 0.5 + (r - y) / 1.402


def rgb(y: np.ndarray, cb: np.ndarray, cr: np.ndarray) -> np.ndarray:
    r = y + 1.402 * (cr - 0.5)
    b = y + 1.772 * (cb - 0.5)
    g = (y - 0.299 * r - 0.114 * b) / 0.587
    return np.stack([r, g, b], axis=-1)


def test_ycbcr_is_opencv_full_range_bt601():
    x = random_window((1, 16, 16, 3))[0].astype(np.float32) / 255
    y, cb, cr = ycbcr(x.astype(np.float64))
    ocv = cv2.cvtColor(x, cv2.COLOR_RGB2YCrCb)  # channel order Y, Cr, Cb
    assert max_diff(ocv[..., 0], y) < 1e-5
    assert max_diff(ocv[..., 1], cr) < 2e-3  # OpenCV rounds 1/1.402 to 0.713
    assert max_diff(ocv[..., 2], cb) < 2e-3  # and 1/1.772 to 0.564
    assert max_diff(rgb(y, cb, cr), x) < 1e-9


@pytest.mark.parametrize("level", [1, 2, 3, 4, 5])
def test_saturation_scales_chroma_in_ycbcr(level):
    p = (0.4, 0.3, 0.2, 0.1, 0.0)[level - 1]
    x = random_window()
    y, cb, cr = ycbcr(x / 255.0)
    exact = rgb(y, 0.5 + (cb - 0.5) * p, 0.5 + (cr - 0.5) * p)
    out = apply("saturation", x, level, seed=0)
    assert max_diff(out, truncate_uint8(exact)) <= TOLERANCE
    assert max_diff(out, x) > 20  # it did something
    # Truncated, as the reference's `ycbcr2bgr(...).astype(np.uint8)`, not rounded: rounding would sit
    # half a grey level above it on average.
    assert abs(float((out - truncate_uint8(exact)).mean())) < 0.1


def test_saturation_level_5_is_grey():
    out = apply("saturation", random_window(), 5, seed=0).astype(int)
    assert np.abs(out[..., 0] - out[..., 1]).max() <= TOLERANCE
    assert np.abs(out[..., 1] - out[..., 2]).max() <= TOLERANCE


@pytest.mark.parametrize("level", [1, 2, 3, 4, 5])
def test_contrast_multiplies_values(level):
    p = (0.85, 0.725, 0.6, 0.475, 0.35)[level - 1]
    x = random_window()
    out = apply("contrast", x, level, seed=0)
    assert max_diff(out, np.rint(x * p)) <= TOLERANCE
    assert max_diff(out, x * p) < 1.0  # truncation or rounding of x * p, nothing else


def box_muller(rng: np.random.Generator, count: int) -> np.ndarray:
    """The documented draws of gaussian_noise, computed in float64."""
    half = (count + 1) // 2
    u = rng.random((2, half), dtype=np.float32).astype(np.float64)
    r = np.sqrt(-2.0 * np.log(1.0 - u[0]))
    return np.concatenate([r * np.cos(2 * np.pi * u[1]), r * np.sin(2 * np.pi * u[1])])[:count]


# The reference adds the noise to YCbCr rescaled to the studio ranges (Y to 16..235, Cb/Cr to 16..240,
# over 255) and undoes that scaling afterwards, so on the full-range 0..1 scale the noise's standard
# deviation is sqrt(p) * 255/219 in Y and sqrt(p) * 255/224 in Cb and Cr.
NOISE_GAIN = np.array([255 / 219, 255 / 224, 255 / 224])


@pytest.mark.parametrize("level", [1, 2, 3, 4, 5])
def test_gaussian_noise_is_added_in_ycbcr(level):
    p = (0.001, 0.002, 0.005, 0.01, 0.05)[level - 1]
    x = random_window((2, 25, 31, 3))  # H * W * 3 odd: each frame drops its last sine draw
    rng = np.random.default_rng(11)
    z = np.stack([box_muller(rng, frame.size).reshape(frame.shape) for frame in x])  # frame after frame
    y, cb, cr = ycbcr(x / 255.0)
    n = math.sqrt(p) * NOISE_GAIN * z
    expected = truncate_uint8(rgb(y + n[..., 0], cb + n[..., 1], cr + n[..., 2]))
    out = apply("gaussian_noise", x, level, seed=11)
    assert max_diff(out, expected) <= TOLERANCE


def test_gaussian_noise_statistics_per_ycbcr_channel():
    # Independent of the draw layout: on mid grey (no clipping) the change in each of Y, Cb, Cr
    # has variance p * gain^2 (0..1 scale), the three channels are uncorrelated, and the reference's
    # truncation to uint8 lowers every RGB value by half a level on average (Y by 0.5/255, Cb/Cr not).
    p = 0.005
    x = np.full((1, 200, 200, 3), 128, dtype=np.uint8)
    out = apply("gaussian_noise", x, 3, seed=3)
    before = np.stack(ycbcr(x / 255.0), axis=-1).reshape(-1, 3)
    after = np.stack(ycbcr(out / 255.0), axis=-1).reshape(-1, 3)
    d = after - before
    assert np.allclose(d.var(axis=0), p * NOISE_GAIN**2, rtol=0.05)
    assert abs(d[:, 0].mean() + 0.5 / 255) < 0.001
    assert np.abs(d[:, 1:].mean(axis=0)).max() < 0.001
    corr = np.corrcoef(d.T)
    assert np.abs(corr[np.triu_indices(3, 1)]).max() < 0.03


def gaussian_blur_reference(frame: np.ndarray, k: int) -> np.ndarray:
    """k x k Gaussian of sigma k/6, separable, reflect-101 borders, in float64."""
    sigma = k / 6.0
    t = np.arange(k) - k // 2
    w = np.exp(-(t**2) / (2 * sigma**2))
    w /= w.sum()
    f = frame.astype(np.float64)
    r = k // 2
    f = np.pad(f, ((r, r), (0, 0), (0, 0)), mode="reflect")  # numpy "reflect" is OpenCV's reflect-101
    f = sum(w[i] * f[i : i + frame.shape[0]] for i in range(k))
    f = np.pad(f, ((0, 0), (r, r), (0, 0)), mode="reflect")
    return sum(w[i] * f[:, i : i + frame.shape[1]] for i in range(k))


@pytest.mark.parametrize("level", [1, 2, 3, 4, 5])
def test_gaussian_blur_matches_kernel_formula(level):
    k = (7, 9, 13, 17, 21)[level - 1]
    x = random_window((2, 40, 56, 3))
    out = apply("gaussian_blur", x, level, seed=0)
    for frame, blurred in zip(x, out):
        # The reference blurs the uint8 frame with cv2.GaussianBlur((k, k), k / 6): OpenCV's fixed-point
        # uint8 path, which is what the pixels must be, and which stays within 2 levels of the formula.
        assert np.array_equal(blurred, cv2.GaussianBlur(frame, (k, k), k / 6.0))
        assert max_diff(blurred, np.rint(gaussian_blur_reference(frame, k))) <= 2


def bilinear_resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize with half-pixel centres, sample positions clamped to the image (OpenCV's rule)."""

    def taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        c = np.clip((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0, n_in - 1)
        i0 = np.floor(c).astype(int)
        return i0, np.minimum(i0 + 1, n_in - 1), c - i0

    r0, r1, fr = taps(image.shape[0], height)
    c0, c1, fc = taps(image.shape[1], width)
    f = image.astype(np.float64)
    f = f[r0] * (1 - fr)[:, None, None] + f[r1] * fr[:, None, None]
    return f[:, c0] * (1 - fc)[None, :, None] + f[:, c1] * fc[None, :, None]


def pixelation_reference(frame: np.ndarray, p: int) -> np.ndarray:
    """The reference's "JPEG": bilinear down to (h // p, w // p), rounded to uint8, bilinear back up."""
    h, w, _ = frame.shape
    small = np.rint(bilinear_resize(frame, h // p, w // p))
    return bilinear_resize(small, h, w)


@pytest.mark.parametrize("level", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("size", [(60, 120), (53, 71)])  # divisible by 2..6, and not
def test_pixelation_is_bilinear_down_and_up(level, size):
    p = (2, 3, 4, 5, 6)[level - 1]
    x = random_window((2, *size, 3))
    out = apply("pixelation", x, level, seed=0)
    for frame, pixelated in zip(x, out):
        expected = pixelation_reference(frame, p)
        # Two uint8 passes in OpenCV's fixed point, each about 0.12 of a level low on average.
        assert max_diff(pixelated, expected) <= 2
        assert float(np.abs(pixelated - np.rint(expected)).mean()) < 0.35


def test_pixelation_is_smooth_not_blocky():
    # Bilinear up-scaling (the reference's cv2.resize default), not nearest-neighbour blocks: a ramp
    # stays a ramp with (almost) every column distinct, where blocks would repeat each value p times.
    ramp = np.tile(np.linspace(0, 240, 120).astype(np.uint8)[None, :, None], (30, 1, 3))
    out = apply("pixelation", ramp, 3, seed=0)  # p = 4
    assert len(np.unique(out[15, :, 0])) > 90


def smooth_window(frames: int = 3, h: int = 96, w: int = 128) -> np.ndarray:
    """A smooth colour pattern drifting right one pixel per frame."""
    yy, xx = np.mgrid[0:h, 0 : w + frames] / max(h, w)
    img = np.stack(
        [128 + 90 * np.sin(5 * xx + 2 * yy), 128 + 90 * np.cos(4 * yy - xx), 128 + 60 * np.sin(7 * xx * yy)], axis=-1
    )
    return np.stack([img[:, i : i + w] for i in range(frames)]).round().astype(np.uint8)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a.astype(np.float64) - b) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def test_compression_is_close_at_crf30_and_worse_at_crf40():
    x = smooth_window()
    low = apply("compression", x, 1, seed=0)  # CRF 30
    high = apply("compression", x, 5, seed=0)  # CRF 40
    assert 25 < psnr(low, x) < 60  # close, but lossy
    assert psnr(high, x) < psnr(low, x)


def test_compression_is_h264_and_crf_sets_the_rate():
    x = smooth_window()
    low, high = encode_h264(x, 30), encode_h264(x, 40)
    assert low[:4] == b"\x00\x00\x00\x01"  # Annex-B start code
    assert len(high) < len(low)
    assert decode_h264(low).shape == x.shape


def test_compression_odd_size_and_single_frame():
    x = smooth_window(frames=3, h=45, w=61)
    out = apply("compression", x, 2, seed=0)
    assert out.shape == x.shape and psnr(out, x) > 25
    one = apply("compression", x[0], 2, seed=0)
    assert one.shape == x[0].shape and psnr(one, x[0]) > 25


@pytest.mark.parametrize("level", [1, 3, 5])
def test_block_wise_paints_the_documented_blocks(level):
    p = (16, 32, 48, 64, 80)[level - 1]
    x = random_window((2, 64, 80, 3))
    t, h, w, _ = x.shape
    rng = np.random.default_rng(5)
    expected = x.copy()
    for f in range(t):  # frame after frame: p rows, then p columns
        rows = rng.integers(0, h - 8, size=p)  # the reference's randint(0, h - 1 - 8): 0..h-9
        cols = rng.integers(0, w - 8, size=p)
        for r, c in zip(rows, cols):
            expected[f, r : r + 8, c : c + 8] = 128
    out = apply("block_wise", x, level, seed=5)
    assert np.array_equal(out, expected)


def test_block_wise_never_reaches_the_last_row_or_column():
    # The reference draws top-left corners from 0..h-9 (randint(0, h - 1 - 8)), so a block ends at
    # row h-2 at the latest: the last row and column are never painted.
    x = np.zeros((4, 24, 24, 3), dtype=np.uint8)  # 16 blocks per frame in a 16x16 range of corners
    for seed in range(5):
        out = apply("block_wise", x, 1, seed=seed)
        assert out[:, -1].max() == 0 and out[:, :, -1].max() == 0


def test_block_wise_changes_only_grey_8x8_blocks():
    x = np.zeros((1, 300, 300, 3), dtype=np.uint8)  # black: every block shows
    out = apply("block_wise", x, 1, seed=2)[0]
    painted = out.any(axis=-1)
    assert set(np.unique(out[painted])) == {128}
    n, labels, stats, _ = cv2.connectedComponentsWithStats(painted.astype(np.uint8), connectivity=4)
    assert 1 <= n - 1 <= 16  # at most 16 separate regions (blocks may touch or overlap)
    assert (stats[1:, cv2.CC_STAT_WIDTH] >= 8).all() and (stats[1:, cv2.CC_STAT_HEIGHT] >= 8).all()
    assert 64 < painted.sum() <= 16 * 64


@pytest.mark.parametrize(
    ("h", "w", "p", "n"), [(500, 500, 16, 16), (1080, 1920, 16, 64), (600, 1024, 80, 160), (224, 224, 32, 32)]
)
def test_block_count(h, w, p, n):
    assert block_count(h, w, p) == n


def test_every_type_is_tested_here():
    # A new catalogue entry must come with a formula test in this file.
    tested = {"saturation", "contrast", "gaussian_noise", "gaussian_blur", "pixelation", "compression", "block_wise"}
    assert set(CATALOGUE) == tested
