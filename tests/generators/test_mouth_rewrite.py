"""MouthRewrite: pixels outside the blend mask kept, the mouth following the driving audio, bad inputs."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter1d

from avlips.generators.base import DrivingAudio, GeneratorError, Target, load_generator
from avlips.generators.mouth_rewrite import MouthRewrite, loudness_at, mouth_activity, select_path
from avlips.media.audio_decode import read_audio
from avlips.media.encode import write_video, write_wav
from avlips.media.frames import iter_frames
from avlips.media.probe import probe
from avlips.media.synthetic import envelope_at_frames, make_persona, render_talking_clip, speech_like_audio

FPS = 25.0
RATE = 16000


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a, b)[0, 1])


def _psnr_outside(out: np.ndarray, ref: np.ndarray, masks: np.ndarray) -> float:
    """PSNR over the pixels whose blend weight is exactly zero."""
    outside = masks == 0
    err = (out.astype(np.float64) - ref.astype(np.float64))[outside]
    mse = float(np.mean(err ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> dict:
    """A cartoon persona whose mouth follows its own speech (4 s), and another persona's speech (3 s)."""
    root = tmp_path_factory.mktemp("mouth_rewrite")
    # Persona 1's face is one the Haar cascade finds on every frame.
    persona = make_persona("p1", 1)
    own = speech_like_audio(persona, 4.0, RATE, 10)
    frames = render_talking_clip(persona, own, RATE, FPS, 192, 11)
    target = root / "target.mp4"
    write_video(target, frames, FPS, own, RATE, crf=12)
    driving = speech_like_audio(make_persona("p3", 3), 3.0, RATE, 37)
    wav = root / "driving.wav"
    write_wav(wav, driving, RATE)
    return {"root": root, "target": target, "frames": frames, "own": own, "driving": driving, "wav": wav}


def _target(path: Path) -> Target:
    info = probe(path)
    return Target(clip_id=path.stem, path=str(path), fps=info.fps, frames=info.frames, duration=info.duration)


def _driving(path: Path) -> DrivingAudio:
    return DrivingAudio(clip_id=path.stem, path=str(path), duration=len(read_audio(path, RATE)) / RATE)


def test_registered_as_a_plugin() -> None:
    generator = load_generator("mouth_rewrite", {"smoothness": 0.5})
    assert isinstance(generator, MouthRewrite)
    assert generator.describe() == {"name": "mouth_rewrite", "version": "2", "input": "video", "ready": True, "reason": ""}
    assert generator.needs_face and generator.settings["smoothness"] == 0.5


def test_select_path_prefers_continuing_runs() -> None:
    # Row 3 is a little cheaper at step 1, but leaving the 0-1-2 run to get it costs more than it saves.
    cost = np.full((3, 5), 5.0)
    cost[0, 0], cost[1, 1], cost[2, 2] = 0.0, 0.2, 0.0
    cost[1, 3] = 0.1
    follows = np.array([-1, 0, 1, 2, 3])
    assert select_path(cost, follows, smoothness=1.0, hold_cost=0.5).tolist() == [0, 1, 2]
    # Free jumps: each step takes its own cheapest row.
    assert select_path(cost, follows, smoothness=0.0, hold_cost=0.0).tolist() == [0, 3, 2]
    # A bank with a gap (rows 1 and 2 are not consecutive frames): continuing is no longer free.
    assert select_path(cost, np.array([-1, 0, -1, 2, 3]), smoothness=1.0, hold_cost=0.5).tolist()[0] == 0


def test_select_path_keeps_units_of_min_run_frames() -> None:
    # Every step's cheapest row is a different take: free jumps would hop every frame.
    rng = np.random.default_rng(0)
    cost = rng.uniform(0, 1, (40, 30))
    follows = np.where(np.arange(30) % 5 == 0, -1, np.arange(30) - 1)  # six takes of five frames
    free = select_path(cost, follows, smoothness=0.0, hold_cost=0.5)
    assert np.sum(follows[free[1:]] != free[:-1]) > 20
    for min_run in (2, 3, 4):
        path = select_path(cost, follows, smoothness=0.0, hold_cost=0.5, min_run=min_run)
        breaks = np.flatnonzero(follows[path[1:]] != path[:-1]) + 1  # output frames that do not continue
        jumps = [k for k in breaks if path[k] != path[k - 1]]
        assert len(jumps) > 2 and np.diff(jumps).min() >= min_run


