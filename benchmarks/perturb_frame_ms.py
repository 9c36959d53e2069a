"""Milliseconds per 500x500 frame for every perturbation type and level on one core, against a naive reference.

The naive reference computes the same formula the plain way, measured in the same run: float64
numpy without OpenCV or lookup tables for the per-frame types, and the ffmpeg command line with
temporary files for compression. Targets: under 5 ms per frame for per-frame types, under 20 ms
per frame for compression (a 5-frame window, divided by 5). The verdict reads the CPU time of the
one core the benchmark is pinned to (ffmpeg's included), because on a shared machine wall time also
counts the time the scheduler gives other processes; both are printed.

    python benchmarks/perturb_frame_ms.py [--repeat 3] [--types gaussian_noise,compression]
"""
from __future__ import annotations

import os

# One core: fix every thread pool before numpy and OpenCV start theirs.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

# The naive pixelation is the tests' own reference: the repository root makes `tests` importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import avlips.perturbations as P  # noqa: E402
from avlips.perturbations.block_wise import BLOCK, GREY, block_count  # noqa: E402
from avlips.perturbations.ycbcr import CHROMA_OFFSET, RGB_TO_YCBCR, YCBCR_TO_RGB  # noqa: E402
from tests.perturbations.test_perturbation_formulas import pixelation_reference  # noqa: E402
from timing import median_ms  # noqa: E402  (benchmarks/timing.py: this script's folder is on sys.path)

SIDE = 500  # LipFD's frame size
WINDOW = 5  # LipFD's window length
TARGET_MS = {"compression": 20.0}  # per frame; every other type: 5 ms
SHARED_MEDIA = Path(os.environ.get("AVLIPS_SHARED_MEDIA", Path(__file__).resolve().parents[2] / "shared" / "media"))
PHOTO = SHARED_MEDIA / "image" / "sadtalker_people_0.png"


def test_window() -> np.ndarray:
    """Five 500x500 RGB frames panning across a photo (or a synthetic texture when the photo is absent)."""
    if PHOTO.exists():
        img = cv2.resize(cv2.imread(str(PHOTO)), (SIDE, SIDE), interpolation=cv2.INTER_CUBIC)
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    else:
        yy, xx = np.mgrid[0:SIDE, 0:SIDE] / SIDE
        channels = [128 + 90 * np.sin(9 * xx + 4 * yy), 128 + 90 * np.cos(7 * yy), 128 + 60 * np.sin(20 * xx * yy)]
        img = np.stack(channels, axis=-1)
        img = img.round().astype(np.uint8)
    return np.stack([np.roll(img, 3 * i, axis=1) for i in range(WINDOW)])


# ---- naive references: the formulas in float64 numpy --------------------------------------------


def _to_ycbcr(x: np.ndarray) -> np.ndarray:
    return (x.astype(np.float64) / 255.0) @ RGB_TO_YCBCR.T + CHROMA_OFFSET


def _to_uint8(ycc: np.ndarray) -> np.ndarray:
    # Clipped and truncated, as the reference's `astype(np.uint8)` (DeeperForensics-1.0 distortions.py).
    rgb = (ycc - CHROMA_OFFSET) @ YCBCR_TO_RGB.T
    return np.floor(np.clip(rgb, 0.0, 1.0) * 255.0).astype(np.uint8)


def naive_saturation(x: np.ndarray, level: int, seed: int) -> np.ndarray:
    p = P.get("saturation").value(level)
    ycc = _to_ycbcr(x)
    ycc[..., 1:] = 0.5 + (ycc[..., 1:] - 0.5) * p
    return _to_uint8(ycc)


def naive_contrast(x: np.ndarray, level: int, seed: int) -> np.ndarray:
    return (x.astype(np.float64) * P.get("contrast").value(level)).astype(np.uint8)


def naive_gaussian_noise(x: np.ndarray, level: int, seed: int) -> np.ndarray:
    p = P.get("gaussian_noise").value(level)
    noise = np.random.default_rng(seed).standard_normal(x.shape)
    # The reference's studio-range YCbCr round trip scales its noise by 255/219 (Y) and 255/224 (Cb, Cr).
    gain = np.array([255 / 219, 255 / 224, 255 / 224])
    return _to_uint8(_to_ycbcr(x) + np.sqrt(p) * gain * noise)


def naive_gaussian_blur(x: np.ndarray, level: int, seed: int) -> np.ndarray:
    k = int(P.get("gaussian_blur").value(level))
    t = np.arange(k) - k // 2
    w = np.exp(-(t**2) / (2 * (k / 6.0) ** 2))
    w /= w.sum()
    r = k // 2
    f = np.pad(x.astype(np.float64), ((0, 0), (r, r), (0, 0), (0, 0)), mode="reflect")
    f = sum(w[i] * f[:, i : i + x.shape[1]] for i in range(k))
    f = np.pad(f, ((0, 0), (0, 0), (r, r), (0, 0)), mode="reflect")
    f = sum(w[i] * f[:, :, i : i + x.shape[2]] for i in range(k))
    return np.rint(f).astype(np.uint8)


