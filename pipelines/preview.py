"""A preview grid of the perturbation catalogue on one window: types as rows, levels as columns.

The source is shard paths (brace notation; the first sample, or the one with `key`) or a video
(a five-frame window from its middle, face-centred crop when a face is found, and its audio with
0.6 s context either side). Perturbations run on the whole window at the dataset's frame size,
exactly as the perturb stage does (same key seed). A video type's cell is the middle frame of the
result, so compression's inter-frame artefacts are visible; an audio type's cell is the spectrogram
of the window's audio with context (0-8 kHz, low at the bottom, the window's own span between
white marks, one dB scale per row from the clean audio); the call's cell is its middle frame above
its spectrogram.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

from avlips.pipelines import storage

WINDOW = 5
HEADER = 34  # pixels above the first row, for the column labels
MARGIN = 175  # pixels left of the first column, for the row labels
_FONT = cv2.FONT_HERSHEY_SIMPLEX
AUDIO_RATE = 16000  # the rate of a video source's audio, as compose stores it
AUDIO_CONTEXT_S = 0.6
SPECTROGRAM_FFT = 512  # 32 ms at 16 kHz
SPECTROGRAM_RANGE_DB = 80.0


@dataclass
class PreviewWindow:
    """What the preview perturbs: a window's frames and, when it has them, its audio with context."""

    frames: np.ndarray
    key: str
    audio: np.ndarray | None = None  # int16 mono
    sample_rate: int = AUDIO_RATE
    span: tuple[int, int] | None = None  # the window's own samples in `audio`
    fps: float = 25.0


def _is_shards(source: str) -> bool:
    return source.endswith(".tar") or ("{" in source and ".tar" in source)


def window_from_shards(source: str, key: str | None = None) -> PreviewWindow:
    """The sample `key` (or the first sample) in shards given in brace notation."""
    from avlips.media.sample import WindowSample
    from avlips.pipelines.render_sample import find_sample
    from avlips.pipelines.shards import iter_tar_samples

    if key:
        return _preview_window(find_sample(source, key))
    import braceexpand

    for path in braceexpand.braceexpand(source):
        for found, members in iter_tar_samples(storage.read_bytes(path)):
            return _preview_window(WindowSample.decode(found, members))
    raise LookupError(f"{source}: no samples")


def _preview_window(sample) -> PreviewWindow:
    info = sample.meta.get("audio") or {}
    span = None
    if sample.audio is not None and "window_start" in info:
        start = int(info["window_start"])
        span = (start, start + int(info.get("window_samples", 0)))
    return PreviewWindow(sample.frames, sample.key, sample.audio, int(info.get("sample_rate", AUDIO_RATE)), span,
                         float(sample.meta.get("fps") or 25.0))


def window_from_video(path: str, frame_size: int = 500, crop_scale: float = 1.8) -> PreviewWindow:
    """Five frames from the middle of a video, face-centred (or whole) and resized to frame_size, and its audio."""
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
    key = "".join(c if c.isalnum() or c in "-_" else "-" for c in stem)
    audio, span = _video_audio(path, start / info.fps, (start + len(frames)) / info.fps) if info.has_audio else (None, None)
    return PreviewWindow(crops, key, audio, AUDIO_RATE, span, float(info.fps))


def _video_audio(path: str, start_time: float, end_time: float) -> tuple[np.ndarray, tuple[int, int]]:
    """The 16 kHz audio of [start_time, end_time) with AUDIO_CONTEXT_S either side (cut at the ends), int16."""
    from avlips.media.audio_decode import read_audio

    audio = read_audio(path, AUDIO_RATE)
    first, last = int(round(start_time * AUDIO_RATE)), int(round(end_time * AUDIO_RATE))
    context = int(round(AUDIO_CONTEXT_S * AUDIO_RATE))
    low, high = max(0, first - context), min(len(audio), last + context)
    pcm = np.clip(np.round(audio[low:high] * 32767.0), -32768, 32767).astype(np.int16)
    return pcm, (first - low, min(last, high) - low)


def _label(image: np.ndarray, text: str, origin: tuple[int, int], scale: float, thickness: int = 1,
           box: bool = False) -> None:
    """Draw text in place (white on black where `box`, so it reads on any cell)."""
    (w, h), base = cv2.getTextSize(text, _FONT, scale, thickness)
    x, y = origin
    if box:
        cv2.rectangle(image, (x - 2, y - h - 3), (x + w + 2, y + base), (0, 0, 0), cv2.FILLED)
    cv2.putText(image, text, (x, y), _FONT, scale, (255, 255, 255), thickness, cv2.LINE_AA)


