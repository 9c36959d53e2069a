"""Noisy frames as 4:4:4 JPEG with flat tables: the stored noise keeps the applied variance at every level."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from avlips.media.noise_jpeg import encode_noisy_frame, noise_steps
from avlips.media.sample import SampleError, decode_image, encode_image
from avlips.perturbations import apply


def _face_like_frame(side: int = 96) -> np.ndarray:
    """A mid-tone frame with smooth shading and some texture, through JPEG q92 as compose stores it."""
    rng = np.random.default_rng(3)
    y, x = np.mgrid[0:side, 0:side] / side
    base = np.stack([150 + 60 * x, 110 + 50 * y, 90 + 40 * x * y], axis=-1)
    texture = cv2.GaussianBlur(rng.normal(0, 12, (side, side, 3)), (0, 0), 1.5)
    frame = np.clip(base + texture, 0, 255).astype(np.uint8)
    return decode_image(encode_image(frame, "jpg", 92))


def _variance_ratio(stored: np.ndarray, noisy: np.ndarray, clean: np.ndarray) -> float:
    return float((stored.astype(float) - clean).var() / (noisy.astype(float) - clean).var())


@pytest.mark.parametrize("level", [1, 2, 3, 4, 5])
def test_stored_noise_keeps_the_applied_variance(level):
    clean = _face_like_frame()
    noisy = apply("gaussian_noise", clean[None], level, 11)[0]
    data = encode_noisy_frame(noisy, clean)
    stored = decode_image(data)
    assert stored.shape == noisy.shape
    assert 0.95 <= _variance_ratio(stored, noisy, clean) <= 1.05, level
    # Per channel too: the chroma noise is kept, not only the luma.
    for channel in range(3):
        kept = (stored[..., channel].astype(float) - clean[..., channel]).var()
        applied = (noisy[..., channel].astype(float) - clean[..., channel]).var()
        assert 0.94 <= kept / applied <= 1.06, (level, channel)
    assert len(data) < len(encode_image(noisy, "png"))


def test_the_clean_frames_codec_would_lose_the_noise():
    """What the flat 4:4:4 tables avoid: 4:2:0 JPEG at the clean frames' quality keeps well under 95%."""
    clean = _face_like_frame()
    noisy = apply("gaussian_noise", clean[None], 1, 11)[0]
    stored = decode_image(encode_image(noisy, "jpg", 92))
    assert _variance_ratio(stored, noisy, clean) < 0.8


def test_steps_follow_the_noise_and_bytes_are_repeatable():
    clean = _face_like_frame()
    low = apply("gaussian_noise", clean[None], 1, 11)[0]
    high = apply("gaussian_noise", clean[None], 4, 11)[0]
    assert noise_steps(low, clean, 0.5) < noise_steps(high, clean, 0.5)
    assert noise_steps(clean, clean, 0.5) == (1, 1)  # no noise: the finest step, never zero
    assert encode_noisy_frame(low, clean) == encode_noisy_frame(low.copy(), clean.copy())
    with pytest.raises(SampleError, match="same"):
        noise_steps(low[:10], clean, 0.5)
