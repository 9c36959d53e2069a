"""Decode a file's first audio stream to float samples, in sync with its first frame.

Sample 0 is the sound played with the first video frame: a track that starts later gets silence
in front, one that starts earlier loses its head, as players do. Resampling is soxr's, with
librosa's length rule, so the samples equal what the reference's librosa.load gives.
"""
from __future__ import annotations

import os
from typing import Iterator

import av
import numpy as np

from avlips.media.errors import MediaError, NoAudio, TruncatedMedia
from avlips.media.probe import audio_stream, declared_seconds, frame_index, open_media


def _decoded_audio(path: str) -> Iterator[tuple[int, np.ndarray]]:
    """(native rate, planar float32 chunk (C, n)) of the first audio stream; sample 0 is shown with frame 0."""
    container = open_media(path)
    try:
        stream = audio_stream(container)
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
        declared = declared_seconds(stream)
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
    declared = declared_seconds(stream)
    if declared is not None:
        excess = decoded - int(round(declared * int(stream.rate)))
        if 0 < excess < held.shape[1]:
            held = held[:, :held.shape[1] - excess]
    yield held


def _audio_lead(container: av.container.InputContainer, stream, path: str) -> float:
    """Seconds from a file's first video frame to the start of its audio stream (0 when it has no video)."""
    pictures = [s for s in container.streams.video if not (s.disposition & av.stream.Disposition.attached_pic)]
    if stream.start_time is None or not pictures:
        return 0.0
    try:
        index = frame_index(path)
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