def naive_pixelation(x: np.ndarray, level: int, seed: int) -> np.ndarray:
    # The reference's "JPEG", bilinear down to (h // p, w // p) and back up: the float64 formula the
    # tests check the package against.
    p = int(P.get("pixelation").value(level))
    return np.stack([np.rint(pixelation_reference(frame, p)) for frame in x]).astype(np.uint8)


def naive_block_wise(x: np.ndarray, level: int, seed: int) -> np.ndarray:
    t, h, w, _ = x.shape
    n = block_count(h, w, int(P.get("block_wise").value(level)))
    rng = np.random.default_rng(seed)
    out = x.astype(np.float64)
    for f in range(t):
        rows, cols = rng.integers(0, h - BLOCK, n), rng.integers(0, w - BLOCK, n)  # corners 0..h-9, as the reference
        for r, c in zip(rows, cols):
            out[f, r : r + BLOCK, c : c + BLOCK] = GREY
    return out.astype(np.uint8)


def naive_compression(x: np.ndarray, level: int, seed: int) -> np.ndarray:
    """The usual script: pipe frames to the ffmpeg CLI, write an mp4, decode it with ffmpeg again."""
    import imageio_ffmpeg

    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    t, h, w, _ = x.shape
    crf = str(P.get("compression").value(level))
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "window.mp4")
        encode = [ffmpeg, "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}",
                  "-r", "25", "-i", "-", "-c:v", "libx264", "-crf", crf, "-preset", "medium", "-threads", "1",
                  "-pix_fmt", "yuv420p", path]  # fmt: skip
        subprocess.run(encode, input=x.tobytes(), check=True)
        decode = [ffmpeg, "-loglevel", "error", "-threads", "1", "-i", path, "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
        raw = subprocess.run(decode, capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(t, h, w, 3)


NAIVE: dict[str, Callable[[np.ndarray, int, int], np.ndarray]] = {
    "saturation": naive_saturation,
    "contrast": naive_contrast,
    "gaussian_noise": naive_gaussian_noise,
    "gaussian_blur": naive_gaussian_blur,
    "pixelation": naive_pixelation,
    "compression": naive_compression,
    "block_wise": naive_block_wise,
}


def ms_per_frame(fn: Callable[[], np.ndarray], repeat: int) -> tuple[float, float]:
    """Median wall and CPU milliseconds of `repeat` calls on the window, per frame, after a warm-up call."""
    wall, cpu = median_ms(fn, repeat)
    return wall / WINDOW, cpu / WINDOW


def agreement(ours: np.ndarray, naive: np.ndarray, name: str) -> str:
    """Max |difference| of the two outputs (PSNR between them where the noise or codec path differs)."""
    if name in ("gaussian_noise", "compression"):  # different random draws / colour converters
        mse = float(((ours.astype(np.float64) - naive) ** 2).mean())
        return "psnr inf" if mse == 0 else f"psnr {10 * np.log10(255.0**2 / mse):.1f}"
    return f"max {int(np.abs(ours.astype(np.int16) - naive).max())}"


def main() -> None:
    """Print the table: type, level, parameter, wall and CPU ms/frame, naive ms/frame, speed-up, target."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="timed calls per cell (median is shown)")
    parser.add_argument("--types", default=",".join(P.names()), help="comma-separated type names")
    args = parser.parse_args()

    cv2.setNumThreads(1)
    if hasattr(os, "sched_setaffinity"):  # pin this process (and ffmpeg, which inherits it) to one core
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[-1]})
    window = test_window()
    print(f"{WINDOW} frames {SIDE}x{SIDE}, 1 core, median of {args.repeat}; "
          "naive = float64 numpy (compression: ffmpeg CLI)")  # fmt: skip
    print(f"load average at start {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores "
          "(other work inflates every number)")  # fmt: skip
    header = (f"{'type':<15} {'L':>2} {'param':>6} {'ms/frame':>9} {'cpu ms':>7} {'naive ms':>9} {'speed-up':>9} "
              f"{'target':>7}  agree")  # fmt: skip
    print(header)
    print("-" * len(header))
    for name in args.types.split(","):
        pert = P.get(name)
        target = TARGET_MS.get(name, 5.0)
        for level in P.LEVELS:
            ours, ours_cpu = ms_per_frame(lambda: pert.apply(window, level, 0), args.repeat)
            naive, _ = ms_per_frame(lambda: NAIVE[name](window, level, 0), args.repeat)
            agree = agreement(pert.apply(window, level, 0), NAIVE[name](window, level, 0), name)
            verdict = "ok" if ours_cpu < target else "SLOW"
            print(f"{name:<15} {level:>2} {pert.value(level):>6g} {ours:>9.2f} {ours_cpu:>7.2f} {naive:>9.2f} "
                  f"{naive / ours:>8.1f}x "
                  f"{target:>5g}ms {verdict:>4}  {agree}")  # fmt: skip
    print(f"load average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
