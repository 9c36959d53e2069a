"""The synthesize stage end to end on a demo corpus: drivers, bytes, reruns, not-ready generators, bad inputs."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from avlips.generators import base
from avlips.generators.audio_swap import AudioSwap
from avlips.generators.registry_cli import format_generator_table
from avlips.media.audio_decode import read_audio
from avlips.media.encode import write_video, write_wav
from avlips.media.probe import probe
from avlips.pipelines.failures import StageFailed
from avlips.pipelines.synthesize import FAKE_SCHEMA, SynthesizeConfig, choose_driving, inspect_target, make_fakes, run_synthesize
from tests.builders import gradient_frames, tiny_corpus, tone

COLUMNS = ["fake_id", "path", "target_clip", "driving_clip", "driving_audio", "generator", "generator_version",
           "params_hash", "seconds", "frames", "fps"]


def _params(corpus: dict, generators: dict, **stage) -> dict:
    settings = {**corpus, "fakes_per_clip": 1, "max_failure_fraction": 1.0, "generators": generators, **stage}
    return {"seed": 11, "synthesize": settings}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict:
    return tiny_corpus(tmp_path_factory.mktemp("synth"))


class _Entry:
    """A stand-in entry point: load() returns the factory."""

    def __init__(self, factory) -> None:
        self.factory = factory

    def load(self):
        return self.factory


class NeverReady(AudioSwap):
    name, version = "never_ready", "2"

    def check(self) -> base.Readiness:
        return base.Readiness(False, "checkpoint /nowhere/model.pth not found")


class FaceSwap(AudioSwap):
    """audio_swap that insists on a face, to exercise the stage's face check."""

    name, needs_face = "face_swap", True


@pytest.fixture
def extra_generators(monkeypatch):
    """Registers never_ready and face_swap next to the installed generators (in this process)."""
    installed = base.discover()
    monkeypatch.setattr(base, "discover", lambda: {**installed, "never_ready": _Entry(NeverReady),
                                                   "face_swap": _Entry(FaceSwap)})


def _outputs(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.suffix in (".parquet", ".mp4") or p.name == "synthesize_stats.json"}


def test_fakes_are_driven_by_another_identity_of_the_same_split(corpus, tmp_path):
    out = tmp_path / "fakes"
    stats = run_synthesize(str(out), _params(corpus, {"audio_swap": {"enabled": True}, "off": {"enabled": False}},
                                             fakes_per_clip=2))
    fakes = pd.read_parquet(out / "fakes.parquet")
    clips = pd.read_parquet(corpus["clips"]).set_index("clip_id")
    audio = pd.read_parquet(corpus["audio"]).set_index("clip_id")

    assert list(fakes.columns) == COLUMNS == FAKE_SCHEMA.names
    assert stats["targets"] == len(clips) == 12
    assert stats["inputs"] == 24 == stats["fakes"] + stats["failures"] == len(fakes)
    assert stats["generators"]["audio_swap"] == {"version": "1", "input": "video", "ready": True, "reason": "",
                                                      "planned": 24, "fakes": 24, "failures": 0}
    assert "off" not in stats["generators"]
    assert json.loads((out / "synthesize_stats.json").read_text()) == {
        k: v for k, v in stats.items() if k not in ("made", "reused")}
    assert (stats["made"], stats["reused"]) == (24, 0)
    for fake in fakes.itertuples():
        target, driver = clips.loc[fake.target_clip], clips.loc[fake.driving_clip]
        assert driver.identity != target.identity and driver.split == target.split
        assert fake.driving_audio == audio.loc[fake.driving_clip, "path"]
        assert fake.fake_id == f"{fake.target_clip}-audio_swap-{fake.fake_id[-1]}"
        assert "." not in fake.fake_id and "/" not in fake.fake_id and fake.fake_id.isascii()
        assert fake.path == str(out / "audio_swap" / f"{fake.fake_id}.mp4") and Path(fake.path).is_file()
        assert (fake.frames, fake.fps, fake.seconds) == (target.frames, 25.0, pytest.approx(target.duration))
        assert fake.generator_version == "1"
    # Every fake of a generator shares its params hash; the two fakes of a clip are driven by the two
    # clips of the other identity in its split.
    assert fakes["params_hash"].nunique() == 1
    for clip_id, group in fakes.groupby("target_clip"):
        assert group["driving_clip"].nunique() == 2
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name or ".part" in p.name]


