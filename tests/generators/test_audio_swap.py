"""The audio_swap generator: the target's frames untouched, another person's speech fitted to its length."""
from __future__ import annotations

import av
import numpy as np
import pytest

from avlips.generators.audio_swap import AudioSwap, fit_audio
from avlips.generators.base import VIDEO, DrivingAudio, Target, load_generator
from avlips.media.audio_decode import read_audio
from avlips.media.encode import write_video, write_wav
from avlips.media.frames import iter_frames
from avlips.media.probe import probe
from avlips.media.synthetic import make_persona, speech_like_audio
from tests.builders import gradient_frames, tone

RATE, FPS, FRAMES = 16000, 25.0, 50  # a 2 s target


def _target(path, codec: str = "libx264") -> Target:
    write_video(path, gradient_frames(FRAMES, 48, 64), FPS, tone(FRAMES / FPS, RATE), RATE, codec=codec)
    info = probe(path)
    return Target(clip_id="t", path=str(path), fps=info.fps, frames=info.frames, duration=info.duration,
                  video_path=str(path))


def _driving(path, seconds: float) -> tuple[DrivingAudio, np.ndarray]:
    speech = speech_like_audio(make_persona("other", 5), seconds, RATE, 9)
    write_wav(path, speech, RATE)
    return DrivingAudio(clip_id="d", path=str(path), duration=seconds), read_audio(path, RATE)


def _video_packets(path) -> list[bytes]:
    with av.open(str(path)) as container:
        return [bytes(p) for p in container.demux(container.streams.video[0]) if p.size]


def _best_correlation(a: np.ndarray, b: np.ndarray, max_lag: int = 4096) -> float:
    """Highest normalised correlation of two signals over small shifts (AAC adds a short delay)."""
    n = min(len(a), len(b)) - max_lag
    best = 0.0
    for lag in range(-max_lag, max_lag + 1, 8):
        x = a[max(lag, 0):max(lag, 0) + n]
        y = b[max(-lag, 0):max(-lag, 0) + n]
        best = max(best, float(np.dot(x, y) / (np.linalg.norm(x) * np.linalg.norm(y) + 1e-12)))
    return best


def test_fit_audio_trims_loops_and_pads():
    audio = np.arange(1, 5, dtype=np.float32)
    assert fit_audio(audio, 3).tolist() == [1, 2, 3]
    assert fit_audio(audio, 10, "loop").tolist() == [1, 2, 3, 4, 1, 2, 3, 4, 1, 2]
    assert fit_audio(audio, 6, "pad").tolist() == [1, 2, 3, 4, 0, 0]
    with pytest.raises(ValueError):
        fit_audio(audio, 6, "stretch")


def test_registered_as_a_ready_video_generator_without_faces():
    generator = load_generator("audio_swap")
    assert isinstance(generator, AudioSwap)
    assert generator.describe() == {"name": "audio_swap", "version": "1", "input": VIDEO, "ready": True,
                                    "reason": ""}
    assert generator.needs_face is False


@pytest.mark.parametrize("driving_seconds", [1.3, 3.1], ids=["looped", "trimmed"])
def test_keeps_the_frames_bit_for_bit_and_carries_the_driving_speech(tmp_path, driving_seconds):
    target = _target(tmp_path / "target.mp4")
    driving, speech = _driving(tmp_path / "speech.wav", driving_seconds)
    out = tmp_path / "fake.mp4"
    result = AudioSwap().generate(target, driving, out, {"seed": 3})

    # Stream copy: the same H.264 packets, hence the same decoded frames.
    assert _video_packets(out) == _video_packets(target.path)
    assert np.array_equal(np.stack(list(iter_frames(out))), np.stack(list(iter_frames(target.path))))
    info = probe(out)
    assert (info.frames, info.fps, info.codec, info.audio_codec) == (FRAMES, FPS, "h264", "aac")
    assert (result.frames, result.fps, result.extra["video"]) == (FRAMES, FPS, "copy")

    # The audio is the driving speech, fitted to the target's two seconds, not the target's tone.
    heard = read_audio(out, RATE)
    expected = fit_audio(speech, int(FRAMES / FPS * RATE), "loop")
    assert abs(len(heard) / RATE - FRAMES / FPS) <= 1024 / RATE  # within one AAC frame
    assert _best_correlation(heard, expected) > 0.9
    assert _best_correlation(heard, tone(FRAMES / FPS, RATE)) < 0.3
    if driving_seconds < FRAMES / FPS:
        # Looped: the second second repeats the start of the speech.
        loop_at = len(speech)
        head = heard[loop_at + 2048: loop_at + 2048 + 4000]
        assert _best_correlation(head, speech[2048:2048 + 4000], max_lag=1024) > 0.9

    record = result.provenance()
    assert record["generator"] == "audio_swap" and record["version"] == "1"
    assert record["params"] == {"fit": "loop", "sample_rate": RATE, "seed": 3} and len(record["params_hash"]) == 16


def test_other_codecs_are_reencoded_to_h264_at_the_targets_rate(tmp_path):
    target = _target(tmp_path / "target.mp4", codec="libx265")
    driving, _ = _driving(tmp_path / "speech.wav", 2.0)
    result = AudioSwap(fit="pad").generate(target, driving, tmp_path / "fake.mp4")
    info = probe(tmp_path / "fake.mp4")
    assert (info.codec, info.frames, info.fps, result.extra["video"]) == ("h264", FRAMES, FPS, "h264")
    ours = np.stack(list(iter_frames(tmp_path / "fake.mp4"))).astype(float)
    theirs = np.stack(list(iter_frames(target.path))).astype(float)
    assert np.abs(ours - theirs).mean() < 3.0
