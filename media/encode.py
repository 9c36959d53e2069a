"""Write media files: wav, H.264 mp4 from RGB frames, and a new audio track beside a video.

Encoding and muxing drive ffmpeg through ffmpeg-python, always the binary ffmpeg_binary.py
chooses (the pinned one unless params.yaml names another), never PATH's: the bytes written depend
on the build. Every file is written under a temporary name and renamed, so a failure leaves
nothing under the final name.
"""
from __future__ import annotations

import os
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from avlips.media.errors import MediaError
from avlips.media.ffmpeg_binary import ffmpeg_exe


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
    stream is used. `keyint` caps the distance between keyframes; `codec` may be libx265. Odd
    frame sizes are padded by one edge pixel. Output is bit-exact for the same input and the same
    ffmpeg binary (no encoder version or date in the file).
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
