"""Wav2Lip's audio front end against the published formula, and the per-frame mel chunk indexing."""

from __future__ import annotations

import librosa
import numpy as np
import pytest

from avlips.generators.wav2lip.audio import chunk_count, chunk_starts, mel_chunks, melspectrogram


def _formula_mel(wav: np.ndarray, pad_mode: str = "reflect") -> np.ndarray:
    """The reference front end written out with numpy's FFT (librosa only for the filterbank)."""
    x = wav.astype(np.float64)
    y = np.empty_like(x)
    y[0] = x[0]
    y[1:] = x[1:] - 0.97 * x[:-1]  # pre-emphasis
    padded = np.pad(y, 400, mode=pad_mode)  # centred frames, reflection padding (librosa 0.7)
    n = 1 + len(y) // 200
    frames = np.stack([padded[i * 200 : i * 200 + 800] for i in range(n)])
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(800) / 800)  # periodic Hann
    mag = np.abs(np.fft.rfft(frames * window, axis=1)).T  # (401, n)
    mel = librosa.filters.mel(sr=16000, n_fft=800, n_mels=80, fmin=55, fmax=7600) @ mag
    db = 20 * np.log10(np.maximum(1e-5, mel)) - 20
    return np.clip(8 * ((db + 100) / 100) - 4, -4, 4)


def _signal() -> np.ndarray:
    rng = np.random.default_rng(0)
    t = np.arange(16000 * 2) / 16000
    wav = 0.5 * np.sin(2 * np.pi * (200 + 900 * t) * t) + 0.05 * rng.standard_normal(t.size)
    wav[8000:12000] = 0.0  # silence: exercises the -4 floor
    wav[20000:22000] *= 30.0  # loud burst: exercises the +4 ceiling
    return wav.astype(np.float32)


def test_melspectrogram_matches_formula() -> None:
    wav = _signal()
    got = melspectrogram(wav)
    want = _formula_mel(wav)
    assert got.shape == (80, 1 + wav.size // 200) == want.shape
    np.testing.assert_allclose(got, want, atol=1e-3)
    assert got.min() == -4.0 and got.max() == 4.0  # both clipping ends reached
    assert 0.05 < np.mean(np.abs(got) < 4) < 0.99  # and most of it is in between


def test_melspectrogram_edges_use_reflection_padding() -> None:
    # Zero-padded edges (librosa >= 0.10 default) would differ from the reference in the first columns.
    wav = _signal()
    got = melspectrogram(wav)
    zero = _formula_mel(wav, pad_mode="constant")
    assert np.abs(got[:, 0] - zero[:, 0]).max() > 0.05
    np.testing.assert_allclose(got[:, 2:-2], zero[:, 2:-2], atol=1e-3)  # frames within 400 samples of an end


def test_melspectrogram_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        melspectrogram(np.zeros((2, 16000), np.float32))
    with pytest.raises(ValueError):
        melspectrogram(np.zeros(300, np.float32))


def _reference_starts(n_cols: int, fps: float) -> list[int]:
    """The reference loop: chunk i starts at int(i * 80 / fps); the first overrun emits the tail and stops."""
    starts, i = [], 0
    while True:
        s = int(i * 80.0 / fps)
        if s + 16 > n_cols:
            starts.append(n_cols - 16)
            return starts
        starts.append(s)
        i += 1


def _indexed_mel(n_cols: int) -> np.ndarray:
    """A mel whose value at column j is j, so each chunk tells where it starts."""
    return np.tile(np.arange(n_cols, dtype=np.float64), (80, 1))


@pytest.mark.parametrize("fps", [25.0, 30.0, 29.97, 24.0])
@pytest.mark.parametrize("n_cols", [16, 17, 100, 161, 401])
def test_chunks_follow_reference_loop(fps: float, n_cols: int) -> None:
    want = _reference_starts(n_cols, fps)
    assert chunk_count(n_cols, fps) == len(want)
    chunks = mel_chunks(_indexed_mel(n_cols), fps)
    assert chunks.shape == (len(want), 1, 80, 16)
    assert chunks[:, 0, 0, 0].astype(int).tolist() == want
    # every chunk is 16 consecutive columns, identical across mel bands
    assert np.all(np.diff(chunks[:, 0], axis=2) == 1)
    assert np.all(chunks[:, 0] == chunks[:, 0, :1])


def test_chunk_starts_at_25_and_30_fps() -> None:
    # 80 mel columns per second: 3.2 columns per frame at 25 fps, 2.67 at 30 fps.
    assert chunk_starts(400, 25, 7).tolist() == [0, 3, 6, 9, 12, 16, 19]
    assert chunk_starts(400, 30, 8).tolist() == [0, 2, 5, 8, 10, 13, 16, 18]
    # 100 columns at 25 fps: last full chunk starts at int(26 * 3.2) = 83, then the tail chunk at 84.
    assert chunk_count(100, 25) == 28
    assert chunk_starts(100, 25)[-3:].tolist() == [80, 83, 84]


def test_tail_chunks_when_more_frames_than_audio() -> None:
    chunks = mel_chunks(_indexed_mel(50), 25, n_frames=20)
    starts = chunks[:, 0, 0, 0].astype(int).tolist()
    assert starts[:11] == [0, 3, 6, 9, 12, 16, 19, 22, 25, 28, 32]
    assert starts[11:] == [34] * 9  # past the end: always the final 16 columns


def test_fewer_frames_than_audio_truncates() -> None:
    chunks = mel_chunks(_indexed_mel(400), 30, n_frames=3)
    assert chunks[:, 0, 0, 0].tolist() == [0, 2, 5]


def test_mel_chunks_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        mel_chunks(np.zeros((80, 10)), 25)  # shorter than one chunk
    with pytest.raises(ValueError):
        mel_chunks(np.zeros((40, 100)), 25)  # not 80 bands
    bad = np.zeros((80, 100))
    bad[3, 7] = np.nan
    with pytest.raises(ValueError):
        mel_chunks(bad, 25)
