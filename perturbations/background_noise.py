"""Background babble: the sound of other people talking, added at a signal-to-noise ratio.

The babble is made, not recorded: `TALKERS` independent noises, each given a speech-like spectrum
and a syllable-rate loudness envelope, summed. It has the spectrum and the slow loudness swings of
a crowd of voices but no words or pitch, so it cannot itself be read as speech in sync with the lips.
The spectrum is flat from 100 to 500 Hz and falls 8 dB per octave above, a round version of the
long-term average speech spectrum's fall (Byrne et al. 1994, JASA 96(4), report 6-9 dB per octave).
The SNR is the whole given signal's power over the noise's, so it holds over the window with its
context as a whole (pauses included), not syllable by syllable.
"""
from __future__ import annotations

import numpy as np

from .audio_base import AudioPerturbation, check_not_silent

TALKERS = 6
SPECTRUM_FLAT_HZ = (100.0, 500.0)
SPECTRUM_FALL_DB_PER_OCTAVE = 8.0
SYLLABLE_RATE_HZ = 4.0  # syllables per second of conversational speech, roughly
_ENVELOPE_RATE_HZ = 100.0  # the envelopes are drawn at this rate and interpolated
_NOISE_STREAM = 0xBAB61E


def speech_spectrum(n: int, sample_rate: int) -> np.ndarray:
    """The babble's amplitude response at the rfft bins of an n-sample signal (1 in the flat band)."""
    freqs = np.fft.rfftfreq(n, 1.0 / sample_rate)
    low, high = SPECTRUM_FLAT_HZ
    gain = np.ones_like(freqs)
    below = freqs < low
    gain[below] = (freqs[below] / low) ** 2  # 12 dB per octave below the band: no hum or rumble
    above = freqs > high
    gain[above] = 10.0 ** (-SPECTRUM_FALL_DB_PER_OCTAVE * np.log2(freqs[above] / high) / 20.0)
    return gain


def syllable_envelopes(count: int, n: int, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """`count` loudness envelopes (count, n) >= 0 that swing at about SYLLABLE_RATE_HZ."""
    steps = int(np.ceil(n / sample_rate * _ENVELOPE_RATE_HZ)) + 2
    raw = rng.standard_normal((count, steps))
    # A moving average one syllable long keeps swings slower than about SYLLABLE_RATE_HZ.
    width = max(1, int(round(_ENVELOPE_RATE_HZ / SYLLABLE_RATE_HZ)))
    kernel = np.ones(width) / np.sqrt(width)  # unit variance out
    smooth = np.stack([np.convolve(row, kernel, mode="same") for row in raw])
    loud = np.maximum(0.0, 0.5 + 0.5 * smooth)  # a talker is silent now and then
    at = np.arange(n) * (_ENVELOPE_RATE_HZ / sample_rate)
    return np.stack([np.interp(at, np.arange(steps), row) for row in loud])


def babble(n: int, sample_rate: int, seed: int) -> np.ndarray:
    """`n` samples of speech-shaped babble (float64, unit-free), determined by the seed."""
    rng = np.random.default_rng([seed, _NOISE_STREAM])
    white = rng.standard_normal((TALKERS, n))
    shaped = np.fft.irfft(np.fft.rfft(white, axis=1) * speech_spectrum(n, sample_rate), n=n, axis=1)
    return np.sum(shaped * syllable_envelopes(TALKERS, n, sample_rate, rng), axis=0)


def add_at_snr(signal: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """signal + g * noise with g such that mean(signal^2) / mean((g * noise)^2) = 10^(snr_db / 10)."""
    signal_power = float(np.mean(np.square(signal, dtype=np.float64)))
    noise_power = float(np.mean(np.square(noise, dtype=np.float64)))
    gain = np.sqrt(signal_power / (noise_power * 10.0 ** (snr_db / 10.0)))
    return (signal + gain * noise).astype(np.float32)


class BackgroundNoise(AudioPerturbation):
    """Add speech-shaped babble at `snr_db` dB below the signal's power; the same babble at every level."""

    name = "background_noise"
    parameter = "snr_db"
    levels = (20, 15, 10, 5, 0)
    seeded = True

    def transform(self, signal: np.ndarray, sample_rate: int, seed: int, *, sample: str | None = None,
                  snr_db: float) -> np.ndarray:
        """The signal plus babble scaled to the SNR; silent audio has no power to set an SNR by."""
        check_not_silent(signal, self.name, sample)
        return add_at_snr(signal, babble(len(signal), sample_rate, seed), float(snr_db))
