"""Shared fixtures: small media made by the tests, and the real media in ../shared/media."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("NUMBA_CACHE_DIR", str(Path(__file__).resolve().parents[1] / ".numba_cache"))

REPO = Path(__file__).resolve().parents[1]
SHARED_MEDIA = Path(os.environ.get("AVLIPS_SHARED_MEDIA", REPO.parent / "shared" / "media"))


@pytest.fixture(scope="session")
def shared_media() -> Path:
    """../shared/media, or skip when the checkout has none beside it."""
    if not (SHARED_MEDIA / "video").is_dir():
        pytest.skip(f"real media not found at {SHARED_MEDIA}")
    return SHARED_MEDIA


def pinned_ffmpeg() -> str:
    """The ffmpeg binary tests shell out to: the one avlips pins, never PATH's.

    A distribution's older ffmpeg first on PATH (Debian 12's 5.1) lacks options the tests use,
    such as -display_rotation, and would make test media other than what avlips's encoder makes.
    """
    from avlips.media.ffmpeg_binary import pinned_path

    return pinned_path()


def run_ffmpeg(*args: str, **kwargs) -> subprocess.CompletedProcess:
    """Run the pinned ffmpeg quietly, overwriting outputs; a failure fails the test."""
    return subprocess.run([pinned_ffmpeg(), "-nostdin", "-loglevel", "error", "-y", *args], check=True, **kwargs)


def write_vfr_video(path: Path, durations: list[int]) -> None:
    """An H.264 mp4 whose frames last the given numbers of 1/30 s ticks (a variable frame rate)."""
    import fractions

    import av

    frames = gradient_frames(len(durations), 48, 64)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.time_base = fractions.Fraction(1, 30)
        stream.codec_context.time_base = fractions.Fraction(1, 30)
        pts = 0
        for frame_rgb, ticks in zip(frames, durations):
            frame = av.VideoFrame.from_ndarray(frame_rgb, format="rgb24")
            frame.pts = pts
            frame.time_base = fractions.Fraction(1, 30)
            pts += ticks
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def shared_videos() -> list[Path]:
    """The real talking-face videos (empty when ../shared/media is absent)."""
    return sorted((SHARED_MEDIA / "video").glob("*.mp4")) if SHARED_MEDIA.is_dir() else []


def gradient_frames(n: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """Frames that differ from each other: a moving gradient with the frame number burnt in as a bar."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (height // 8 + 1, width // 8 + 1, 3)).astype(np.float32)
    import cv2

    base = cv2.resize(base, (width, height), interpolation=cv2.INTER_CUBIC)
    frames = np.empty((n, height, width, 3), dtype=np.uint8)
    for i in range(n):
        frame = np.roll(base, i * 2, axis=1)
        frame[: max(2, height // 10), :, :] = 0
        frame[: max(2, height // 10), : int((i + 1) / n * width), :] = 255  # progress bar = frame id
        frames[i] = np.clip(frame, 0, 255)
    return frames


def tone(seconds: float, rate: int, freq: float = 440.0, channels: int = 1) -> np.ndarray:
    """A sine tone, (N,) or (C, N)."""
    t = np.arange(int(seconds * rate)) / rate
    mono = (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return mono if channels == 1 else np.stack([mono] * channels)


@pytest.fixture
def make_video(tmp_path):
    """Factory: write a test video and return its path."""
    from avlips.media.encode import write_video

    def make(name: str = "clip.mp4", n: int = 30, size: tuple[int, int] = (64, 48), fps: float = 25.0,
             audio: bool = True, rate: int = 16000, **kwargs) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        width, height = size
        frames = gradient_frames(n, height, width)
        sound = tone(n / fps, rate) if audio else None
        write_video(path, frames, fps, sound, rate, **kwargs)
        return path

    return make
