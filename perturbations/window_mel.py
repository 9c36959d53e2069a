"""A window's mel columns recomputed from its stored audio context, on the clip's own dB scale.

Compose computes the mel over the whole clip at 22050 Hz (librosa's defaults, media/audio.py) and
converts it to dB with power_to_db(ref=min) over the whole clip, floored at the clip's loudest cell
minus top_db; a window keeps its columns and the clip's dB range. A perturbed window has only its
audio with context (audio.npy: int16 at 16 kHz, the window's span plus 0.6 s either side), so:

1. the context is resampled to 22050 Hz with soxr HQ, the resampler compose reads audio with, from a
   start on the 20 ms grid where 16 kHz and 22050 Hz samples coincide (zeros prepended to reach it),
   so that every column is computed from the same instants as compose's;
2. each of the window's columns is the mel power of the same STFT frame compose takes (centred on
   column * hop, n_fft long, zeros beyond the clip's ends as librosa's centring has);
3. the clip's dB reference (10 log10 of its quietest cell's power, which the shard does not store)
   is recovered from the clean window: the median, over the cells above the floor and below the
   16 kHz audio's band edge, of the recomputed clean dB minus the stored dB;
4. the perturbed power goes through the same dB formula with that reference and the clip's floor
   (mel_db_max - top_db).

The clip's reference and range stay the clean clip's: only the window's audio is known, not what
the perturbation would do to the quietest and loudest cells elsewhere in the clip, so the perturbed
mel is on the clean clip's scale and colours with its range. Bins above 8 kHz hold what the 16 kHz
context holds (nothing): exact for clips whose audio is 16 kHz (the denoise stage's output), a
loss of the top bins for clips composed from wider-band raw audio.
"""
from __future__ import annotations

import numpy as np

from .errors import BadAudio, MissingAudio

AMIN = 1e-10  # librosa power_to_db's amin
GRID_RATES = (16000, 22050)
# Bins whose band reaches above this fraction of the context's Nyquist frequency are left out of
# the calibration: the context's resampling filter rolls off there.
CALIBRATION_BAND = 0.9
MIN_CALIBRATION_CELLS = 8


def _mel_config(meta: dict, key: str):
    from avlips.media.audio import MelConfig

    try:
        return MelConfig.from_params(meta["mel"])
    except KeyError:
        raise MissingAudio(f"metadata lacks 'mel' (the mel settings compose used)", key) from None


def placement(meta: dict, key: str) -> tuple[int, int]:
    """(rate, clip sample index of audio[0]) of the stored audio context, from json["audio"] and start_time."""
    info = meta.get("audio")
    if not isinstance(info, dict):
        raise MissingAudio("metadata lacks 'audio' (where audio.npy lies in the clip)", key)
    try:
        rate = int(info["sample_rate"])
        window_start = int(info["window_start"])
        start_time = float(meta["start_time"])
    except (KeyError, TypeError, ValueError) as exc:
        raise MissingAudio(f"metadata cannot place audio.npy in the clip ({type(exc).__name__}: {exc})", key) from None
    # As compose's window_audio: the window starts at round(start_time * rate) of the clip's track.
    return rate, int(round(start_time * rate)) - window_start


def column_power(audio: np.ndarray, meta: dict, key: str) -> np.ndarray:
    """The mel power (n_mels, last - first) of the window's stored columns, from an audio context."""
    from avlips.media.audio import mel_power
    from avlips.perturbations.audio_base import INT16_SCALE, resample

    config = _mel_config(meta, key)
    rate, origin = placement(meta, key)
    first, last = (int(c) for c in meta["mel_columns"])
    signal = audio.astype(np.float32) / np.float32(INT16_SCALE) if audio.dtype == np.int16 else audio.astype(np.float32)
    # Start on a sample that both rates share: 16 kHz * 20 ms = 320 samples = 441 at 22050 Hz.
    step_in = rate // np.gcd(rate, config.sample_rate)
    step_out = config.sample_rate // np.gcd(rate, config.sample_rate)
    lead = origin % step_in
    signal = np.concatenate([np.zeros(lead, dtype=np.float32), signal])
    base = (origin - lead) // step_in * step_out  # clip sample (at the mel rate) of resampled[0]
    resampled = resample(signal, rate, config.sample_rate)
    hop, half = config.hop_length, config.n_fft // 2
    # Samples (in `resampled`) the window's STFT frames read, and the part the context really holds.
    needed = (first * hop - half - base, (last - 1) * hop + half - base)
    held = (-(-lead * step_out // step_in), len(resampled))
    # Beyond the context, zeros are right only where the clip itself ends (compose's centring pads
    # the clip's ends with zeros); elsewhere the context must reach.
    cut = meta["audio"]
    if needed[0] < held[0] and not cut.get("cut_before"):
        raise BadAudio(f"the audio context starts after mel column {first}'s frame begins", key)
    if needed[1] > held[1] and not (cut.get("cut_after") or cut.get("window_padded")):
        raise BadAudio(f"the audio context ends before mel column {last - 1}'s frame ends", key)
    margin = -(-half // hop)  # whole columns either side that cover half an FFT frame
    start, stop = (first - margin) * hop - base, (last - 1 + margin) * hop - base + 1
    segment = np.zeros(stop - start, dtype=np.float32)
    low, high = max(0, start), min(len(resampled), stop)
    if low < high:
        segment[low - start:high - start] = resampled[low:high]
    power = mel_power(segment, config)  # its column j is centred on segment sample j * hop
    return power[:, margin:margin + (last - first)]


def _db(power: np.ndarray) -> np.ndarray:
    return 10.0 * np.log10(np.maximum(AMIN, power.astype(np.float64)))


def clip_reference_db(clean_audio: np.ndarray, stored_db: np.ndarray, meta: dict, key: str) -> float:
    """10 log10 of the clip's dB reference, recovered from the clean window (see the module's step 3)."""
    import librosa

    config = _mel_config(meta, key)
    rate, _ = placement(meta, key)
    recomputed = _db(column_power(clean_audio, meta, key))
    if recomputed.shape != stored_db.shape:
        raise BadAudio(f"mel shape {stored_db.shape} but its columns recompute as {recomputed.shape}", key)
    floor = float(meta["mel_db_max"]) - config.top_db
    edges = librosa.mel_frequencies(n_mels=config.n_mels + 2, fmax=config.sample_rate / 2.0)
    in_band = edges[2:] <= CALIBRATION_BAND * rate / 2.0
    usable = (stored_db > floor + 1.0) & in_band[:, None]
    if int(usable.sum()) < MIN_CALIBRATION_CELLS:
        raise BadAudio(f"the stored mel has {int(usable.sum())} cells above its floor in the audio's band: "
                       "too few to place the clip's dB reference", key)
    return float(np.median(recomputed[usable] - stored_db[usable].astype(np.float64)))


def window_mel_db(audio: np.ndarray, reference_db: float, meta: dict, key: str) -> np.ndarray:
    """The window's mel in dB from an audio context, with the clip's reference and floor (float32)."""
    config = _mel_config(meta, key)
    db = _db(column_power(audio, meta, key)) - reference_db
    floor = float(meta["mel_db_max"]) - config.top_db
    return np.maximum(db, floor).astype(np.float32)
