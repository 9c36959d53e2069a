"""media.windows: each window's mel is the whole clip's, cut where the reference cuts it."""
from __future__ import annotations

import numpy as np
import pytest

from avlips.media import windows
from avlips.media.audio_decode import read_audio
from avlips.media.encode import write_video, write_wav
from avlips.media.probe import frame_times, probe
from avlips.media.audio import clip_mel_db, time_columns, window_columns
from avlips.media.windows import WindowConfig, WindowFailure, iter_windows
from tests.builders import gradient_frames


def _speech(seconds: float, rate: int = 16000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    return (0.2 * (0.05 + np.abs(np.sin(2 * np.pi * 3 * t))) * rng.standard_normal(len(t))).astype(np.float32)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """A 4 s video, and wavs as long as it, longer and shorter."""
    root = tmp_path_factory.mktemp("windows")
    video = root / "v.mp4"
    write_video(video, gradient_frames(100, 32, 32), 25)
    wavs = {}
    for name, seconds in (("same", 4.0), ("long", 9.0), ("short", 2.5)):
        wavs[name] = root / f"{name}.wav"
        write_wav(wavs[name], _speech(seconds, seed=len(name)), 16000)
    return video, wavs


def _windows(video, wav, config):
    keys = [f"k{i}" for i in range(config.n_windows)]
    return list(iter_windows(str(video), str(wav), keys, config, True, 0, {}))


@pytest.mark.parametrize("audio, alignment", [("same", "ratio"), ("long", "time"), ("short", "time")])
def test_window_mel_is_the_whole_clips(clip, audio, alignment):
    video, wavs = clip
    config = WindowConfig(frame_size=32)
    whole = clip_mel_db(read_audio(wavs[audio], config.mel.sample_rate), config.mel)
    frames, times = probe(video).frames, frame_times(video)
    items = _windows(video, wavs[audio], config)
    samples = [i for i in items if not isinstance(i, WindowFailure)]
    assert len(items) == config.n_windows and samples
    for sample in samples:
        meta = sample.meta
        start = meta["frame_indices"][0]
        if alignment == "ratio":
            first, last = window_columns(start, config.window_len, whole.shape[1], frames)
        else:
            first, last = time_columns(times[start], times[start + config.window_len], config.mel)
        assert meta["mel_alignment"] == alignment and meta["mel_columns"] == [first, max(last, first + 1)]
        assert np.array_equal(sample.mel_db, whole[:, first:max(last, first + 1)])
        assert (meta["mel_db_min"], meta["mel_db_max"]) == (float(whole.min()), float(whole.max()))
        assert meta["start_time"] == float(times[start])
    if audio == "short":  # windows past the audio's end fail, the others compose
        assert all("audio ends" in str(i.error) for i in items if isinstance(i, WindowFailure))
        assert len(samples) < len(items)


def test_one_pass_over_the_audio_and_a_second_only_when_columns_are_missing(clip, monkeypatch):
    video, wavs = clip
    config = WindowConfig(frame_size=32)
    calls = []
    stream = windows.stream_mel
    monkeypatch.setattr(windows, "stream_mel", lambda *a, **k: calls.append(1) or stream(*a, **k))
    expected = _windows(video, wavs["same"], config)
    assert len(calls) == 1
    monkeypatch.setattr(windows, "_candidate_columns", lambda *a, **k: [])
    again = _windows(video, wavs["same"], config)
    assert len(calls) == 3
    for a, b in zip(expected, again):
        assert a.meta == b.meta and np.array_equal(a.mel_db, b.mel_db)