def test_select_path_moves_the_mouth_as_much_as_wanted() -> None:
    # Two takes, with no audio preference: a still one (rows 0-9 barely change) and a lively one
    # (rows 10-19 change a lot). Wanting no motion keeps to the still take or holds; wanting
    # much motion plays the lively one.
    m = 20
    still, lively = np.arange(10), np.arange(10, 20)
    distance = np.full((m, m), 3.0)
    np.fill_diagonal(distance, 0.0)
    follows = np.where(np.arange(m) % 10 == 0, -1, np.arange(m) - 1)
    distance[still[:-1], still[1:]] = distance[still[1:], still[:-1]] = 0.1
    distance[lively[:-1], lively[1:]] = distance[lively[1:], lively[:-1]] = 2.0
    cost = np.zeros((8, m))
    calm = select_path(cost, follows, 0.3, 0.3, distance, np.full(8, 0.1), motion_weight=1.0)
    busy = select_path(cost, follows, 0.3, 0.3, distance, np.full(8, 2.0), motion_weight=1.0)
    assert set(calm.tolist()) <= set(still.tolist())
    assert set(busy[1:].tolist()) <= set(lively.tolist()) and np.all(np.diff(busy[1:]) == 1)
    # Without the motion term the same costs say nothing: the first row is held or continued.
    assert select_path(cost, follows, 0.3, 0.3).tolist() == list(range(8))


def test_synthetic_mouth_follows_driving_audio(synthetic) -> None:
    frames, own, driving = synthetic["frames"], synthetic["own"], synthetic["driving"]
    generator = MouthRewrite()
    plan = generator.plan(frames, FPS, own, driving, label="synthetic")
    assert len(plan) == round(len(driving) / RATE * FPS) == 75
    composites = list(generator.render(plan, frames))
    out = np.stack([c.frame for c in composites])
    masks = np.stack([c.full_mask() for c in composites])
    # Every pixel outside the blend mask is the target's own, exactly (before encoding).
    assert masks.max() == pytest.approx(1.0) and (masks > 0).mean() < 0.2
    assert np.array_equal(out[masks == 0], frames[plan.sources][masks == 0])
    times = (np.arange(len(plan)) + 0.5) / FPS
    opening = mouth_activity(out, plan.centres[plan.sources], plan.halves[plan.sources], kind="opening")
    with_driving = _corr(opening, envelope_at_frames(driving, RATE, times))
    with_own = _corr(opening, envelope_at_frames(own, RATE, (plan.sources + 0.5) / FPS))
    assert with_driving > 0.6, (with_driving, with_own)
    assert with_driving > with_own + 0.4, (with_driving, with_own)
    # The target itself follows its own speech: the measure does see mouths.
    original = mouth_activity(frames[plan.sources], plan.centres[plan.sources], plan.halves[plan.sources], kind="opening")
    assert _corr(original, envelope_at_frames(own, RATE, (plan.sources + 0.5) / FPS)) > 0.8


def test_generate_writes_mp4_with_driving_audio(synthetic) -> None:
    generator = MouthRewrite(crf=12)
    out_path = synthetic["root"] / "fake.mp4"
    result = generator.generate(_target(synthetic["target"]), _driving(synthetic["wav"]), out_path)
    info = probe(out_path)
    assert (result.path, result.generator, result.version) == (str(out_path), "mouth_rewrite", "2")
    assert result.frames == info.frames == 75 and info.fps == pytest.approx(FPS)
    assert info.has_audio and abs(info.audio_duration - 3.0) < 0.1
    assert result.params["crf"] == 12 and len(result.provenance()["params_hash"]) == 16
    # Outside the mask the decoded fake matches the decoded target (the encode is the only loss).
    decoded = np.stack(list(iter_frames(synthetic["target"])))
    plan = generator.plan(decoded, FPS, read_audio(synthetic["target"], RATE), synthetic["driving"])
    masks = np.stack([c.full_mask() for c in generator.render(plan, decoded)])
    fake = np.stack(list(iter_frames(out_path)))
    assert _psnr_outside(fake, decoded[plan.sources], masks) >= 40.0