def test_a_generator_limited_to_some_splits_makes_fakes_only_there(corpus, tmp_path):
    out = tmp_path / "fakes"
    stats = run_synthesize(str(out), _params(corpus, {"audio_swap": {"enabled": True, "splits": ["test"]}}))
    fakes = pd.read_parquet(out / "fakes.parquet")
    clips = pd.read_parquet(corpus["clips"]).set_index("clip_id")
    assert set(clips.loc[fakes.target_clip, "split"]) == {"test"}
    assert len(fakes) == stats["generators"]["audio_swap"]["planned"] == int((clips.split == "test").sum()) == 4
    with pytest.raises(ValueError, match="splits must be a list of split names"):
        run_synthesize(str(tmp_path / "bad"), _params(corpus, {"audio_swap": {"enabled": True, "splits": "test"}}))


def test_choose_driving_is_deterministic_and_spreads_over_candidates():
    candidates = [f"c{i}" for i in range(5)]
    picks = [choose_driving(1, "t", "g", n, candidates) for n in range(5)]
    assert sorted(picks) == candidates  # distinct while candidates last
    assert picks == [choose_driving(1, "t", "g", n, list(reversed(candidates))) for n in range(5)]
    assert picks != [choose_driving(2, "t", "g", n, candidates) for n in range(5)]


def test_same_bytes_for_one_or_two_workers_and_reruns_skip_finished_fakes(corpus, tmp_path):
    out = tmp_path / "fakes"
    params = _params(corpus, {"audio_swap": {"enabled": True}})
    run_synthesize(str(out), params)
    first = _outputs(out)
    assert len([n for n in first if n.endswith(".mp4")]) == 12
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*.mp4")}

    again = run_synthesize(str(out), params)
    assert (again["made"], again["reused"]) == (0, 12)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.mp4")} == mtimes
    assert _outputs(out) == first

    # Changed settings: the fakes are made again.
    changed = run_synthesize(str(out), _params(corpus, {"audio_swap": {"enabled": True, "fit": "pad"}}))
    assert (changed["made"], changed["reused"]) == (12, 0)

    shutil.rmtree(out)
    run_synthesize(str(out), params, workers=2)
    assert _outputs(out) == first


def test_the_stats_record_the_ffmpeg_and_worker_processes_encode_with_the_one_named(corpus, tmp_path):
    from avlips.media.ffmpeg_binary import pinned_path, use_ffmpeg

    out = tmp_path / "fakes"
    generators = {"audio_swap": {"enabled": True, "splits": ["test"]}}
    stats = run_synthesize(str(out), _params(corpus, generators))
    assert stats["ffmpeg"] == {"path": pinned_path(), "version": use_ffmpeg("").version}
    # A named binary reaches the worker processes: every encode of theirs runs through it.
    log = tmp_path / "calls.log"
    named = tmp_path / "tools" / "ffmpeg"
    named.parent.mkdir()
    named.write_text(f'#!/bin/sh\necho "$1" >> "{log}"\nexec "{pinned_path()}" "$@"\n')
    named.chmod(0o755)
    try:
        stats = run_synthesize(str(tmp_path / "named"), {**_params(corpus, generators),
                                                          "media": {"ffmpeg": str(named)}}, workers=2)
    finally:
        use_ffmpeg("")
    assert stats["ffmpeg"]["path"] == str(named) and stats["fakes"] == 4
    encodes = [line for line in log.read_text().splitlines() if line not in ("-hide_banner",)]
    assert len(encodes) == stats["fakes"]  # one encode or mux per fake, none with the pinned binary


def test_a_bad_media_ffmpeg_stops_the_stage_before_it_writes(corpus, tmp_path):
    from avlips.media.ffmpeg_binary import FfmpegError

    out = tmp_path / "fakes"
    with pytest.raises(FfmpegError, match="no such file"):
        run_synthesize(str(out), {**_params(corpus, {"audio_swap": {}}), "media": {"ffmpeg": str(tmp_path / "no")}})
    assert not out.exists()


