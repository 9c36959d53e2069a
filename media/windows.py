"""LipFD windows from one video and its audio: the work shared by the compose stage and detect.

Evenly spaced window starts (the reference's spacing, without its uint8 wrap), five consecutive
frames each (face-centred crops, or whole frames for already-centred sources), the mel columns
of the same span and the span's 16 kHz audio with context either side (for an offset search), as
WindowSample objects. A window that cannot be made is a WindowFailure; a video that cannot be used
at all raises a MediaError.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Iterator

import cv2
import numpy as np

from avlips.media.audio import ClipMel, MelConfig, mel_columns, stream_mel, time_columns, window_columns
from avlips.media.errors import MediaError, TooShort
from avlips.media.audio_decode import iter_audio
from avlips.media.frames import FrameReader
from avlips.media.sample import WindowSample


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
    # Seconds of audio kept either side of each window (audio.npy, for an offset search); None: no audio field.
    audio_context_s: float | None = 0.6


# The rate of the samples' audio field (media/sample.py): what lip-sync experts and codecs expect.
AUDIO_RATE = 16000


@dataclass(frozen=True)
class WindowFailure:
    """A window that could not be made, and why."""

    key: str
    error: MediaError


def window_starts(frames: int, n_windows: int, window_len: int) -> list[int]:
    """Evenly spaced starts from 0 to frames - window_len - 1, as the reference spaces them.

    Plain integers, truncated as the reference's integer linspace: the reference cast these to uint8
    and wrapped past 255; we do not. Short clips give fewer, distinct windows, each exactly its five
    frames. (The reference read each frame once but indexed its frame list as if overlapping or
    repeated windows had their own copies: below 51 frames, where starts are under 5 apart, its later
    windows pair one window's mel with other frames, and the last ones are dropped; not reproduced.)
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
    faces = None if centred else _window_faces(config, video_path)  # follows the face from window to window
    with FrameReader(video_path, size, interpolation="linear") as reader:
        info = reader.info
        starts = window_starts(info.frames, config.n_windows, config.window_len)
        if not starts:
            raise TooShort(video_path, f"{info.frames} frames, fewer than one window of {config.window_len}")
        audio_path = audio_path or video_path
        step = info.duration / info.frames
        spans = [_window_span(reader, start, config.window_len, step) for start in starts]
        # When audio and video lengths agree, map columns by the frames ratio as the reference does;
        # when they do not, that ratio would stretch the audio, so map by time instead.
        tolerance = max(config.duration_tolerance_s, step)
        # One pass over the audio keeps only the mel columns a window may take. Which ones the ratio
        # mapping takes depends on the audio's length, unknown until the pass ends; keep those of every
        # length it would be used for (a few columns more per window).
        candidates = _candidate_columns(starts, spans, info.frames, info.duration, tolerance, config)
        # The windows' own audio (the same track, at 16 kHz) from the mel's decoding pass: one decode, one open.
        collector = (WindowAudio(spans, config.audio_context_s, AUDIO_RATE)
                     if config.audio_context_s is not None else None)
        side = (AUDIO_RATE, collector.feed) if collector is not None else None
        mel = stream_mel(iter_audio(audio_path, config.mel.sample_rate, side=side), config.mel, candidates)
        if mel.is_silent(config.silence_dbfs):
            raise MediaError(audio_path, f"silent audio (RMS below {config.silence_dbfs} dBFS)")
        by_ratio = abs(mel.seconds - info.duration) <= tolerance
        columns = [_columns(mel, start, span, info.frames, by_ratio, config, audio_path, window)
                   for window, (start, span) in enumerate(zip(starts, spans))]
        wanted = [c for c in columns if not isinstance(c, MediaError)]
        if not all(mel.has(first, last) for first, last in wanted):
            # Not expected (the candidates cover every window); a second pass keeps it exact.
            mel = stream_mel(iter_audio(audio_path, config.mel.sample_rate), config.mel,
                             (c for first, last in wanted for c in range(first, last)))
        db_min, db_max = mel.db_range()
        # The same audio as the mel's (the denoised track when there is one), at 16 kHz.
        contexts = collector.result() if collector is not None else [(None, None)] * len(spans)
        reader.will_read(s + i for s in starts for i in range(config.window_len))
        for window, (start, (start_time, end_time), span_columns, (audio, placement)) in enumerate(
                zip(starts, spans, columns, contexts)):
            key = keys[window]
            indices = list(range(start, start + config.window_len))
            try:
                if isinstance(span_columns, MediaError):
                    raise span_columns
                first, last = span_columns
                crops, box = crop_window(reader.read(indices), config, centred, video_path, faces)
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
            if placement is not None:
                sample_meta["audio"] = placement
            yield WindowSample(key, crops, mel.db(first, last), int(label), sample_meta, audio=audio)


def window_audio(audio_path: str, spans: list[tuple[float, float]], context_s: float,
                 sample_rate: int = AUDIO_RATE) -> list[tuple[np.ndarray, dict]]:
    """Each window's audio with `context_s` either side, int16 mono, and its placement (json["audio"]).

    A window spans [round(start_time * rate), round(end_time * rate)) of the track, whose sample 0 is
    shown with the first frame (media.audio_decode), the same times as the window's frames. Context the clip's
    start or end cuts off is left out and counted (cut_before, cut_after), so a detector scores the
    offsets it has; the window's own span past the audio's end (audio and video lengths differ by less
    than compose's tolerance) is silence, as a player plays it, and counted as window_padded.
    One streaming pass keeps only the windows' samples, whatever the clip's length.
    """
    collector = WindowAudio(spans, context_s, sample_rate)
    for block in iter_audio(audio_path, sample_rate):
        collector.feed(block)
    return collector.result()


class WindowAudio:
    """window_audio's work fed block by block, so it can share another pass over the track (the mel's)."""

    def __init__(self, spans: list[tuple[float, float]], context_s: float, sample_rate: int = AUDIO_RATE) -> None:
        self.context_s, self.sample_rate = context_s, sample_rate
        self.context = int(round(context_s * sample_rate))
        self.bounds = [(int(round(start * sample_rate)), int(round(end * sample_rate))) for start, end in spans]
        self.buffers = [np.zeros(last - first + 2 * self.context, dtype=np.float32) for first, last in self.bounds]
        self.position = 0

    def feed(self, block: np.ndarray) -> None:
        """The track's next samples (float32 mono at sample_rate)."""
        context, position = self.context, self.position
        end = position + block.size
        for (first, last), buffer in zip(self.bounds, self.buffers):
            low, high = max(first - context, position), min(last + context, end)
            if low < high:
                buffer[low - (first - context):high - (first - context)] = block[low - position:high - position]
        self.position = end

    def result(self) -> list[tuple[np.ndarray, dict]]:
        """(int16 samples, placement) per window, from the whole track fed."""
        context, position, out = self.context, self.position, []
        for (first, last), buffer in zip(self.bounds, self.buffers):
            cut_before = min(context, max(0, context - first))
            cut_after = min(context, max(0, last + context - position))
            kept = buffer[cut_before:len(buffer) - cut_after]
            pcm = np.clip(np.round(kept * 32767.0), -32768, 32767).astype(np.int16)
            out.append((pcm, {"sample_rate": self.sample_rate, "context_s": float(self.context_s),
                              "window_start": context - cut_before, "window_samples": last - first,
                              "cut_before": cut_before, "cut_after": cut_after,
                              "window_padded": min(last - first, max(0, last - position))}))
        return out


def _window_span(reader: FrameReader, start: int, window_len: int, step: float) -> tuple[float, float]:
    """Start and end time of a window: its first frame's time and the next frame's (or one step on)."""
    index = reader.index

    def time_of(frame: int) -> float:
        # frame_times' arithmetic for one frame: the whole video's times are never held.
        return float(np.float64(index.pts[frame] - index.pts[0]) * index.time_base)

    last = start + window_len - 1
    end_time = time_of(last + 1) if last + 1 < len(index.pts) else time_of(last) + step
    return time_of(start), end_time


def _columns(mel: ClipMel, start: int, span: tuple[float, float], frames: int, by_ratio: bool,
             config: WindowConfig, audio_path: str, window: int) -> tuple[int, int] | MediaError:
    """The mel columns [first, last) of one window, or why it has none."""
    start_time, end_time = span
    if by_ratio:
        first, last = window_columns(start, config.window_len, mel.columns, frames)
    else:
        if end_time > mel.seconds:
            return TooShort(audio_path, f"audio ends at {mel.seconds:.2f}s, before window "
                                        f"{window} ({start_time:.2f}-{end_time:.2f}s)")
        first, last = time_columns(start_time, end_time, config.mel)
    return first, max(last, first + 1)


def _candidate_columns(starts: list[int], spans: list[tuple[float, float]], frames: int, duration: float,
                       tolerance: float, config: WindowConfig) -> list[int]:
    """Every mel column a window could take, whichever audio length the pass finds.

    By time, a window's columns do not depend on the audio's length. By ratio they do, but the
    ratio is used only for lengths within `tolerance` of the video's: a short range of column counts.
    """
    mel = config.mel
    # One column more each side than the tolerance allows, for rounding in the seconds.
    fewest = mel_columns(max(0, int(np.floor((duration - tolerance) * mel.sample_rate))), mel) - 1
    most = mel_columns(int(np.ceil((duration + tolerance) * mel.sample_rate)), mel) + 1
    wanted: set[int] = set()
    for start, (start_time, end_time) in zip(starts, spans):
        first, last = time_columns(start_time, end_time, mel)
        wanted.update(range(first, max(last, first + 1)))
        for columns in range(max(1, fewest), most + 1):
            first, last = window_columns(start, config.window_len, columns, frames)
            wanted.update(range(first, max(last, first + 1)))
    return sorted(wanted)


def _window_faces(config: WindowConfig, label: str):
    """A face follower for one clip's windows (media.faces.WindowFaces)."""
    from avlips.media.faces import WindowFaces

    return WindowFaces(min_fraction=config.min_face_fraction, label=label)


def crop_window(frames: np.ndarray, config: WindowConfig, centred: bool, label: str, faces=None
                ) -> tuple[np.ndarray, list[int] | None]:
    """Frames at the sample size: whole frames for centred sources, else one face-centred square.

    `faces` (a WindowFaces) carries the face from the clip's previous window; without it the
    window's face is found on its own.
    """
    size = config.frame_size
    if centred:
        if frames.shape[1:3] == (size, size):
            return frames, None  # resized while decoding
        # The reference resizes whole (already face-centred) frames with OpenCV's bilinear default.
        return np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_LINEAR) for f in frames]), None
    from avlips.media.faces import crop_square, square_crop_box

    # One box for the whole window keeps the crops steady across its frames.
    face = (faces or _window_faces(config, label)).box(frames)
    box = square_crop_box(face, frames.shape[1:3], config.crop_scale)
    return np.stack([crop_square(frame, box, size) for frame in frames]), [int(v) for v in box]
