"""media.io: probe, frame-accurate reads, audio, encode, mux, and bad files."""
from __future__ import annotations

import fractions
import os
import subprocess
from pathlib import Path

import av
import numpy as np
import pytest

from avlips.media import io
from avlips.media.errors import MediaError, NoAudio, NotAVideo, NoFrames, TruncatedMedia, UnreadableFile
from tests.conftest import gradient_frames, shared_videos, tone


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 99.0 if mse == 0 else 10 * np.log10(255.0**2 / mse)


def test_probe_reports_streams(make_video):
    path = make_video(n=40, size=(64, 48), fps=25, rate=22050)
    info = io.probe(path)
    assert (info.width, info.height, info.frames) == (64, 48, 40)
    assert info.fps == pytest.approx(25.0)
    assert info.duration == pytest.approx(1.6)
    assert info.has_audio and info.audio_rate == 22050 and info.audio_channels == 1
    assert info.codec == "h264" and info.rotation == 0 and not info.variable_frame_rate


def test_written_frames_decode_back_close(make_video, tmp_path):
    frames = gradient_frames(12, 48, 64)
    io.write_video(tmp_path / "a.mp4", frames, 25, crf=10)
    decoded = io.read_frames(tmp_path / "a.mp4", range(12))
    assert decoded.shape == frames.shape
    # 4:2:0 chroma subsampling bounds the quality of these saturated random colours.
    assert min(_psnr(a, b) for a, b in zip(frames, decoded)) > 27


def test_read_frames_is_frame_accurate_with_seeks(make_video):
    # Short GOPs force real seeks; the burnt-in bar makes every frame distinct.
    path = make_video(n=120, size=(64, 48), keyint=12, audio=False)
    everything = np.stack(list(io.iter_frames(path)))
    assert len(everything) == 120
    wanted = [100, 3, 57, 58, 59, 119, 0, 60, 3]
    picked = io.read_frames(path, wanted)
    for got, index in zip(picked, wanted):
        assert np.array_equal(got, everything[index]), index


def test_reader_skipping_unreferenced_frames_stays_exact(make_video):
    # A long GOP with B-frames: far from a target the reader skips unreferenced frames.
    path = make_video(n=160, size=(64, 48), keyint=150, audio=False)
    everything = np.stack(list(io.iter_frames(path)))
    with io.FrameReader(path) as reader:
        for window in ([40, 41, 42, 43, 44], [90, 91, 92], [155, 159], [3, 60]):
            for got, index in zip(reader.read(window), window):
                assert np.array_equal(got, everything[index]), index


def test_reader_with_announced_windows_and_a_size_stays_exact(make_video):
    # Announced windows let the reader skip every unreferenced frame between them; an unannounced
    # frame the decoder already passed over is still found, and resizing happens while decoding.
    import cv2

    path = make_video(n=160, size=(64, 48), keyint=150, audio=False)
    everything = np.stack(list(io.iter_frames(path)))
    windows = [list(range(start, start + 5)) for start in (0, 3, 40, 90, 150, 155)]
    with io.FrameReader(path, size=(40, 30), interpolation="linear") as reader:
        assert reader.info == io.probe(path)
        reader.will_read(index for window in windows for index in window)
        for window in windows + [[45], [44, 44, 2]]:
            expected = [cv2.resize(everything[i], (40, 30), interpolation=cv2.INTER_LINEAR) for i in window]
            assert np.array_equal(reader.read(window), np.stack(expected)), window


def test_iter_frames_range_and_step(make_video):
    path = make_video(n=50, audio=False, keyint=10)
    everything = np.stack(list(io.iter_frames(path)))
    part = np.stack(list(io.iter_frames(path, start=13, stop=40, step=5)))
    assert np.array_equal(part, everything[13:40:5])


def test_read_frames_rejects_out_of_range(make_video):
    path = make_video(n=10, audio=False)
    with pytest.raises(MediaError, match="outside"):
        io.read_frames(path, [10])


