"""LipFD windows from one video and its audio: the work shared by the compose stage and detect.

Evenly spaced window starts (the reference's spacing, without its uint8 wrap), five consecutive
frames each (face-centred crops, or whole frames for already-centred sources), and the mel columns
of the same span, as WindowSample objects. A window that cannot be made is a WindowFailure; a
video that cannot be used at all raises a MediaError.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Iterator

import cv2
import numpy as np

from media.audio import MelConfig, clip_mel_db, is_silent, time_columns, window_columns
from media.errors import MediaError, NoFace, TooShort
from media.io import FrameReader, frame_times, read_audio
from media.sample import WindowSample


@dataclass(frozen=True)
class WindowConfig:
    """How windows are cut from a video."""

    n_windows: int = 10
    window_len: int = 5
    frame_size: int = 500
    crop_scale: float = 1.8  # square side = scale x the face box's longer side
    min_face_fraction: float = 0.6  # of a window's frames; fewer and the window fails
    duration_tolerance_s: float = 0.1  # audio/video lengths this close use the reference's ratio mapping
    silence_dbfs: float = -60.0
    mel: MelConfig = field(default_factory=MelConfig)


@dataclass(frozen=True)
class WindowFailure:
    """A window that could not be made, and why."""

    key: str
    error: MediaError


def window_starts(frames: int, n_windows: int, window_len: int) -> list[int]:
    """Evenly spaced starts from 0 to frames - window_len - 1, as the reference spaces them.

    Plain integers: the reference cast these to uint8 and wrapped past 255; we do not. Short
    clips give fewer, distinct windows.
    """
    last = frames - window_len - 1
    if last < 0:
        return [0] if frames >= window_len else []
    return sorted({int(s) for s in np.linspace(0, last, n_windows, endpoint=True)})


def iter_windows(video_path: str, audio_path: str, keys: list[str], config: WindowConfig, centred: bool,
                 label: int, meta: dict) -> Iterator[WindowSample | WindowFailure]:
    """The windows of one video, one at a time; `meta` is merged into each sample's metadata."""
    # Centred sources are resized as the reference does (whole frames, OpenCV bilinear) while
    # decoding, straight into the window's array; face crops need the full frames.
    size = (config.frame_size, config.frame_size) if centred else None
    with FrameReader(video_path, size, interpolation="linear") as reader:
        info = reader.info
        starts = window_starts(info.frames, config.n_windows, config.window_len)
        if not starts:
            raise TooShort(video_path, f"{info.frames} frames, fewer than one window of {config.window_len}")
        audio_path = audio_path or video_path
        audio = read_audio(audio_path, config.mel.sample_rate)
        if is_silent(audio, config.silence_dbfs):
            raise MediaError(audio_path, f"silent audio (RMS below {config.silence_dbfs} dBFS)")
        mel = clip_mel_db(audio, config.mel)
        db_min, db_max = float(mel.min()), float(mel.max())
        times = frame_times(video_path)
        step = info.duration / info.frames
        audio_seconds = len(audio) / config.mel.sample_rate
        # When audio and video lengths agree, map columns by the frames ratio as the reference does;
        # when they do not, that ratio would stretch the audio, so map by time instead.
        by_ratio = abs(audio_seconds - info.duration) <= max(config.duration_tolerance_s, step)
        reader.will_read(s + i for s in starts for i in range(config.window_len))
        for window, start in enumerate(starts):
            key = keys[window]
            indices = list(range(start, start + config.window_len))
            start_time = float(times[start])
            following = indices[-1] + 1
            end_time = float(times[following]) if following < len(times) else float(times[indices[-1]] + step)
            try:
                if by_ratio:
                    first, last = window_columns(start, config.window_len, mel.shape[1], info.frames)
                else:
                    if end_time > audio_seconds:
                        raise TooShort(audio_path, f"audio ends at {audio_seconds:.2f}s, before window "
                                                   f"{window} ({start_time:.2f}-{end_time:.2f}s)")
                    first, last = time_columns(start_time, end_time, config.mel)
                last = max(last, first + 1)
                crops, box = crop_window(reader.read(indices), config, centred, video_path)
            except MediaError as exc:
                yield WindowFailure(key, exc)
                continue
            sample_meta = {
                **meta, "key": key, "label": int(label), "window": window, "frame_indices": indices,
                "start_time": start_time, "end_time": end_time, "fps": info.fps, "source_path": video_path,
                "audio_path": audio_path, "mel_columns": [first, last],
                "mel_alignment": "ratio" if by_ratio else "time", "mel_db_min": db_min, "mel_db_max": db_max,
                "mel": asdict(config.mel), "crop": "face" if box is not None else "full", "face_box": box,
                "perturbation": {"type": "none", "level": 0},
            }
            yield WindowSample(key, crops, mel[:, first:last], int(label), sample_meta)


def crop_window(frames: np.ndarray, config: WindowConfig, centred: bool, label: str
                ) -> tuple[np.ndarray, list[int] | None]:
    """Frames at the sample size: whole frames for centred sources, else one face-centred square."""
    size = config.frame_size
    if centred:
        if frames.shape[1:3] == (size, size):
            return frames, None  # resized while decoding
        # The reference resizes whole (already face-centred) frames with OpenCV's bilinear default.
        return np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_LINEAR) for f in frames]), None
    from media.faces import crop_square, square_crop_box, track_faces

    track = track_faces(frames)
    found = np.asarray(track.detected, dtype=bool)
    if found.mean() < config.min_face_fraction:
        raise NoFace(label, f"face found in {found.sum()} of {len(frames)} window frames")
    # One box for the whole window keeps the crops steady across its frames.
    face = np.median(np.asarray(track.faces)[found], axis=0)
    box = square_crop_box(face, frames.shape[1:3], config.crop_scale)
    return np.stack([crop_square(frame, box, size) for frame in frames]), [int(v) for v in box]
