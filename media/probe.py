"""Open media files, index their frames, and say what they hold.

Opening and probing run in-process with PyAV. The frame index lists every frame's presentation
stamp, read from the demuxed packets (nothing is decoded), so "frame i" is the i-th frame in
presentation order, exact on variable frame rate video; frames.py seeks and decodes by it.
"""
from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import asdict, dataclass

import av
import numpy as np

from avlips.media.errors import NoAudio, NoFrames, NotAVideo, TruncatedMedia, UnreadableFile


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
class AudioInfo:
    """Facts of the first audio stream of a file."""

    path: str
    rate: int
    channels: int
    duration: float
    codec: str


@dataclass(frozen=True)
class FrameIndex:
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


# ---- opening ---------------------------------------------------------------------------------


def check_readable(path: str) -> None:
    """Raise UnreadableFile / NotAVideo for paths that cannot be media at all."""
    if not os.path.exists(path):
        raise UnreadableFile(path, "no such file")
    if os.path.isdir(path):
        raise UnreadableFile(path, "is a directory")
    if not os.access(path, os.R_OK):
        raise UnreadableFile(path, "permission denied")
    if os.path.getsize(path) == 0:
        raise NotAVideo(path, "empty file (0 bytes)")


def open_media(path: str | os.PathLike, options: dict[str, str] | None = None) -> av.container.InputContainer:
    """Open a container (FFmpeg format `options`), turning every failure into a MediaError that names the file."""
    path = str(path)
    check_readable(path)
    try:
        return av.open(path, metadata_errors="ignore", options=options or {})
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


def video_stream(container: av.container.InputContainer, path: str) -> av.video.stream.VideoStream:
    """The first real video stream of an open container (cover art is not one); NotAVideo when none."""
    streams = [s for s in container.streams.video if s.codec_context is not None]
    # Cover art is an attached picture, not a video.
    streams = [s for s in streams if not (s.disposition & av.stream.Disposition.attached_pic)]
    if not streams:
        raise NotAVideo(path, "no video stream")
    return streams[0]


def audio_stream(container: av.container.InputContainer):
    """The first audio stream with a sample rate, or None."""
    streams = [s for s in container.streams.audio if s.codec_context is not None and s.rate]
    return streams[0] if streams else None


# ---- durations -------------------------------------------------------------------------------


def declared_seconds(stream) -> float | None:
    """A stream's duration as its container declares it, in seconds; None when it declares none."""
    if stream.duration is None or stream.time_base is None:
        return None
    return float(stream.duration * stream.time_base)


def audio_seconds(stream, container: av.container.InputContainer) -> float:
    """How long an audio stream lasts: its own declared duration, else the container's, else 0."""
    declared = declared_seconds(stream)
    if declared is not None:
        return declared
    if container.duration:
        return container.duration / av.time_base
    return 0.0


# ---- the frame index -------------------------------------------------------------------------


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


# Scanned frame indexes by (path, size, mtime): a file is demuxed once however often it is opened.
_INDEX_CACHE: OrderedDict[tuple[str, int, int], FrameIndex] = OrderedDict()
_INDEX_CACHE_SIZE = 256
_INDEX_LOCK = threading.Lock()


def _scan_index(container: av.container.InputContainer, path: str) -> FrameIndex:
    """Demux every video packet of an open container (no decoding) into a FrameIndex."""
    stream = video_stream(container, path)
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
    return FrameIndex(pts_sorted, keyframe, time_base, duration, rotation, declared, decode_order, seek_back)


def frame_index(path: str | os.PathLike, container: av.container.InputContainer | None = None) -> FrameIndex:
    """The file's frame index, scanned on first use with `container` (an open one of that file) or its own."""
    path = str(path)
    check_readable(path)
    stat = os.stat(path)
    key = (path, stat.st_size, stat.st_mtime_ns)
    with _INDEX_LOCK:
        index = _INDEX_CACHE.get(key)
        if index is not None:
            _INDEX_CACHE.move_to_end(key)
            return index
    if container is None:
        with open_media(path) as own:
            index = _scan_index(own, path)
    else:
        index = _scan_index(container, path)
    with _INDEX_LOCK:
        _INDEX_CACHE[key] = index
        while len(_INDEX_CACHE) > _INDEX_CACHE_SIZE:
            _INDEX_CACHE.popitem(last=False)
    return index


def frame_times(path: str | os.PathLike) -> np.ndarray:
    """Presentation time in seconds of every frame, counted from the first frame."""
    index = frame_index(path)
    return (index.pts - index.pts[0]).astype(np.float64) * index.time_base


# ---- probing ---------------------------------------------------------------------------------


def video_info(path: str, container: av.container.InputContainer, index: FrameIndex) -> VideoInfo:
    """VideoInfo from an open container's stream headers and the file's frame index."""
    stream = video_stream(container, path)
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
    audio = audio_stream(container)
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
        audio_duration=audio_seconds(audio, container) if audio is not None else 0.0,
    )


def probe(path: str | os.PathLike) -> VideoInfo:
    """Streams, frame rate, frame count, duration, rotation and audio facts of a video file."""
    path = str(path)
    with open_media(path) as container:
        return video_info(path, container, frame_index(path, container))


def probe_audio(path: str | os.PathLike) -> AudioInfo:
    """Sample rate, channels, duration and codec of a file's first audio stream."""
    path = str(path)
    with open_media(path) as container:
        stream = audio_stream(container)
        if stream is None:
            raise NoAudio(path, "no audio stream")
        duration = audio_seconds(stream, container)
        if duration <= 0:
            raise NoAudio(path, "audio stream has zero duration")
        return AudioInfo(path, int(stream.rate), int(stream.channels), duration, stream.codec_context.name)
