"""media.denoise: SI-SDR gain on speech-like audio, clean speech kept, settings, measures, bad audio."""
from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile

from avlips.media.denoise import (DEFAULTS, NOISEREDUCE_DEFAULTS, SilentAudio, check_speech_audio, denoise,
                           denoise_settings, quietest_frames, rms, settings_hash, settings_json, si_sdr,
                           snr_estimate_db, wav_bytes)
from avlips.media.errors import TooShort
from avlips.media.synthetic import make_persona, speech_like_audio

RATE = 16000


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    """Three seconds of noise-free speech-like audio."""
    return speech_like_audio(make_persona("x", 1), 3.0, RATE, seed=11, noise_level=0.0).astype(np.float64)


def _mix(clean: np.ndarray, snr_db: float, seed: int = 0) -> np.ndarray:
    noise = np.random.default_rng(seed).standard_normal(len(clean))
    noise *= np.sqrt(np.mean(clean**2) / np.mean(noise**2) / 10 ** (snr_db / 10))
    return (clean + noise).astype(np.float32)


def test_denoising_improves_si_sdr_on_speech_in_white_noise(speech):
    noisy = _mix(speech, 5.0)
    before = si_sdr(noisy, speech)
    after = si_sdr(denoise(noisy, RATE), speech)
    assert after - before > 3.0, (before, after)


def test_tuned_settings_beat_noisereduce_defaults(speech):
    noisy = _mix(speech, 5.0, seed=1)
    ours = si_sdr(denoise(noisy, RATE), speech)
    theirs = si_sdr(denoise(noisy, RATE, NOISEREDUCE_DEFAULTS), speech)
    assert ours > theirs + 1.0, (ours, theirs)


def test_clean_speech_survives(speech):
    assert si_sdr(denoise(speech.astype(np.float32), RATE), speech) > 10.0


def test_denoise_keeps_length_and_dtype_and_is_deterministic(speech):
    noisy = _mix(speech, 0.0, seed=2)
    first, second = denoise(noisy, RATE), denoise(noisy.copy(), RATE)
    assert first.dtype == np.float32 and first.shape == noisy.shape
    assert first.tobytes() == second.tobytes()
    assert wav_bytes(first, RATE) == wav_bytes(second, RATE)


def test_non_stationary_setting_is_honoured(speech):
    noisy = _mix(speech, 5.0, seed=3)
    stationary = denoise(noisy, RATE, {"stationary": True, "noise_profile": "quietest"})
    moving = denoise(noisy, RATE, {"stationary": False, "noise_profile": "none"})
    assert not np.array_equal(stationary, moving)


def test_denoise_rejects_stereo():
    with pytest.raises(ValueError, match="mono"):
        denoise(np.zeros((2, RATE), dtype=np.float32), RATE)


def test_quietest_frames_come_from_the_quiet_part():
    rng = np.random.default_rng(0)
    loud, quiet = rng.standard_normal(RATE), 0.01 * rng.standard_normal(RATE)
    audio = np.concatenate([loud, quiet]).astype(np.float32)  # 40 frames of 50 ms, the last 20 quiet
    noise = quietest_frames(audio, RATE, frame_ms=50, fraction=0.1)
    assert len(noise) == 4 * 800
    assert rms(noise) < 0.02
    # A noise sample is never shorter than the STFT window asks.
    assert len(quietest_frames(audio, RATE, frame_ms=50, fraction=0.1, min_samples=8000)) == 8000


def test_snr_estimate_follows_the_true_snr(speech):
    estimates = [snr_estimate_db(_mix(speech, snr), RATE) for snr in (0, 10, 20)]
    assert estimates[0] < estimates[1] < estimates[2]
    noisy = _mix(speech, 5.0)
    assert snr_estimate_db(denoise(noisy, RATE), RATE) > snr_estimate_db(noisy, RATE) + 3
    # Digital silence under the speech gives a finite (floored) value.
    assert np.isfinite(snr_estimate_db(np.concatenate([np.zeros(RATE), speech]), RATE))


def test_bad_audio_is_refused(speech):
    with pytest.raises(SilentAudio, match="all zeros"):
        check_speech_audio(np.zeros(RATE, dtype=np.float32), RATE, "z.wav")
    with pytest.raises(SilentAudio, match="below"):
        check_speech_audio(np.full(RATE, 1e-6, dtype=np.float32), RATE, "quiet.wav")
    with pytest.raises(TooShort, match="shorter"):
        check_speech_audio(speech[: RATE // 10], RATE, "short.wav")
    check_speech_audio(speech, RATE, "fine.wav")


def test_settings_are_checked_and_hashed():
    assert denoise_settings() == DEFAULTS
    with pytest.raises(ValueError, match="denoise: unknown key 'prop_decrese' \\(did you mean 'prop_decrease'\\?\\)"):
        denoise_settings({"prop_decrese": 0.5})
    with pytest.raises(ValueError, match="needs denoise.stationary"):
        denoise_settings({"stationary": False, "noise_profile": "quietest"})
    with pytest.raises(ValueError, match="noise_profile"):
        denoise_settings({"noise_profile": "loudest"})
    assert denoise_settings({"out": "x", "n_fft": 256.0}, ignore=("out",))["n_fft"] == 256
    with pytest.raises(ValueError, match="denoise.n_fft: expected int"):
        denoise_settings({"n_fft": "256"})
    assert settings_hash({}) == settings_hash(DEFAULTS)
    assert settings_hash({"prop_decrease": 0.5}) != settings_hash({})
    assert '"noisereduce_version"' in settings_json({})


def test_si_sdr_is_scale_invariant(speech):
    noisy = _mix(speech, 10.0)
    assert si_sdr(3.0 * noisy, speech) == pytest.approx(si_sdr(noisy, speech))
    assert si_sdr(speech, speech) > 100
    assert si_sdr(noisy, speech) == pytest.approx(10.0, abs=0.5)


def test_wav_bytes_are_16_bit_pcm(speech):
    data, rate = soundfile.read(io.BytesIO(wav_bytes(speech, RATE)), dtype="float32")
    info = soundfile.info(io.BytesIO(wav_bytes(speech, RATE)))
    assert rate == RATE and info.subtype == "PCM_16" and info.channels == 1
    assert np.max(np.abs(data - speech)) < 1e-4
