"""torch's CPU bilinear resize as numba kernels, straight from a uint8 composite to LipFD's float inputs.

torch's CPU bilinear resize (align_corners=False, no antialias) is separable: for each output pixel it
takes the two source columns of each of the two source rows, t = fma(x0, w0, x1 * w1), then
out = fma(t0, h0, t1 * h1), with source coordinates src = fma(in/out, dst + 0.5, -0.5) in float32
(measured on torch 2.13's AVX2 kernels: weights bit-identical, values within 1-3 float32 ulps; torch's
own results differ by as much between 1 and 2 threads, its vectorised and scalar loops rounding
differently). The kernels here compute that formula straight from the uint8 composite, with the
channel flip / normalisation folded into a 256-entry table per channel: no float copy of the composite,
one pass per axis, about 10x less CPU time than torch. OpenCV's float INTER_LINEAR is not used: it
computes coordinates in double, which moves values by up to 0.05 (of 255) from torch's.

This module only computes; whether the kernels are used in a process (they are checked against torch
on first use) is decided in `model.composite_inputs`.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import torch

from .inputs import CLIP_MEAN, CLIP_STD, COMPOSITE_SHAPE, CROP_SIZE, FRAME_SIZE, GLOBAL_SIZE, NUM_FRAMES, SCALE_BOXES

__all__ = ["bilinear_coords", "compiled_kernels", "resize_plan", "channel_table", "resize_composite",
           "resize_global_rows", "small_crops", "crop_taps", "bilinear_matrix", "scratch_buffers", "warm_up"]


def bilinear_coords(n_in: int, n_out: int, offset: int = 0
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """torch's source indices (i0, i1, shifted by offset) and float32 weights (w0, w1) of a bilinear resize."""
    f32 = np.float32
    if n_in == n_out:
        index = np.arange(n_out, dtype=np.int64) + offset
        return index, index.copy(), np.ones(n_out, f32), np.zeros(n_out, f32)
    scale = f32(n_in) / f32(n_out)  # float32 division, as torch's area_pixel_compute_scale
    centre = np.arange(n_out, dtype=f32) + f32(0.5)
    # One rounding of scale * centre - 0.5 (a fused multiply-add): the float64 product of two float32
    # values is exact, and the sum is exact in float64 for these magnitudes.
    src = (np.float64(scale) * centre.astype(np.float64) - 0.5).astype(f32)
    src = np.maximum(src, f32(0))
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    w1 = np.clip(src - i0.astype(f32), f32(0), f32(1)).astype(f32)
    i1 = i0 + (i0 < n_in - 1)
    w0 = (f32(1) - w1).astype(f32)
    return i0 + offset, i1 + offset, w0, w1


try:  # numba comes with librosa; without it the torch path is used
    from numba import njit, types
    from numba.extending import intrinsic
except ImportError:  # pragma: no cover
    njit = None

