"""Each perturbation at each level equals its DeeperForensics-1.0 formula, written here independently.

Where the package delegates to albumentations (contrast, blur), these tests are the proof that
albumentations 2.0.8, as configured, computes the formula: they check the pixels, not the call.
"""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from perturbations import CATALOGUE, apply
from perturbations.block_wise import block_count
from perturbations.compression import decode_h264, encode_h264

TOLERANCE = 1  # grey levels: rounding and fixed-point differences


def random_window(shape: tuple[int, ...] = (2, 40, 48, 3), seed: int = 7) -> np.ndarray:
    """Uniform random uint8 frames: the worst case for rounding differences."""
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def max_diff(a: np.ndarray, b: np.ndarray) -> float:
    """Largest absolute difference of two arrays, as float."""
    return float(np.abs(a.astype(np.float64) - np.asarray(b, dtype=np.float64)).max())


def to_uint8(rgb01: np.ndarray) -> np.ndarray:
    """0..1 RGB -> uint8 by clipping and rounding to nearest."""
    return np.rint(np.clip(rgb01, 0.0, 1.0) * 255.0)


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
    expected = to_uint8(rgb(y, 0.5 + (cb - 0.5) * p, 0.5 + (cr - 0.5) * p))
    out = apply("saturation", x, level, seed=0)
    assert max_diff(out, expected) <= TOLERANCE
    assert max_diff(out, x) > 20  # it did something


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


@pytest.mark.parametrize("level", [1, 2, 3, 4, 5])
def test_gaussian_noise_is_added_in_ycbcr(level):
    p = (0.001, 0.002, 0.005, 0.01, 0.05)[level - 1]
    x = random_window((2, 25, 31, 3))  # H * W * 3 odd: each frame drops its last sine draw
    rng = np.random.default_rng(11)
    z = np.stack([box_muller(rng, frame.size).reshape(frame.shape) for frame in x])  # frame after frame
    y, cb, cr = ycbcr(x / 255.0)
    s = math.sqrt(p)
    expected = to_uint8(rgb(y + s * z[..., 0], cb + s * z[..., 1], cr + s * z[..., 2]))
    out = apply("gaussian_noise", x, level, seed=11)
    assert max_diff(out, expected) <= TOLERANCE


def test_gaussian_noise_statistics_per_ycbcr_channel():
    # Independent of the draw layout: on mid grey (no clipping) the change in each of Y, Cb, Cr
    # has variance p (0..1 scale), mean 0, and the three channels are uncorrelated.
    p = 0.005
    x = np.full((1, 200, 200, 3), 128, dtype=np.uint8)
    out = apply("gaussian_noise", x, 3, seed=3)
    before = np.stack(ycbcr(x / 255.0), axis=-1).reshape(-1, 3)
    after = np.stack(ycbcr(out / 255.0), axis=-1).reshape(-1, 3)
    d = after - before
    assert np.allclose(d.var(axis=0), p, rtol=0.05)
    assert np.abs(d.mean(axis=0)).max() < 0.003
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
        assert max_diff(blurred, np.rint(gaussian_blur_reference(frame, k))) <= TOLERANCE
        # OpenCV's float path agrees too (its uint8 path uses fixed point and is up to 2 levels off)
        cv = cv2.GaussianBlur(frame.astype(np.float32), (k, k), k / 6.0)
        assert max_diff(blurred, np.rint(cv)) <= TOLERANCE


def pixelation_reference(frame: np.ndarray, p: int) -> np.ndarray:
    """Each p x p block from the top-left (cut at the edges) set to its rounded mean, by loops."""
    out = np.empty(frame.shape, dtype=np.float64)
    for r in range(0, frame.shape[0], p):
        for c in range(0, frame.shape[1], p):
            out[r : r + p, c : c + p] = np.rint(frame[r : r + p, c : c + p].mean(axis=(0, 1)))
    return out


@pytest.mark.parametrize("level", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("size", [(60, 120), (53, 71)])  # divisible by 2..6, and not
def test_pixelation_is_flat_block_means(level, size):
    p = (2, 3, 4, 5, 6)[level - 1]
    x = random_window((2, *size, 3))
    out = apply("pixelation", x, level, seed=0)
    for frame, pixelated in zip(x, out):
        assert max_diff(pixelated, pixelation_reference(frame, p)) <= TOLERANCE


@pytest.mark.parametrize("level", [1, 2, 3, 4, 5])
def test_pixelation_is_albumentations_downscale_on_divisible_sides(level):
    # albumentations' Downscale (area down, nearest up) is the same operation where p divides the
    # sides; elsewhere its up-scaling misaligns the blocks (see perturbations/pixelation.py).
    from perturbations._albumentations import albumentations

    p = (2, 3, 4, 5, 6)[level - 1]
    A = albumentations()
    down = A.Downscale(
        scale_range=(1 / p, 1 / p), interpolation_pair={"downscale": cv2.INTER_AREA, "upscale": cv2.INTER_NEAREST}, p=1
    )
    x = random_window((2, 60, 120, 3))
    assert max_diff(apply("pixelation", x, level, seed=0), down(images=x)["images"]) <= TOLERANCE


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
        rows = rng.integers(0, h - 7, size=p)
        cols = rng.integers(0, w - 7, size=p)
        for r, c in zip(rows, cols):
            expected[f, r : r + 8, c : c + 8] = 128
    out = apply("block_wise", x, level, seed=5)
    assert np.array_equal(out, expected)


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
