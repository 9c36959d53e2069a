"""LipFD's network inputs of a batch of uint8 composites: torch's resizes on any device, numba's on the CPU.

The values are those of `model.inputs.prepare_inputs` (global view 1120x1120, 15 region crops) in a
loader config's input mode, with the crops at its crop_size. On a GPU torch computes them
(`torch_inputs`). On the CPU the kernels of `model.resize_kernels` do, about 10x cheaper and within
FAST_ATOL of torch; the first use in a process compares the two on a random composite and falls back
to torch, warning once, if they differ by more (the answer is kept in `model.loader_process`).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from . import resize_kernels
from .inputs import (CLIP_MEAN, CLIP_STD, COMPOSITE_SHAPE, CROP_SIZE, GLOBAL_SIZE, NUM_FRAMES, SCALE_BOXES, global_view,
                     region_crops)
from .loader_process import this_process

if TYPE_CHECKING:  # the loader imports this module
    from .loader import LoaderConfig

__all__ = ["FAST_ATOL", "composite_inputs", "torch_inputs", "shrink_crops", "fast_path_available",
           "fast_path_suits", "fast_inputs", "fill_fast", "run_threaded"]

log = logging.getLogger("avlips.loader")

FAST_ATOL = 1e-4  # on the 0..255 scale; the crops/global view are checked against torch within this


def composite_inputs(composites: torch.Tensor, config: LoaderConfig, device: torch.device | str | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Network inputs (global input (B, 3, 1120, 1120), crops (B, 15, 3, c, c)) of uint8 RGB composites (B, H, W, 3).

    The values of model.inputs.prepare_inputs in config.input_mode, crops at config.crop_size, on `device`.
    On the CPU the numba kernels compute them (within 1e-4 of torch's on the 0..255 scale, about the
    difference between torch's own results at 1 and 2 threads); elsewhere (a GPU) torch's resizes do.
    """
    if fast_path_suits(composites, device):
        return fast_inputs(list(composites.numpy()), config)
    return torch_inputs(composites, config, device=device)


# ------------------------------------------------------------------------------------------ torch