if njit is not None:

    @intrinsic
    def _fma32(typingctx, a, b, c):
        """a * b + c with one rounding (llvm.fma: the FMA instruction), as torch's contracted float32 code."""
        sig = types.float32(types.float32, types.float32, types.float32)

        def codegen(context, builder, signature, args):
            return builder.fma(*args)
        return sig, codegen

    @njit(nogil=True, cache=True)
    def _width_pass_u8(row, lut, chan, xs0, xs1, ww0, ww1, t):
        """One source row (W, 3) uint8 resized along its width into t (3, ow), through the channel table."""
        c0, c1, c2 = chan[0], chan[1], chan[2]
        l0, l1, l2 = lut[0], lut[1], lut[2]
        t0, t1, t2 = t[0], t[1], t[2]
        for x in range(t.shape[1]):
            p = row[xs0[x]]
            q = row[xs1[x]]
            a = ww0[x]
            b = ww1[x]
            t0[x] = _fma32(l0[p[c0]], a, l0[q[c0]] * b)
            t1[x] = _fma32(l1[p[c1]], a, l1[q[c1]] * b)
            t2[x] = _fma32(l2[p[c2]], a, l2[q[c2]] * b)

    @njit(nogil=True, cache=True)
    def _resize_u8(src, lut, chan, ys0, ys1, hw0, hw1, xs0, xs1, ww0, ww1, out, tmp):
        """Bilinear resize of rows/cols (ys, xs) of src (H, W, 3) uint8 into out (3, oh, ow) float32.

        Output channel c reads lut[c][src[..., chan[c]]]; width pass first, then the height pass, as
        torch. Output rows go in order and need two source rows each, so only the last two width-passed
        rows are kept (tmp (2, 3, ow)): they stay in cache, and each source row is width-passed once.
        """
        oh, ow = out.shape[1], out.shape[2]
        held = np.array([-1, -1])  # the source row in each tmp slot
        for y in range(oh):
            for r, other in ((ys0[y], ys1[y]), (ys1[y], ys0[y])):
                if held[0] != r and held[1] != r:
                    slot = 1 if held[0] == other else 0  # never overwrite the other row this y needs
                    _width_pass_u8(src[r], lut, chan, xs0, xs1, ww0, ww1, tmp[slot])
                    held[slot] = r
            s0 = 0 if held[0] == ys0[y] else 1
            s1 = 0 if held[0] == ys1[y] else 1
            h0 = hw0[y]
            h1 = hw1[y]
            for c in range(3):
                ta = tmp[s0, c]
                tb = tmp[s1, c]
                o = out[c, y]
                for x in range(ow):
                    o[x] = _fma32(ta[x], h0, tb[x] * h1)

    @njit(nogil=True, cache=True)
    def _width_pass_u8_interleaved(row, lut, chan, xs0, xs1, ww0, ww1, t):
        """_width_pass_u8 into t (ow, 3): the channels of a pixel side by side, as channels-last memory holds them.

        Its own loop, not _width_pass_u8 over strided columns of t: numba's strided arrays made the whole
        evaluate stage about 3% slower (47.5 s against 46.2 s on the demo, measured 2026-12-07)."""
        c0, c1, c2 = chan[0], chan[1], chan[2]
        l0, l1, l2 = lut[0], lut[1], lut[2]
        for x in range(t.shape[0]):
            p = row[xs0[x]]
            q = row[xs1[x]]
            a = ww0[x]
            b = ww1[x]
            t[x, 0] = _fma32(l0[p[c0]], a, l0[q[c0]] * b)
            t[x, 1] = _fma32(l1[p[c1]], a, l1[q[c1]] * b)
            t[x, 2] = _fma32(l2[p[c2]], a, l2[q[c2]] * b)

    @njit(nogil=True, cache=True)
    def _resize_u8_interleaved(src, lut, chan, ys0, ys1, hw0, hw1, xs0, xs1, ww0, ww1, out, tmp):
        """_resize_u8 into channels-last out (oh, ow, 3) (tmp (2, ow, 3)): the same values, and the height pass
        runs over each output row as one contiguous run of ow * 3 floats, which the compiler vectorises."""
        oh = out.shape[0]
        n = out.shape[1] * 3
        held = np.array([-1, -1])
        for y in range(oh):
            for r, other in ((ys0[y], ys1[y]), (ys1[y], ys0[y])):
                if held[0] != r and held[1] != r:
                    slot = 1 if held[0] == other else 0
                    _width_pass_u8_interleaved(src[r], lut, chan, xs0, xs1, ww0, ww1, tmp[slot])
                    held[slot] = r
            ta = tmp[0 if held[0] == ys0[y] else 1].reshape(n)
            tb = tmp[0 if held[0] == ys1[y] else 1].reshape(n)
            o = out[y].reshape(n)
            h0 = hw0[y]
            h1 = hw1[y]
            for i in range(n):
                o[i] = _fma32(ta[i], h0, tb[i] * h1)

    @njit(nogil=True, cache=True)
    def _resize_f32(src, ys0, ys1, hw0, hw1, xs0, xs1, ww0, ww1, out, tmp):
        """Bilinear resize of rows/cols (ys, xs) of src (3, H, W) float32 into out (3, oh, ow) float32."""
        oh, ow = out.shape[1], out.shape[2]
        r_lo = min(ys0.min(), ys1.min())
        r_hi = max(ys0.max(), ys1.max()) + 1
        for c in range(3):
            plane = src[c]
            for r in range(r_lo, r_hi):
                row = plane[r]
                t = tmp[r - r_lo]
                for x in range(ow):
                    t[x] = _fma32(row[xs0[x]], ww0[x], row[xs1[x]] * ww1[x])
            for y in range(oh):
                ta = tmp[ys0[y] - r_lo]
                tb = tmp[ys1[y] - r_lo]
                h0 = hw0[y]
                h1 = hw1[y]
                o = out[c, y]
                for x in range(ow):
                    o[x] = _fma32(ta[x], h0, tb[x] * h1)


    @njit(nogil=True, cache=True)
    def _taps_u8(src, lut, chan, row_offset, col_offset, ys_i, ys_w, xs_i, xs_w, out, acc):
        """out[c, y, x] = sum over taps of ys_w[y, a] * xs_w[x, b] * lut[c][src[row_offset + ys_i[y, a],
        col_offset + xs_i[x, b], chan[c]]], summed in float64 and rounded once (acc (3, ow) float64 scratch).

        A chain of bilinear resizes is one linear map per axis: its taps (model.resize_kernels.crop_taps) let
        a small crop be made straight from the frame, without the 224-pixel images in between."""
        oh, ow = out.shape[1], out.shape[2]
        c0, c1, c2 = chan[0], chan[1], chan[2]
        l0, l1, l2 = lut[0], lut[1], lut[2]
        for y in range(oh):
            acc[:] = 0.0
            for a in range(ys_i.shape[1]):
                wy = ys_w[y, a]
                if wy == 0.0:
                    continue
                row = src[row_offset + ys_i[y, a]]
                for x in range(ow):
                    s0 = 0.0
                    s1 = 0.0
                    s2 = 0.0
                    for b in range(xs_i.shape[1]):
                        p = row[col_offset + xs_i[x, b]]
                        wx = xs_w[x, b]
                        s0 += l0[p[c0]] * wx
                        s1 += l1[p[c1]] * wx
                        s2 += l2[p[c2]] * wx
                    acc[0, x] += wy * s0
                    acc[1, x] += wy * s1
                    acc[2, x] += wy * s2
            for c in range(3):
                o = out[c, y]
                for x in range(ow):
                    o[x] = acc[c, x]


