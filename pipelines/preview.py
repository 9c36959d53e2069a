"""A preview grid of the perturbation catalogue on one window: types as rows, levels as columns.

The source is shard paths (brace notation; the first sample, or the one with `key`) or a video
(a five-frame window from its middle, face-centred crop when a face is found). Perturbations run
on the whole window at the dataset's frame size, exactly as the perturb stage does (same key seed),
and the middle frame of each result is shown, so compression's inter-frame artefacts are visible.
"""
from __future__ import annotations

import os
from typing import Sequence

import cv2
import numpy as np

from avlips.pipelines import storage

WINDOW = 5
HEADER = 34  # pixels above the first row, for the column labels
MARGIN = 150  # pixels left of the first column, for the row labels
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def _is_shards(source: str) -> bool:
    return source.endswith(".tar") or ("{" in source and ".tar" in source)


def window_from_shards(source: str, key: str | None = None) -> tuple[np.ndarray, str]:
    """The frames and key of the sample `key` (or the first sample) in shards given in brace notation."""
    from avlips.media.sample import WindowSample
    from avlips.pipelines.render_sample import find_sample
    from avlips.pipelines.shards import iter_tar_samples

    if key:
        return find_sample(source, key).frames, key
    import braceexpand

    for path in braceexpand.braceexpand(source):
        for found, members in iter_tar_samples(storage.read_bytes(path)):
            return WindowSample.decode(found, members).frames, found
    raise LookupError(f"{source}: no samples")


def window_from_video(path: str, frame_size: int = 500, crop_scale: float = 1.8) -> tuple[np.ndarray, str]:
    """Five frames from the middle of a video, face-centred (or whole) and resized to frame_size."""
    from avlips.media.faces import crop_square, detect_face, square_crop_box
    from avlips.media.frames import read_frames
    from avlips.media.probe import probe

    info = probe(path)
    start = max(0, info.frames // 2 - WINDOW // 2)
    frames = read_frames(path, list(range(start, min(info.frames, start + WINDOW))))
    face = detect_face(frames[len(frames) // 2])
    if face is not None:
        # One box for the window, as compose crops it, so the frames stay aligned.
        box = square_crop_box(face, frames.shape[1:3], crop_scale)
    else:
        side = min(frames.shape[1:3])  # no face: the centred largest square
        y, x = (frames.shape[1] - side) // 2, (frames.shape[2] - side) // 2
        box = (x, y, x + side, y + side)
    crops = np.stack([crop_square(f, box, frame_size) for f in frames])
    stem = os.path.splitext(os.path.basename(path))[0]
    return crops, "".join(c if c.isalnum() or c in "-_" else "-" for c in stem)


def _label(image: np.ndarray, text: str, origin: tuple[int, int], scale: float, thickness: int = 1,
           box: bool = False) -> None:
    """Draw text in place (white on black where `box`, so it reads on any cell)."""
    (w, h), base = cv2.getTextSize(text, _FONT, scale, thickness)
    x, y = origin
    if box:
        cv2.rectangle(image, (x - 2, y - h - 3), (x + w + 2, y + base), (0, 0, 0), cv2.FILLED)
    cv2.putText(image, text, (x, y), _FONT, scale, (255, 255, 255), thickness, cv2.LINE_AA)


def preview_grid(frames: np.ndarray, key: str, types: Sequence[str], levels: Sequence[int], cell: int,
                 salt: int = 0) -> np.ndarray:
    """The RGB grid image: a clean column, then one column per level; one row per type."""
    from avlips.perturbations import get
    from avlips.perturbations.random_mode import key_seed

    seed = key_seed(key, salt)
    middle = len(frames) // 2

    def shown(window: np.ndarray) -> np.ndarray:
        return cv2.resize(window[middle], (cell, cell), interpolation=cv2.INTER_AREA)

    height, width = HEADER + cell * len(types), MARGIN + cell * (1 + len(levels))
    grid = np.full((height, width, 3), 32, dtype=np.uint8)
    for col, title in enumerate(["clean"] + [f"level {lv}" for lv in levels]):
        _label(grid, title, (MARGIN + col * cell + 8, HEADER - 10), 0.7, 2)
    clean = shown(frames)
    for row, name in enumerate(types):
        top = HEADER + row * cell
        perturbation = get(name)
        _label(grid, name, (8, top + cell // 2), 0.55, 1)
        grid[top:top + cell, MARGIN:MARGIN + cell] = clean
        for col, level in enumerate(levels, start=1):
            left = MARGIN + col * cell
            grid[top:top + cell, left:left + cell] = shown(perturbation.apply(frames, level, seed, sample=key))
            value = perturbation.value(level)
            _label(grid, f"{perturbation.parameter}={value:g}", (left + 4, top + cell - 6), 0.4, 1, box=True)
    return grid


def make_preview(source: str, out_png: str, types: Sequence[str] | None = None,
                 levels: Sequence[int] = (1, 2, 3, 4, 5), frame_size: int = 500, cell: int = 256,
                 key: str | None = None, salt: int = 0) -> tuple[int, ...]:
    """Write the preview grid of a shard sample or a video's middle window as PNG; return its shape.

    `frame_size` is the side the video's crop is perturbed at (the dataset's; shard frames keep
    their stored size); `cell` is the side each frame is shown at.
    """
    import tarfile

    from avlips.media.errors import MediaError
    from avlips.media.sample import SampleError
    from avlips.perturbations import AVLIPS_TYPES

    try:
        if _is_shards(source):
            frames, sample_key = window_from_shards(source, key)
        else:
            frames, sample_key = window_from_video(source, frame_size)
    except (MediaError, SampleError, LookupError, OSError, tarfile.TarError) as exc:
        from avlips.pipelines.perturb import PerturbInputError  # imports Beam: only when needed

        # A bad source is the user's input, said in one line (the command reports PerturbInputError).
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        where = "" if source in detail else f" {source}"
        raise PerturbInputError(f"cannot preview{where}: {detail}") from exc
    grid = preview_grid(frames, sample_key, list(types or AVLIPS_TYPES), list(levels), cell, salt)
    ok, data = cv2.imencode(".png", cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError(f"{out_png}: PNG encoding failed")
    storage.write_bytes(out_png, data.tobytes())
    return grid.shape