def test_a_generator_that_is_not_ready_fails_only_its_own_fakes(corpus, tmp_path, extra_generators):
    out = tmp_path / "fakes"
    generators = {"audio_swap": {}, "never_ready": {"enabled": True}, "not_installed": {"enabled": True}}
    stats = run_synthesize(str(out), _params(corpus, generators))
    failures = pd.read_parquet(out / "failures.parquet")
    fakes = pd.read_parquet(out / "fakes.parquet")

    assert stats["inputs"] == 36 and stats["fakes"] == len(fakes) == 12 and stats["failures"] == len(failures) == 24
    assert stats["failures_by_error"] == {"GeneratorNotReady": 24}
    assert set(fakes["generator"]) == {"audio_swap"}
    by_generator = failures["input"].str.extract(r"#.*-(never_ready|not_installed)-\d$")[0].value_counts()
    assert by_generator.to_dict() == {"never_ready": 12, "not_installed": 12}
    assert failures["message"].str.contains("checkpoint /nowhere/model.pth not found").sum() == 12
    assert failures["message"].str.contains("'not_installed' is not installed").sum() == 12
    assert stats["generators"]["never_ready"]["reason"] == "checkpoint /nowhere/model.pth not found"
    assert not (out / "never_ready").exists()

    table = format_generator_table(base.list_generators())
    lines = {line.split()[0]: line for line in table.splitlines()[1:-1]}
    assert "not ready" in lines["never_ready"] and "checkpoint /nowhere/model.pth not found" in lines["never_ready"]
    assert lines["audio_swap"].split()[1:4] == ["1", "video", "ready"]

    with pytest.raises(StageFailed, match="24 of 36"):
        run_synthesize(str(out), {**_params(corpus, generators, max_failure_fraction=0.5)})


def test_silent_or_short_driving_audio_and_faceless_targets_are_failures(corpus, tmp_path, extra_generators):
    clips = pd.read_parquet(corpus["clips"])
    audio = pd.read_parquet(corpus["audio"])
    # One test-split identity speaks only silence, one val-split identity only half a second.
    silent_identity = clips[clips.split == "test"].identity.min()
    short_identity = clips[clips.split == "val"].identity.min()
    write_wav(tmp_path / "silent.wav", np.zeros(16000 * 2, dtype=np.float32), 16000)
    write_wav(tmp_path / "short.wav", tone(0.5, 16000), 16000)
    speaker = audio.clip_id.map(clips.set_index("clip_id").identity)
    audio.loc[speaker == silent_identity, "path"] = str(tmp_path / "silent.wav")
    audio.loc[speaker == short_identity, "path"] = str(tmp_path / "short.wav")
    audio.to_parquet(tmp_path / "audio.parquet")
    # A target with no face at all, in the train split.
    faceless = tmp_path / "faceless.mp4"
    write_video(faceless, gradient_frames(30, 96, 96), 25.0, tone(1.2, 16000), 16000)
    info = probe(faceless)
    extra = {"clip_id": "faceless-00", "identity": "nobody", "path": str(faceless), "label": 0, "split": "train",
             "fps": info.fps, "frames": info.frames, "duration": info.duration, "centred": False}
    pd.concat([clips[list(extra)], pd.DataFrame([extra])]).to_parquet(tmp_path / "clips.parquet")

    manifests = {"clips": str(tmp_path / "clips.parquet"), "audio": str(tmp_path / "audio.parquet")}
    out = tmp_path / "fakes"
    stats = run_synthesize(str(out), _params(manifests, {"audio_swap": {}, "face_swap": {}}))
    fakes = pd.read_parquet(out / "fakes.parquet")
    failures = pd.read_parquet(out / "failures.parquet")

    # 13 targets x 2 generators; the other test (val) identity's 2 clips x 2 generators drew only silent
    # (short) speech; face_swap found no face in the faceless clip.
    assert stats["inputs"] == 26 == stats["fakes"] + stats["failures"] == len(fakes) + len(failures)
    assert stats["failures_by_error"] == {"NoFace": 1, "SilentAudio": 4, "TooShort": 4}
    by_identity = clips.set_index("clip_id").identity
    for row in failures.itertuples():
        fake_id = row.input.split("#")[1]
        if row.error == "NoFace":
            assert fake_id == "faceless-00-face_swap-0" and "face found in 0 of 16 sampled frames" in row.message
        elif row.error == "SilentAudio":
            assert "silent.wav: driving audio is silent" in row.message
        else:
            assert "short.wav: driving audio is 0.50s, shorter than 1s" in row.message
    assert not fakes.driving_clip.map(by_identity).isin([silent_identity, short_identity]).any()
    # audio_swap needs no face: the faceless target still gets its fake.
    assert "faceless-00-audio_swap-0" in set(fakes.fake_id)


