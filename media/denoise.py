"""Speech denoising by spectral gating (noisereduce), and the audio measures the denoise stage records.

Every clip's audio, real and fake alike, goes through `denoise` with the same settings, so a
detector cannot tell real from fake by how the audio was cleaned. The default settings were
chosen with `benchmarks/denoise_sisdr.py` (SI-SDR on real speech mixed with white noise, mains
hum and hum plus babble); noisereduce's own defaults are kept in `NOISEREDUCE_DEFAULTS` as the
baseline that benchmark compares against.
"""
from __future__ import annotations

import hashlib
import io
import json
from dataclasses import asdict, dataclass
from typing import Any, Mapping

import numpy as np

from avlips.config import config_from_dict
from avlips.media.errors import MediaError, TooShort

# Bump when the processing changes in a way the settings do not show, so old outputs are redone.
ALGORITHM_VERSION = 1

# noisereduce.reduce_noise's own defaults (3.0.3): the benchmark's baseline.
NOISEREDUCE_DEFAULTS: dict[str, Any] = {
    "stationary": False, "n_fft": 1024, "win_length": None, "hop_length": None, "prop_decrease": 1.0,
    "time_constant_s": 2.0, "freq_mask_smooth_hz": 500, "time_mask_smooth_ms": 50,
    "thresh_n_mult_nonstationary": 2.0, "sigmoid_slope_nonstationary": 10.0, "n_std_thresh_stationary": 1.5,
    "noise_profile": "none",
}

_PROFILES = ("none", "quietest")


@dataclass(frozen=True)
class DenoiseSettings:
    """The denoiser's settings: the tuned defaults (benchmarks/denoise_sisdr.py --tune), params.yaml `denoise` over them.

    Stationary gating against the clip's quietest frames beat every non-stationary setting tried: at
    5 dB SNR +5.9 dB SI-SDR gain (best non-stationary +3.3 dB) with clean speech kept at ~30 dB
    (non-stationary ~13 dB). A short FFT (16 ms) and light mask smoothing keep speech onsets; a
    prop_decrease below 1 leaves a -20 dB noise floor instead of gated silence.
    """

    sample_rate: int = 16000
    stationary: bool = True
    n_fft: int = 256
    win_length: int | None = None  # None: n_fft
    hop_length: int | None = None  # None: win_length // 4
    prop_decrease: float = 0.9
    time_constant_s: float = 2.0  # non-stationary gate only
    freq_mask_smooth_hz: float = 250.0
    time_mask_smooth_ms: float = 25.0
    thresh_n_mult_nonstationary: float = 2.0  # non-stationary gate only
    sigmoid_slope_nonstationary: float = 10.0  # non-stationary gate only
    n_std_thresh_stationary: float = 1.5
    # none: noisereduce estimates the noise from the whole clip; quietest: the noise statistics
    # come from the clip's quietest frames (stationary gating only: the non-stationary gate has no
    # noise input).
    noise_profile: str = "quietest"
    noise_frame_ms: float = 50.0  # frame length for the quietest-frames profile and the SNR estimate
    noise_fraction: float = 0.1  # share of the quietest frames taken as noise

    def __post_init__(self) -> None:
        if self.noise_profile not in _PROFILES:
            raise ValueError(f"denoise.noise_profile must be one of {_PROFILES}, got {self.noise_profile!r}")
        if self.noise_profile == "quietest" and not self.stationary:
            raise ValueError("denoise.noise_profile 'quietest' needs denoise.stationary: true "
                             "(noisereduce's non-stationary gate takes no noise clip)")
        if not 0.0 <= self.prop_decrease <= 1.0:
            raise ValueError(f"denoise.prop_decrease must be in 0..1, got {self.prop_decrease}")
        if not 0.0 < self.noise_fraction <= 1.0:
            raise ValueError(f"denoise.noise_fraction must be in (0, 1], got {self.noise_fraction}")
        if self.sample_rate <= 0 or self.n_fft <= 0:
            raise ValueError("denoise.sample_rate and denoise.n_fft must be positive")