def _write_vfr(path: Path, durations: list[int]) -> None:
    """An H.264 mp4 whose frames last the given numbers of 1/30 s ticks (a variable frame rate)."""
    frames = gradient_frames(len(durations), 48, 64)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.time_base = fractions.Fraction(1, 30)
        stream.codec_context.time_base = fractions.Fraction(1, 30)
        pts = 0
        for frame_rgb, ticks in zip(frames, durations):
            frame = av.VideoFrame.from_ndarray(frame_rgb, format="rgb24")
            frame.pts = pts
            frame.time_base = fractions.Fraction(1, 30)
            pts += ticks
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def test_variable_frame_rate(tmp_path):
    durations = [1, 1, 2, 1, 3, 1, 1, 2, 1, 1] * 3
    path = tmp_path / "vfr.mp4"
    _write_vfr(path, durations)
    info = io.probe(path)
    assert info.frames == len(durations)
    assert info.variable_frame_rate
    assert info.duration == pytest.approx(sum(durations) / 30, abs=1e-6)
    times = io.frame_times(path)
    assert np.allclose(times, np.cumsum([0] + durations[:-1]) / 30)
    everything = np.stack(list(io.iter_frames(path)))
    assert np.array_equal(io.read_frames(path, [4, 17, 2]), everything[[4, 17, 2]])
    # The frame shown at 0.25 s is the one that started at or before it.
    shown = io.read_frames_at(path, [0.25])[0]
    index = int(np.searchsorted(times, 0.25, side="right") - 1)
    assert np.array_equal(shown, everything[index])


def test_rotation_metadata_is_applied(make_video, tmp_path):
    source = make_video(n=10, size=(64, 48), audio=False)
    rotated = tmp_path / "rotated.mp4"
    subprocess.run([io.ffmpeg_exe(), "-loglevel", "error", "-display_rotation", "90", "-i", str(source),
                    "-c", "copy", str(rotated)], check=True)
    info = io.probe(rotated)
    assert info.rotation in (90, 270)
    assert (info.width, info.height) == (48, 64)
    upright = io.read_frames(source, [3])[0]
    turned = io.read_frames(rotated, [3])[0]
    assert turned.shape == (64, 48, 3)
    k = -1 if info.rotation == 90 else 1
    assert np.array_equal(turned, np.rot90(upright, k=k))


def test_odd_sizes_are_padded_to_even(tmp_path):
    frames = gradient_frames(5, 33, 51)
    io.write_video(tmp_path / "odd.mp4", frames, 25)
    info = io.probe(tmp_path / "odd.mp4")
    assert (info.width, info.height) == (52, 34)
    decoded = io.read_frames(tmp_path / "odd.mp4", [2])[0]
    assert _psnr(decoded[:33, :51], frames[2]) > 28


def test_hevc_decodes(make_video):
    path = make_video(name="hevc.mp4", n=20, codec="libx265", audio=False)
    info = io.probe(path)
    assert info.codec == "hevc" and info.frames == 20
    assert io.read_frames(path, [19]).shape == (1, 48, 64, 3)


def test_read_audio_resamples_to_mono(tmp_path):
    stereo = tone(1.0, 44100, freq=1000.0, channels=2)
    io.write_wav(tmp_path / "a.wav", stereo, 44100)
    audio = io.read_audio(tmp_path / "a.wav", 16000)
    assert audio.ndim == 1 and audio.dtype == np.float32
    assert len(audio) == pytest.approx(16000, abs=2)
    spectrum = np.abs(np.fft.rfft(audio))
    assert np.argmax(spectrum) * 16000 / len(audio) == pytest.approx(1000.0, abs=2.0)
    both = io.read_audio(tmp_path / "a.wav", 16000, mono=False)
    assert both.shape[0] == 2


@pytest.mark.parametrize("rate, channels, container", [(44100, 2, "wav"), (16000, 1, "wav"), (22050, 1, "wav"),
                                                     (48000, 2, "mp4")])
def test_iter_audio_blocks_join_into_read_audio(tmp_path, make_video, rate, channels, container):
    """Streaming decode, mix and resample give read_audio's samples exactly, whatever the block size."""
    rng = np.random.default_rng(rate + channels)
    noise = (0.2 * rng.standard_normal((channels, int(3.3 * rate)))).astype(np.float32)
    signal = tone(3.3, rate, freq=523.0, channels=channels) + (noise[0] if channels == 1 else noise)
    if container == "wav":
        path = tmp_path / "a.wav"
        io.write_wav(path, signal, rate)
    else:  # AAC in mp4: decoded frames of 1024 samples, a resampler fed from many chunks
        path = tmp_path / "a.mp4"
        io.write_video(path, gradient_frames(80, 32, 32), 25, signal, rate)
    whole = io.read_audio(path, 22050)
    for block in (1000, 1 << 16, 10**7):
        blocks = list(io.iter_audio(path, 22050, block_samples=block))
        assert all(b.dtype == np.float32 and b.ndim == 1 for b in blocks)
        assert np.array_equal(np.concatenate(blocks), whole), block


