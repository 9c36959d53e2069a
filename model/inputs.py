"""Turn a window (five frames + a mel strip) into LipFD's global input and its 15 region crops.

Two input modes:
- ``reference_compatible``: BGR channel order, float 0..255, no normalisation. This is what the released
  checkpoint saw (the reference read its PNGs with OpenCV and discarded the normalisation it computed).
- ``normalized``: RGB, scaled to 0..1, then CLIP mean/std normalisation.

In both modes the five region frames are cut at 500-pixel steps. The reference (data/datasets.py) cut
them at 1-pixel steps (``img[:, 500:, i:i + 500]``, i = 0..4), so the released checkpoint's region branch
was trained on five copies of the first frame shifted by 0..4 pixels; that bug is not reproduced, not even
in ``reference_compatible`` mode, so the released checkpoint sees region inputs it was not trained on.

The composite itself is made with OpenCV (as the reference preprocessing did); the later resizes are
batched torch ops (bilinear, no antialias, half-pixel centres, as torchvision 0.16's tensor resize), so
they run on whatever device the composite tensor is on.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from avlips.media import render as media_render

from .lipfd import INPUT_MODES

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "NUM_FRAMES",
    "FRAME_SIZE",
    "COMPOSITE_SHAPE",
    "GLOBAL_SIZE",
    "CROP_SIZE",
    "SCALE_BOXES",
    "LipFDInputs",
    "reference_composite",
    "composite_to_tensor",
    "resize_bilinear",
    "global_view",
    "region_crops",
    "prepare_inputs",
    "window_inputs",
]

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # RGB
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)  # RGB
NUM_FRAMES = 5
FRAME_SIZE = 500
COMPOSITE_SHAPE = (2 * FRAME_SIZE, NUM_FRAMES * FRAME_SIZE)  # (1000, 2500): mel strip over five frames
GLOBAL_SIZE = 1120
CROP_SIZE = 224
# Scale crops as (start, stop) rows/cols of the 224x224 whole-frame crop: scales 1.0, 0.65, 0.45.
SCALE_BOXES = ((0, CROP_SIZE), (28, 196), (61, 163))


class LipFDInputs(NamedTuple):
    """What LipFD.forward takes."""

    global_input: torch.Tensor  # (B, 3, 1120, 1120)
    crops: torch.Tensor  # (B, 15, 3, 224, 224), frame i scale j at i*3+j


def reference_composite(frames: np.ndarray, mel_rgb: np.ndarray) -> np.ndarray:
    """The reference 1000x2500x3 RGB uint8 sample: mel strip (500x2500) above five 500x500 frames."""
    frames = np.asarray(frames)
    mel_rgb = np.asarray(mel_rgb)
    if frames.ndim != 4 or frames.shape[0] != NUM_FRAMES or frames.shape[-1] != 3:
        raise ValueError(f"frames must be ({NUM_FRAMES}, H, W, 3), got {frames.shape}")
    if mel_rgb.ndim != 3 or mel_rgb.shape[-1] != 3:
        raise ValueError(f"mel_rgb must be (H, W, 3), got {mel_rgb.shape}")
    if frames.dtype != np.uint8 or mel_rgb.dtype != np.uint8:
        raise TypeError(f"frames and mel_rgb must be uint8, got {frames.dtype} and {mel_rgb.dtype}")
    # One implementation of the layout for the dataset and the model: media.render's.
    return media_render.reference_composite(frames, mel_rgb)


def composite_to_tensor(
    composite: np.ndarray | torch.Tensor,
    mode: str = "reference_compatible",
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """RGB uint8 composite(s) (H, W, 3) or (B, H, W, 3) -> float32 (B, 3, H, W) in the given input mode."""
    if mode not in INPUT_MODES:
        raise ValueError(f"unknown input mode {mode!r}; known: {INPUT_MODES}")
    x = torch.as_tensor(composite)
    if x.dtype != torch.uint8:
        raise TypeError(f"composite must be uint8 RGB, got {x.dtype}")
    if x.ndim == 3:
        x = x.unsqueeze(0)
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"composite must be (H, W, 3) or (B, H, W, 3), got {tuple(x.shape)}")
    # Move as uint8 (4x less to transfer), convert on the device.
    x = x.to(device=device).permute(0, 3, 1, 2).to(torch.float32)
    if mode == "reference_compatible":
        return x.flip(1).contiguous()  # RGB -> BGR, 0..255
    mean = torch.tensor(CLIP_MEAN, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    return ((x / 255.0 - mean) / std).contiguous()


def resize_bilinear(x: torch.Tensor, size: int) -> torch.Tensor:
    """Resize (N, C, H, W) to size x size: bilinear, half-pixel centres, no antialias."""
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=False)


def _check_composite(x: torch.Tensor) -> None:
    if x.ndim != 4 or x.shape[1] != 3 or tuple(x.shape[2:]) != COMPOSITE_SHAPE:
        height, width = COMPOSITE_SHAPE
        raise ValueError(f"composite tensor must be (B, 3, {height}, {width}), got {tuple(x.shape)}")


def global_view(x: torch.Tensor) -> torch.Tensor:
    """The whole composite (B, 3, 1000, 2500) resized to (B, 3, 1120, 1120) (aspect distorted, as the reference)."""
    _check_composite(x)
    return resize_bilinear(x, GLOBAL_SIZE)


def region_crops(x: torch.Tensor) -> torch.Tensor:
    """The 15 crops (B, 15, 3, 224, 224) of the five lower-half frames at scales 1.0, 0.65, 0.45."""
    _check_composite(x)
    b = x.shape[0]
    # Frames at 500-pixel steps (the reference's 1-pixel stride made five near-identical "frames").
    lower = x[:, :, FRAME_SIZE:, :]  # (B, 3, 500, 2500)
    frames = lower.unflatten(3, (NUM_FRAMES, FRAME_SIZE)).permute(0, 3, 1, 2, 4)  # (B, 5, 3, 500, 500)
    whole = resize_bilinear(frames.reshape(b * NUM_FRAMES, 3, FRAME_SIZE, FRAME_SIZE), CROP_SIZE)
    scales = [whole]
    for start, stop in SCALE_BOXES[1:]:
        scales.append(resize_bilinear(whole[:, :, start:stop, start:stop], CROP_SIZE))
    crops = torch.stack(scales, dim=1)  # (B*5, 3 scales, 3, 224, 224)
    return crops.reshape(b, NUM_FRAMES * len(SCALE_BOXES), 3, CROP_SIZE, CROP_SIZE)


def prepare_inputs(
    composite: np.ndarray | torch.Tensor,
    mode: str = "reference_compatible",
    device: torch.device | str | None = None,
) -> LipFDInputs:
    """Network inputs from RGB uint8 composite(s) (H, W, 3) or (B, H, W, 3)."""
    x = composite_to_tensor(composite, mode=mode, device=device)
    return LipFDInputs(global_view(x), region_crops(x))


def window_inputs(
    frames: np.ndarray,
    mel_rgb: np.ndarray,
    mode: str = "reference_compatible",
    device: torch.device | str | None = None,
) -> LipFDInputs:
    """Network inputs (batch of one) for one window: five RGB uint8 frames and a mel strip image."""
    return prepare_inputs(reference_composite(frames, mel_rgb), mode=mode, device=device)
