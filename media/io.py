"""Probe, decode, encode and mux media files.

Decoding and probing run in-process with PyAV. Encoding and muxing drive an ffmpeg binary
through ffmpeg-python: the one on PATH, or the one shipped by imageio-ffmpeg.

Frames are RGB uint8 arrays (H, W, 3) with the container's rotation applied. "Frame i" is the
i-th frame in presentation order, read from a packet index, so indices stay exact on variable
frame rate video and seeking lands on the frame asked for.
"""
from __future__ import annotations

import functools
import os
import shutil
import subprocess
import tempfile
import threading
from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import av
import numpy as np

from avlips.media.errors import (
    MediaError,
    NoAudio,
    NoFrames,
    NotAVideo,
    TruncatedMedia,
    UnreadableFile,
)


@dataclass(frozen=True)
class VideoInfo:
    """What a media file holds, as needed by the stages."""

    path: str
    width: int  # displayed width (after rotation)
    height: int
    fps: float  # average frame rate: frames / duration
    nominal_fps: float  # the stream's declared rate
    frames: int
    duration: float  # seconds of video
    rotation: int  # degrees clockwise the frames are turned for display
    codec: str
    variable_frame_rate: bool
    has_audio: bool
    audio_rate: int
    audio_channels: int
    audio_codec: str
    audio_duration: float

    def to_dict(self) -> dict:
        """Plain-dict form for manifests."""
        return asdict(self)


@dataclass(frozen=True)
class _FrameIndex:
    """Presentation timestamps of every frame of a video stream, sorted."""

    pts: np.ndarray  # int64, stream time base
    keyframe: np.ndarray  # bool, per frame in presentation order
    time_base: float
    duration: float
    rotation: int  # clockwise degrees for display
    declared_frames: int  # the container's own count (0 when it has none)
    # Packet stamps follow decode order (guessed: AVI has none of its own) while the codec reorders
    # frames: a decoded frame's stamp names its packet, not its place, so frames are counted instead.
    decode_order: bool = False
    # Ticks before a keyframe's pts that reach its packet when seeking: MPEG-TS seeks by decode stamps,
    # which run behind the presentation stamps by up to the reorder delay.
    seek_back: int = 0


def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary to drive: PATH first, else imageio-ffmpeg's."""
    found = shutil.which("ffmpeg")
    if found:
        return found
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def _check_readable(path: str) -> None:
    """Raise UnreadableFile / NotAVideo for paths that cannot be media at all."""
    if not os.path.exists(path):
        raise UnreadableFile(path, "no such file")
    if os.path.isdir(path):
        raise UnreadableFile(path, "is a directory")
    if not os.access(path, os.R_OK):
        raise UnreadableFile(path, "permission denied")
    if os.path.getsize(path) == 0:
        raise NotAVideo(path, "empty file (0 bytes)")


def _open(path: str | os.PathLike) -> av.container.InputContainer:
    """Open a container, turning every failure into a MediaError that names the file."""
    path = str(path)
    _check_readable(path)
    try:
        return av.open(path, metadata_errors="ignore")
    except PermissionError as exc:
        raise UnreadableFile(path, f"cannot open: {exc}") from exc
    except (av.error.FFmpegError, UnicodeDecodeError) as exc:
        if _looks_like_mp4(path):
            raise TruncatedMedia(path, "mp4 header present but the container is unreadable: probably a truncated or "
                                       f"unfinished file, its index (moov atom) missing ({exc})") from exc
        raise NotAVideo(path, f"not a media file ffmpeg can read ({exc})") from exc


