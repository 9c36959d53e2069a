"""Shared fixtures, built from tests/builders.py: small media made by the tests, and the real media in ../shared/media."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("NUMBA_CACHE_DIR", str(Path(__file__).resolve().parents[1] / ".numba_cache"))

from tests.builders import SHARED_MEDIA, gradient_frames, tone  # noqa: E402 (after the environment)


@pytest.fixture(scope="session")
def shared_media() -> Path:
    """../shared/media, or skip when the checkout has none beside it."""
    if not (SHARED_MEDIA / "video").is_dir():
        pytest.skip(f"real media not found at {SHARED_MEDIA}")
    return SHARED_MEDIA


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
