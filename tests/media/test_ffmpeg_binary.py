"""media.ffmpeg_binary: encoding and muxing use the pinned ffmpeg whatever PATH holds; media.ffmpeg may name another."""
from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest

from avlips.errors import AvlipsInputError
from avlips.media import ffmpeg_binary
from avlips.media.encode import mux_audio, write_video
from avlips.media.ffmpeg_binary import FfmpegError, configure_ffmpeg, current_ffmpeg, ffmpeg_exe, pinned_path
from tests.builders import gradient_frames, tone


@pytest.fixture(autouse=True)
def pinned_again():
    """Each test starts and ends with the pinned binary chosen (the choice is per process)."""
    ffmpeg_binary.use_ffmpeg("")
    yield
    ffmpeg_binary.use_ffmpeg("")


def _script(path: Path, body: str) -> Path:
    """An executable shell script at `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def _encode_and_mux(folder: Path) -> tuple[bytes, bytes]:
    """The bytes of a small encoded clip (video and AAC audio) and of a new audio track muxed beside it."""
    folder.mkdir()
    write_video(folder / "clip.mp4", gradient_frames(12, 48, 64), 25, tone(0.48, 16000), 16000)
    mux_audio(folder / "clip.mp4", tone(0.48, 16000, freq=300.0), folder / "muxed.mp4", 16000)
    return (folder / "clip.mp4").read_bytes(), (folder / "muxed.mp4").read_bytes()


def _one_line(exc: BaseException, *parts: str) -> str:
    text = str(exc)
    assert "\n" not in text
    for part in parts:
        assert part in text
    return text


def test_the_pinned_binary_is_imageio_ffmpegs_own_and_can_encode_h264():
    import imageio_ffmpeg

    chosen = current_ffmpeg()
    assert chosen.path == ffmpeg_exe() == pinned_path()
    assert Path(chosen.path).parent == Path(imageio_ffmpeg.__file__).parent / "binaries"
    assert chosen.version.startswith("ffmpeg version")
    assert chosen.to_dict() == {"path": chosen.path, "version": chosen.version}


def test_an_old_ffmpeg_first_on_path_changes_no_byte(tmp_path, monkeypatch):
    expected = _encode_and_mux(tmp_path / "before")
    old = _script(tmp_path / "bin" / "ffmpeg", "echo 'old ffmpeg' >&2\nexit 1\n")
    monkeypatch.setenv("PATH", f"{old.parent}{os.pathsep}{os.environ.get('PATH', '')}")
    # imageio-ffmpeg's own lookup honours this variable; the pin does not.
    monkeypatch.setenv("IMAGEIO_FFMPEG_EXE", str(old))
    assert shutil.which("ffmpeg") == str(old)
    configure_ffmpeg({})  # what a stage does: no media.ffmpeg, the pinned one
    assert _encode_and_mux(tmp_path / "after") == expected
    assert ffmpeg_exe() == pinned_path()


def test_media_ffmpeg_naming_a_missing_file_is_one_line_naming_it(tmp_path):
    missing = tmp_path / "opt" / "ffmpeg"
    with pytest.raises(FfmpegError) as caught:
        configure_ffmpeg({"media": {"ffmpeg": str(missing)}})
    _one_line(caught.value, str(missing), "no such file", "media.ffmpeg")
    assert isinstance(caught.value, AvlipsInputError) and caught.value.exit_status == 2
    assert ffmpeg_exe() == pinned_path()  # a refused choice leaves the previous one


def test_media_ffmpeg_naming_a_program_not_on_path(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(FfmpegError) as caught:
        configure_ffmpeg({"media": {"ffmpeg": "ffmpeg-6"}})
    _one_line(caught.value, "ffmpeg-6", "no such program on PATH")


def test_a_binary_that_cannot_encode_h264_is_refused(tmp_path):
    # An ffmpeg built without libx264 (an LGPL build): it has other H.264 decoders and encoders, not x264.
    no_x264 = _script(tmp_path / "ffmpeg-lgpl", """case "$*" in
  *-version*) echo "ffmpeg version 6.1-lgpl Copyright (c) 2000-2023 the FFmpeg developers" ;;
  *-encoders*) printf 'Encoders:\\n V..... = Video\\n ------\\n V....D libopenh264           OpenH264 H.264\\n'
               printf ' V....D mpeg4                MPEG-4 part 2\\n A....D aac                  AAC\\n' ;;
  *) exit 1 ;;
esac
""")
    with pytest.raises(FfmpegError) as caught:
        configure_ffmpeg({"media": {"ffmpeg": str(no_x264)}})
    _one_line(caught.value, str(no_x264), "cannot encode H.264", "libx264")


def test_a_program_that_is_no_ffmpeg_is_refused(tmp_path):
    old = _script(tmp_path / "ffmpeg", "echo 'old ffmpeg' >&2\nexit 1\n")
    with pytest.raises(FfmpegError) as caught:
        configure_ffmpeg({"media": {"ffmpeg": str(old)}})
    _one_line(caught.value, str(old), "exited with status 1", "old ffmpeg")


def test_media_ffmpeg_names_another_binary_on_purpose(tmp_path):
    log = tmp_path / "calls.log"
    other = _script(tmp_path / "tools" / "ffmpeg", f'echo "$1" >> "{log}"\nexec "{pinned_path()}" "$@"\n')
    chosen = configure_ffmpeg({"media": {"ffmpeg": str(other)}})
    assert chosen.path == ffmpeg_exe() == str(other)
    assert chosen.version == current_ffmpeg().version and chosen.version.startswith("ffmpeg version")
    checks = log.read_text().count("\n")  # -version and -encoders, once
    write_video(tmp_path / "clip.mp4", gradient_frames(5, 32, 32), 25)
    assert log.read_text().count("\n") == checks + 1  # the encode ran through the named binary
    configure_ffmpeg({"media": {"ffmpeg": str(other)}})
    write_video(tmp_path / "again.mp4", gradient_frames(5, 32, 32), 25)
    assert log.read_text().count("\n") == checks + 2  # checked once per process, not per call