@pytest.mark.parametrize("clip, speech, seconds", [
    # 6 s: longer than the 5 s clip, so the target loops.
    ("videoretalking_face_3", "sadtalker_RD_Radio34_002", 6),
    # A restored HDTF-style crop whose own mouth motion hardly follows its own audio at zero lag
    # (its audio lags the lips by ~0.25 s): the clip keying by audio features alone failed on.
    ("sadtalker_WDA_KatieHill_000", "sadtalker_RD_Radio31_000", 4),
])
def test_real_video_mouth_follows_driving_audio(shared_media: Path, clip: str, speech: str, seconds: int) -> None:
    video = shared_media / "video" / f"{clip}.mp4"
    speech = shared_media / "audio" / f"{speech}.wav"  # another speaker
    if not video.exists() or not speech.exists():
        pytest.skip("the chosen real clip is not in shared media")
    frames = np.stack(list(iter_frames(video)))
    fps = probe(video).fps
    own = read_audio(video, RATE)
    driving = read_audio(speech, RATE)[: seconds * RATE]
    generator = MouthRewrite()
    plan = generator.plan(frames, fps, own, driving, label=str(video))
    assert len(plan) == round(seconds * fps)
    if len(plan) > len(frames):
        assert plan.sources[len(frames)] == 0
    composites = list(generator.render(plan, frames))
    out = np.stack([c.frame for c in composites])
    masks = np.stack([c.full_mask() for c in composites])
    assert np.array_equal(out[masks == 0], frames[plan.sources][masks == 0])
    assert not np.array_equal(out[masks > 0.5], frames[plan.sources][masks > 0.5])

    def smooth(x: np.ndarray) -> np.ndarray:
        return gaussian_filter1d(np.asarray(x, np.float64), 2)

    motion = smooth(mouth_activity(out, plan.centres[plan.sources], plan.halves[plan.sources]))
    with_driving = _corr(motion, smooth(loudness_at(driving, (np.arange(len(plan)) + 0.5) / fps)))
    with_own = _corr(motion, smooth(loudness_at(own, (plan.sources + 0.5) / fps)))
    assert with_driving > 0.4 and with_driving > with_own + 0.2, (with_driving, with_own)
    # Units of several frames, not a new mouth every frame.
    assert plan.jumps < 0.5 * len(plan)


def test_no_face_is_a_generator_error(make_video, tmp_path: Path) -> None:
    video = make_video("faceless.mp4", n=20, size=(96, 96))
    wav = tmp_path / "speech.wav"
    write_wav(wav, speech_like_audio(make_persona("p3", 3), 1.0, RATE, 5), RATE)
    with pytest.raises(GeneratorError, match="no face"):
        MouthRewrite().generate(_target(video), _driving(wav), tmp_path / "out.mp4")
    assert not (tmp_path / "out.mp4").exists()


@pytest.mark.parametrize("audio, reason", [
    (np.zeros(RATE, np.float32), "silent"),
    (speech_like_audio(make_persona("p3", 3), 0.1, RATE, 5), "too short"),
])
def test_unusable_driving_audio_is_a_generator_error(synthetic, tmp_path: Path, audio: np.ndarray, reason: str) -> None:
    wav = tmp_path / "driving.wav"
    write_wav(wav, audio, RATE)
    with pytest.raises(GeneratorError, match=reason):
        MouthRewrite().generate(_target(synthetic["target"]), _driving(wav), tmp_path / "out.mp4")


def test_target_without_audio_is_a_generator_error(synthetic, tmp_path: Path) -> None:
    silent_target = tmp_path / "mute.mp4"
    write_video(silent_target, synthetic["frames"][:25], FPS)
    with pytest.raises(GeneratorError, match="no audio"):
        MouthRewrite().generate(_target(silent_target), _driving(synthetic["wav"]), tmp_path / "out.mp4")


def test_settings_are_a_checked_frozen_config() -> None:
    from avlips.errors import ParamsError
    from avlips.generators.mouth_rewrite import DEFAULTS, MouthRewriteSettings

    generator = MouthRewrite(crf=20, fmin=100, enabled=True)  # `enabled` is the stage's key, not the generator's
    assert generator.options == MouthRewriteSettings(crf=20, fmin=100.0) and generator.settings["fmin"] == 100.0
    assert generator._options({"smoothness": 0.1, "seed": 3}).smoothness == 0.1  # a call's seed is not ours
    assert MouthRewrite().settings == DEFAULTS
    with pytest.raises(ParamsError, match=r"synthesize.generators.mouth_rewrite: unknown key 'smothness' "
                                          r"\(did you mean 'smoothness'\?\)"):
        MouthRewrite(smothness=0.5)
    with pytest.raises(ParamsError, match="synthesize.generators.mouth_rewrite.crf: expected int, got str 'high'"):
        MouthRewrite(crf="high")
    with pytest.raises(ParamsError, match="color_match must be band, mask or none"):
        MouthRewrite(color_match="all")