def torch_inputs(composites: torch.Tensor, config: LoaderConfig, device: torch.device | str | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched global view and region crops of uint8 composites (B, H, W, 3) with torch (any device).

    The same values as model.inputs.prepare_inputs, computed in channels-last layout: the channel flip
    happens on uint8 and no channels-first copy of the float composite is made.
    """
    x = composites.to(device=device)
    if config.input_mode == "reference_compatible":
        x = x.flip(-1)  # RGB -> BGR, 0..255 (what the released checkpoint saw)
    x = x.permute(0, 3, 1, 2).to(torch.float32)  # NCHW view of NHWC memory
    if config.input_mode == "normalized":
        mean = torch.tensor(CLIP_MEAN, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(CLIP_STD, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
        x = (x / 255.0 - mean) / std
    global_input = global_view(x).contiguous()
    crops = region_crops(x)
    return global_input, shrink_crops(crops, config).contiguous()


def shrink_crops(crops: torch.Tensor, config: LoaderConfig) -> torch.Tensor:
    """(B, 15, 3, 224, 224) crops at config.crop_size (a further torch bilinear resize when it is not 224)."""
    if config.crop_size == CROP_SIZE:
        return crops
    b, n = crops.shape[:2]
    # Channels-last input (the fast path's scratch) takes torch's much faster kernel, with the same values.
    small = F.interpolate(crops.flatten(0, 1), size=(config.crop_size,) * 2, mode="bilinear",
                          align_corners=False, antialias=False)
    return small.reshape(b, n, 3, config.crop_size, config.crop_size)


# ------------------------------------------------------------------------------------------ the CPU kernels


def fast_path_available() -> bool:
    """Whether the numba path is usable here: compiled and, once per process, checked against torch."""
    if this_process.fast_path is not None:
        return this_process.fast_path
    ok = False
    try:
        kernels = resize_kernels.compiled_kernels()
        if kernels is not None:
            ok = _fast_matches_torch()
            if not ok:
                log.warning("loader: the CPU resize kernels differ from torch's here; using torch's resizes")
    except Exception as exc:  # never let the fast path stop a stream
        log.warning("loader: CPU resize kernels unavailable (%s: %s); using torch's resizes", type(exc).__name__, exc)
    this_process.fast_path = ok
    return ok


def _fast_matches_torch() -> bool:
    """One random composite through both paths, full-size and small crops: equal within FAST_ATOL (0..255 scale)."""
    from .loader import LoaderConfig

    rng = np.random.default_rng(12345)
    composite = rng.integers(0, 256, (1, *COMPOSITE_SHAPE, 3), dtype=np.uint8)
    for crop_size in (CROP_SIZE, 32):
        cfg = LoaderConfig(batch_size=1, crop_size=crop_size, input_mode="reference_compatible")
        expected_global, expected_crops = torch_inputs(torch.from_numpy(composite), cfg)
        got_global, got_crops = fast_inputs([composite[0]], cfg)
        if not ((got_global - expected_global).abs().max() <= FAST_ATOL
                and (got_crops - expected_crops).abs().max() <= FAST_ATOL):
            return False
    return True


def fast_path_suits(composites: Sequence[np.ndarray] | torch.Tensor, device: torch.device | str | None) -> bool:
    """Whether the kernels may make these composites' inputs: uint8 reference-sized composites, for the CPU."""
    if device is not None and torch.device(device).type != "cpu":
        return False
    if isinstance(composites, torch.Tensor):
        if composites.device.type != "cpu" or composites.dtype != torch.uint8 or composites.ndim != 4:
            return False
        shapes = {tuple(composites.shape[1:])}
    else:
        shapes = {tuple(np.shape(c)) for c in composites}
        if any(np.asarray(c).dtype != np.uint8 for c in composites):
            return False
    return shapes == {(*COMPOSITE_SHAPE, 3)} and fast_path_available()


def fast_inputs(composites: Sequence[np.ndarray], config: LoaderConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """(global input, crops) of uint8 RGB composites (H, W, 3) with the numba kernels, on the CPU."""
    b = len(composites)
    # numpy's memory: large blocks are advised as huge pages, about twice as cheap to touch first as torch.empty's.
    g = np.empty((b, 3, GLOBAL_SIZE, GLOBAL_SIZE), np.float32)
    c = np.empty((b, NUM_FRAMES * len(SCALE_BOXES), 3, config.crop_size, config.crop_size), np.float32)
    fill_fast(composites, config, g, c)
    return torch.from_numpy(g), torch.from_numpy(c)


def run_threaded(run: Callable[[range], None], b: int) -> None:
    """run(samples) over range(b), split across the resize threads.

    The kernels release the GIL: as many threads as torch may use here (1 in a DataLoader worker)."""
    threads = min(torch.get_num_threads(), b)
    if threads > 1:
        list(this_process.resize_pool(threads).map(run, [range(i, b, threads) for i in range(threads)]))
    else:
        run(range(b))


def fill_fast(composites: Sequence[np.ndarray], config: LoaderConfig, g: np.ndarray | None, crops_out: np.ndarray,
              need_crops: Sequence[bool] | None = None) -> None:
    """Fill g (B, 3, 1120, 1120) and crops_out (B, 15, 3, c, c) float32 from uint8 composites with the numba kernels.

    g may have any strides (the loader's is a view of channels-last memory); the values are the same.
    g None: the crops only (evaluate makes the global view by row bands, model/global_bands.py).
    need_crops: which composites' crops to make (default all); crops_out then has one row per True, in order.
    """
    kernels = resize_kernels.compiled_kernels()
    assert kernels is not None
    lut, chan = resize_kernels.channel_table(config.input_mode)
    b = len(composites)
    need = [True] * b if need_crops is None else [bool(n) for n in need_crops]
    row_of = {k: row for row, k in enumerate(k for k in range(b) if need[k])}
    full_size = config.crop_size == CROP_SIZE

    def run(samples: range) -> None:
        scratch = resize_kernels.scratch_buffers()
        acc = np.empty((3, config.crop_size), np.float64)
        for k in samples:
            composite = np.ascontiguousarray(composites[k])
            crops = crops_out[row_of[k]] if k in row_of else None
            # Small crops come straight from the frames (resize_kernels.small_crops), not from 224-pixel ones.
            resize_kernels.resize_composite(composite, lut, chan, None if g is None else g[k],
                                            crops if full_size else None, kernels, scratch)
            if crops is not None and not full_size:
                resize_kernels.small_crops(composite, lut, chan, crops, kernels, acc)

    run_threaded(run, b)