def test_iter_audio_errors_like_read_audio(make_video):
    with pytest.raises(NoAudio):
        list(io.iter_audio(make_video(n=10, audio=False)))


def test_mux_audio_replaces_track(make_video, tmp_path):
    path = make_video(n=25, audio=False)
    io.mux_audio(path, tone(1.0, 16000, freq=300.0), tmp_path / "muxed.mp4", 16000)
    info = io.probe(tmp_path / "muxed.mp4")
    assert info.has_audio and info.frames == 25
    audio = io.read_audio(tmp_path / "muxed.mp4", 16000)
    peak = np.argmax(np.abs(np.fft.rfft(audio))) * 16000 / len(audio)
    assert peak == pytest.approx(300.0, abs=5.0)
    # The video stream was copied, not re-encoded.
    assert np.array_equal(io.read_frames(path, [7]), io.read_frames(tmp_path / "muxed.mp4", [7]))


def test_encoding_is_deterministic(tmp_path):
    frames = gradient_frames(10, 32, 32)
    io.write_video(tmp_path / "a.mp4", frames, 25, tone(0.4, 16000))
    io.write_video(tmp_path / "b.mp4", frames, 25, tone(0.4, 16000))
    assert (tmp_path / "a.mp4").read_bytes() == (tmp_path / "b.mp4").read_bytes()
    assert not list(tmp_path.glob(".*part*"))


def test_non_ascii_name(make_video):
    path = make_video(name="видео_é 1.mp4", n=10)
    assert io.probe(path).frames == 10
    assert len(io.read_audio(path)) > 0


# Bad files -----------------------------------------------------------------------------------

def test_missing_file(tmp_path):
    with pytest.raises(UnreadableFile, match="no such file"):
        io.probe(tmp_path / "absent.mp4")


def test_broken_symlink(tmp_path):
    os.symlink(tmp_path / "gone.mp4", tmp_path / "link.mp4")
    with pytest.raises(UnreadableFile):
        io.probe(tmp_path / "link.mp4")


def test_text_file_is_not_a_video(tmp_path):
    path = tmp_path / "notes.mp4"
    path.write_text("this is not a video\n" * 20)
    with pytest.raises(NotAVideo) as caught:
        io.probe(path)
    assert str(path) in str(caught.value)


def test_empty_file(tmp_path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(NotAVideo, match="empty"):
        io.probe(tmp_path / "empty.mp4")


def test_truncated_mp4(make_video, tmp_path):
    path = make_video(n=60)
    data = path.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 3])
    with pytest.raises(MediaError):
        info = io.probe(cut)
        io.read_frames(cut, [info.frames - 1])


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
        io.probe(tmp_path / "cut.mp4")


def test_video_with_no_frames(tmp_path):
    path = tmp_path / "noframes.mp4"
    subprocess.run([io.ffmpeg_exe(), "-loglevel", "error", "-f", "lavfi", "-i", "color=c=red:s=64x48:r=25",
                    "-frames:v", "0", "-c:v", "libx264", str(path)], check=True)
    assert path.exists()
    with pytest.raises((NoFrames, NotAVideo)):
        io.probe(path)


def test_audio_only_file_is_not_a_video(tmp_path):
    io.write_wav(tmp_path / "speech.wav", tone(0.5, 16000), 16000)
    os.rename(tmp_path / "speech.wav", tmp_path / "speech.mp4")
    with pytest.raises(NotAVideo, match="no video stream"):
        io.probe(tmp_path / "speech.mp4")


def test_no_audio_track(make_video):
    path = make_video(n=10, audio=False)
    assert not io.probe(path).has_audio
    with pytest.raises(NoAudio):
        io.read_audio(path)


def _ffmpeg(*args: str) -> None:
    subprocess.run([io.ffmpeg_exe(), "-loglevel", "error", "-y", *args], check=True)