def _looks_like_mp4(path: str) -> bool:
    with open(path, "rb") as handle:
        head = handle.read(12)
    return len(head) >= 8 and head[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide")


def _rotation_of(stream: av.video.stream.VideoStream, container: av.container.InputContainer) -> int:
    """Clockwise display rotation in degrees (0, 90, 180, 270) from tags or the display matrix."""
    for source in (stream.metadata, container.metadata):
        tag = source.get("rotate")
        if tag:
            try:
                return int(tag) % 360
            except ValueError:
                pass
    # Newer muxers store a display matrix instead of a tag; decoded frames carry it.
    try:
        for frame in container.decode(stream):
            # PyAV reports the display matrix angle counter-clockwise.
            return int(round(-frame.rotation)) % 360
    except av.error.FFmpegError:
        pass
    return 0


def _video_stream(container: av.container.InputContainer, path: str) -> av.video.stream.VideoStream:
    streams = [s for s in container.streams.video if s.codec_context is not None]
    # Cover art is an attached picture, not a video.
    streams = [s for s in streams if not (s.disposition & av.stream.Disposition.attached_pic)]
    if not streams:
        raise NotAVideo(path, "no video stream")
    return streams[0]


# Scanned frame indexes by (path, size, mtime): a file is demuxed once however often it is opened.
_INDEX_CACHE: OrderedDict[tuple[str, int, int], _FrameIndex] = OrderedDict()
_INDEX_CACHE_SIZE = 256
_INDEX_LOCK = threading.Lock()


def _scan_index(container: av.container.InputContainer, path: str) -> _FrameIndex:
    """Demux every video packet of an open container (no decoding) into a _FrameIndex."""
    stream = _video_stream(container, path)
    pts: list[int] = []
    keys: list[bool] = []
    discarded = untimed = 0
    offsets: set[int | None] = set()  # pts - dts of each packet
    try:
        for packet in container.demux(stream):
            if packet.size == 0:
                continue
            if packet.is_discard:
                # Before the edit list's start (a clip cut without re-encoding): decoded for reference,
                # never shown, so not a frame.
                discarded += 1
                continue
            if packet.pts is None:
                untimed += 1
                continue
            pts.append(packet.pts)
            keys.append(bool(packet.is_keyframe))
            offsets.add(None if packet.dts is None else packet.pts - packet.dts)
    except av.error.FFmpegError as exc:
        if not pts:
            raise TruncatedMedia(path, f"no readable video packets ({exc})") from exc
        # A truncated tail: keep the packets read so far, they are decodable.
    if not pts and untimed:
        raise NotAVideo(path, f"{untimed} video packets carry no timestamps (a raw stream such as .h264?); "
                              "put it in a container first, e.g. ffmpeg -i IN -c copy OUT.mp4")
    # A recording that starts mid-GOP (a cut .ts capture): the frames before the first keyframe have
    # no references to decode from, and players skip them too.
    leading = keys.index(True) if True in keys else 0
    pts, keys = pts[leading:], keys[leading:]
    if not pts:
        raise NoFrames(path, "video stream has no frames")
    order = np.argsort(np.asarray(pts, dtype=np.int64), kind="stable")
    pts_sorted = np.asarray(pts, dtype=np.int64)[order]
    keyframe = np.asarray(keys, dtype=bool)[order]
    time_base = float(stream.time_base)
    if len(pts_sorted) > 1:
        last_step = float(np.median(np.diff(pts_sorted[-min(len(pts_sorted), 10):])))
    else:
        rate = float(stream.average_rate or stream.base_rate or 25)
        last_step = 1.0 / rate / time_base
    duration = float(pts_sorted[-1] - pts_sorted[0] + last_step) * time_base
    container.seek(int(pts_sorted[0]), stream=stream, backward=True)
    rotation = _rotation_of(stream, container)
    declared = max(0, int(stream.frames or 0) - discarded - leading)  # the container counts skipped packets too
    # Real stamps of reordered frames differ from their decode stamps by varying amounts.
    decode_order = bool(stream.codec_context.has_b_frames) and len(pts) > 1 and len(offsets) == 1 \
        and None not in offsets
    seek_back = max([o for o in offsets if o is not None] + [0])
    return _FrameIndex(pts_sorted, keyframe, time_base, duration, rotation, declared, decode_order, seek_back)


def _frame_index(path: str | os.PathLike, container: av.container.InputContainer | None = None) -> _FrameIndex:
    """The file's frame index, scanned on first use with `container` (an open one of that file) or its own."""
    path = str(path)
    _check_readable(path)
    stat = os.stat(path)
    key = (path, stat.st_size, stat.st_mtime_ns)
    with _INDEX_LOCK:
        index = _INDEX_CACHE.get(key)
        if index is not None:
            _INDEX_CACHE.move_to_end(key)
            return index
    if container is None:
        with _open(path) as own:
            index = _scan_index(own, path)
    else:
        index = _scan_index(container, path)
    with _INDEX_LOCK:
        _INDEX_CACHE[key] = index
        while len(_INDEX_CACHE) > _INDEX_CACHE_SIZE:
            _INDEX_CACHE.popitem(last=False)
    return index


def _video_info(path: str, container: av.container.InputContainer, index: _FrameIndex) -> VideoInfo:
    """VideoInfo from an open container's stream headers and the file's frame index."""
    stream = _video_stream(container, path)
    rotation = index.rotation
    width, height = stream.codec_context.width, stream.codec_context.height
    if width <= 0 or height <= 0:
        raise NotAVideo(path, f"video stream has no picture size ({width}x{height})")
    if rotation in (90, 270):
        width, height = height, width
    frames = len(index.pts)
    if index.declared_frames > frames:
        raise TruncatedMedia(path, f"container declares {index.declared_frames} frames, "
                                   f"only {frames} are in the file")
    if index.duration <= 0:
        raise NoFrames(path, "zero duration")
    steps = np.diff(index.pts)
    vfr = bool(len(steps) > 1 and (steps.max() - steps.min()) > 0.1 * max(1.0, float(np.median(steps))))
    nominal = float(stream.base_rate or stream.average_rate or 0.0)
    audio = _audio_stream(container)
    audio_duration = 0.0
    if audio is not None and audio.duration is not None:
        audio_duration = float(audio.duration * audio.time_base)
    elif audio is not None and container.duration:
        audio_duration = container.duration / av.time_base
    return VideoInfo(
        path=path,
        width=int(width),
        height=int(height),
        fps=frames / index.duration,
        nominal_fps=nominal,
        frames=frames,
        duration=index.duration,
        rotation=rotation,
        codec=stream.codec_context.name,
        variable_frame_rate=vfr,
        has_audio=audio is not None,
        audio_rate=int(audio.rate) if audio is not None else 0,
        audio_channels=int(audio.channels) if audio is not None else 0,
        audio_codec=audio.codec_context.name if audio is not None else "",
        audio_duration=audio_duration,
    )


def probe(path: str | os.PathLike) -> VideoInfo:
    """Streams, frame rate, frame count, duration, rotation and audio facts of a video file."""
    path = str(path)
    with _open(path) as container:
        return _video_info(path, container, _frame_index(path, container))


def frame_times(path: str | os.PathLike) -> np.ndarray:
    """Presentation time in seconds of every frame, counted from the first frame."""
    index = _frame_index(path)
    return (index.pts - index.pts[0]).astype(np.float64) * index.time_base


def _audio_stream(container: av.container.InputContainer):
    streams = [s for s in container.streams.audio if s.codec_context is not None and s.rate]
    return streams[0] if streams else None


def _to_rgb(frame: av.VideoFrame, rotation: int, size: tuple[int, int] | None, interpolation: str = "area",
            out: np.ndarray | None = None) -> np.ndarray:
    """A decoded frame as upright RGB, resized to `size` (width, height) into `out` when given."""
    # One swscale thread: callers parallelise by process, and the benchmark counts one core.
    array = frame.to_ndarray(format="rgb24", threads=1)
    if rotation:
        # np.rot90 turns counter-clockwise; a clockwise display rotation needs negative turns.
        array = np.ascontiguousarray(np.rot90(array, k=-(rotation // 90)))
    if size is not None and (array.shape[1], array.shape[0]) != tuple(size):
        import cv2

        flag = {"area": cv2.INTER_AREA, "linear": cv2.INTER_LINEAR}[interpolation]
        return cv2.resize(array, tuple(size), dst=out, interpolation=flag)
    if out is not None:
        out[...] = array
        return out
    return array


class FrameReader:
    """An open video that serves frame indices in any order, decoding as little as it can.

    Seeks only when the keyframe before the wanted frame lies past the current position (then
    seeking skips decoding); otherwise it decodes forward. Frames that no other frame references
    are decoded only when asked for (now, or later as announced with `will_read`). Keeps the
    container open between calls, so reading a clip's windows one after another costs one open
    and one pass at most. `size` (width, height) resizes with OpenCV's `interpolation` ("area" or
    "linear") straight into the returned array.
    """

    def __init__(self, path: str | os.PathLike, size: tuple[int, int] | None = None,
                 interpolation: str = "area") -> None:
        self.path = str(path)
        self.size = size
        self.interpolation = interpolation
        self._container = _open(self.path)
        try:
            self._stream = _video_stream(self._container, self.path)
            self._stream.thread_type = "AUTO"  # before the index scan opens the decoder
            self.index = _frame_index(self.path, self._container)
        except BaseException:
            self._container.close()
            raise
        self._pts_to_pos = {int(p): n for n, p in enumerate(self.index.pts)}
        self._frames: Iterator[tuple[int, av.VideoFrame]] | None = None
        self._position = -1  # index of the last frame decoded
        self._wanted: set[int] = set()  # frames decoded even when nothing references them
        self._planned: set[int] | None = None  # every frame callers will ask for, when announced
        self._last_target = -1
        self._skipping = True

    def __enter__(self) -> "FrameReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Release the container."""
        self._container.close()

    @functools.cached_property
    def info(self) -> VideoInfo:
        """What probe() says of this file, from the open container."""
        return _video_info(self.path, self._container, self.index)

    def will_read(self, indices: Iterable[int]) -> None:
        """Announce frames later reads will ask for, so decoding never skips them on the way."""
        self._planned = {int(i) for i in indices}

    def _decoded(self, key: int) -> Iterator[tuple[int, av.VideoFrame]]:
        """(index, frame) in presentation order from the last seek, to keyframe `key`."""
        context = self._stream.codec_context
        skipping = None
        place = _positioner(self.index, self._pts_to_pos, key)
        try:
            for packet in self._container.demux(self._stream):
                index = self._pts_to_pos.get(int(packet.pts)) if packet.pts is not None else None
                # The decoder knows which frames nothing references; it skips those we do not want.
                # Unannounced, frames past this read's last may be the next read's: those stay.
                skip = (self._skipping and index is not None and index not in self._wanted
                        and (self._planned is not None or index < self._last_target)
                        and not self.index.decode_order)  # counting frames needs every one decoded
                if skip != skipping:
                    context.skip_frame = "NONREF" if skip else "DEFAULT"
                    skipping = skip
                for frame in packet.decode():
                    position = None if frame.pts is None else place(int(frame.pts))
                    if position is not None:
                        yield position, frame
        except av.error.FFmpegError as exc:
            raise TruncatedMedia(self.path, f"decoding stopped: {exc}") from exc

    def read(self, indices: Sequence[int]) -> np.ndarray:
        """Frames at the given indices (presentation order), as (N, H, W, 3) RGB uint8."""
        wanted = [int(i) for i in indices]
        if not wanted:
            return np.zeros((0, 0, 0, 3), dtype=np.uint8)
        bad = [i for i in wanted if i < 0 or i >= len(self.index.pts)]
        if bad:
            raise MediaError(self.path, f"frame indices {bad[:5]} outside 0..{len(self.index.pts) - 1}")
        rows: dict[int, list[int]] = {}
        for row, index in enumerate(wanted):
            rows.setdefault(index, []).append(row)
        self._wanted = set(rows) | (self._planned or set())
        self._last_target = max(rows)
        out: np.ndarray | None = None
        done: set[int] = set()
        for target in sorted(rows):
            if target in done:
                continue
            key = _keyframe_at_or_before(self.index, target)
            for attempt in (0, 1):
                if attempt or self._frames is None or target <= self._position or key > self._position + 1:
                    # Again after a miss: the seek may have landed past the keyframe (MPEG-TS), so aim earlier.
                    self._container.seek(_seek_aim(self.index, key, early=bool(attempt)), stream=self._stream,
                                         backward=True, any_frame=False)
                    self._frames = self._decoded(key)
                    self._position = -1
                self._skipping = attempt == 0
                for position, frame in self._frames:
                    self._position = position
                    if position in rows and position not in done:
                        out = self._store(frame, out, rows[position], len(wanted))
                        done.add(position)
                    if position >= target:
                        break
                if target in done:
                    break
                # Skipped (its packet's timestamp named another frame) or cut short: decode again, fully.
            if target not in done:
                raise TruncatedMedia(self.path, f"frame {target} is indexed but could not be decoded")
        self._skipping = True
        return out

    def _store(self, frame: av.VideoFrame, out: np.ndarray | None, rows: list[int], count: int) -> np.ndarray:
        """Convert a frame into its rows of the output, which the first frame gives its shape."""
        if out is None:
            first = _to_rgb(frame, self.index.rotation, self.size, self.interpolation)
            out = np.empty((count, *first.shape), dtype=np.uint8)
            out[rows[0]] = first
        else:
            shape = (frame.height, frame.width) if self.index.rotation in (0, 180) else (frame.width, frame.height)
            if self.size is None and shape != out.shape[1:3]:
                raise MediaError(self.path, f"frame size changes from {out.shape[1:3]} to {shape}")
            _to_rgb(frame, self.index.rotation, self.size, self.interpolation, out=out[rows[0]])
        for row in rows[1:]:
            out[row] = out[rows[0]]
        return out


def read_frames(
    path: str | os.PathLike,
    indices: Sequence[int],
    size: tuple[int, int] | None = None,
) -> np.ndarray:
    """Frames at the given indices (presentation order), as (N, H, W, 3) RGB uint8.

    Seeks to the keyframe before a wanted frame only when that skips decoding, so reading a few
    windows never decodes a whole long video. `size` is (width, height).
    """
    with FrameReader(path, size) as reader:
        return reader.read(indices)


def _positioner(index: _FrameIndex, pts_to_pos: dict[int, int], key: int) -> Callable[[int], int | None]:
    """A function giving each decoded frame's index (from its pts) after a seek to keyframe `key`; None: skip it."""
    position = -1

    def place(pts: int) -> int | None:
        nonlocal position
        if not index.decode_order:
            position = pts_to_pos.get(pts, position + 1)
        elif position >= 0:
            position += 1
        elif pts == int(index.pts[key]):
            position = key  # counting starts at the keyframe sought to
        else:
            return None
        return position

    return place


def _seek_aim(index: _FrameIndex, key: int, early: bool) -> int:
    """The stamp to seek to for keyframe `key`: its pts, or one early enough to land at or before its packet."""
    aim = int(index.pts[key])
    if early:
        aim = max(aim - index.seek_back - 1, min(0, int(index.pts[0])))  # some demuxers refuse negative stamps
    return aim


def _keyframe_at_or_before(index: _FrameIndex, target: int) -> int:
    if index.decode_order:
        # Where a keyframe shows is unknown (open GOPs show frames decoded after it before it):
        # frames are counted from the first, so decoding starts there.
        return 0
    keys = np.flatnonzero(index.keyframe[: target + 1])
    return int(keys[-1]) if len(keys) else 0


def _decode(container, stream, path: str) -> Iterator[av.VideoFrame]:
    try:
        yield from container.decode(stream)
    except av.error.FFmpegError as exc:
        raise TruncatedMedia(path, f"decoding stopped: {exc}") from exc


def iter_frames(
    path: str | os.PathLike,
    start: int = 0,
    stop: int | None = None,
    step: int = 1,
    size: tuple[int, int] | None = None,
) -> Iterator[np.ndarray]:
    """Frames start, start+step, ... before stop, decoded in one forward pass."""
    path = str(path)
    index = _frame_index(path)
    stop = len(index.pts) if stop is None else min(stop, len(index.pts))
    if start >= stop:
        return
    pts_to_pos = {int(p): n for n, p in enumerate(index.pts)}
    container = _open(path)
    try:
        stream = _video_stream(container, path)
        stream.thread_type = "AUTO"
        rotation = index.rotation
        key = _keyframe_at_or_before(index, start)
        if key > 0:
            # Aimed early enough to reach the keyframe's packet whatever stamps the demuxer seeks by.
            container.seek(_seek_aim(index, key, early=True), stream=stream, backward=True, any_frame=False)
        place = _positioner(index, pts_to_pos, key)
        for frame in _decode(container, stream, path):
            position = None if frame.pts is None else place(int(frame.pts))
            if position is None:
                continue
            if position >= stop:
                break
            if position >= start and (position - start) % step == 0:
                yield _to_rgb(frame, rotation, size)
    finally:
        container.close()


def read_frames_at(path: str | os.PathLike, times: Sequence[float]) -> np.ndarray:
    """Frames shown at the given times in seconds (the latest frame starting at or before each)."""
    starts = frame_times(path)
    indices = np.clip(np.searchsorted(starts, np.asarray(times, dtype=np.float64) + 1e-9, side="right") - 1,
                      0, len(starts) - 1)
    return read_frames(path, indices.tolist())


def _decoded_audio(path: str) -> Iterator[tuple[int, np.ndarray]]:
    """(native rate, planar float32 chunk (C, n)) of the first audio stream; sample 0 is shown with frame 0."""
    container = _open(path)
    try:
        stream = _audio_stream(container)
        if stream is None:
            raise NoAudio(path, "no audio stream")
        native_rate = int(stream.rate)
        # Players start a track at its own start time: silence before it when it starts after the first
        # frame, its head unheard when it starts before. Keep that lip-audio sync: it is what LipFD judges.
        shift = int(round(_audio_lead(container, stream, path) * native_rate))
        for chunk in _decoded_chunks(container, stream, path):
            while shift > 0:
                pad = min(shift, 1 << 16)
                yield native_rate, np.zeros((chunk.shape[0], pad), dtype=np.float32)
                shift -= pad
            if shift < 0:
                drop = min(-shift, chunk.shape[1])
                chunk, shift = chunk[:, drop:], shift + drop
            if chunk.shape[1]:
                yield native_rate, chunk
    finally:
        container.close()


def _decoded_chunks(container: av.container.InputContainer, stream, path: str) -> Iterator[np.ndarray]:
    """Planar float32 chunks (C, n) of an audio stream at its own rate, as decoded."""
    # Decoding to planar float keeps the sample values; mixing and resampling are the caller's.
    resampler = av.AudioResampler(format="fltp", layout=None, rate=int(stream.rate))
    decoded = 0
    held: np.ndarray | None = None  # the latest chunk, yielded once the next one shows it is not the last
    try:
        for frame in container.decode(stream):
            for out in resampler.resample(frame):
                if held is not None:
                    yield held
                held = out.to_ndarray()
                decoded += held.shape[1]
    except av.error.FFmpegError as exc:
        if not decoded:
            raise TruncatedMedia(path, f"audio could not be decoded ({exc})") from exc
        declared = _declared_seconds(stream)
        reached = decoded / int(stream.rate)
        if declared is not None and reached < declared - max(0.1, 0.02 * declared):
            # Damaged well before its end: the rest would be lost silently, or patched with silence
            # that a real clip never had; either way the clip's lip-audio sync would be a lie.
            raise TruncatedMedia(path, f"audio decoding stopped at {reached:.2f}s of {declared:.2f}s ({exc})") from exc
        # A damaged last packet: keep what decoded.
    for out in resampler.resample(None):
        if held is not None:
            yield held
        held = out.to_ndarray()
        decoded += held.shape[1]
    if held is None:
        return
    # A codec pads its last frame (AAC to 1024 samples); the container's duration says where the sound
    # ends (mp4 edit lists), and players stop there. Trim that padding, never more than the last frame.
    if stream.duration is not None and stream.time_base is not None:
        excess = decoded - int(round(float(stream.duration * stream.time_base) * int(stream.rate)))
        if 0 < excess < held.shape[1]:
            held = held[:, :held.shape[1] - excess]
    yield held


def _declared_seconds(stream) -> float | None:
    """The audio stream's duration as its container declares it, when it does."""
    if stream.duration is None or stream.time_base is None:
        return None
    return float(stream.duration * stream.time_base)


def _audio_lead(container: av.container.InputContainer, stream, path: str) -> float:
    """Seconds from a file's first video frame to the start of its audio stream (0 when it has no video)."""
    pictures = [s for s in container.streams.video if not (s.disposition & av.stream.Disposition.attached_pic)]
    if stream.start_time is None or not pictures:
        return 0.0
    try:
        index = _frame_index(path)
    except MediaError:
        return 0.0  # a broken picture does not make the sound unusable
    lead = float(stream.start_time * stream.time_base) - float(index.pts[0]) * index.time_base
    if lead >= index.duration:
        raise NoAudio(path, f"the audio track starts {lead:.2f}s after the first frame, "
                            f"after the video's end ({index.duration:.2f}s)")
    return lead


def read_audio(
    path: str | os.PathLike,
    sample_rate: int = 16000,
    mono: bool = True,
) -> np.ndarray:
    """The first audio stream as float32 in -1..1, resampled (soxr, high quality); (N,) or (C, N)."""
    import soxr

    path = str(path)
    chunks: list[np.ndarray] = []
    native_rate = sample_rate
    for native_rate, chunk in _decoded_audio(path):
        chunks.append(chunk)
    if not chunks:
        raise NoAudio(path, "audio stream decodes to no samples")
    audio = np.concatenate(chunks, axis=1).astype(np.float32)
    if audio.shape[1] == 0:
        raise NoAudio(path, "audio stream decodes to no samples")
    if mono:
        audio = audio.mean(axis=0, keepdims=True)
    if native_rate != sample_rate:
        resampled = soxr.resample(audio.T, native_rate, sample_rate, quality="HQ").T
        audio = np.zeros((audio.shape[0], resampled_length(audio.shape[1], native_rate, sample_rate)), np.float32)
        keep = min(audio.shape[1], resampled.shape[1])
        audio[:, :keep] = resampled[:, :keep]
    audio = np.ascontiguousarray(audio, dtype=np.float32)
    return audio[0] if mono else audio


def resampled_length(samples: int, native_rate: int, sample_rate: int) -> int:
    """How many samples `samples` at `native_rate` become at `sample_rate`: librosa's rule, ceil(n * ratio).

    librosa.load (which the reference preprocessing uses) pads or trims soxr's output to this length,
    and the mel's column count, hence the reference's column-per-frame ratio, follows from it.
    """
    return int(np.ceil(samples * (float(sample_rate) / native_rate)))


def iter_audio(path: str | os.PathLike, sample_rate: int = 16000, block_samples: int = 1 << 16
               ) -> Iterator[np.ndarray]:
    """read_audio(path, sample_rate) as consecutive float32 mono blocks, never holding the whole clip.

    The concatenated blocks equal read_audio's array exactly: mixing is per sample, and soxr's
    streaming resampler gives its one-shot output whatever the chunking.
    """
    import soxr

    path = str(path)
    resampler = None
    pending: list[np.ndarray] = []
    pending_len = decoded = 0

    def mixed() -> np.ndarray:
        # read_audio's mono mix (a float32 mean over channels), one decoded batch at a time.
        return np.concatenate(pending, axis=1).astype(np.float32).mean(axis=0)

    yielded = 0
    native_rate = sample_rate
    for native_rate, chunk in _decoded_audio(path):
        if resampler is None and native_rate != sample_rate:
            resampler = soxr.ResampleStream(native_rate, sample_rate, 1, dtype="float32", quality="HQ")
        pending.append(chunk)
        pending_len += chunk.shape[1]
        decoded += chunk.shape[1]
        if pending_len >= block_samples:
            block = mixed()
            pending, pending_len = [], 0
            block = resampler.resample_chunk(block) if resampler is not None else block
            yielded += block.size
            yield block
    if not decoded:
        raise NoAudio(path, "audio stream decodes to no samples")
    tail = mixed() if pending else np.zeros(0, dtype=np.float32)
    if resampler is not None:
        tail = resampler.resample_chunk(tail, last=True)  # flushes the filter's delay
        # read_audio's length rule (librosa's): zero-pad or trim the end to ceil(n * ratio).
        want = resampled_length(decoded, native_rate, sample_rate) - yielded
        tail = np.concatenate([tail[:max(want, 0)], np.zeros(max(want - tail.size, 0), np.float32)])
    if tail.size:
        yield tail


def write_wav(path: str | os.PathLike, audio: np.ndarray, sample_rate: int) -> None:
    """Write float audio (N,) or (C, N) as 16-bit PCM wav, via a temporary name."""
    import soundfile

    path = Path(path)
    data = np.asarray(audio, dtype=np.float32)
    data = data.T if data.ndim == 2 else data
    tmp = path.with_name(f".{path.name}.part")
    soundfile.write(str(tmp), np.clip(data, -1.0, 1.0), sample_rate, subtype="PCM_16", format="WAV")
    os.replace(tmp, path)


def _even_pad(frame: np.ndarray) -> np.ndarray:
    """Pad odd heights/widths by one edge row/column: H.264 4:2:0 needs even sizes."""
    pad_h, pad_w = frame.shape[0] % 2, frame.shape[1] % 2
    if pad_h or pad_w:
        frame = np.pad(frame, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    return frame


def _run_ffmpeg(stream_spec, path: str, frames: Iterable[np.ndarray] | None = None) -> None:
    """Run an ffmpeg-python graph, feeding raw frames on stdin; errors name the output file."""
    import threading

    args = stream_spec.compile(cmd=ffmpeg_exe())
    process = subprocess.Popen(
        args, stdin=subprocess.PIPE if frames is not None else subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    # Drain stderr on a thread so a chatty ffmpeg never blocks while we feed stdin.
    errors: list[bytes] = []
    reader = threading.Thread(target=lambda: errors.append(process.stderr.read()), daemon=True)
    reader.start()
    try:
        if frames is not None:
            try:
                for frame in frames:
                    process.stdin.write(np.ascontiguousarray(frame).tobytes())
            except BrokenPipeError:
                pass  # ffmpeg exited early; its stderr says why
            finally:
                try:
                    process.stdin.close()
                except BrokenPipeError:
                    pass
        process.wait()
        reader.join()
    except BaseException:
        process.kill()
        process.wait()
        raise
    if process.returncode != 0:
        tail = b"".join(errors).decode(errors="replace").strip().splitlines()[-5:]
        raise MediaError(path, "ffmpeg failed: " + " | ".join(tail))


def write_video(
    path: str | os.PathLike,
    frames: Iterable[np.ndarray],
    fps: float,
    audio: np.ndarray | str | os.PathLike | None = None,
    sample_rate: int = 16000,
    crf: int = 18,
    preset: str = "medium",
    keyint: int | None = None,
    codec: str = "libx264",
) -> None:
    """Encode RGB frames as H.264 (yuv420p) mp4 with optional AAC audio, via a temporary name.

    `audio` is a float array (N,) / (C, N) at `sample_rate`, or a path whose first audio
    stream is used. `keyint` caps the distance between keyframes; `codec` may be libx265. Odd frame sizes are padded by one edge pixel. Output is bit-exact for the
    same input (no encoder version or date in the file).
    """
    import ffmpeg

    path = Path(path)
    frames = iter(frames)
    try:
        first = _even_pad(np.asarray(next(frames)))
    except StopIteration:
        raise MediaError(str(path), "no frames to write") from None
    if first.dtype != np.uint8 or first.ndim != 3 or first.shape[2] != 3:
        raise MediaError(str(path), f"frames must be HxWx3 uint8, got {first.shape} {first.dtype}")
    height, width = first.shape[:2]

    def all_frames() -> Iterator[np.ndarray]:
        yield first
        for frame in frames:
            frame = _even_pad(np.asarray(frame))
            if frame.shape != first.shape:
                raise MediaError(str(path), f"frame size changed from {first.shape} to {frame.shape}")
            yield frame

    tmp = path.with_name(f".{path.stem}.part{path.suffix}")
    with tempfile.TemporaryDirectory(prefix="avlips-enc-") as scratch:
        video_in = ffmpeg.input("pipe:", format="rawvideo", pix_fmt="rgb24",
                                s=f"{width}x{height}", framerate=_rate_str(fps))
        streams = [video_in.video]
        extra: dict = {}  # output options beyond the video codec: audio, GOP, codec tweaks
        if audio is not None:
            if isinstance(audio, (str, os.PathLike)):
                audio_in = ffmpeg.input(str(audio))
            else:
                wav = os.path.join(scratch, "audio.wav")
                write_wav(wav, audio, sample_rate)
                audio_in = ffmpeg.input(wav)
            streams.append(audio_in.audio)
            extra.update(acodec="aac", audio_bitrate="128k", **{"flags:a": "+bitexact"})
        if keyint:
            extra["g"] = int(keyint)
        if codec == "libx265":
            extra["x265-params"] = "log-level=error"
            extra["tag:v"] = "hvc1"
        out = ffmpeg.output(
            *streams, str(tmp), vcodec=codec, pix_fmt="yuv420p", crf=crf, preset=preset,
            movflags="+faststart", map_metadata=-1, fflags="+bitexact", **{"flags:v": "+bitexact"},
            **extra,
        ).overwrite_output().global_args("-nostdin", "-loglevel", "error")
        try:
            _run_ffmpeg(out, str(path), all_frames())
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    os.replace(tmp, path)


def mux_audio(
    video_path: str | os.PathLike,
    audio: np.ndarray | str | os.PathLike,
    out_path: str | os.PathLike,
    sample_rate: int = 16000,
    shortest: bool = False,
) -> None:
    """Copy the video stream of one file and put a new AAC audio track beside it."""
    import ffmpeg

    out_path = Path(out_path)
    tmp = out_path.with_name(f".{out_path.stem}.part{out_path.suffix}")
    with tempfile.TemporaryDirectory(prefix="avlips-mux-") as scratch:
        if isinstance(audio, (str, os.PathLike)):
            audio_source = str(audio)
        else:
            audio_source = os.path.join(scratch, "audio.wav")
            write_wav(audio_source, audio, sample_rate)
        video_in = ffmpeg.input(str(video_path))
        audio_in = ffmpeg.input(audio_source)
        extra = {"shortest": None} if shortest else {}
        out = ffmpeg.output(
            video_in.video, audio_in.audio, str(tmp), vcodec="copy", acodec="aac",
            audio_bitrate="128k", movflags="+faststart", map_metadata=-1, fflags="+bitexact",
            **{"flags:a": "+bitexact"}, **extra,
        ).overwrite_output().global_args("-nostdin", "-loglevel", "error")
        try:
            _run_ffmpeg(out, str(out_path))
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    os.replace(tmp, out_path)


def _rate_str(fps: float) -> str:
    """A frame rate ffmpeg reads exactly: integers as-is, NTSC-style rates as fractions."""
    from fractions import Fraction

    return str(Fraction(fps).limit_denominator(1001))


@dataclass(frozen=True)
class AudioInfo:
    """Facts of the first audio stream of a file."""

    path: str
    rate: int
    channels: int
    duration: float
    codec: str


def probe_audio(path: str | os.PathLike) -> AudioInfo:
    """Sample rate, channels, duration and codec of a file's first audio stream."""
    path = str(path)
    container = _open(path)
    try:
        stream = _audio_stream(container)
        if stream is None:
            raise NoAudio(path, "no audio stream")
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration:
            duration = container.duration / av.time_base
        else:
            duration = 0.0
        if duration <= 0:
            raise NoAudio(path, "audio stream has zero duration")
        return AudioInfo(path, int(stream.rate), int(stream.channels), duration, stream.codec_context.name)
    finally:
        container.close()