# The tuned settings as a plain dict (what benchmarks and the settings record compare against).
DEFAULTS: dict[str, Any] = asdict(DenoiseSettings())
# Power floor for dB measures: -100 dBFS, so digital silence gives a finite number.
_POWER_FLOOR = 1e-10


class SilentAudio(MediaError):
    """The audio is all zeros or too quiet to hold speech."""


def denoise_settings(section: Mapping[str, Any] | DenoiseSettings | None = None,
                     ignore: tuple[str, ...] = ()) -> dict[str, Any]:
    """The full, checked denoise settings as a dict: the defaults overridden by `section` (keys in `ignore` skipped).

    An unknown key or a value of the wrong type is a ParamsError (a ValueError) naming `denoise.<key>`.
    """
    if isinstance(section, DenoiseSettings):
        return asdict(section)
    return asdict(config_from_dict(DenoiseSettings, section, "denoise", ignore=ignore))


def settings_record(settings: Mapping[str, Any]) -> dict[str, Any]:
    """What decides a denoised file's bytes: the settings plus the algorithm and noisereduce versions."""
    from importlib.metadata import version

    return {**denoise_settings(settings), "algorithm_version": ALGORITHM_VERSION,
            "noisereduce_version": version("noisereduce")}


def settings_json(settings: Mapping[str, Any]) -> str:
    """The settings record as compact JSON with sorted keys (stable text for the same settings)."""
    return json.dumps(settings_record(settings), sort_keys=True, separators=(",", ":"))


def settings_hash(settings: Mapping[str, Any]) -> str:
    """A short hash of the settings record: equal hashes mean equal processing."""
    return hashlib.sha256(settings_json(settings).encode()).hexdigest()[:16]


def frame_powers(audio: np.ndarray, sample_rate: int, frame_ms: float = 50.0) -> np.ndarray:
    """Mean power of each whole non-overlapping frame of `frame_ms` (a tail shorter than a frame is dropped)."""
    size = max(1, int(round(sample_rate * frame_ms / 1000.0)))
    count = len(audio) // size
    frames = np.asarray(audio[: count * size], dtype=np.float64).reshape(count, size)
    return np.mean(frames**2, axis=1)


def _quietest_indices(powers: np.ndarray, fraction: float, minimum: int) -> np.ndarray:
    """Indices of the lowest-power frames, in time order; a stable sort breaks ties by position."""
    count = min(len(powers), max(minimum, int(np.ceil(fraction * len(powers)))))
    return np.sort(np.argsort(powers, kind="stable")[:count])


def quietest_frames(audio: np.ndarray, sample_rate: int, frame_ms: float = 50.0, fraction: float = 0.1,
                    min_samples: int = 0) -> np.ndarray:
    """The clip's quietest frames concatenated in time order: a noise sample (at least `min_samples` long)."""
    size = max(1, int(round(sample_rate * frame_ms / 1000.0)))
    powers = frame_powers(audio, sample_rate, frame_ms)
    if len(powers) == 0:
        return np.asarray(audio, dtype=np.float32)
    # The STFT of the noise sample needs at least one whole window.
    chosen = _quietest_indices(powers, fraction, minimum=int(np.ceil(min_samples / size)))
    frames = np.asarray(audio[: len(powers) * size], dtype=np.float32).reshape(len(powers), size)
    return np.ascontiguousarray(frames[chosen].reshape(-1))


def snr_estimate_db(audio: np.ndarray, sample_rate: int, frame_ms: float = 50.0, quiet_fraction: float = 0.1,
                    loud_fraction: float = 0.2) -> float:
    """Blind SNR in dB: power of the loudest frames (less the noise) over the power of the quietest frames.

    Frames are `frame_ms` long; noise power is the mean of the quietest `quiet_fraction`, signal
    plus noise the mean of the loudest `loud_fraction`. Powers are floored at -100 dBFS.
    """
    powers = frame_powers(audio, sample_rate, frame_ms)
    if len(powers) == 0:
        return 0.0
    ordered = np.sort(powers)
    quiet = float(np.mean(ordered[: max(1, int(np.ceil(quiet_fraction * len(ordered))))]))
    loud = float(np.mean(ordered[-max(1, int(np.ceil(loud_fraction * len(ordered)))):]))
    noise = max(quiet, _POWER_FLOOR)
    signal = max(loud - quiet, _POWER_FLOOR)
    return float(10.0 * np.log10(signal / noise))


