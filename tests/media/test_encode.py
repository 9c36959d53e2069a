"""media.encode: H.264 mp4 from frames, a new audio track, wav; deterministic bytes."""
from __future__ import annotations

import numpy as np
import pytest

from avlips.media.audio_decode import read_audio
from avlips.media.encode import mux_audio, write_video
from avlips.media.errors import MediaError
from avlips.media.frames import read_frames
from avlips.media.probe import probe
from tests.builders import gradient_frames, tone


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 99.0 if mse == 0 else 10 * np.log10(255.0**2 / mse)


def test_written_frames_decode_back_close(make_video, tmp_path):
    frames = gradient_frames(12, 48, 64)
    write_video(tmp_path / "a.mp4", frames, 25, crf=10)
    decoded = read_frames(tmp_path / "a.mp4", range(12))
    assert decoded.shape == frames.shape
    # 4:2:0 chroma subsampling bounds the quality of these saturated random colours.
    assert min(_psnr(a, b) for a, b in zip(frames, decoded)) > 27


def test_odd_sizes_are_padded_to_even(tmp_path):
    frames = gradient_frames(5, 33, 51)
    write_video(tmp_path / "odd.mp4", frames, 25)
    info = probe(tmp_path / "odd.mp4")
    assert (info.width, info.height) == (52, 34)
    decoded = read_frames(tmp_path / "odd.mp4", [2])[0]
    assert _psnr(decoded[:33, :51], frames[2]) > 28


def test_mux_audio_replaces_track(make_video, tmp_path):
    path = make_video(n=25, audio=False)
    mux_audio(path, tone(1.0, 16000, freq=300.0), tmp_path / "muxed.mp4", 16000)
    info = probe(tmp_path / "muxed.mp4")
    assert info.has_audio and info.frames == 25
    audio = read_audio(tmp_path / "muxed.mp4", 16000)
    peak = np.argmax(np.abs(np.fft.rfft(audio))) * 16000 / len(audio)
    assert peak == pytest.approx(300.0, abs=5.0)
    # The video stream was copied, not re-encoded.
    assert np.array_equal(read_frames(path, [7]), read_frames(tmp_path / "muxed.mp4", [7]))


def test_encoding_is_deterministic(tmp_path):
    frames = gradient_frames(10, 32, 32)
    write_video(tmp_path / "a.mp4", frames, 25, tone(0.4, 16000))
    write_video(tmp_path / "b.mp4", frames, 25, tone(0.4, 16000))
    assert (tmp_path / "a.mp4").read_bytes() == (tmp_path / "b.mp4").read_bytes()
    assert not list(tmp_path.glob(".*part*"))


def test_write_rejects_bad_frames(tmp_path):
    with pytest.raises(MediaError, match="no frames"):
        write_video(tmp_path / "x.mp4", [], 25)
    with pytest.raises(MediaError, match="uint8"):
        write_video(tmp_path / "x.mp4", [np.zeros((8, 8, 3), np.float32)], 25)
    assert not (tmp_path / "x.mp4").exists()
