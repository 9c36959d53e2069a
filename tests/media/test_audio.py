"""media.audio: the reference's mel, whole-clip and streamed, and the memory the stream holds."""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from avlips.media.audio import MelConfig, clip_mel_db, mel_columns, mel_power, power_to_db_ref_min, stream_mel

CONFIG = MelConfig()


def _speech_like(seconds: float, seed: int = 0, rate: int = 22050) -> np.ndarray:
    """Noise under a syllable-rate envelope with a quiet stretch: a wide dB range, like speech."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    t = np.arange(n) / rate
    envelope = 0.05 + np.abs(np.sin(2 * np.pi * 3.0 * t))
    audio = 0.3 * envelope * rng.standard_normal(n)
    audio[n // 3:n // 3 + rate // 4] *= 1e-4
    return audio.astype(np.float32)


def _blocks(audio: np.ndarray, sizes: list[int]):
    at, k = 0, 0
    while at < len(audio):
        size = sizes[k % len(sizes)]
        yield audio[at:at + size]
        at, k = at + size, k + 1


def test_mel_matches_librosa():
    import librosa

    audio = _speech_like(3.0)
    ours = clip_mel_db(audio, CONFIG)
    theirs = librosa.power_to_db(librosa.feature.melspectrogram(y=audio, sr=22050), ref=np.min)
    assert ours.shape == theirs.shape
    assert np.abs(ours - theirs).max() < 1e-3


@pytest.mark.parametrize("seconds", [0.01, 0.05, 1.0, 512 * 300 / 22050, 14.3])
@pytest.mark.parametrize("sizes", [[100_000_000], [4096], [1, 7, 30_000, 513]])
def test_streamed_columns_equal_the_whole_clip(seconds, sizes):
    """Every kept column, the dB range and the length are exactly what the whole-clip computation gives."""
    audio = _speech_like(seconds, seed=len(sizes))
    whole = clip_mel_db(audio, CONFIG)
    columns = whole.shape[1]
    keep = list(range(0, min(5, columns))) + list(range(columns // 2, columns // 2 + 11)) + [columns - 1, columns + 3]
    mel = stream_mel(_blocks(audio, sizes), CONFIG, keep, block_columns=64)
    assert mel.samples == len(audio) and mel.columns == columns == mel_columns(len(audio), CONFIG)
    assert mel.db_range() == (float(whole.min()), float(whole.max()))
    for first, last in [(0, min(5, columns)), (columns // 2, min(columns, columns // 2 + 11)), (columns - 1, columns)]:
        assert mel.has(first, last)
        assert np.array_equal(mel.db(first, last), whole[:, first:last]), (first, last)
    assert mel.has(columns - 1, columns + 5)  # clipped to the clip, like slicing
    if columns > 20:
        assert not mel.has(5, 8)
        with pytest.raises(KeyError):
            mel.db(5, 8)


def test_top_db_clipping_uses_the_whole_clip():
    """A window of quiet columns gets the floor set by the clip's loudest cell, not its own."""
    audio = _speech_like(6.0)
    audio[:22050] *= 1e-6  # the first second far below the rest
    whole_power = mel_power(audio, CONFIG)
    whole = power_to_db_ref_min(whole_power, CONFIG.top_db)
    mel = stream_mel(_blocks(audio, [5000]), CONFIG, range(10), block_columns=16)
    assert np.array_equal(mel.db(0, 10), whole[:, :10])
    assert whole[:, :10].min() == pytest.approx(whole.max() - CONFIG.top_db)


def test_silence_is_judged_on_the_whole_clip():
    audio = np.zeros(22050 * 2, dtype=np.float32)
    assert stream_mel(_blocks(audio, [1000]), CONFIG, []).is_silent(-60.0)
    audio[-2000:] = 0.5
    assert not stream_mel(_blocks(audio, [1000]), CONFIG, []).is_silent(-60.0)


def _stream_peak_bytes(seconds: int) -> int:
    rng = np.random.default_rng(0)

    def blocks():
        for _ in range(seconds):
            yield (0.1 * rng.standard_normal(22050)).astype(np.float32)

    tracemalloc.start()
    try:
        mel = stream_mel(blocks(), CONFIG, range(0, 50))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert mel.samples == seconds * 22050
    return peak


def test_stream_memory_does_not_grow_with_length():
    _stream_peak_bytes(1)  # librosa's first call allocates caches of its own
    short, long = _stream_peak_bytes(60), _stream_peak_bytes(600)
    # The whole 10-minute signal alone would be 53 MB, its mel power 13 MB.
    assert long < 30e6 and long <= 1.05 * short + 1e6, (short, long)
