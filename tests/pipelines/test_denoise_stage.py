"""The denoise stage end to end on a corpus made by the corpus stage: outputs, failures, bytes, reruns."""
from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest
import soundfile

from avlips.media.encode import write_video, write_wav
from avlips.media.denoise import settings_record
from avlips.media.synthetic import make_persona, speech_like_audio
from avlips.pipelines.corpus import run_corpus
from avlips.errors import ParamsError
from avlips.pipelines.denoise import DenoiseConfig, DenoiseInputError, run_denoise
from avlips.pipelines.failures import StageFailed
from tests.builders import gradient_frames

FRAMES, FPS = 40, 25  # 1.6 s clips
PARAMS = {"seed": 7, "corpus": {"min_frames": 5, "require_audio": False, "max_failure_fraction": 0.9,
                                "splits": {"train": 0.5, "val": 0.25, "test": 0.25}},
          "denoise": {"max_failure_fraction": 0.9}}


def _speech(seed: int, rate: int = 16000) -> np.ndarray:
    return speech_like_audio(make_persona(f"p{seed}", seed), FRAMES / FPS, rate, seed, noise_level=0.05)


def _video(path, audio: np.ndarray | None, rate: int = 16000):
    path.parent.mkdir(parents=True, exist_ok=True)
    write_video(path, gradient_frames(FRAMES, 48, 64), FPS, audio, rate)
    return path


@pytest.fixture(scope="module")
def clips_parquet(tmp_path_factory) -> str:
    """clips.parquet of six clips: three good (one with a sidecar wav, one fake) and three bad."""
    base = tmp_path_factory.mktemp("denoise")
    root = base / "videos"
    _video(root / "0_real" / "alice" / "a.mp4", _speech(1))
    _video(root / "1_fake" / "alice" / "a.mp4", _speech(2))
    _video(root / "0_real" / "bob" / "b.mp4", None)
    write_wav(root / "0_real" / "bob" / "b.wav", _speech(3, 22050), 22050)  # sidecar, resampled on read
    _video(root / "0_real" / "carol" / "silent.mp4", np.zeros(int(FRAMES / FPS * 16000), dtype=np.float32))
    _video(root / "0_real" / "dave" / "mute.mp4", None)  # no audio at all (the corpus lets it through here)
    _video(root / "0_real" / "erin" / "broken.mp4", None)
    write_wav(root / "0_real" / "erin" / "broken.wav", _speech(4), 16000)
    run_corpus(f"folder:{root}", str(base / "corpus"), PARAMS)
    # The sidecar breaks after the corpus stage has probed it.
    (root / "0_real" / "erin" / "broken.wav").write_bytes(b"RIFF\x00\x00 not really a wav")
    clips = pd.read_parquet(base / "corpus" / "clips.parquet")
    assert len(clips) == 6 and set(clips["audio_source"]) == {"track", "sidecar", "none"}
    return str(base / "corpus" / "clips.parquet")


def _wavs(out) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.glob("*.wav"))}