def spectrogram_db(audio: np.ndarray) -> np.ndarray:
    """Power spectrogram (bins, frames) in dB of int16 or float audio, 75% overlapping Hann frames."""
    import scipy.signal

    signal = audio.astype(np.float64) / (32768.0 if audio.dtype == np.int16 else 1.0)
    _, _, spectrum = scipy.signal.stft(signal, nperseg=SPECTROGRAM_FFT, noverlap=SPECTROGRAM_FFT * 3 // 4,
                                       boundary=None, padded=False)
    return 10.0 * np.log10(np.abs(spectrum) ** 2 + 1e-12)


def spectrogram_image(audio: np.ndarray, top_db: float, size: tuple[int, int],
                      span: tuple[int, int] | None = None) -> np.ndarray:
    """An RGB (h, w) picture of the spectrogram: viridis over [top_db - 80, top_db], low frequencies at the bottom."""
    from matplotlib import colormaps

    db = spectrogram_db(audio)
    normalised = np.clip((db - (top_db - SPECTROGRAM_RANGE_DB)) / SPECTROGRAM_RANGE_DB, 0.0, 1.0)[::-1]
    rgb = np.ascontiguousarray(colormaps["viridis"](normalised, bytes=True)[..., :3])
    h, w = size
    image = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_LINEAR)
    if span is not None and len(audio):
        for at in span:  # the window's own span between white marks
            x = min(w - 1, int(round(at / len(audio) * w)))
            image[:, x] = 255
    return image


def preview_grid(window: PreviewWindow, types: Sequence[str], levels: Sequence[int], cell: int,
                 salt: int = 0) -> np.ndarray:
    """The RGB grid image: a clean column, then one column per level; one row per type."""
    from avlips.perturbations import CALL, apply_audio, family, lookup
    from avlips.perturbations.random_mode import key_seed

    frames, key = window.frames, window.key
    seed = key_seed(key, salt)
    middle = len(frames) // 2
    top_db = float(spectrogram_db(window.audio).max()) if window.audio is not None and len(window.audio) else 0.0

    def picture(shown: np.ndarray) -> np.ndarray:
        return cv2.resize(shown[middle], (cell, cell), interpolation=cv2.INTER_AREA)

    def sound(audio: np.ndarray, height: int) -> np.ndarray:
        return spectrogram_image(audio, top_db, (height, cell), window.span)

    def call_cell(shown: np.ndarray, audio: np.ndarray) -> np.ndarray:
        strip = cell // 3
        image = np.zeros((cell, cell, 3), np.uint8)
        side = cell - strip
        left = (cell - side) // 2
        image[:side, left:left + side] = cv2.resize(shown[middle], (side, side), interpolation=cv2.INTER_AREA)
        image[side:] = sound(audio, strip)
        return image

    def no_audio() -> np.ndarray:
        image = np.full((cell, cell, 3), 64, np.uint8)
        _label(image, "no audio", (8, cell // 2), 0.5)
        return image

    def cell_of(name: str, level: int | None) -> np.ndarray:
        kind = family(name)
        if kind == "video":
            return picture(frames if level is None else lookup(name).apply(frames, level, seed, sample=key))
        if window.audio is None:
            return no_audio()
        if kind == "audio":
            audio = window.audio if level is None else apply_audio(name, window.audio, window.sample_rate, level,
                                                                   seed, sample=key)
            return sound(audio, cell)
        if level is None:
            return call_cell(frames, window.audio)
        return call_cell(*CALL.apply(frames, window.fps, window.audio, window.sample_rate, level, seed, sample=key))

    height, width = HEADER + cell * len(types), MARGIN + cell * (1 + len(levels))
    grid = np.full((height, width, 3), 32, dtype=np.uint8)
    for col, title in enumerate(["clean"] + [f"level {lv}" for lv in levels]):
        _label(grid, title, (MARGIN + col * cell + 8, HEADER - 10), 0.7, 2)
    for row, name in enumerate(types):
        top = HEADER + row * cell
        perturbation = lookup(name)
        _label(grid, name, (8, top + cell // 2), 0.55, 1)
        grid[top:top + cell, MARGIN:MARGIN + cell] = cell_of(name, None)
        for col, level in enumerate(levels, start=1):
            left = MARGIN + col * cell
            grid[top:top + cell, left:left + cell] = cell_of(name, level)
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
            window = window_from_shards(source, key)
        else:
            window = window_from_video(source, frame_size)
    except (MediaError, SampleError, LookupError, OSError, tarfile.TarError) as exc:
        from avlips.pipelines.perturb import PerturbInputError  # imports Beam: only when needed

        # A bad source is the user's input, said in one line (the command reports PerturbInputError).
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        where = "" if source in detail else f" {source}"
        raise PerturbInputError(f"cannot preview{where}: {detail}") from exc
    grid = preview_grid(window, list(types or AVLIPS_TYPES), list(levels), cell, salt)
    ok, data = cv2.imencode(".png", cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError(f"{out_png}: PNG encoding failed")
    storage.write_bytes(out_png, data.tobytes())
    return grid.shape
