"""The audio perturbation contract: a fixed table of five levels beside one transform of a mono signal.

The same contract as the video types (perturbations/base.py), for sound: a type names its parameter
and its values at levels 1..5, and `apply(samples, sample_rate, level, seed)` checks the request and
returns a signal of the same length, dtype and rate, time-aligned with the input sample for sample
(a codec's delay is removed). `transform` works on float32 in [-1, 1]; int16 input (what shards
store) is scaled by 1/32768 on the way in and rounded back on the way out.

Codecs take only some sample rates; a type lists its own in `codec_rates`, and a signal at another
rate is resampled to `resample_to` for the codec and back after it (soxr HQ, linear phase: the
resampling adds no delay).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np

from .base import check_level, check_seed
from .errors import BadAudio, SilentAudio

# Speech below this RMS (dBFS) is silence: compose's threshold for a clip (params.yaml compose.silence_dbfs).
SILENCE_DBFS = -60.0
INT16_SCALE = 32768.0


def as_signal(samples: object, sample_rate: object, name: str, sample: str | None = None) -> tuple[np.ndarray, int]:
    """The samples as float32 in [-1, 1] (a copy) and the rate as an int, or `BadAudio` naming the problem."""
    if isinstance(sample_rate, (bool, np.bool_)) or not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise BadAudio(f"{name}: sample_rate must be a positive int, got {sample_rate!r}", sample)
    if not isinstance(samples, np.ndarray):
        raise BadAudio(f"{name}: samples must be a numpy array, got {type(samples).__name__}", sample)
    if samples.ndim != 1:
        raise BadAudio(f"{name}: samples must be mono, shape (n,), got shape {samples.shape}", sample)
    if samples.size == 0:
        raise BadAudio(f"{name}: no samples", sample)
    if samples.dtype == np.int16:
        return samples.astype(np.float32) / np.float32(INT16_SCALE), int(sample_rate)
    if samples.dtype not in (np.float32, np.float64):
        raise BadAudio(f"{name}: samples must be int16, float32 or float64, got dtype {samples.dtype}", sample)
    if not np.all(np.isfinite(samples)):
        raise BadAudio(f"{name}: samples hold NaN or infinite values", sample)
    return samples.astype(np.float32), int(sample_rate)


def as_dtype(signal: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """A float signal back in the caller's dtype: int16 rounded and clipped, floats as given."""
    if dtype == np.int16:
        return np.clip(np.round(signal * INT16_SCALE), -32768, 32767).astype(np.int16)
    return np.asarray(signal, dtype=dtype)


def rms_dbfs(signal: np.ndarray) -> float:
    """The signal's RMS in dB relative to full scale (-inf for digital silence)."""
    power = float(np.mean(np.square(signal, dtype=np.float64)))
    return 10.0 * np.log10(power) if power > 0 else float("-inf")


def check_not_silent(signal: np.ndarray, name: str, sample: str | None = None) -> None:
    """`SilentAudio` when the signal holds nothing to measure a perturbation against."""
    level = rms_dbfs(signal)
    if level <= SILENCE_DBFS:
        raise SilentAudio(f"{name}: the audio is silent (RMS {level:.1f} dBFS, at most {SILENCE_DBFS:g})", sample)


def resample(signal: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """soxr HQ resampling, delay-compensated; the project's resampler (media/audio_decode.py reads audio with it)."""
    if rate_in == rate_out:
        return signal
    import soxr

    return soxr.resample(signal, rate_in, rate_out, quality="HQ").astype(np.float32, copy=False)


def fit_length(signal: np.ndarray, length: int) -> np.ndarray:
    """The first `length` samples, zero-padded at the end if the signal is shorter."""
    if len(signal) >= length:
        return signal[:length]
    return np.concatenate([signal, np.zeros(length - len(signal), dtype=signal.dtype)])


class AudioPerturbation(ABC):
    """One audio type: its parameter, the parameter's value at levels 1..5, and the transform."""

    name: ClassVar[str]  # catalogue key, e.g. "opus"
    parameter: ClassVar[str]  # what the level's value means, e.g. "bitrate_kbps"
    levels: ClassVar[tuple[float, ...]]  # the parameter's value at levels 1..5
    seeded: ClassVar[bool] = False  # True when the output depends on the seed
    version: ClassVar[int] = 1  # raised when the output changes, so that stored results are redone
    # Rates the codec takes; a signal at any other rate is resampled to `resample_to` and back.
    # Empty: every rate (no codec).
    codec_rates: ClassVar[tuple[int, ...]] = ()
    resample_to: ClassVar[int] = 0

    def value(self, level: int, sample: str | None = None) -> float:
        """The table value of the parameter at a level."""
        return self.levels[check_level(level, self.name, sample) - 1]

    def params(self, level: int, sample: str | None = None) -> dict[str, Any]:
        """The keyword parameters of `transform` at a level."""
        return {self.parameter: self.value(level, sample)}

    def codec_rate(self, sample_rate: int) -> int:
        """The rate the codec runs at for a signal at `sample_rate`."""
        if not self.codec_rates or sample_rate in self.codec_rates:
            return sample_rate
        return self.resample_to

    def apply(self, samples: np.ndarray, sample_rate: int, level: int, seed: int, *,
              sample: str | None = None) -> np.ndarray:
        """Perturb a mono signal at a level; same length, dtype and rate out, aligned with the input."""
        params = self.params(level, sample)
        seed = check_seed(seed, self.name, sample)
        signal, rate = as_signal(samples, sample_rate, self.name, sample)
        out = self.run(signal, rate, seed, sample=sample, **params)
        return as_dtype(out, samples.dtype)

    def run(self, signal: np.ndarray, sample_rate: int, seed: int, *, sample: str | None = None,
            **params: Any) -> np.ndarray:
        """The transform at the codec's rate, resampled there and back when the signal's rate is not one."""
        rate = self.codec_rate(sample_rate)
        coded = self.transform(resample(signal, sample_rate, rate), rate, seed, sample=sample, **params)
        return fit_length(resample(coded, rate, sample_rate), len(signal))

    @abstractmethod
    def transform(self, signal: np.ndarray, sample_rate: int, seed: int, *, sample: str | None = None,
                  **params: Any) -> np.ndarray:
        """Perturb a validated float32 signal at a rate the codec takes; as long as the input, aligned."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.parameter}={self.levels})"
