"""The reference layout: a window rendered as the 1000x2500 composite LipFD was trained on.

Mel strip on top (500 rows, coloured with viridis min-max over the whole clip, as matplotlib's
imsave does), the five frames at 500x500 side by side below; resizes are OpenCV bilinear.
"""
from __future__ import annotations

import cv2
import numpy as np

from avlips.media.sample import WindowSample

FRAME_SIDE = 500
STRIP_HEIGHT = 500


def colour_mel(mel_db: np.ndarray, db_min: float, db_max: float) -> np.ndarray:
    """Mel dB values as RGB uint8 through viridis, normalised by the clip's dB range (row 0 = bin 0)."""
    from matplotlib import colormaps

    span = db_max - db_min
    normalised = (mel_db - db_min) / span if span > 0 else np.zeros_like(mel_db)
    rgba = colormaps["viridis"](normalised, bytes=True)
    return np.ascontiguousarray(rgba[..., :3])


def reference_composite(frames: np.ndarray, mel_rgb: np.ndarray) -> np.ndarray:
    """The 1000 x (500 * frames) RGB composite: mel strip above, frames resized to 500x500 below."""
    count = len(frames)
    width = FRAME_SIDE * count
    strip = cv2.resize(mel_rgb, (width, STRIP_HEIGHT), interpolation=cv2.INTER_LINEAR)
    row = np.concatenate([
        cv2.resize(np.ascontiguousarray(frame), (FRAME_SIDE, FRAME_SIDE), interpolation=cv2.INTER_LINEAR)
        for frame in frames
    ], axis=1)
    return np.concatenate([strip, row], axis=0)


def render_sample(sample: WindowSample) -> np.ndarray:
    """A stored window as the reference composite (RGB uint8, 1000x2500 for five frames)."""
    meta = sample.meta
    try:
        db_min, db_max = float(meta["mel_db_min"]), float(meta["mel_db_max"])
    except KeyError as exc:
        raise ValueError(f"{sample.key}: metadata lacks {exc.args[0]!r}, needed to colour the mel") from exc
    return reference_composite(sample.frames, colour_mel(sample.mel_db, db_min, db_max))
