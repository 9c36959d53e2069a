"""`media.render.render_sample`'s composite, the same uint8 values, made with less copying: the loader's hot path.

The colormap is looked up once per process (the registry hands out a copy per lookup) and the strip
and frames are written straight into the composite (no concatenations; a frame already 500x500 is
copied, which is what cv2.resize does for an unchanged size). Anything unusual (not uint8 RGB frames)
goes through render_sample itself.
"""
from __future__ import annotations

import functools
from typing import Any

import cv2
import numpy as np

from avlips.media.render import FRAME_SIDE, STRIP_HEIGHT, render_sample
from avlips.media.sample import WindowSample

__all__ = ["render_sample_fast", "fast_renderable", "mel_colours", "composite_shape", "render_strip",
           "render_frames", "warm_up"]


@functools.lru_cache(maxsize=1)
def _viridis() -> Any:
    from matplotlib import colormaps

    return colormaps["viridis"]


def warm_up() -> None:
    """Load the colormap in this process (matplotlib's import and registry, about 0.1 s)."""
    _viridis()


def fast_renderable(sample: WindowSample) -> bool:
    """Whether the fast path renders this sample (uint8 RGB frames); anything else goes through render_sample."""
    frames = sample.frames
    return frames.dtype == np.uint8 and frames.ndim == 4 and frames.shape[-1] == 3


def mel_colours(sample: WindowSample) -> np.ndarray:
    """The window's mel as viridis RGB uint8 (n_mels, steps, 3), before it is stretched into the strip;
    ValueError when the metadata lacks the dB range that colours it."""
    meta = sample.meta
    try:
        db_min, db_max = float(meta["mel_db_min"]), float(meta["mel_db_max"])
    except KeyError as exc:
        raise ValueError(f"{sample.key}: metadata lacks {exc.args[0]!r}, needed to colour the mel") from exc
    span = db_max - db_min
    mel_db = sample.mel_db
    normalised = (mel_db - db_min) / span if span > 0 else np.zeros_like(mel_db)
    return np.ascontiguousarray(_viridis()(normalised, bytes=True)[..., :3])


def composite_shape(sample: WindowSample) -> tuple[int, int, int]:
    return STRIP_HEIGHT + FRAME_SIDE, FRAME_SIDE * len(sample.frames), 3


def render_strip(mel_rgb: np.ndarray, composite: np.ndarray) -> None:
    """The mel strip (the composite's top STRIP_HEIGHT rows) from mel_colours' image."""
    strip = composite[:STRIP_HEIGHT]  # contiguous: OpenCV writes into it
    written = cv2.resize(mel_rgb, (composite.shape[1], STRIP_HEIGHT), dst=strip, interpolation=cv2.INTER_LINEAR)
    if written is not None and written.__array_interface__["data"][0] != strip.__array_interface__["data"][0]:
        strip[...] = written


def render_frames(sample: WindowSample, composite: np.ndarray) -> None:
    """The frames side by side below the strip (a frame already FRAME_SIDE square is copied, which is what
    cv2.resize does for an unchanged size)."""
    side = FRAME_SIDE
    for i, frame in enumerate(sample.frames):
        if frame.shape[:2] != (side, side):
            frame = cv2.resize(np.ascontiguousarray(frame), (side, side), interpolation=cv2.INTER_LINEAR)
        composite[STRIP_HEIGHT:, i * side:(i + 1) * side] = frame


def render_sample_fast(sample: WindowSample, out: np.ndarray | None = None) -> np.ndarray:
    """A stored window as the reference composite (RGB uint8), equal to render_sample's.

    out: a uint8 array of the composite's shape to write it into (a caller rendering many windows reuses
    its memory: a fresh 7.5 MB array costs more in page faults than the rendering); a new one when None or
    of another shape. Returns the composite."""
    if not fast_renderable(sample):
        return render_sample(sample)
    mel_rgb = mel_colours(sample)
    shape = composite_shape(sample)
    fits = out is not None and out.shape == shape and out.dtype == np.uint8 and out.flags.c_contiguous
    composite = out if fits else np.empty(shape, dtype=np.uint8)
    render_strip(mel_rgb, composite)
    render_frames(sample, composite)
    return composite
