"""Audio features for LipFD windows: the mel spectrogram of the reference preprocessing.

The reference computes librosa's melspectrogram with its defaults at 22050 Hz, then
power_to_db with ref=min over the whole clip. We compute the same numbers in one streaming pass
(`stream_mel`): blocks of audio in, mel power columns out, the clip's power range tracked on the
way, and only the columns the windows need kept. Memory does not grow with the clip's length.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable

import numpy as np

# librosa's power_to_db defaults, which the reference relies on.
_AMIN = 1e-10
# Mel columns computed per STFT call: about 6 s of audio, a few MB of spectrum at a time.
BLOCK_COLUMNS = 256


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


# Slaney's mel scale (his Auditory Toolbox; librosa's default, htk=False): linear at 200/3 Hz a mel
# up to 1 kHz, logarithmic above it with 27 mels per factor of 6.4.
_LINEAR_HZ_PER_MEL = 200.0 / 3
_LOG_START_HZ = 1000.0
_LOG_START_MEL = _LOG_START_HZ / _LINEAR_HZ_PER_MEL
_MELS_PER_LOG = 27.0 / math.log(6.4)


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    hz = np.asarray(hz, dtype=np.float64)
    above = _LOG_START_MEL + np.log(np.maximum(hz, _LOG_START_HZ) / _LOG_START_HZ) * _MELS_PER_LOG
    return np.where(hz >= _LOG_START_HZ, above, hz / _LINEAR_HZ_PER_MEL)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    above = _LOG_START_HZ * np.exp((np.maximum(mel, _LOG_START_MEL) - _LOG_START_MEL) / _MELS_PER_LOG)
    return np.where(mel >= _LOG_START_MEL, above, mel * _LINEAR_HZ_PER_MEL)


@lru_cache(maxsize=8)
def _mel_basis(config: MelConfig) -> np.ndarray:
    """librosa.filters.mel's default filter bank (Slaney scale and area norm, 0 Hz to Nyquist), float64.

    Written here rather than imported: librosa's filters and STFT pull in scipy.signal and numba's
    cached kernels, about 2 CPU-seconds for every process that composes (test_audio checks the mel
    against librosa's). Triangles on the mel scale, each scaled to unit area over its band.
    """
    bins = np.fft.rfftfreq(config.n_fft, d=1.0 / config.sample_rate)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(config.sample_rate / 2), config.n_mels + 2))
    low, centre, high = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins[None, :] - low) / (centre - low)
    falling = (high - bins[None, :]) / (high - centre)
    triangles = np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)
    # librosa keeps the bank in float32: the same rounding, then float64 for the products.
    return (triangles * (2.0 / (high - low))).astype(np.float32).astype(np.float64)


@lru_cache(maxsize=8)
def _hann(n_fft: int) -> np.ndarray:
    """The periodic Hann window (scipy's get_window('hann', n_fft, fftbins=True)), float64."""
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n_fft) / n_fft)


def _mel_block(segment: np.ndarray, basis: np.ndarray, config: MelConfig) -> np.ndarray:
    """Mel power of every full frame of an already padded float32 segment (no centring).

    The frames' spectra as librosa.stft(center=False) computes them: Hann-windowed in float64,
    real FFT, kept as complex64.
    """
    frames = np.lib.stride_tricks.sliding_window_view(segment, config.n_fft)[::config.hop_length]
    spectrum = np.fft.rfft(frames * _hann(config.n_fft), axis=1).astype(np.complex64)
    # float64 products: BLAS sums in an order that depends on its thread count and the block's
    # width, and in float32 that shows in the last bit; in float64 it vanishes when rounding back.
    return (basis @ (np.abs(spectrum).astype(np.float64) ** 2).T).astype(np.float32)


def mel_power(audio: np.ndarray, config: MelConfig, block_columns: int = BLOCK_COLUMNS) -> np.ndarray:
    """Mel power spectrogram (n_mels, columns), equal to librosa.feature.melspectrogram's defaults."""
    audio = np.asarray(audio, dtype=np.float32)
    pad = config.n_fft // 2
    padded = np.pad(audio, pad)  # librosa's centring pads with zeros ("constant") in 0.11
    columns = mel_columns(len(audio), config)
    basis = _mel_basis(config)
    out = np.empty((config.n_mels, columns), dtype=np.float32)
    for first in range(0, columns, block_columns):
        last = min(columns, first + block_columns)
        segment = padded[first * config.hop_length:(last - 1) * config.hop_length + config.n_fft]
        out[:, first:last] = _mel_block(segment, basis, config)
    return out


def power_to_db_ref_min(power: np.ndarray, top_db: float | None = 80.0) -> np.ndarray:
    """power_to_db(S, ref=np.min) as librosa computes it: dB above the clip's quietest cell."""
    return _power_to_db(power, float(np.min(power)), float(np.max(power)), top_db)


def _power_to_db(power: np.ndarray, power_min: float, power_max: float, top_db: float | None) -> np.ndarray:
    """power_to_db(ref=min) of some cells, given the whole clip's power range (float32 out)."""
    reference = max(_AMIN, power_min)
    offset = 10.0 * np.log10(reference)
    db = 10.0 * np.log10(np.maximum(_AMIN, np.asarray(power).astype(np.float64))) - offset
    if top_db is not None:
        # The clip's loudest cell in dB, by the same operations as the cells themselves: log10 is
        # monotonic, so this is what db.max() over the whole clip would be.
        loudest = 10.0 * np.log10(np.maximum(_AMIN, np.array([power_max], dtype=np.float64))) - offset
        db = np.maximum(db, loudest[0] - top_db)
    return db.astype(np.float32)