def rms(audio: np.ndarray) -> float:
    """Root mean square of the samples."""
    data = np.asarray(audio, dtype=np.float64)
    return float(np.sqrt(np.mean(data**2))) if data.size else 0.0


def check_speech_audio(audio: np.ndarray, sample_rate: int, path: str, min_duration_s: float = 0.2,
                       min_rms: float = 1e-4) -> None:
    """Raise TooShort or SilentAudio when the audio cannot hold speech worth denoising."""
    duration = len(audio) / float(sample_rate)
    if duration < min_duration_s:
        raise TooShort(path, f"audio is {duration:.3f}s, shorter than {min_duration_s}s")
    if not np.any(audio):
        raise SilentAudio(path, "audio is all zeros")
    level = rms(audio)
    if level < min_rms:
        raise SilentAudio(path, f"audio RMS {level:.2e} is below {min_rms:.0e} "
                                f"({20 * np.log10(max(level, 1e-12)):.1f} dBFS)")


def denoise(audio: np.ndarray, sample_rate: int, settings: Mapping[str, Any] | None = None) -> np.ndarray:
    """Mono float audio with its background noise reduced by spectral gating; same length, float32."""
    import noisereduce

    s = denoise_settings(settings)
    y = np.asarray(audio, dtype=np.float32)
    if y.ndim != 1:
        raise ValueError(f"denoise takes mono audio (N,), got shape {y.shape}")
    win_length = s["win_length"] or s["n_fft"]
    noise = None
    if s["noise_profile"] == "quietest":
        noise = quietest_frames(y, sample_rate, s["noise_frame_ms"], s["noise_fraction"], min_samples=win_length)
    out = noisereduce.reduce_noise(
        y=y, sr=sample_rate, stationary=s["stationary"], y_noise=noise, prop_decrease=s["prop_decrease"],
        time_constant_s=s["time_constant_s"], freq_mask_smooth_hz=s["freq_mask_smooth_hz"],
        time_mask_smooth_ms=s["time_mask_smooth_ms"],
        thresh_n_mult_nonstationary=s["thresh_n_mult_nonstationary"],
        sigmoid_slope_nonstationary=s["sigmoid_slope_nonstationary"],
        n_std_thresh_stationary=s["n_std_thresh_stationary"], n_fft=s["n_fft"], win_length=s["win_length"],
        hop_length=s["hop_length"],
        # One job: the stage parallelises over clips, and joblib workers would only compete for cores.
        n_jobs=1, use_tqdm=False, use_torch=False,
    )
    return np.ascontiguousarray(out, dtype=np.float32)


def si_sdr(estimate: np.ndarray, reference: np.ndarray) -> float:
    """Scale-invariant signal-to-distortion ratio of `estimate` against `reference`, in dB."""
    n = min(len(estimate), len(reference))
    est = np.asarray(estimate[:n], dtype=np.float64)
    ref = np.asarray(reference[:n], dtype=np.float64)
    est = est - est.mean()
    ref = ref - ref.mean()
    target = (np.dot(est, ref) / max(np.dot(ref, ref), 1e-20)) * ref
    error = est - target
    return float(10.0 * np.log10(max(np.dot(target, target), 1e-20) / max(np.dot(error, error), 1e-20)))


def wav_bytes(audio: np.ndarray, sample_rate: int) -> bytes:
    """Mono float audio as a 16-bit PCM wav file's bytes (clipped to -1..1; no dates in the header)."""
    import soundfile

    buffer = io.BytesIO()
    soundfile.write(buffer, np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0), sample_rate,
                    subtype="PCM_16", format="WAV")
    return buffer.getvalue()
