"""Each audio type's effect measured on what it produces: bitrate, band, SNR, loss rate, alignment."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.signal
import scipy.stats

from avlips.perturbations import AUDIO_CATALOGUE, apply_audio
from avlips.perturbations.audio_codecs import (AMR_NB_DELAY, AMR_NB_HEADER_BYTES, AMR_NB_MODES, MP3_DELAY,
                                               amr_nb_decode, amr_nb_encode, amr_nb_mode, decode, mp3_decode,
                                               mp3_encode, opus_decode, opus_encode)
from avlips.perturbations.audio_base import resample
from avlips.perturbations.background_noise import SPECTRUM_FALL_DB_PER_OCTAVE, babble
from avlips.perturbations.packet_loss import LOSS_BITRATE_KBPS, drop_packets, lost_packets
from tests.builders import SPEECH_RATE as RATE, WINDOW_AUDIO_SECONDS, as_float, speech

LEVELS = [1, 2, 3, 4, 5]


def pulses(seed: int = 0, seconds: float = WINDOW_AUDIO_SECONDS) -> np.ndarray:
    """A broadband probe: a jittered pulse train through three resonances, int16 at 16 kHz."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    source = np.zeros(n)
    position = 0.0
    while position < n:
        source[int(position)] = 1.0
        position += RATE / rng.uniform(90, 250)
    out = source + 0.05 * rng.standard_normal(n)
    for centre, width in ((650, 80), (1500, 100), (2700, 150)):
        r = np.exp(-np.pi * width / RATE)
        theta = 2 * np.pi * centre / RATE
        out = scipy.signal.lfilter([1 - r], [1, -2 * r * np.cos(theta), r * r], out) + 0.3 * out
    return np.round(out / np.abs(out).max() * 0.5 * 32767).astype(np.int16)


def xcorr_lag(output: np.ndarray, reference: np.ndarray, max_lag: int = 2000) -> int:
    """The lag (samples) at which output best matches reference; negative: output early."""
    full = scipy.signal.correlate(output.astype(np.float64), reference.astype(np.float64), mode="full")
    middle = len(reference) - 1
    window = full[middle - max_lag:middle + max_lag + 1]
    return int(np.argmax(window)) - max_lag


def snr_db(reference: np.ndarray, output: np.ndarray) -> float:
    reference = reference.astype(np.float64)
    noise = output.astype(np.float64) - reference
    return 10 * np.log10(np.sum(reference ** 2) / np.sum(noise ** 2))


# --- bitrate: the stream each type decodes, measured ---------------------------------------------

@pytest.mark.parametrize("level", LEVELS)
def test_opus_stream_bitrate_is_the_levels(level):
    x = speech()
    kbps = AUDIO_CATALOGUE["opus"].value(level)
    stream = opus_encode(as_float(x), RATE, kbps)
    assert stream.frame_samples == RATE // 50  # 20 ms packets
    assert abs(stream.bitrate_kbps() / kbps - 1) < 0.10
    # The type decodes exactly this stream.
    decoded = np.clip(np.round(opus_decode(stream, RATE)[:len(x)] * 32768), -32768, 32767).astype(np.int16)
    assert np.array_equal(apply_audio("opus", x, RATE, level, seed=0), decoded)


