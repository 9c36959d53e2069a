"""A window's mel recomputed from its audio context matches compose's whole-clip mel, and a window
perturbed by any family keeps its fields consistent."""
from __future__ import annotations

import numpy as np
import pytest
import soxr

from avlips.media.audio import MelConfig, mel_power, power_to_db_ref_min
from avlips.media.sample import WindowSample
from avlips.perturbations import BadAudio, MissingAudio, apply_audio, family
from avlips.perturbations.window import perturb_window
from avlips.perturbations.window_mel import clip_reference_db, window_mel_db
from tests.builders import SPEECH_RATE as RATE, speech

CONTEXT = int(0.6 * RATE)
CONFIG = MelConfig()


def clip_window(clip: np.ndarray, start_time: float, end_time: float, frames: np.ndarray | None = None
                ) -> WindowSample:
    """A window cut as compose cuts it: the whole clip's mel columns by time, and its audio with context."""
    clip_float = clip.astype(np.float32) / 32768
    # Compose reads the clip at 22050 Hz with soxr HQ and takes power_to_db(ref=min) over all of it.
    db = power_to_db_ref_min(mel_power(soxr.resample(clip_float, RATE, CONFIG.sample_rate, quality="HQ"), CONFIG))
    rate = CONFIG.sample_rate / CONFIG.hop_length
    first, last = int(round(start_time * rate)), int(round(end_time * rate))
    lo, hi = int(round(start_time * RATE)), int(round(end_time * RATE))
    cut_before, cut_after = max(0, CONTEXT - lo), max(0, hi + CONTEXT - len(clip))
    audio = clip[max(0, lo - CONTEXT):min(len(clip), hi + CONTEXT)]
    meta = {"start_time": start_time, "end_time": end_time, "fps": 25.0, "mel_columns": [first, last],
            "mel_db_min": float(db.min()), "mel_db_max": float(db.max()), "mel": CONFIG.__dict__,
            "audio": {"sample_rate": RATE, "context_s": 0.6, "window_start": CONTEXT - cut_before,
                      "window_samples": hi - lo, "cut_before": cut_before, "cut_after": cut_after,
                      "window_padded": 0}}
    if frames is None:
        frames = np.full((5, 32, 32, 3), 128, np.uint8)
    return WindowSample("c0_w00", frames, db[:, first:last], 0, meta, audio)


@pytest.fixture(scope="module")
def clip() -> np.ndarray:
    return speech(seed=4, seconds=3.0)


@pytest.mark.parametrize("start_time", [0.0, 0.28, 1.44, 1.7168, 2.8])  # clip start, middle, clip end
def test_recomputed_clean_mel_matches_the_whole_clip_mel(clip, start_time):
    window = clip_window(clip, start_time, start_time + 0.2)
    reference = clip_reference_db(window.audio, window.mel_db, window.meta, window.key)
    recomputed = window_mel_db(window.audio, reference, window.meta, window.key)
    assert recomputed.shape == window.mel_db.shape
    assert np.abs(recomputed - window.mel_db).max() < 0.05  # dB


def test_mel_follows_the_audio_on_the_clips_scale(clip):
    window = clip_window(clip, 1.44, 1.64)
    reference = clip_reference_db(window.audio, window.mel_db, window.meta, window.key)
    half = window.audio.astype(np.float32) / 32768 / 2  # float audio: no rounding to int16
    quieter = window_mel_db(half, reference, window.meta, window.key)
    floor = window.meta["mel_db_max"] - CONFIG.top_db
    loud = window.mel_db > floor + 10
    # Half the amplitude is 6.02 dB less power, on the same dB scale as the clean window.
    assert np.abs(quieter[loud] - (window.mel_db[loud] - 6.02)).max() < 0.1
    assert quieter.min() >= floor - 1e-4


@pytest.mark.parametrize("name", ["opus", "background_noise", "call", "gaussian_blur"])
def test_perturbed_window_fields(clip, name):
    frames = np.random.default_rng(0).integers(0, 255, (5, 48, 48, 3), dtype=np.uint8)
    window = clip_window(clip, 1.44, 1.64, frames)
    out = perturb_window(window, name, 4, seed=5)
    assert out.key == window.key and out.meta == window.meta and out.label == window.label
    assert out.frames.shape == frames.shape and out.audio.shape == window.audio.shape
    assert out.mel_db.shape == window.mel_db.shape and out.mel_db.dtype == np.float32
    if family(name) == "video":
        assert out.audio is window.audio and out.mel_db is window.mel_db
        assert not np.array_equal(out.frames, frames)
        return
    reference = clip_reference_db(window.audio, window.mel_db, window.meta, window.key)
    assert np.array_equal(out.mel_db, window_mel_db(out.audio, reference, window.meta, window.key))
    assert not np.allclose(out.mel_db, window.mel_db, atol=0.5)
    if name == "call":
        assert not np.array_equal(out.frames, frames)
    else:
        assert out.frames is frames
        assert np.array_equal(out.audio, apply_audio(name, window.audio, RATE, 4, 5, sample=window.key))


def test_a_window_without_audio_is_a_named_error(clip):
    window = clip_window(clip, 1.44, 1.64)
    old = WindowSample(window.key, window.frames, window.mel_db, 0, {k: v for k, v in window.meta.items()
                                                                      if k != "audio"}, None)
    for name in ("opus", "call"):
        with pytest.raises(MissingAudio, match=r"c0_w00: .*no audio field \(audio.npy\)"):
            perturb_window(old, name, 1, 0)
    assert perturb_window(old, "contrast", 1, 0).audio is None  # video types need no audio


def test_a_context_too_short_for_the_mel_is_a_named_error(clip):
    window = clip_window(clip, 1.44, 1.64)
    short = window.audio[CONTEXT - 100:]  # the context ends where it should, but starts too late
    window.meta["audio"] = {**window.meta["audio"], "window_start": 100}
    with pytest.raises(BadAudio, match="c0_w00: the audio context starts after mel column"):
        window_mel_db(short, 0.0, window.meta, window.key)
