"""media.frames: frame-accurate reads by index, in any order, whatever the container stores."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from avlips.media.errors import MediaError
from avlips.media.frames import FrameReader, iter_frames, read_frames
from avlips.media.probe import probe
from tests.builders import run_ffmpeg


def test_read_frames_is_frame_accurate_with_seeks(make_video):
    # Short GOPs force real seeks; the burnt-in bar makes every frame distinct.
    path = make_video(n=120, size=(64, 48), keyint=12, audio=False)
    everything = np.stack(list(iter_frames(path)))
    assert len(everything) == 120
    wanted = [100, 3, 57, 58, 59, 119, 0, 60, 3]
    picked = read_frames(path, wanted)
    for got, index in zip(picked, wanted):
        assert np.array_equal(got, everything[index]), index


def test_reader_skipping_unreferenced_frames_stays_exact(make_video):
    # A long GOP with B-frames: far from a target the reader skips unreferenced frames.
    path = make_video(n=160, size=(64, 48), keyint=150, audio=False)
    everything = np.stack(list(iter_frames(path)))
    with FrameReader(path) as reader:
        for window in ([40, 41, 42, 43, 44], [90, 91, 92], [155, 159], [3, 60]):
            for got, index in zip(reader.read(window), window):
                assert np.array_equal(got, everything[index]), index


def test_reader_with_announced_windows_and_a_size_stays_exact(make_video):
    # Announced windows let the reader skip every unreferenced frame between them; an unannounced
    # frame the decoder already passed over is still found, and resizing happens while decoding.
    import cv2

    path = make_video(n=160, size=(64, 48), keyint=150, audio=False)
    everything = np.stack(list(iter_frames(path)))
    windows = [list(range(start, start + 5)) for start in (0, 3, 40, 90, 150, 155)]
    with FrameReader(path, size=(40, 30), interpolation="linear") as reader:
        assert reader.info == probe(path)
        reader.will_read(index for window in windows for index in window)
        for window in windows + [[45], [44, 44, 2]]:
            expected = [cv2.resize(everything[i], (40, 30), interpolation=cv2.INTER_LINEAR) for i in window]
            assert np.array_equal(reader.read(window), np.stack(expected)), window


def test_iter_frames_range_and_step(make_video):
    path = make_video(n=50, audio=False, keyint=10)
    everything = np.stack(list(iter_frames(path)))
    part = np.stack(list(iter_frames(path, start=13, stop=40, step=5)))
    assert np.array_equal(part, everything[13:40:5])


def test_read_frames_rejects_out_of_range(make_video):
    path = make_video(n=10, audio=False)
    with pytest.raises(MediaError, match="outside"):
        read_frames(path, [10])


def _ffmpeg_frames(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    """Every frame ffmpeg's own command line shows, as RGB: what a player plays."""
    raw = run_ffmpeg("-i", str(path), "-fps_mode", "passthrough", "-f", "rawvideo", "-pix_fmt", "rgb24", "-",
                     capture_output=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, *shape)


def test_clip_cut_without_reencoding_shows_frames_from_the_cut(make_video, tmp_path):
    """`ffmpeg -ss T -c copy` keeps the GOP before T for decoding (edit list); those frames are not shown."""
    source = make_video(n=60, audio=True)
    cut = tmp_path / "cut.mp4"
    run_ffmpeg("-ss", "1.0", "-i", str(source), "-c", "copy", str(cut))
    shown = _ffmpeg_frames(cut, (48, 64, 3))
    info = probe(cut)
    assert info.frames == len(shown) < 60
    assert info.duration == pytest.approx(len(shown) / 25, abs=1e-6)
    assert np.array_equal(read_frames(cut, [0, len(shown) - 1, 3]), shown[[0, -1, 3]])
    assert np.array_equal(np.stack(list(iter_frames(cut))), shown)


@pytest.mark.parametrize("gop", ["closed", "open"])
def test_avi_with_b_frames_reads_the_frames_shown(make_video, tmp_path, gop):
    """AVI stores decode order only: H.264 B-frames come out of the decoder in another order than stored."""
    avi = tmp_path / "bframes.avi"
    run_ffmpeg("-i", str(make_video(n=40, audio=False)), "-c:v", "libx264", "-bf", "3", "-g", "10",
            "-x264-params", f"open_gop={int(gop == 'open')}", str(avi))
    shown = _ffmpeg_frames(avi, (48, 64, 3))
    assert probe(avi).frames == len(shown) == 40
    wanted = [17, 3, 30, 31, 9, 0, 39, 22]
    assert np.array_equal(read_frames(avi, wanted), shown[wanted])
    with FrameReader(avi) as reader:  # compose's way: windows announced, then read in turn
        reader.will_read(range(10, 30))
        assert np.array_equal(np.concatenate([reader.read(range(s, s + 5)) for s in (10, 15, 25)]),
                              shown[[*range(10, 20), *range(25, 30)]])
    assert np.array_equal(np.stack(list(iter_frames(avi, 5, 35, 4))), shown[5:35:4])


def test_mpeg_ts_frames_are_found_even_in_a_capture_started_mid_gop(make_video, tmp_path):
    """MPEG-TS seeks by decode stamps (behind the shown ones with B-frames); a capture cut at a TS packet
    starts without a keyframe, and players show nothing before the first one."""
    ts = tmp_path / "broadcast.ts"
    run_ffmpeg("-i", str(make_video(n=60, audio=True)), "-c:v", "libx264", "-bf", "2", "-g", "15", "-c:a", "aac",
            "-f", "mpegts", str(ts))
    data = ts.read_bytes()
    capture = tmp_path / "capture.ts"
    capture.write_bytes(data[(len(data) // 188 // 3) * 188:])  # tuned in a third of the way through
    for path in (ts, capture):
        shown = _ffmpeg_frames(path, (48, 64, 3))
        info = probe(path)
        assert info.frames == len(shown) and info.duration == pytest.approx(len(shown) / 25, abs=1e-6)
        wanted = [len(shown) - 1, 0, 20, 7, 21, 33]
        wanted = [i for i in wanted if i < len(shown)]
        assert np.array_equal(read_frames(path, wanted), shown[wanted]), path.name
        assert np.array_equal(np.stack(list(iter_frames(path, 8))), shown[8:]), path.name