def compiled_kernels() -> dict[str, Any] | None:
    """The numba kernels (compiled on first use, cached on disk under NUMBA_CACHE_DIR), or None without numba."""
    if njit is None:
        return None
    return {"u8": _resize_u8, "u8_interleaved": _resize_u8_interleaved, "f32": _resize_f32, "taps": _taps_u8}


@functools.lru_cache(maxsize=None)
def resize_plan() -> dict[str, Any]:
    """Index/weight tables of every resize of the fast path (global view, five frames, two scale crops)."""
    height, width = COMPOSITE_SHAPE
    plan: dict[str, Any] = {
        "global": bilinear_coords(height, GLOBAL_SIZE) + bilinear_coords(width, GLOBAL_SIZE),
        "frame_rows": bilinear_coords(FRAME_SIZE, CROP_SIZE, offset=FRAME_SIZE),
        "frame_cols": [bilinear_coords(FRAME_SIZE, CROP_SIZE, offset=i * FRAME_SIZE) for i in range(NUM_FRAMES)],
        "scales": [],
    }
    for start, stop in SCALE_BOXES[1:]:
        plan["scales"].append(bilinear_coords(stop - start, CROP_SIZE, offset=start))
    return plan


def bilinear_matrix(n_in: int, n_out: int) -> np.ndarray:
    """torch's bilinear resize of n_in samples to n_out as an (n_out, n_in) float64 matrix of its float32 weights."""
    i0, i1, w0, w1 = bilinear_coords(n_in, n_out)
    matrix = np.zeros((n_out, n_in))
    np.add.at(matrix, (np.arange(n_out), i0), w0.astype(np.float64))
    np.add.at(matrix, (np.arange(n_out), i1), w1.astype(np.float64))
    return matrix


