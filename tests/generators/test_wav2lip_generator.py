"""Wav2LipGenerator: readiness, and a full run with a released-format checkpoint of random weights."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from avlips.generators.base import DrivingAudio, GeneratorNotReady, Target, load_generator
from avlips.generators.wav2lip.audio import chunk_count, melspectrogram
from avlips.generators.wav2lip.generator import NO_CHECKPOINT, Wav2LipGenerator, output_frame_count
from avlips.generators.wav2lip.network import Wav2Lip
from avlips.media.audio_decode import read_audio
from avlips.media.encode import write_video, write_wav
from avlips.media.frames import iter_frames
from avlips.media.probe import probe
from avlips.media.synthetic import make_persona, render_talking_clip, speech_like_audio

torch.set_num_threads(2)

FPS = 25.0
RATE = 16000


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A checkpoint in the released layout ({'state_dict': {'module.' + key: tensor}}), random weights."""
    torch.manual_seed(0)
    state = {"module." + k: v for k, v in Wav2Lip().state_dict().items()}
    path = tmp_path_factory.mktemp("wav2lip") / "wav2lip_gan.pth"
    torch.save({"state_dict": state}, path)
    return path


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> dict:
    """A 1.2 s cartoon talking clip (30 frames) and 1.7 s of another persona's speech."""
    root = tmp_path_factory.mktemp("wav2lip_clip")
    persona = make_persona("p1", 1)  # a face the Haar cascade finds on every frame
    own = speech_like_audio(persona, 1.2, RATE, 10)
    target = root / "target.mp4"
    write_video(target, render_talking_clip(persona, own, RATE, FPS, 160, 11), FPS, own, RATE)
    wav = root / "driving.wav"
    write_wav(wav, speech_like_audio(make_persona("p3", 3), 1.7, RATE, 37), RATE)
    return {"root": root, "target": target, "wav": wav}


def test_not_ready_without_checkpoint(tmp_path: Path) -> None:
    assert Wav2LipGenerator().check().reason == NO_CHECKPOINT
    missing = Wav2LipGenerator(checkpoint=str(tmp_path / "absent.pth")).check()
    assert not missing.ready and missing.reason.startswith(NO_CHECKPOINT) and "absent.pth" in missing.reason
    row = load_generator("wav2lip", {}).describe()
    assert row["name"] == "wav2lip" and row["ready"] is False and row["reason"] == NO_CHECKPOINT
    target = Target("t", str(tmp_path / "t.mp4"), FPS, 10, 0.4)
    with pytest.raises(GeneratorNotReady, match="no checkpoint"):
        Wav2LipGenerator().generate(target, DrivingAudio("d", str(tmp_path / "d.wav"), 1.0), tmp_path / "o.mp4")


def test_device_auto_picks_cuda_only_when_available(checkpoint: Path) -> None:
    assert Wav2LipGenerator(checkpoint=str(checkpoint)).device() == ("cuda" if torch.cuda.is_available() else "cpu")
    assert Wav2LipGenerator(device="cpu").device() == "cpu"


def test_frame_count_rules() -> None:
    n = int(1.7 * RATE)
    assert output_frame_count(n, RATE, FPS) == round(1.7 * FPS)
    assert output_frame_count(n, RATE, FPS, "reference") == chunk_count(melspectrogram(np.zeros(n) + 0.01).shape[1], FPS)


def test_generate_follows_the_audio(checkpoint: Path, clip: dict) -> None:
    generator = load_generator("wav2lip", {"checkpoint": str(checkpoint), "device": "cpu", "batch_size": 16})
    assert generator.check().ready
    info = probe(clip["target"])
    target = Target("target", str(clip["target"]), info.fps, info.frames, info.duration)
    audio = read_audio(clip["wav"], RATE)
    driving = DrivingAudio("driving", str(clip["wav"]), len(audio) / RATE)
    out_path = clip["root"] / "fakes" / "fake.mp4"
    result = generator.generate(target, driving, out_path)

    expected = output_frame_count(len(audio), RATE, FPS)
    out = probe(out_path)
    assert expected == 42 > info.frames == 30  # the audio is longer than the clip: frames loop
    assert result.frames == out.frames == expected
    assert out.fps == pytest.approx(info.fps)
    assert abs(out.duration - driving.duration) <= 1 / FPS
    assert out.has_audio and abs(out.audio_duration - driving.duration) < 0.1
    assert result.params["checkpoint"] == "wav2lip_gan.pth" and result.extra["device"] == "cpu"
    assert result.extra["faces"] == 30
    # The network drew the lower face; the upper part stays the target's (up to the encode).
    fake = np.stack(list(iter_frames(out_path)))
    source = np.stack(list(iter_frames(clip["target"])))[np.arange(expected) % info.frames]
    diff = np.abs(fake.astype(np.int16) - source.astype(np.int16)).mean(axis=(0, 3))
    # Above the highest face box the frames are the target's, up to the encode (Wav2Lip pads no rows on top).
    from avlips.media.faces import detect_face

    top = int(min(box.y1 for box in (detect_face(frame) for frame in source[:info.frames]) if box is not None))
    assert top >= 8 and diff[: top - 1].mean() < 3 and diff[80:140].mean() > 10


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all" * 10], ids=["empty", "junk"])
def test_a_file_that_is_not_a_checkpoint_is_not_ready_with_a_plain_reason(tmp_path: Path, clip: dict,
                                                                           content: bytes) -> None:
    path = tmp_path / "wav2lip_gan.pth"
    path.write_bytes(content)
    generator = Wav2LipGenerator(checkpoint=str(path), device="cpu")
    with pytest.raises(GeneratorNotReady, match="not a released Wav2Lip checkpoint") as caught:
        generator.model()
    assert "weights_only" not in str(caught.value)  # never advise unpickling arbitrary objects
