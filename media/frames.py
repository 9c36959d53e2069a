"""Decode video frames by index: upright RGB, frame-accurate, seeking only when that saves decoding.

Frames are RGB uint8 arrays (H, W, 3) with the container's rotation applied. "Frame i" is the
i-th frame in presentation order of the file's frame index (probe.py), so indices stay exact on
variable frame rate video and seeking lands on the frame asked for.
"""
from __future__ import annotations

import functools
import os
from typing import Callable, Iterable, Iterator, Sequence

import av
import numpy as np

from avlips.media.errors import MediaError, TruncatedMedia
from avlips.media.probe import FrameIndex, VideoInfo, frame_index, frame_times, open_media, video_info, video_stream


# How FrameReader's decoders use threads: FFmpeg's choice ("AUTO": frame and slice threads), unless
# a caller that parallelises by process sets "NONE" (compose's workers: one core each, where frame
# threads cost about a sixth more CPU time per frame for no gain in throughput).
_decoder_threads = "AUTO"


def set_decoder_threads(thread_type: str) -> str:
    """How FrameReader decoders thread from now on ("AUTO", "FRAME", "SLICE", "NONE"); returns the previous setting."""
    global _decoder_threads
    if thread_type not in ("AUTO", "FRAME", "SLICE", "NONE"):
        raise ValueError(f"decoder threads must be AUTO, FRAME, SLICE or NONE, got {thread_type!r}")
    previous, _decoder_threads = _decoder_threads, thread_type
    return previous


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
        self._container = open_media(self.path)
        try:
            self._stream = video_stream(self._container, self.path)
            self._stream.thread_type = _decoder_threads  # before the index scan opens the decoder
            self.index = frame_index(self.path, self._container)
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
        return video_info(self.path, self._container, self.index)

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


def _positioner(index: FrameIndex, pts_to_pos: dict[int, int], key: int) -> Callable[[int], int | None]:
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


def _seek_aim(index: FrameIndex, key: int, early: bool) -> int:
    """The stamp to seek to for keyframe `key`: its pts, or one early enough to land at or before its packet."""
    aim = int(index.pts[key])
    if early:
        aim = max(aim - index.seek_back - 1, min(0, int(index.pts[0])))  # some demuxers refuse negative stamps
    return aim


def _keyframe_at_or_before(index: FrameIndex, target: int) -> int:
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
    index = frame_index(path)
    stop = len(index.pts) if stop is None else min(stop, len(index.pts))
    if start >= stop:
        return
    pts_to_pos = {int(p): n for n, p in enumerate(index.pts)}
    container = open_media(path)
    try:
        stream = video_stream(container, path)
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


