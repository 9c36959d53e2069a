"""Speech coded at decreasing bitrates: Opus (calls), AMR-NB (mobile voice), MP3 (stored audio).

Each type encodes the signal, decodes it, and removes the codec's delay (audio_codecs.py), so the
result lines up with the input. A signal at a rate the codec cannot take is resampled to the rate
in the type's table and back (AudioPerturbation.run); the stored windows are 16 kHz, which Opus and
MP3 take as they are and AMR-NB always narrows to 8 kHz, as a mobile voice call does.
"""
from __future__ import annotations

import numpy as np

from .audio_base import AudioPerturbation, fit_length
from .audio_codecs import (AMR_NB_RATE, OPUS_RATES, amr_nb_decode, amr_nb_encode, mp3_decode, mp3_encode,
                           opus_decode, opus_encode)


class Opus(AudioPerturbation):
    """Opus at `bitrate_kbps`, constant bitrate, 20 ms packets, VoIP mode, nothing lost.

    32 kbit/s is WebRTC's default for mono speech; 16-20 kbit/s is the range RFC 7587 (section 3.1.1)
    gives for wideband speech and 8-12 for narrowband, where Opus narrows the band itself.
    """

    name = "opus"
    parameter = "bitrate_kbps"
    levels = (32, 24, 16, 12, 8)
    version = 2  # 2: encoder complexity 2, was 5 (audio_codecs.OPUS_COMPLEXITY)
    codec_rates = OPUS_RATES  # others: resampled to 48 kHz, the rate WebRTC encodes at
    resample_to = 48000

    def transform(self, signal: np.ndarray, sample_rate: int, seed: int, *, sample: str | None = None,
                  bitrate_kbps: float) -> np.ndarray:
        """Encode and decode (libopus both ways)."""
        return fit_length(opus_decode(opus_encode(signal, sample_rate, bitrate_kbps), sample_rate), len(signal))


class AmrNb(AudioPerturbation):
    """AMR-NB, the mobile-network voice codec, in the mode of `bitrate_kbps`: always at 8 kHz.

    Five of its eight modes (3GPP TS 26.071): 12.2 (GSM-EFR), 10.2, 7.4 (IS-641), 5.9 and 4.75 kbit/s.
    The band ends at 4 kHz at every level: the signal is resampled to 8 kHz and back.
    """

    name = "amr_nb"
    parameter = "bitrate_kbps"
    levels = (12.2, 10.2, 7.4, 5.9, 4.75)
    codec_rates = (AMR_NB_RATE,)
    resample_to = AMR_NB_RATE

    def transform(self, signal: np.ndarray, sample_rate: int, seed: int, *, sample: str | None = None,
                  bitrate_kbps: float) -> np.ndarray:
        """Encode (OpenCORE) and decode (FFmpeg's AMR-NB decoder) at 8 kHz."""
        return fit_length(amr_nb_decode(amr_nb_encode(signal, bitrate_kbps)), len(signal))


class Mp3(AudioPerturbation):
    """MP3 (LAME, constant bitrate) at `bitrate_kbps`, coded at 16 kHz (MPEG-2 layer III).

    At 16 kHz every level's bitrate is one MPEG-2 allows (8-160 kbit/s); other rates are resampled
    to 16 kHz and back, since MPEG-1's rates (32 kHz and up) have no 8-24 kbit/s.
    """

    name = "mp3"
    parameter = "bitrate_kbps"
    levels = (48, 32, 24, 16, 8)
    codec_rates = (16000,)
    resample_to = 16000

    def transform(self, signal: np.ndarray, sample_rate: int, seed: int, *, sample: str | None = None,
                  bitrate_kbps: float) -> np.ndarray:
        """Encode (libmp3lame) and decode (FFmpeg's MP3 decoder)."""
        return fit_length(mp3_decode(mp3_encode(signal, sample_rate, bitrate_kbps)), len(signal))
