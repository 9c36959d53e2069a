"""Wav2Lip's audio front end: the exact mel spectrogram the released model expects, and its per-frame chunks."""

from __future__ import annotations

from functools import lru_cache

import librosa
import numpy as np
from scipy import signal

__all__ = [
    "SAMPLE_RATE",
    "N_FFT",
    "HOP_SIZE",
    "WIN_SIZE",
    "NUM_MELS",
    "MEL_STEP_SIZE",
    "MEL_FPS",
    "preemphasis",
    "melspectrogram",
    "chunk_count",
    "chunk_starts",
    "mel_chunks",
]

# Hyperparameters of the released model; changing any of them changes what the network sees.
SAMPLE_RATE = 16000
N_FFT = 800
HOP_SIZE = 200
WIN_SIZE = 800
NUM_MELS = 80
FMIN = 55.0
FMAX = 7600.0
PREEMPHASIS = 0.97
REF_LEVEL_DB = 20.0
MIN_LEVEL_DB = -100.0
MAX_ABS_VALUE = 4.0
MEL_STEP_SIZE = 16  # mel columns per chunk
MEL_FPS = SAMPLE_RATE / HOP_SIZE  # 80 mel columns per second of audio


def preemphasis(wav: np.ndarray, k: float = PREEMPHASIS) -> np.ndarray:
    """High-pass pre-emphasis y[n] = x[n] - k x[n-1]."""
    return signal.lfilter([1.0, -k], [1.0], wav)


@lru_cache(maxsize=1)
def _mel_basis() -> np.ndarray:
    """The (80, 401) Slaney mel filterbank of the reference."""
    return librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=NUM_MELS, fmin=FMIN, fmax=FMAX)


def melspectrogram(wav: np.ndarray) -> np.ndarray:
    """Normalised log-mel spectrogram (80, T) in [-4, 4] of a 16 kHz mono waveform; T = 1 + len(wav) // 200."""
    wav = np.asarray(wav)
    if wav.ndim != 1:
        raise ValueError(f"expected a mono waveform (1-D), got shape {wav.shape}")
    if wav.size <= N_FFT // 2:
        raise ValueError(f"waveform too short for the STFT: {wav.size} samples, need more than {N_FFT // 2}")
    # pad_mode="reflect": librosa 0.7 (the reference environment) centred frames with reflection padding;
    # librosa >= 0.10 defaults to zero padding, which would change the first and last columns.
    spec = librosa.stft(
        y=preemphasis(wav), n_fft=N_FFT, hop_length=HOP_SIZE, win_length=WIN_SIZE, pad_mode="reflect"
    )
    mel = _mel_basis() @ np.abs(spec)
    min_level = 10.0 ** (MIN_LEVEL_DB / 20.0)  # 1e-5: floor before the log
    db = 20.0 * np.log10(np.maximum(min_level, mel)) - REF_LEVEL_DB
    norm = (2 * MAX_ABS_VALUE) * ((db - MIN_LEVEL_DB) / -MIN_LEVEL_DB) - MAX_ABS_VALUE
    return np.clip(norm, -MAX_ABS_VALUE, MAX_ABS_VALUE)


def chunk_count(n_columns: int, fps: float) -> int:
    """Number of video frames the reference makes for a mel of n_columns at fps (the audio decides the length)."""
    if n_columns < MEL_STEP_SIZE:
        raise ValueError(f"mel has {n_columns} columns, fewer than one chunk ({MEL_STEP_SIZE})")
    step = MEL_FPS / fps
    # The reference loops until a chunk would run past the end, emits the tail chunk, and stops:
    # that is one frame more than the number of i with int(i * step) + 16 <= n_columns.
    i = 0
    while int(i * step) + MEL_STEP_SIZE <= n_columns:
        i += 1
    return i + 1


def chunk_starts(n_columns: int, fps: float, n_frames: int | None = None) -> np.ndarray:
    """First mel column of each video frame's chunk; chunks past the end start at n_columns - 16."""
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    if n_columns < MEL_STEP_SIZE:
        raise ValueError(f"mel has {n_columns} columns, fewer than one chunk ({MEL_STEP_SIZE})")
    if n_frames is None:
        n_frames = chunk_count(n_columns, fps)
    step = MEL_FPS / fps
    starts = np.array([int(i * step) for i in range(n_frames)], dtype=np.int64)
    # Same tail rule as the reference: a chunk that would overrun is replaced by the last 16 columns.
    starts[starts + MEL_STEP_SIZE > n_columns] = n_columns - MEL_STEP_SIZE
    return starts


def mel_chunks(mel: np.ndarray, fps: float, n_frames: int | None = None) -> np.ndarray:
    """Per-video-frame mel windows (n_frames, 1, 80, 16); n_frames=None gives the reference's audio-driven count."""
    mel = np.asarray(mel)
    if mel.ndim != 2 or mel.shape[0] != NUM_MELS:
        raise ValueError(f"expected a mel spectrogram of shape ({NUM_MELS}, T), got {mel.shape}")
    if np.isnan(mel).any():
        raise ValueError("mel spectrogram contains NaN")
    starts = chunk_starts(mel.shape[1], fps, n_frames)
    idx = starts[:, None] + np.arange(MEL_STEP_SIZE)[None, :]  # (n_frames, 16)
    return np.ascontiguousarray(mel[:, idx].transpose(1, 0, 2)[:, None])
