"""Decode a file's first audio stream to float samples, in sync with its first frame.

Sample 0 is the sound played with the first video frame: a track that starts later gets silence
in front, one that starts earlier loses its head, as players do. Resampling is soxr's, with
librosa's length rule, so the samples equal what the reference's librosa.load gives.
"""
from __future__ import annotations

import os
from typing import Callable, Iterator

import av
import numpy as np

from avlips.media.errors import MediaError, NoAudio, TruncatedMedia
from avlips.media.probe import audio_stream, declared_seconds, frame_index, open_media


def _open_audio(path: str) -> av.container.InputContainer:
    """open_media, quicker for PCM wavs: their header says all, so FFmpeg need not read ahead to learn the streams.

    By default opening reads up to 5 MB of packets to fill in stream parameters (a 16 kHz wav
    whole: about 5 ms a clip, more than decoding it); the same packets then come out again.
    """
    if path.lower().endswith(".wav"):
        container = open_media(path, {"probesize": "32"})
        if container.format.name == "wav" and all(
                s.codec_context is not None and s.codec_context.name.startswith("pcm_") for s in container.streams.audio):
            return container
        container.close()  # a compressed codec in a wav: let FFmpeg learn what it needs
    return open_media(path)


def _decoded_audio(path: str) -> Iterator[tuple[int, np.ndarray]]:
    """(native rate, planar float32 chunk (C, n)) of the first audio stream; sample 0 is shown with frame 0."""
    container = _open_audio(path)
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


class _MonoStream:
    """Decoded chunks in, read_audio's mono blocks at `sample_rate` out: its mixing and resampling, pushed a chunk at a time."""

    def __init__(self, path: str, sample_rate: int, block_samples: int) -> None:
        self.path, self.sample_rate, self.block_samples = path, sample_rate, block_samples
        self.native_rate = sample_rate
        self.resampler = None
        self.pending: list[np.ndarray] = []
        self.pending_len = self.decoded = self.yielded = 0

    def _mixed(self) -> np.ndarray:
        # read_audio's mono mix (a float32 mean over channels), one decoded batch at a time.
        block = np.concatenate(self.pending, axis=1).astype(np.float32).mean(axis=0)
        self.pending, self.pending_len = [], 0
        return block

    def push(self, native_rate: int, chunk: np.ndarray) -> np.ndarray | None:
        """One decoded chunk (C, n); a block when enough are pending."""
        if self.resampler is None and native_rate != self.sample_rate:
            import soxr

            self.resampler = soxr.ResampleStream(native_rate, self.sample_rate, 1, dtype="float32", quality="HQ")
        self.native_rate = native_rate
        self.pending.append(chunk)
        self.pending_len += chunk.shape[1]
        self.decoded += chunk.shape[1]
        if self.pending_len < self.block_samples:
            return None
        block = self._mixed()
        block = self.resampler.resample_chunk(block) if self.resampler is not None else block
        self.yielded += block.size
        return block

    def finish(self) -> np.ndarray | None:
        """The last block (None when empty); NoAudio when nothing was decoded."""
        if not self.decoded:
            raise NoAudio(self.path, "audio stream decodes to no samples")
        tail = self._mixed() if self.pending else np.zeros(0, dtype=np.float32)
        if self.resampler is not None:
            tail = self.resampler.resample_chunk(tail, last=True)  # flushes the filter's delay
            # read_audio's length rule (librosa's): zero-pad or trim the end to ceil(n * ratio).
            want = resampled_length(self.decoded, self.native_rate, self.sample_rate) - self.yielded
            tail = np.concatenate([tail[:max(want, 0)], np.zeros(max(want - tail.size, 0), np.float32)])
        return tail if tail.size else None


def iter_audio(path: str | os.PathLike, sample_rate: int = 16000, block_samples: int = 1 << 16,
               side: tuple[int, Callable[[np.ndarray], None]] | None = None) -> Iterator[np.ndarray]:
    """read_audio(path, sample_rate) as consecutive float32 mono blocks, never holding the whole clip.

    The concatenated blocks equal read_audio's array exactly: mixing is per sample, and soxr's
    streaming resampler gives its one-shot output whatever the chunking. `side` (rate, consume)
    also hands read_audio(path, rate)'s blocks to `consume`, from the same decoding pass: a caller
    that needs the track at two rates decodes it once.
    """
    path = str(path)
    main = _MonoStream(path, sample_rate, block_samples)
    other = _MonoStream(path, side[0], block_samples) if side is not None else None
    for native_rate, chunk in _decoded_audio(path):
        if other is not None:
            block = other.push(native_rate, chunk)
            if block is not None:
                side[1](block)
        block = main.push(native_rate, chunk)
        if block is not None:
            yield block
    tail = main.finish()
    if other is not None:
        block = other.finish()
        if block is not None:
            side[1](block)
    if tail is not None:
        yield tail