@pytest.mark.parametrize("level", LEVELS)
def test_amr_nb_stream_is_the_levels_mode_and_bitrate(level):
    x = speech()
    kbps = AUDIO_CATALOGUE["amr_nb"].value(level)
    stream = amr_nb_encode(resample(as_float(x), RATE, 8000), kbps)
    modes = {amr_nb_mode(p) for p in stream.packets}
    assert modes == {AMR_NB_MODES.index(int(round(kbps * 1000)))}  # every frame in the level's mode
    # Payload bits (the frame header byte aside; the mode's bits padded to whole bytes).
    assert abs(stream.bitrate_kbps(AMR_NB_HEADER_BYTES) / kbps - 1) < 0.10
    out = apply_audio("amr_nb", x, RATE, level, seed=0)
    expected = resample(amr_nb_decode(stream)[:len(x) // 2], 8000, RATE)
    assert np.abs(out.astype(np.float64) / 32768 - expected).max() < 2 / 32768


@pytest.mark.parametrize("level", LEVELS)
def test_mp3_stream_bitrate_is_the_levels(level):
    x = speech()
    kbps = AUDIO_CATALOGUE["mp3"].value(level)
    stream = mp3_encode(as_float(x), RATE, kbps)
    assert abs(stream.bitrate_kbps() / kbps - 1) < 0.10
    decoded = np.clip(np.round(mp3_decode(stream)[:len(x)] * 32768), -32768, 32767).astype(np.int16)
    assert np.array_equal(apply_audio("mp3", x, RATE, level, seed=0), decoded)


def log_spectral_distance(reference: np.ndarray, output: np.ndarray) -> float:
    """Mean absolute difference (dB) of 32 ms log power spectra: what a codec does to the sound.

    A waveform difference would not do: the parametric codecs do not keep the phase.
    """
    _, _, a = scipy.signal.stft(reference.astype(np.float64), RATE, nperseg=512)
    _, _, b = scipy.signal.stft(output.astype(np.float64), RATE, nperseg=512)
    floor = 1e-3 * np.mean(np.abs(a) ** 2)
    return float(np.mean(np.abs(10 * np.log10(np.abs(a) ** 2 + floor) - 10 * np.log10(np.abs(b) ** 2 + floor))))


def test_damage_grows_with_level():
    x = speech()
    for name in ("opus", "amr_nb", "mp3", "packet_loss", "background_noise"):
        distances = [log_spectral_distance(x, apply_audio(name, x, RATE, lv, 0)) for lv in LEVELS]
        assert distances[-1] > distances[0], (name, distances)


def test_amr_nb_is_band_limited_to_4_khz():
    x = pulses()
    out = apply_audio("amr_nb", x, RATE, 1, 0)
    freqs, power_in = scipy.signal.welch(x.astype(np.float64), RATE, nperseg=512)
    _, power_out = scipy.signal.welch(out.astype(np.float64), RATE, nperseg=512)
    above = freqs > 4300
    # The input has real content above 4 kHz; the output keeps less than 1/1000 of it.
    assert power_out[above].sum() < 1e-3 * power_in[above].sum()


# --- alignment ------------------------------------------------------------------------------------

def test_codec_delays_are_the_documented_ones():
    # Before removal, the decoded signal runs behind by exactly the documented delay.
    x = as_float(pulses())
    raw_mp3, _ = decode("mp3float", mp3_encode(x, RATE, 48).packets)
    assert xcorr_lag(raw_mp3, x) == MP3_DELAY
    x8 = resample(x, RATE, 8000)
    raw_amr, _ = decode("amrnb", amr_nb_encode(x8, 12.2).packets, sample_rate=8000)
    assert xcorr_lag(raw_amr, x8) == AMR_NB_DELAY
    stream = opus_encode(x, RATE, 32)
    assert int.from_bytes(stream.extradata[10:12], "little") == 312  # OpusHead pre-skip: 6.5 ms at 48 kHz


@pytest.mark.parametrize("name", ["opus", "amr_nb", "mp3", "packet_loss", "background_noise"])
@pytest.mark.parametrize("level", LEVELS)
def test_output_is_time_aligned_with_the_input(name, level):
    """Cross-correlation peaks at lag 0 on a broadband probe (within one sample on Opus's narrowband level).

    On low-pitched voiced speech, Opus and AMR-NB peak up to 3 samples (0.19 ms) early: their
    phase response leads the low frequencies (measured band by band: about -1 sample at 500-1000 Hz,
    about 0 above 2 kHz), which no shift removes for every signal. Delays removed are 104 (Opus),
    80 (AMR-NB at 16 kHz) and 1105 (MP3) samples.
    """
    probe = pulses(level)
    lag = xcorr_lag(apply_audio(name, probe, RATE, level, seed=3), probe)
    if name in ("mp3", "background_noise"):
        assert lag == 0
    else:
        assert abs(lag) <= (1 if (name, level) == ("opus", 5) else 0)
    voice = speech(level)
    assert abs(xcorr_lag(apply_audio(name, voice, RATE, level, seed=3), voice)) <= 4


# --- SNR --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("level", LEVELS)
def test_background_noise_snr_is_the_levels(level):
    x = speech()
    out = apply_audio("background_noise", x, RATE, level, seed=5)
    assert abs(snr_db(x, out) - AUDIO_CATALOGUE["background_noise"].value(level)) < 0.5


def test_background_noise_is_the_same_babble_at_every_level_and_differs_by_seed():
    x = speech()
    noises = [apply_audio("background_noise", as_float(x), RATE, lv, seed=5).astype(np.float64) - as_float(x)
              for lv in LEVELS]
    for noise in noises[1:]:
        assert np.corrcoef(noises[0], noise)[0, 1] > 0.999
    other = apply_audio("background_noise", as_float(x), RATE, 1, seed=6) - as_float(x)
    assert abs(np.corrcoef(noises[0], other)[0, 1]) < 0.1


def test_babble_is_speech_shaped_and_swings_in_loudness():
    noise = babble(RATE * 20, RATE, seed=0)
    freqs, power = scipy.signal.welch(noise, RATE, nperseg=2048)

    def band_db(low, high):
        band = (freqs >= low) & (freqs < high)
        return 10 * np.log10(power[band].mean())

    # Flat from 100 to 500 Hz, then the documented fall per octave (two octaves: 1-2 kHz vs 4-8 kHz).
    assert abs(band_db(150, 250) - band_db(300, 450)) < 1.5
    fall = band_db(1000, 2000) - band_db(4000, 8000)
    assert abs(fall - 2 * SPECTRUM_FALL_DB_PER_OCTAVE) < 2.0
    assert band_db(20, 50) < band_db(150, 450) - 10  # no rumble or hum below the band
    # Syllable-rate loudness swings: 50 ms frame levels spread over more than 6 dB.
    frames = noise[: len(noise) // 800 * 800].reshape(-1, 800)
    levels = 10 * np.log10(np.mean(frames ** 2, axis=1))
    assert np.percentile(levels, 90) - np.percentile(levels, 10) > 6


# --- packet loss ------------------------------------------------------------------------------------

@pytest.mark.parametrize("level", LEVELS)
def test_loss_rate_is_within_its_binomial_interval(level):
    rate = AUDIO_CATALOGUE["packet_loss"].value(level)
    # 300 windows of 71 packets each (1.4 s at 20 ms, plus the encoder's last).
    lost = sum(int(lost_packets(71, rate, seed).sum()) for seed in range(300))
    low, high = scipy.stats.binom.interval(0.999, 300 * 71, rate)
    assert low <= lost <= high


@pytest.mark.parametrize("level", [1, 3, 5])
def test_packet_loss_is_opus_with_those_packets_lost_and_concealed(level):
    x = speech()
    rate = AUDIO_CATALOGUE["packet_loss"].value(level)
    out = apply_audio("packet_loss", x, RATE, level, seed=11)
    stream = drop_packets(opus_encode(as_float(x), RATE, LOSS_BITRATE_KBPS), rate, 11)
    assert stream.delivered == [not lost for lost in lost_packets(len(stream.packets), rate, 11)]
    expected = np.clip(np.round(opus_decode(stream, RATE)[:len(x)] * 32768), -32768, 32767).astype(np.int16)
    assert np.array_equal(out, expected)
    clean = apply_audio("opus", x, RATE, 1, seed=0)  # the same codec and bitrate, nothing lost
    lost = [i for i, ok in enumerate(stream.delivered) if not ok]
    if not lost:
        assert np.array_equal(out, clean)
        return
    # Identical up to the first lost packet (less the 104-sample look-ahead and the reach of the
    # 48 -> 16 kHz resampling filter, which spreads a change a few samples back), different after.
    first = lost[0] * 320 - 104 - 64
    assert np.array_equal(out[:max(0, first)], clean[:max(0, first)])
    assert not np.array_equal(out, clean)
    # Concealed, not silenced: a lost packet's 20 ms inside speech still carry sound.
    for index in lost:
        span = slice(index * 320 - 104, index * 320 + 216)
        if span.start > 0 and np.sqrt(np.mean(clean[span].astype(np.float64) ** 2)) > 1000:
            assert np.sqrt(np.mean(out[span].astype(np.float64) ** 2)) > 100


# --- determinism --------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["opus", "amr_nb", "mp3", "packet_loss", "background_noise"])
def test_same_seed_same_samples_and_input_untouched(name):
    x = speech()
    kept = x.copy()
    first = apply_audio(name, x, RATE, 4, seed=9)
    assert np.array_equal(first, apply_audio(name, x, RATE, 4, seed=9))
    assert np.array_equal(x, kept)
    assert first.dtype == np.int16 and first.shape == x.shape
    other = apply_audio(name, x, RATE, 4, seed=10)
    if AUDIO_CATALOGUE[name].seeded:
        assert not np.array_equal(first, other)
    else:
        assert np.array_equal(first, other)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float_input_gives_float_output_on_the_same_scale(dtype):
    x = speech()
    out = apply_audio("mp3", (x / 32768.0).astype(dtype), RATE, 1, seed=0)
    assert out.dtype == dtype and out.shape == x.shape
    assert np.abs(out * 32768 - apply_audio("mp3", x, RATE, 1, seed=0)).max() <= 1.0
