"""Audio features for LipFD windows: the mel spectrogram of the reference preprocessing.

The reference computes librosa's melspectrogram with its defaults at 22050 Hz, then
power_to_db with ref=min over the whole clip. We compute the same numbers, but the STFT runs in
blocks of columns so a long clip never holds its whole complex spectrogram in memory.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# librosa's power_to_db defaults, which the reference relies on.
_AMIN = 1e-10


@dataclass(frozen=True)
class MelConfig:
    """Mel spectrogram settings; the defaults are librosa's, as the reference uses them."""

    sample_rate: int = 22050
    n_fft: int = 2048
    hop_length: int = 512
    n_mels: int = 128
    top_db: float = 80.0

    @classmethod
    def from_params(cls, params: dict | None) -> "MelConfig":
        """A config from a params.yaml mapping; absent keys keep the defaults."""
        params = params or {}
        return cls(**{k: type(getattr(cls(), k))(v) for k, v in params.items() if k in cls.__dataclass_fields__})


def mel_columns(n_samples: int, config: MelConfig) -> int:
    """How many columns librosa's centred STFT gives for a signal of n_samples."""
    return 1 + n_samples // config.hop_length


def mel_power(audio: np.ndarray, config: MelConfig, block_columns: int = 2048) -> np.ndarray:
    """Mel power spectrogram (n_mels, columns), equal to librosa.feature.melspectrogram's defaults."""
    import librosa

    audio = np.asarray(audio, dtype=np.float32)
    pad = config.n_fft // 2
    padded = np.pad(audio, pad)  # librosa's centring pads with zeros ("constant") in 0.11
    columns = mel_columns(len(audio), config)
    basis = librosa.filters.mel(sr=config.sample_rate, n_fft=config.n_fft, n_mels=config.n_mels).astype(np.float64)
    # float64 products: BLAS sums in an order that depends on its thread count, and in float32
    # that shows in the last bit; in float64 it vanishes when rounding back, so bytes stay stable.
    out = np.empty((config.n_mels, columns), dtype=np.float32)
    for first in range(0, columns, block_columns):
        last = min(columns, first + block_columns)
        segment = padded[first * config.hop_length:(last - 1) * config.hop_length + config.n_fft]
        spectrum = librosa.stft(segment, n_fft=config.n_fft, hop_length=config.hop_length, center=False)
        out[:, first:last] = basis @ (np.abs(spectrum).astype(np.float64) ** 2)
    return out


def power_to_db_ref_min(power: np.ndarray, top_db: float | None = 80.0) -> np.ndarray:
    """power_to_db(S, ref=np.min) as librosa computes it: dB above the clip's quietest cell."""
    reference = max(_AMIN, float(np.min(power)))
    db = 10.0 * np.log10(np.maximum(_AMIN, power.astype(np.float64))) - 10.0 * np.log10(reference)
    if top_db is not None:
        db = np.maximum(db, db.max() - top_db)
    return db.astype(np.float32)


def clip_mel_db(audio: np.ndarray, config: MelConfig) -> np.ndarray:
    """The whole clip's mel in dB (ref = clip minimum), as the reference renders it."""
    return power_to_db_ref_min(mel_power(audio, config), config.top_db)


def window_columns(start: int, window_len: int, columns: int, frames: int) -> tuple[int, int]:
    """Mel columns of a window by the reference's frames ratio: [round(s*r), round((s+len)*r))."""
    ratio = columns / frames
    return int(round(start * ratio)), int(round((start + window_len) * ratio))


def time_columns(start_time: float, end_time: float, config: MelConfig) -> tuple[int, int]:
    """Mel columns whose centres fall in [start_time, end_time)."""
    rate = config.sample_rate / config.hop_length
    return int(round(start_time * rate)), int(round(end_time * rate))


def is_silent(audio: np.ndarray, threshold_dbfs: float = -70.0) -> bool:
    """Whether the whole signal's RMS is below a level that holds no speech."""
    if audio.size == 0:
        return True
    rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))
    return rms <= 10 ** (threshold_dbfs / 20)