def test_stage_denoises_good_clips_and_records_bad_ones(clips_parquet, tmp_path):
    out = tmp_path / "audio"
    stats = run_denoise(clips_parquet, str(out), PARAMS)
    audio = pd.read_parquet(out / "audio.parquet")
    failures = pd.read_parquet(out / "failures.parquet")
    clips = pd.read_parquet(clips_parquet).set_index("clip_id")

    assert stats["inputs"] == len(clips) == stats["outputs"] + stats["failures"] == len(audio) + len(failures)
    assert (stats["outputs"], stats["denoised"], stats["reused"]) == (3, 3, 0)
    assert stats == {**json.loads((out / "denoise_stats.json").read_text()), "denoised": 3, "reused": 0}
    by_name = {os.path.basename(p): e for p, e in zip(failures["input"], failures["error"])}
    assert by_name == {"silent.mp4": "SilentAudio", "mute.mp4": "NoAudio", "broken.wav": "NotAVideo"}
    assert stats["failures_by_error"] == {"NoAudio": 1, "NotAVideo": 1, "SilentAudio": 1}
    assert (failures["stage"] == "denoise").all()

    # Real and fake alike; the sidecar is used where there is one.
    assert sorted(clips.loc[audio["clip_id"], "label"]) == [0, 0, 1]
    sidecar = audio[audio["audio_source"] == "sidecar"]
    assert len(sidecar) == 1 and sidecar["source_path"].iloc[0].endswith("b.wav")
    assert (audio.loc[audio.audio_source == "track", "source_path"]
            == clips.loc[audio.loc[audio.audio_source == "track", "clip_id"], "path"].values).all()

    for row in audio.itertuples():
        assert row.path == str(out / f"{row.clip_id}.wav")
        data, rate = soundfile.read(row.path, dtype="float32")
        info = soundfile.info(row.path)
        assert (rate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        assert len(data) == row.samples and row.duration == pytest.approx(1.6, abs=0.05)
        assert row.rms == pytest.approx(float(np.sqrt(np.mean(data.astype(np.float64) ** 2))), rel=1e-3)
        assert row.snr_after_db > row.snr_before_db
        assert json.loads(row.params) == settings_record(DenoiseConfig.from_params(PARAMS).denoiser)
    assert audio["params_hash"].nunique() == 1
    assert not list(out.glob("*.tmp-*")) and not list(out.glob(".*part*"))


def test_same_inputs_same_bytes_any_worker_count(clips_parquet, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    run_denoise(clips_parquet, str(one), PARAMS)
    run_denoise(clips_parquet, str(two), PARAMS, workers=2)
    assert _wavs(one) == _wavs(two) and len(_wavs(one)) == 3
    for name in ("failures.parquet", "denoise_stats.json"):
        assert (one / name).read_bytes() == (two / name).read_bytes(), name
    # audio.parquet names its own folder; everything else in it is the same.
    a, b = pd.read_parquet(one / "audio.parquet"), pd.read_parquet(two / "audio.parquet")
    pd.testing.assert_frame_equal(a.drop(columns="path"), b.drop(columns="path"))


def test_rerun_skips_finished_clips_and_redoes_changed_settings(clips_parquet, tmp_path):
    out = tmp_path / "audio"
    run_denoise(clips_parquet, str(out), PARAMS)
    first = {name: (out / name).read_bytes() for name in ("audio.parquet", "failures.parquet", "denoise_stats.json")}
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("*.wav")}

    again = run_denoise(clips_parquet, str(out), PARAMS)
    assert (again["reused"], again["denoised"], again["failures"]) == (3, 0, 3)
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.wav")} == mtimes
    assert {name: (out / name).read_bytes() for name in first} == first

    # An interrupted clip (wav written, sidecar not) is redone, and only that one.
    victim = sorted(out.glob("*.json"))
    victim = [p for p in victim if p.name != "denoise_stats.json"][0]
    victim.unlink()
    resumed = run_denoise(clips_parquet, str(out), PARAMS)
    assert (resumed["reused"], resumed["denoised"]) == (2, 1)
    assert (out / "audio.parquet").read_bytes() == first["audio.parquet"]

    # A source that changed since (here: a sidecar replaced by a longer one) is redone.
    clips = pd.read_parquet(clips_parquet)
    sidecar = clips["audio_path"].str.endswith("b.wav")
    own_wav = tmp_path / "b.wav"
    own_wav.write_bytes(open(clips.loc[sidecar, "audio_path"].iloc[0], "rb").read())
    clips.loc[sidecar, "audio_path"] = str(own_wav)
    clips.to_parquet(tmp_path / "clips.parquet")
    own = run_denoise(str(tmp_path / "clips.parquet"), str(out), PARAMS)
    assert (own["reused"], own["denoised"]) == (2, 1)  # a new source path
    assert run_denoise(str(tmp_path / "clips.parquet"), str(out), PARAMS)["denoised"] == 0
    write_wav(own_wav, _speech(5, 22050)[: 22050], 22050)
    changed_source = run_denoise(str(tmp_path / "clips.parquet"), str(out), PARAMS)
    assert (changed_source["reused"], changed_source["denoised"]) == (2, 1)

    # Other settings: every clip is redone.
    changed = {**PARAMS, "denoise": {**PARAMS["denoise"], "prop_decrease": 0.5}}
    redone = run_denoise(clips_parquet, str(out), changed)
    assert (redone["reused"], redone["denoised"]) == (0, 3)
    assert redone["params_hash"] != again["params_hash"]
    assert all(p.stat().st_mtime_ns != mtimes[p.name] for p in out.glob("*.wav"))


def test_failure_threshold_stops_the_stage(clips_parquet, tmp_path):
    strict = {**PARAMS, "denoise": {"max_failure_fraction": 0.25}}
    with pytest.raises(StageFailed, match="3 of 6 inputs failed"):
        run_denoise(clips_parquet, str(tmp_path / "a"), strict)
    assert len(pd.read_parquet(tmp_path / "a" / "audio.parquet")) == 3  # the work done is kept


def test_stage_cannot_run_without_clips(tmp_path):
    with pytest.raises(DenoiseInputError, match="no such clips manifest"):
        run_denoise(str(tmp_path / "nope.parquet"), str(tmp_path / "a"), PARAMS)
    with pytest.raises(ParamsError, match="denoise: unknown key 'nfft' \\(did you mean 'n_fft'\\?\\)"):
        run_denoise(str(tmp_path / "nope.parquet"), str(tmp_path / "a"), {"denoise": {"nfft": 256}})
