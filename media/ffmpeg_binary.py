"""Which ffmpeg binary writes media bytes: the one imageio-ffmpeg ships, or one named on purpose.

Encoded bytes depend on the ffmpeg build (its x264, the encoder defaults, the muxer), so the same
inputs give the same fakes only when the same binary encodes them. Encoding and muxing therefore
never take whatever `ffmpeg` is first on PATH: they use the binary inside the installed
imageio-ffmpeg wheel, whose version the lock pins, unless params.yaml `media.ffmpeg` names another
(a path, or a name looked up on PATH). The choice holds per process: a stage calls
configure_ffmpeg(params) before it encodes, and hands the path to its worker processes.

A binary is checked once per process before first use: it must exist, run, and have the libx264
encoder (every video avlips writes is H.264). A failed check is an FfmpegError naming the file.
"""
from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from avlips.errors import AvlipsInputError

PARAM = "media.ffmpeg"  # the params.yaml key; empty: the pinned binary
_CHECK_TIMEOUT_S = 60.0
# A line of `ffmpeg -encoders`: flags (V for video, then five more), the encoder name, its description.
_ENCODER_LINE = re.compile(r"^\s*V\S{5}\s+libx264\s", re.MULTILINE)

_chosen = ""  # what this process encodes with: a path, or "" for the pinned binary


class FfmpegError(AvlipsInputError):
    """The ffmpeg to encode with is missing, does not run, or cannot encode H.264."""

    exit_status = 2  # a setting that stops a stage before it writes anything


@dataclass(frozen=True)
class Ffmpeg:
    """A checked ffmpeg binary."""

    path: str
    version: str  # the first line of `ffmpeg -version`

    def to_dict(self) -> dict:
        """The record a stage keeps of the binary that made its bytes."""
        return {"path": self.path, "version": self.version}


def pinned_path() -> str:
    """The ffmpeg binary inside the installed imageio-ffmpeg package.

    Not imageio_ffmpeg.get_ffmpeg_exe(): that returns $IMAGEIO_FFMPEG_EXE when set, and falls back
    to PATH's ffmpeg when the package has no binary, which would unpin exactly what this pins.
    """
    import imageio_ffmpeg

    folder = Path(imageio_ffmpeg.__file__).parent / "binaries"
    # The platform wheel ships one binary, named ffmpeg-<platform>-v<version>[.exe].
    found = sorted(p for p in folder.glob("ffmpeg-*") if p.is_file())
    if len(found) != 1:
        what = "no ffmpeg binary" if not found else f"{len(found)} ffmpeg binaries"
        raise FfmpegError(f"{folder}: imageio-ffmpeg holds {what} for this platform; "
                          f"name the ffmpeg to use in params.yaml {PARAM}")
    return str(found[0])


def resolve(name: str | os.PathLike | None) -> str:
    """The path of the binary `name` means: empty is the pinned one, a bare name is looked up on PATH."""
    name = str(name or "").strip()
    if not name:
        return pinned_path()
    if os.sep in name or (os.altsep and os.altsep in name) or name.startswith("~"):
        return os.path.abspath(os.path.expanduser(name))
    found = shutil.which(name)
    if found is None:
        raise FfmpegError(f"{name}: no such program on PATH ({PARAM})")
    return os.path.abspath(found)


def _run(path: str, *args: str) -> str:
    """The standard output of `path args`; an FfmpegError naming the binary when it cannot run."""
    try:
        done = subprocess.run([path, "-hide_banner", *args], stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=_CHECK_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise FfmpegError(f"{path}: `{' '.join(args)}` did not answer within {_CHECK_TIMEOUT_S:g} s "
                          f"({PARAM})") from None
    except OSError as exc:
        raise FfmpegError(f"{path}: cannot run it ({exc.strerror or exc}) ({PARAM})") from None
    if done.returncode != 0:
        said = (done.stderr or done.stdout).decode(errors="replace").strip().splitlines()
        raise FfmpegError(f"{path}: `{' '.join(args)}` exited with status {done.returncode}"
                          + (f": {said[-1].strip()}" if said else "") + f" ({PARAM})")
    return done.stdout.decode(errors="replace")


@functools.lru_cache(maxsize=None)
def check(path: str) -> Ffmpeg:
    """The binary at `path` once checked: exists, runs, has libx264 (cached per process)."""
    if not os.path.exists(path):
        raise FfmpegError(f"{path}: no such file ({PARAM})")
    if os.path.isdir(path):
        raise FfmpegError(f"{path}: is a directory, not an ffmpeg binary ({PARAM})")
    if not os.access(path, os.X_OK):
        raise FfmpegError(f"{path}: not executable ({PARAM})")
    version = _run(path, "-version").strip().splitlines()
    if not version or not version[0].startswith("ffmpeg version"):
        raise FfmpegError(f"{path}: `-version` does not say 'ffmpeg version': not an ffmpeg binary ({PARAM})")
    if not _ENCODER_LINE.search(_run(path, "-encoders")):
        raise FfmpegError(f"{path}: cannot encode H.264 (no libx264 among its encoders), "
                          f"which every video avlips writes needs ({PARAM})")
    return Ffmpeg(path, version[0].strip())


def use_ffmpeg(name: str | os.PathLike | None) -> Ffmpeg:
    """Encode with `name` from now on in this process (empty: the pinned binary); returns it checked."""
    global _chosen
    path = resolve(name)
    ffmpeg = check(path)  # before choosing it: a bad name leaves the previous choice in place
    _chosen = path
    return ffmpeg


def configure_ffmpeg(params: dict) -> Ffmpeg:
    """use_ffmpeg() with params.yaml `media.ffmpeg`: what a stage that encodes calls first."""
    from avlips.params import param

    return use_ffmpeg(param(params, PARAM, "") or "")


def current_ffmpeg() -> Ffmpeg:
    """The checked binary this process encodes with."""
    return check(_chosen or pinned_path())


def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary this process encodes with."""
    return current_ffmpeg().path