def _ffmpeg_frames(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    """Every frame ffmpeg's own command line shows, as RGB: what a player plays."""
    raw = subprocess.run([io.ffmpeg_exe(), "-loglevel", "error", "-i", str(path), "-fps_mode", "passthrough",
                          "-f", "rawvideo", "-pix_fmt", "rgb24", "-"], check=True, capture_output=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, *shape)


def test_clip_cut_without_reencoding_shows_frames_from_the_cut(make_video, tmp_path):
    """`ffmpeg -ss T -c copy` keeps the GOP before T for decoding (edit list); those frames are not shown."""
    source = make_video(n=60, audio=True)
    cut = tmp_path / "cut.mp4"
    _ffmpeg("-ss", "1.0", "-i", str(source), "-c", "copy", str(cut))
    shown = _ffmpeg_frames(cut, (48, 64, 3))
    info = io.probe(cut)
    assert info.frames == len(shown) < 60
    assert info.duration == pytest.approx(len(shown) / 25, abs=1e-6)
    assert np.array_equal(io.read_frames(cut, [0, len(shown) - 1, 3]), shown[[0, -1, 3]])
    assert np.array_equal(np.stack(list(io.iter_frames(cut))), shown)


@pytest.mark.parametrize("gop", ["closed", "open"])
def test_avi_with_b_frames_reads_the_frames_shown(make_video, tmp_path, gop):
    """AVI stores decode order only: H.264 B-frames come out of the decoder in another order than stored."""
    avi = tmp_path / "bframes.avi"
    _ffmpeg("-i", str(make_video(n=40, audio=False)), "-c:v", "libx264", "-bf", "3", "-g", "10",
            "-x264-params", f"open_gop={int(gop == 'open')}", str(avi))
    shown = _ffmpeg_frames(avi, (48, 64, 3))
    assert io.probe(avi).frames == len(shown) == 40
    wanted = [17, 3, 30, 31, 9, 0, 39, 22]
    assert np.array_equal(io.read_frames(avi, wanted), shown[wanted])
    with io.FrameReader(avi) as reader:  # compose's way: windows announced, then read in turn
        reader.will_read(range(10, 30))
        assert np.array_equal(np.concatenate([reader.read(range(s, s + 5)) for s in (10, 15, 25)]),
                              shown[[*range(10, 20), *range(25, 30)]])
    assert np.array_equal(np.stack(list(io.iter_frames(avi, 5, 35, 4))), shown[5:35:4])


def test_mpeg_ts_frames_are_found_even_in_a_capture_started_mid_gop(make_video, tmp_path):
    """MPEG-TS seeks by decode stamps (behind the shown ones with B-frames); a capture cut at a TS packet
    starts without a keyframe, and players show nothing before the first one."""
    ts = tmp_path / "broadcast.ts"
    _ffmpeg("-i", str(make_video(n=60, audio=True)), "-c:v", "libx264", "-bf", "2", "-g", "15", "-c:a", "aac",
            "-f", "mpegts", str(ts))
    data = ts.read_bytes()
    capture = tmp_path / "capture.ts"
    capture.write_bytes(data[(len(data) // 188 // 3) * 188:])  # tuned in a third of the way through
    for path in (ts, capture):
        shown = _ffmpeg_frames(path, (48, 64, 3))
        info = io.probe(path)
        assert info.frames == len(shown) and info.duration == pytest.approx(len(shown) / 25, abs=1e-6)
        wanted = [len(shown) - 1, 0, 20, 7, 21, 33]
        wanted = [i for i in wanted if i < len(shown)]
        assert np.array_equal(io.read_frames(path, wanted), shown[wanted]), path.name
        assert np.array_equal(np.stack(list(io.iter_frames(path, 8))), shown[8:]), path.name


def test_raw_stream_without_timestamps_says_so(make_video, tmp_path):
    raw = tmp_path / "camera.h264"
    _ffmpeg("-i", str(make_video(n=10, audio=False)), "-c:v", "copy", "-bsf:v", "h264_mp4toannexb", str(raw))
    with pytest.raises(NotAVideo, match="no timestamps"):
        io.probe(raw)


def test_audio_track_starting_after_the_first_frame_keeps_its_sync(tmp_path):
    """A track that starts 0.5 s in is heard 0.5 s in: sample 0 of the audio is shown with frame 0."""
    rate = 16000
    beep = np.zeros(2 * rate, np.float32)
    beep[rate:rate + 800] = tone(0.05, rate, freq=1000.0)  # 50 ms at 1.0 s
    source, late = tmp_path / "beep.mp4", tmp_path / "late.mp4"
    io.write_video(source, gradient_frames(50, 48, 64), 25.0, beep, rate)
    _ffmpeg("-i", str(source), "-itsoffset", "0.5", "-i", str(source), "-map", "0:v", "-map", "1:a",
            "-c", "copy", str(late))

    def onset(audio: np.ndarray) -> float:
        return float(np.flatnonzero(np.abs(audio) > 0.1)[0]) / rate

    assert onset(io.read_audio(source, rate)) == pytest.approx(1.0, abs=0.005)
    shifted = io.read_audio(late, rate)
    assert onset(shifted) == pytest.approx(1.5, abs=0.005)
    assert np.array_equal(np.concatenate(list(io.iter_audio(late, rate, block_samples=3000))), shifted)


def test_audio_track_starting_past_the_video_is_no_audio(make_video, tmp_path):
    source = make_video(n=10, audio=True)
    late = tmp_path / "late.mp4"
    _ffmpeg("-i", str(source), "-itsoffset", "5", "-i", str(source), "-map", "0:v", "-map", "1:a",
            "-c", "copy", str(late))
    with pytest.raises(NoAudio, match="after the video's end"):
        io.read_audio(late)


@pytest.mark.parametrize("rate", [8000, 44100])
def test_codec_padding_is_not_audio(make_video, rate):
    """AAC pads its last frame to 1024 samples; the file's duration (what players play) is the audio."""
    path = make_video(n=50, fps=25.0, rate=rate)  # 2.0 s of tone
    assert len(io.read_audio(path, rate)) == 2 * rate
    assert io.probe_audio(path).duration == pytest.approx(2.0, abs=1e-6)


def test_write_rejects_bad_frames(tmp_path):
    with pytest.raises(MediaError, match="no frames"):
        io.write_video(tmp_path / "x.mp4", [], 25)
    with pytest.raises(MediaError, match="uint8"):
        io.write_video(tmp_path / "x.mp4", [np.zeros((8, 8, 3), np.float32)], 25)
    assert not (tmp_path / "x.mp4").exists()


# Real media ----------------------------------------------------------------------------------

@pytest.mark.parametrize("path", shared_videos(), ids=lambda p: p.name)
def test_shared_videos_probe_and_seek(path):
    info = io.probe(path)
    assert info.frames > 100 and info.has_audio and info.width >= 500
    assert info.duration == pytest.approx(info.frames / info.fps)
    wanted = [info.frames - 1, 0, info.frames // 2]
    picked = io.read_frames(path, wanted)
    everything = list(io.iter_frames(path))
    assert len(everything) == info.frames
    for got, index in zip(picked, wanted):
        assert np.array_equal(got, everything[index])
    audio = io.read_audio(path, 16000)
    assert abs(len(audio) / 16000 - info.audio_duration) < 0.1


@pytest.mark.parametrize("samples", [16000, 16001, 16003, 33337])
def test_resampled_audio_is_librosa_load_to_the_sample(tmp_path, samples):
    # The reference loads its wavs with librosa.load: same length rule (ceil), same soxr HQ values.
    import librosa

    wav = tmp_path / "a.wav"
    rng = np.random.default_rng(samples)
    io.write_wav(wav, (0.3 * rng.standard_normal(samples)).astype(np.float32), 16000)
    reference, _ = librosa.load(str(wav))
    ours = io.read_audio(wav, 22050)
    streamed = np.concatenate(list(io.iter_audio(wav, 22050, block_samples=4096)))
    assert len(ours) == len(reference) == io.resampled_length(samples, 16000, 22050)
    np.testing.assert_array_equal(ours, reference)
    np.testing.assert_array_equal(streamed, ours)


def test_audio_damaged_mid_file_is_an_error_not_a_silent_cut(make_video, tmp_path):
    # Random bytes over a stretch of the file's middle: decoding stops there. Keeping only the part
    # before it would quietly give a clip whose sound ends early.
    clean = make_video("long.mp4", n=150, size=(32, 32), rate=16000)  # 6 s
    data = bytearray(clean.read_bytes())
    rng = np.random.default_rng(3)
    for start in (len(data) * 3 // 10, len(data) // 2):
        data[start:start + 4000] = rng.integers(0, 256, 4000, dtype=np.uint8).tobytes()
    damaged = tmp_path / "damaged.mp4"
    damaged.write_bytes(bytes(data))
    assert len(io.read_audio(clean)) == 6 * 16000
    with pytest.raises(TruncatedMedia, match=r"damaged\.mp4.*audio decoding stopped at [0-9.]+s of 6\.00s"):
        io.read_audio(damaged)
