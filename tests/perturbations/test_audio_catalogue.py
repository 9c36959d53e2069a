"""The audio family's contract: tables, names, bad input as named errors, rates a codec cannot take."""
from __future__ import annotations

import pickle

import numpy as np
import pytest

from avlips.perturbations import (ALL_TYPES, AUDIO_CATALOGUE, AUDIO_TYPES, AVLIPS_TYPES, CALL_TYPES, CATALOGUE,
                                  BadAudio, BadLevel, BadSeed, SilentAudio, UnknownPerturbation, all_names,
                                  apply_audio, family, lookup, random_choice)
from tests.builders import SPEECH_RATE as RATE, speech

AUDIO = list(AUDIO_CATALOGUE)
CODECS = ["opus", "amr_nb", "mp3", "packet_loss"]


def test_level_tables():
    tables = {name: (p.parameter, p.levels) for name, p in AUDIO_CATALOGUE.items()}
    assert tables == {
        "opus": ("bitrate_kbps", (32, 24, 16, 12, 8)),
        "amr_nb": ("bitrate_kbps", (12.2, 10.2, 7.4, 5.9, 4.75)),
        "mp3": ("bitrate_kbps", (48, 32, 24, 16, 8)),
        "packet_loss": ("loss_rate", (0.01, 0.03, 0.05, 0.10, 0.20)),
        "background_noise": ("snr_db", (20, 15, 10, 5, 0)),
    }


def test_families_and_names():
    assert tuple(AUDIO_CATALOGUE) == AUDIO_TYPES
    assert ALL_TYPES == AVLIPS_TYPES + AUDIO_TYPES + CALL_TYPES
    assert len(set(all_names())) == len(all_names())  # names unique across families
    assert {family(n) for n in CATALOGUE} == {"video"}
    assert {family(n) for n in AUDIO_TYPES} == {"audio"} and family("call") == "call"
    for name in all_names():
        assert lookup(name).name == name and lookup(name).version >= 1


def test_codec_rate_tables_say_what_is_resampled():
    assert AUDIO_CATALOGUE["opus"].codec_rate(16000) == 16000
    assert AUDIO_CATALOGUE["opus"].codec_rate(44100) == 48000
    assert AUDIO_CATALOGUE["amr_nb"].codec_rate(16000) == 8000
    assert AUDIO_CATALOGUE["mp3"].codec_rate(44100) == 16000
    assert AUDIO_CATALOGUE["background_noise"].codec_rate(44100) == 44100


@pytest.mark.parametrize("name", CODECS)
@pytest.mark.parametrize("rate", [8000, 11025, 22050, 44100, 48000])
def test_any_rate_is_resampled_for_the_codec_and_back(name, rate):
    x = speech(2, 0.5)
    import soxr

    at_rate = soxr.resample(x.astype(np.float32) / 32768, RATE, rate)
    out = apply_audio(name, at_rate, rate, 1, seed=0)
    assert out.shape == at_rate.shape and out.dtype == np.float32
    # Still the same speech: its loudness rises and falls with the input's, 20 ms by 20 ms.
    frame = rate // 50
    count = len(at_rate) // frame

    def loudness(signal):
        return np.sqrt(np.mean(signal[:count * frame].reshape(count, frame) ** 2, axis=1))

    assert np.corrcoef(loudness(out), loudness(at_rate))[0, 1] > 0.9


@pytest.mark.parametrize("name", CODECS)
@pytest.mark.parametrize("length", [1, 100, 319, 321])
def test_shorter_than_a_codec_frame_keeps_its_length(name, length):
    # Opus and AMR-NB frames are 20 ms (320 samples at 16 kHz), MP3's 36 ms: the encoders pad.
    x = speech(3)[8000:8000 + length]
    out = apply_audio(name, x, RATE, 3, seed=0)
    assert out.shape == (length,) and out.dtype == np.int16


@pytest.mark.parametrize("name", CODECS)
def test_codecs_keep_silence_silent(name):
    out = apply_audio(name, np.zeros(22400, np.int16), RATE, 3, seed=0)
    assert out.shape == (22400,) and np.abs(out.astype(int)).max() <= 4


@pytest.mark.parametrize("samples", [np.zeros(22400, np.int16), np.full(22400, 1e-5, np.float32)])
def test_noise_on_silent_audio_is_a_named_error(samples):
    with pytest.raises(SilentAudio, match=r"c0_w01: background_noise: the audio is silent"):
        apply_audio("background_noise", samples, RATE, 1, 0, sample="c0_w01")


@pytest.mark.parametrize("name", AUDIO)
@pytest.mark.parametrize("samples, rate, words", [
    (np.zeros((2, 100), np.int16), RATE, "mono"),
    (np.zeros(0, np.int16), RATE, "no samples"),
    (np.zeros(100, np.int32), RATE, "dtype int32"),
    (np.array([0.1, np.nan] * 50, np.float32), RATE, "NaN"),
    ([0, 1, 2], RATE, "numpy array"),
    (np.zeros(100, np.int16), 0, "sample_rate"),
    (np.zeros(100, np.int16), 16000.0, "sample_rate"),
])
def test_bad_audio_is_a_named_error(name, samples, rate, words):
    with pytest.raises(BadAudio, match=words) as caught:
        apply_audio(name, samples, rate, 1, 0, sample="c1_w02")
    assert str(caught.value).startswith(f"c1_w02: {name}:")


@pytest.mark.parametrize("name", AUDIO)
@pytest.mark.parametrize("level", [0, 6, -1, 2.5, True, "3", None])
def test_bad_levels_are_named(name, level):
    with pytest.raises(BadLevel, match=rf"c2_w00: {name}: level must be"):
        apply_audio(name, speech(), RATE, level, 0, sample="c2_w00")


@pytest.mark.parametrize("seed", [-1, 1.5, "0"])
def test_bad_seeds_are_named(seed):
    with pytest.raises(BadSeed, match=r"c2_w00: packet_loss: seed"):
        apply_audio("packet_loss", speech(), RATE, 1, seed, sample="c2_w00")


def test_unknown_audio_type_is_named():
    with pytest.raises(UnknownPerturbation, match=r"c3_w00: unknown audio perturbation type 'gsm'; known: opus"):
        apply_audio("gsm", speech(), RATE, 1, 0, sample="c3_w00")
    with pytest.raises(UnknownPerturbation, match=r"unknown perturbation type 'gsm'"):
        family("gsm")


def test_errors_pickle_with_their_sample():
    error = pickle.loads(pickle.dumps(SilentAudio("background_noise: the audio is silent", "k")))
    assert isinstance(error, SilentAudio) and error.sample == "k" and str(error).startswith("k: ")


def test_random_choice_over_every_family_is_uniform():
    draws = [random_choice(seed, ALL_TYPES) for seed in range(6000)]
    counts = {name: sum(1 for n, _ in draws if n == name) for name in ALL_TYPES}
    assert all(abs(c - 6000 / len(ALL_TYPES)) < 120 for c in counts.values()), counts
    # The six-type draw is unchanged by the families' arrival.
    assert [random_choice(s) for s in range(50)] == [random_choice(s, AVLIPS_TYPES) for s in range(50)]
    with pytest.raises(UnknownPerturbation):
        random_choice(0, ("opus", "nope"))