@pytest.mark.shared_media
def test_the_still_is_the_sharpest_frame_by_its_face(shared_media, tmp_path):
    face = cv2.cvtColor(cv2.imread(str(shared_media / "image" / "sadtalker_happy.png")), cv2.COLOR_BGR2RGB)
    frames = []
    for i in range(20):
        frame = np.roll(face, i - 10, axis=1)
        if i != 11:
            frame = cv2.GaussianBlur(frame, (0, 0), 1.5)
        if i == 5:  # the sharpest frame overall, by a noisy corner away from the face
            frame[:40, :40] = np.random.default_rng(0).integers(0, 255, (40, 40, 3))
        frames.append(frame)
    video = tmp_path / "blurred.mp4"
    write_video(video, frames, 25.0)
    facts = inspect_target(str(video), 20, samples=20)
    assert facts["still_index"] == 11 and facts["still_has_face"] and facts["face_fraction"] > 0.9
    assert facts["still"].shape == face.shape

    faceless = tmp_path / "faceless.mp4"
    write_video(faceless, gradient_frames(20, 96, 96), 25.0)
    facts = inspect_target(str(faceless), 20, samples=8)
    assert facts["face_fraction"] == 0.0 and not facts["still_has_face"] and facts["sampled"] == 8


class ThreeFrames(AudioSwap):
    """A broken plugin: three frames of video under the whole driving speech."""

    name, version = "three_frames", "1"

    def generate(self, target, driving, out_path, params=None):
        speech = read_audio(driving.path, 16000)
        write_video(out_path, gradient_frames(3, 64, 64), 25.0, speech, 16000)
        return base.GenerationResult(str(out_path), self.name, self.version, {}, 0.0)


def test_a_fake_whose_video_is_much_shorter_than_its_audio_is_a_failure(tmp_path, monkeypatch):
    installed = base.discover()
    monkeypatch.setattr(base, "discover", lambda: {**installed, "three_frames": _Entry(ThreeFrames)})
    target = tmp_path / "target.mp4"
    write_video(target, gradient_frames(30, 64, 64), 25.0, tone(1.2, 16000), 16000)
    write_wav(tmp_path / "driving.wav", tone(2.0, 16000, 300.0), 16000)
    clip = {"clip_id": "t", "path": str(target), "identity": "a", "split": "test", "fps": 25.0, "frames": 30,
            "duration": 1.2, "centred": True}
    fake = {"fake_id": "t-three_frames-0", "generator": "three_frames", "n": 0, "driving_clip": "d",
            "driving_audio": str(tmp_path / "driving.wav"), "driving_hash": "", "call": {"seed": 1},
            "params_hash": "x"}
    spec = {"name": "three_frames", "settings": {}, "version": "1", "input_kind": base.VIDEO, "needs_face": False}
    out = tmp_path / "fakes"
    [result] = make_fakes({"clip": clip, "fakes": [fake]}, str(out), SynthesizeConfig(), {"three_frames": spec})
    assert result["failure"]["error"] == "GeneratorError"
    assert "3 frames (0.12 s of video) with 2.00 s of audio" in result["failure"]["message"]
    assert not any(p.is_file() for p in out.rglob("*"))  # nothing left under a final name


def test_inspect_target_samples_the_frames_the_file_has(tmp_path):
    video = tmp_path / "clip.mp4"
    write_video(video, gradient_frames(20, 96, 96), 25.0)
    # A manifest count past the end (stale, or estimated from the duration) must not fail the target.
    facts = inspect_target(str(video), 26, samples=8)
    assert facts["sampled"] == 8 and facts["still_index"] <= 19
