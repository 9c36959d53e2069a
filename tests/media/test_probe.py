"""media.probe: what a file holds, its frame index, and the files that are no media at all."""
from __future__ import annotations

import os

import av
import numpy as np
import pytest

from avlips.media.audio_decode import read_audio
from avlips.media.encode import write_wav
from avlips.media.errors import MediaError, NoFrames, NotAVideo, TruncatedMedia, UnreadableFile
from avlips.media.frames import iter_frames, read_frames, read_frames_at
from avlips.media.probe import frame_times, probe
from tests.builders import gradient_frames, run_ffmpeg, shared_videos, tone, write_vfr_video


def test_probe_reports_streams(make_video):
    path = make_video(n=40, size=(64, 48), fps=25, rate=22050)
    info = probe(path)
    assert (info.width, info.height, info.frames) == (64, 48, 40)
    assert info.fps == pytest.approx(25.0)
    assert info.duration == pytest.approx(1.6)
    assert info.has_audio and info.audio_rate == 22050 and info.audio_channels == 1
    assert info.codec == "h264" and info.rotation == 0 and not info.variable_frame_rate


def test_variable_frame_rate(tmp_path):
    durations = [1, 1, 2, 1, 3, 1, 1, 2, 1, 1] * 3
    path = tmp_path / "vfr.mp4"
    write_vfr_video(path, durations)
    info = probe(path)
    assert info.frames == len(durations)
    assert info.variable_frame_rate
    assert info.duration == pytest.approx(sum(durations) / 30, abs=1e-6)
    times = frame_times(path)
    assert np.allclose(times, np.cumsum([0] + durations[:-1]) / 30)
    everything = np.stack(list(iter_frames(path)))
    assert np.array_equal(read_frames(path, [4, 17, 2]), everything[[4, 17, 2]])
    # The frame shown at 0.25 s is the one that started at or before it.
    shown = read_frames_at(path, [0.25])[0]
    index = int(np.searchsorted(times, 0.25, side="right") - 1)
    assert np.array_equal(shown, everything[index])


def test_rotation_metadata_is_applied(make_video, tmp_path):
    source = make_video(n=10, size=(64, 48), audio=False)
    rotated = tmp_path / "rotated.mp4"
    run_ffmpeg("-display_rotation", "90", "-i", str(source), "-c", "copy", str(rotated))
    info = probe(rotated)
    assert info.rotation in (90, 270)
    assert (info.width, info.height) == (48, 64)
    upright = read_frames(source, [3])[0]
    turned = read_frames(rotated, [3])[0]
    assert turned.shape == (64, 48, 3)
    k = -1 if info.rotation == 90 else 1
    assert np.array_equal(turned, np.rot90(upright, k=k))


def test_hevc_decodes(make_video):
    path = make_video(name="hevc.mp4", n=20, codec="libx265", audio=False)
    info = probe(path)
    assert info.codec == "hevc" and info.frames == 20
    assert read_frames(path, [19]).shape == (1, 48, 64, 3)


def test_non_ascii_name(make_video):
    path = make_video(name="видео_é 1.mp4", n=10)
    assert probe(path).frames == 10
    assert len(read_audio(path)) > 0


# Bad files ----------------------------------------------------------------------------------------

def test_missing_file(tmp_path):
    with pytest.raises(UnreadableFile, match="no such file"):
        probe(tmp_path / "absent.mp4")


def test_broken_symlink(tmp_path):
    os.symlink(tmp_path / "gone.mp4", tmp_path / "link.mp4")
    with pytest.raises(UnreadableFile):
        probe(tmp_path / "link.mp4")


def test_text_file_is_not_a_video(tmp_path):
    path = tmp_path / "notes.mp4"
    path.write_text("this is not a video\n" * 20)
    with pytest.raises(NotAVideo) as caught:
        probe(path)
    assert str(path) in str(caught.value)


def test_empty_file(tmp_path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(NotAVideo, match="empty"):
        probe(tmp_path / "empty.mp4")


def test_truncated_mp4(make_video, tmp_path):
    path = make_video(n=60)
    data = path.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 3])
    with pytest.raises(MediaError):
        info = probe(cut)
        read_frames(cut, [info.frames - 1])


def test_truncated_without_moov_is_reported_as_truncated(tmp_path):
    frames = gradient_frames(30, 48, 64)
    path = tmp_path / "nofaststart.mp4"
    # Without +faststart the index (moov) sits at the end, so a cut file has no index at all.
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    data = path.read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])
    with pytest.raises(TruncatedMedia):
        probe(tmp_path / "cut.mp4")


def test_video_with_no_frames(tmp_path):
    path = tmp_path / "noframes.mp4"
    run_ffmpeg("-f", "lavfi", "-i", "color=c=red:s=64x48:r=25", "-frames:v", "0", "-c:v", "libx264", str(path))
    assert path.exists()
    with pytest.raises((NoFrames, NotAVideo)):
        probe(path)


def test_audio_only_file_is_not_a_video(tmp_path):
    write_wav(tmp_path / "speech.wav", tone(0.5, 16000), 16000)
    os.rename(tmp_path / "speech.wav", tmp_path / "speech.mp4")
    with pytest.raises(NotAVideo, match="no video stream"):
        probe(tmp_path / "speech.mp4")


def test_raw_stream_without_timestamps_says_so(make_video, tmp_path):
    raw = tmp_path / "camera.h264"
    run_ffmpeg("-i", str(make_video(n=10, audio=False)), "-c:v", "copy", "-bsf:v", "h264_mp4toannexb", str(raw))
    with pytest.raises(NotAVideo, match="no timestamps"):
        probe(raw)


# Real media ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", shared_videos(), ids=lambda p: p.name)
def test_shared_videos_probe_and_seek(path):
    info = probe(path)
    assert info.frames > 100 and info.has_audio and info.width >= 500
    assert info.duration == pytest.approx(info.frames / info.fps)
    wanted = [info.frames - 1, 0, info.frames // 2]
    picked = read_frames(path, wanted)
    everything = list(iter_frames(path))
    assert len(everything) == info.frames
    for got, index in zip(picked, wanted):
        assert np.array_equal(got, everything[index])
    audio = read_audio(path, 16000)
    assert abs(len(audio) / 16000 - info.audio_duration) < 0.1