@functools.lru_cache(maxsize=None)
def crop_taps(crop_size: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per scale box, the taps (index (crop_size, K) int64, weight (crop_size, K) float64) of a frame axis
    (FRAME_SIZE samples) to a crop_size crop: the reference's chain (frame -> 224, the box of that -> 224,
    then -> crop_size) as one linear map, rows padded with zero weights to the widest."""
    to_whole = bilinear_matrix(FRAME_SIZE, CROP_SIZE)
    shrink = bilinear_matrix(CROP_SIZE, crop_size)
    taps = []
    for start, stop in SCALE_BOXES:
        box = np.zeros((CROP_SIZE, CROP_SIZE))
        box[:, start:stop] = bilinear_matrix(stop - start, CROP_SIZE)
        chain = shrink @ box @ to_whole  # (crop_size, FRAME_SIZE)
        width = int((chain != 0).sum(axis=1).max())
        index = np.zeros((crop_size, width), np.int64)
        weight = np.zeros((crop_size, width))
        for row in range(crop_size):
            used = np.flatnonzero(chain[row])
            index[row, :len(used)] = used
            weight[row, :len(used)] = chain[row, used]
        taps.append((index, weight))
    return taps


@functools.lru_cache(maxsize=None)
def channel_table(input_mode: str) -> tuple[np.ndarray, np.ndarray]:
    """(lut (3, 256) float32, source channel of each output channel) of an input mode.

    The values are those of the torch path's elementwise ops (uint8 -> float32, then for `normalized`
    (x / 255 - mean) / std), computed by the same torch ops on the 256 possible values.
    """
    values = torch.arange(256, dtype=torch.float32).view(1, 1, 256).expand(1, 3, 256)
    if input_mode == "normalized":
        mean = torch.tensor(CLIP_MEAN, dtype=torch.float32).view(1, 3, 1)
        std = torch.tensor(CLIP_STD, dtype=torch.float32).view(1, 3, 1)
        values = (values / 255.0 - mean) / std
        chan = np.array([0, 1, 2], dtype=np.int64)
    else:
        chan = np.array([2, 1, 0], dtype=np.int64)  # RGB -> BGR
    return np.ascontiguousarray(values[0].numpy(), dtype=np.float32), chan


def _resize_u8_to(out: np.ndarray, composite: np.ndarray, lut: np.ndarray, chan: np.ndarray, coords: tuple,
                  kernels: dict[str, Any], scratch: dict[str, np.ndarray]) -> None:
    """The u8 resize into out (3, oh, ow): the interleaved kernel when out is a view of channels-last memory."""
    pixel = 3 * out.itemsize
    if out.strides == (out.itemsize, pixel * out.shape[2], pixel):
        kernels["u8_interleaved"](composite, lut, chan, *coords, out.transpose(1, 2, 0), scratch["global_interleaved"])
    else:
        kernels["u8"](composite, lut, chan, *coords, out, scratch["global"])


def resize_composite(composite: np.ndarray, lut: np.ndarray, chan: np.ndarray, global_out: np.ndarray | None,
                     crops_out: np.ndarray | None, kernels: dict[str, Any], scratch: dict[str, np.ndarray]) -> None:
    """Fill global_out (3, 1120, 1120) and crops_out (15, 3, 224, 224) from one uint8 composite (1000, 2500, 3).

    crops_out None: the global view only (the caller has the crops' features already); global_out None: the
    crops only (the caller makes the global view by rows, `resize_global_rows`)."""
    plan = resize_plan()
    if global_out is not None:
        _resize_u8_to(global_out, composite, lut, chan, plan["global"], kernels, scratch)
    if crops_out is None:
        return
    ys = plan["frame_rows"]
    for i, xs in enumerate(plan["frame_cols"]):
        whole = crops_out[i * 3]  # scale 1.0: the frame resized to 224
        kernels["u8"](composite, lut, chan, *ys, *xs, whole, scratch["frame"])
        for j, coords in enumerate(plan["scales"], start=1):  # 0.65 and 0.45: slices of it resized to 224
            kernels["f32"](whole, *coords, *coords, crops_out[i * 3 + j], scratch["scale"])


def small_crops(composite: np.ndarray, lut: np.ndarray, chan: np.ndarray, crops_out: np.ndarray,
                kernels: dict[str, Any], acc: np.ndarray) -> None:
    """crops_out (15, 3, c, c) of one uint8 composite straight from its frames (c < 224): the reference's
    224-pixel crops shrunk to c, as one map per axis (within float32 rounding of the chain; acc (3, c) float64)."""
    taps = crop_taps(crops_out.shape[-1])
    for i in range(NUM_FRAMES):
        for j, (index, weight) in enumerate(taps):
            kernels["taps"](composite, lut, chan, FRAME_SIZE, i * FRAME_SIZE, index, weight, index, weight,
                            crops_out[i * len(SCALE_BOXES) + j], acc)


def resize_global_rows(composite: np.ndarray, lut: np.ndarray, chan: np.ndarray, start: int, stop: int,
                       out: np.ndarray, kernels: dict[str, Any], scratch: dict[str, np.ndarray]) -> None:
    """Rows [start, stop) of the global view of one composite into out (3, stop - start, 1120): the same values
    as those rows of resize_composite's global view (each output row is computed alone from its two source rows)."""
    ys0, ys1, hw0, hw1, *columns = resize_plan()["global"]
    rows = slice(start, stop)
    _resize_u8_to(out, composite, lut, chan, (ys0[rows], ys1[rows], hw0[rows], hw1[rows], *columns), kernels, scratch)


def scratch_buffers() -> dict[str, np.ndarray]:
    """Work buffers of the kernels' width passes (one set per call, reused over a batch)."""
    return {"global": np.empty((2, 3, GLOBAL_SIZE), np.float32),
            "global_interleaved": np.empty((2, GLOBAL_SIZE, 3), np.float32),
            "frame": np.empty((2, 3, CROP_SIZE), np.float32),
            "scale": np.empty((CROP_SIZE, CROP_SIZE), np.float32)}


def warm_up() -> None:
    """Load the compiled kernels (numba's disk cache) in this process, by running them once on a blank composite."""
    kernels = compiled_kernels()
    if kernels is None:
        return
    lut, chan = channel_table("reference_compatible")
    composite = np.zeros((*COMPOSITE_SHAPE, 3), np.uint8)
    global_out = np.empty((3, GLOBAL_SIZE, GLOBAL_SIZE), np.float32)
    crops_out = np.empty((NUM_FRAMES * len(SCALE_BOXES), 3, CROP_SIZE, CROP_SIZE), np.float32)
    resize_composite(composite, lut, chan, global_out, crops_out, kernels, scratch_buffers())
    # The loader's global view is a view of channels-last memory: numba's strided variant, loaded too.
    channels_last = np.empty((GLOBAL_SIZE, GLOBAL_SIZE, 3), np.float32).transpose(2, 0, 1)
    resize_composite(composite, lut, chan, channels_last, None, kernels, scratch_buffers())
    small = np.empty((NUM_FRAMES * len(SCALE_BOXES), 3, 32, 32), np.float32)  # the CPU demo's crop size
    small_crops(composite, lut, chan, small, kernels, np.empty((3, 32), np.float64))