def clip_mel_db(audio: np.ndarray, config: MelConfig) -> np.ndarray:
    """The whole clip's mel in dB (ref = clip minimum), as the reference renders it."""
    return power_to_db_ref_min(mel_power(audio, config), config.top_db)


@dataclass(frozen=True)
class ClipMel:
    """What one pass over a clip's audio keeps: its length, RMS, mel power range and some columns."""

    config: MelConfig
    samples: int  # at config.sample_rate
    sum_squares: float
    power_min: float  # over every cell of the clip's mel power
    power_max: float
    kept: np.ndarray  # sorted column indices
    power: np.ndarray  # (n_mels, len(kept)) float32, the mel power of those columns

    @property
    def columns(self) -> int:
        """Mel columns of the whole clip."""
        return mel_columns(self.samples, self.config)

    @property
    def seconds(self) -> float:
        """The clip's audio length."""
        return self.samples / self.config.sample_rate

    def is_silent(self, threshold_dbfs: float) -> bool:
        """Whether the whole clip's RMS is below threshold_dbfs (see `is_silent`)."""
        if self.samples == 0:
            return True
        return float(np.sqrt(self.sum_squares / self.samples)) <= 10 ** (threshold_dbfs / 20)

    def has(self, first: int, last: int) -> bool:
        """Whether the columns [first, last) (clipped to the clip) were all kept."""
        first, last = max(0, first), min(last, self.columns)
        lo, hi = np.searchsorted(self.kept, [first, max(first, last)])
        return int(hi - lo) == max(0, last - first)  # kept is sorted and unique

    def db(self, first: int, last: int) -> np.ndarray:
        """clip_mel_db(audio)[:, first:last] from the kept columns."""
        first, last = max(0, first), min(last, self.columns)
        if not self.has(first, last):
            raise KeyError(f"mel columns {first}..{last} were not kept")
        at = np.searchsorted(self.kept, first)
        cells = self.power[:, at:at + max(0, last - first)]
        return _power_to_db(cells, self.power_min, self.power_max, self.config.top_db)

    def db_range(self) -> tuple[float, float]:
        """The min and max of the whole clip's mel in dB, as clip_mel_db(audio) holds them."""
        ends = _power_to_db(np.array([self.power_min, self.power_max], dtype=np.float32), self.power_min,
                            self.power_max, self.config.top_db)
        return float(ends.min()), float(ends.max())


def stream_mel(blocks: Iterable[np.ndarray], config: MelConfig, keep: Iterable[int],
               block_columns: int = BLOCK_COLUMNS) -> ClipMel:
    """One pass over a clip's mono audio blocks: its mel power range, and the columns in `keep`.

    Each column is computed from the same samples as in `mel_power` of the whole clip, so it
    equals it exactly; memory holds one block of columns and the kept ones, whatever the length.
    """
    hop, n_fft = config.hop_length, config.n_fft
    kept = np.unique(np.fromiter(keep, dtype=np.int64))
    kept = kept[kept >= 0]
    stored = np.zeros((config.n_mels, len(kept)), dtype=np.float32)
    basis = _mel_basis(config)
    span = (block_columns - 1) * hop + n_fft  # samples a block of columns reads
    # `pending` holds the centre-padded signal from the first sample of column `done` on.
    pending: list[np.ndarray] = [np.zeros(n_fft // 2, dtype=np.float32)]
    pending_len = n_fft // 2
    done = samples = 0
    sum_squares = 0.0
    low, high = np.inf, -np.inf

    def compute(buffer: np.ndarray, count: int) -> None:
        nonlocal done, low, high
        power = _mel_block(buffer[:(count - 1) * hop + n_fft], basis, config)
        low, high = min(low, float(power.min())), max(high, float(power.max()))
        lo, hi = np.searchsorted(kept, [done, done + count])
        stored[:, lo:hi] = power[:, kept[lo:hi] - done]
        done += count

    for block in blocks:
        block = np.asarray(block, dtype=np.float32).reshape(-1)
        if not block.size:
            continue
        samples += block.size
        sum_squares += float(np.sum(np.square(block, dtype=np.float64)))
        pending.append(block)
        pending_len += block.size
        if pending_len < span:
            continue
        buffer = np.concatenate(pending)
        while len(buffer) >= span:
            compute(buffer, block_columns)
            buffer = buffer[block_columns * hop:]
        pending, pending_len = [buffer.copy()], len(buffer)  # a copy frees the big concatenation
    # The end: librosa's centring pads n_fft // 2 zeros after the last sample too.
    buffer = np.concatenate([*pending, np.zeros(n_fft // 2, dtype=np.float32)])
    total = mel_columns(samples, config)
    while done < total:
        count = min(block_columns, total - done)
        compute(buffer, count)
        buffer = buffer[count * hop:]
    inside = kept < total
    return ClipMel(config, samples, sum_squares, low, high, kept[inside], stored[:, inside])


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
