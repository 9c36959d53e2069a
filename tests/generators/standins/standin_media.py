"""Shared helpers of the stand-in checkouts: fake frames, encoding, and the misbehaviour switch.

Copied next to each stand-in script by the tests. STANDIN_MODE picks a behaviour: ok, fail (exit 1
with a traceback-like stderr), no_output (exit 0, write nothing), broken (write junk where the video
goes), short (a video half as long as the audio), hang (sleep forever with a child process, whose
pid goes to STANDIN_PIDFILE).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import cv2
import numpy as np
import soundfile

MOUTH_BGR = (20, 20, 160)  # a dark red mouth: the part a lip generator changes


def mode() -> str:
    """The behaviour asked for by the test."""
    return os.environ.get("STANDIN_MODE", "ok")


def say(text: str) -> None:
    """A progress line on stderr, like the research scripts print."""
    print(text, file=sys.stderr, flush=True)


def misbehave_early(name: str) -> None:
    """Fail or hang before any output, when asked to."""
    if mode() == "fail":
        for i in range(30):
            say(f"{name}: step {i}")
        say("Traceback (most recent call last):")
        say(f"RuntimeError: {name} stand-in: CUDA out of memory")
        sys.exit(1)
    if mode() == "hang":
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
        pidfile = os.environ.get("STANDIN_PIDFILE")
        if pidfile:
            with open(pidfile, "w") as handle:
                handle.write(str(child.pid))
        say(f"{name}: waiting for the GPU")
        time.sleep(3600)


def ffmpeg_exe(preferred: str | None = None) -> str:
    """An ffmpeg binary: the one named, else `ffmpeg` on PATH, as the research scripts call it.

    No fallback: the wrapper puts avlips's (pinned) ffmpeg first on the script's PATH, and a stand-in
    that found none would hide a wrapper that forgot to.
    """
    if preferred and (os.sep in preferred and os.path.exists(preferred) or shutil.which(preferred)):
        return preferred
    found = shutil.which("ffmpeg")
    if not found:
        raise SystemExit("stand-in: no ffmpeg on PATH")
    return found


def read_wav(path: str) -> tuple[np.ndarray, int]:
    """Mono float samples and the sample rate of a wav."""
    data, rate = soundfile.read(path, dtype="float32", always_2d=True)
    return data.mean(axis=1), rate


def load_face(path: str) -> tuple[list[np.ndarray], float]:
    """BGR frames and fps of a video, or one frame of an image (fps 25)."""
    image = cv2.imread(path, cv2.IMREAD_COLOR) if path.lower().endswith((".jpg", ".jpeg", ".png")) else None
    if image is not None:
        return [image], 25.0
    capture = cv2.VideoCapture(path)
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    if not frames:
        raise SystemExit(f"could not read any frame of {path}")
    return frames, fps


def frame_count(samples: np.ndarray, rate: int, fps: float) -> int:
    """Output frames for the audio's length; half of them in 'short' mode."""
    count = max(1, int(round(len(samples) / rate * fps)))
    return max(1, count // 2) if mode() == "short" else count


def talking(faces: list[np.ndarray], samples: np.ndarray, rate: int, fps: float, size: int | None = None):
    """Frames of the face(s) cycled, each with a mouth opened by the loudness of its audio slice."""
    hop = rate / fps
    for i in range(frame_count(samples, rate, fps)):
        frame = faces[i % len(faces)]
        if size:
            frame = cv2.resize(frame, (size, size), interpolation=cv2.INTER_AREA)
        frame = frame.copy()
        piece = samples[int(i * hop):int((i + 1) * hop)]
        loud = float(np.sqrt(np.mean(piece ** 2))) if len(piece) else 0.0
        h, w = frame.shape[:2]
        opening = max(2, int(h * (0.04 + min(loud, 0.5) * 0.2)))
        cv2.ellipse(frame, (w // 2, int(h * 0.75)), (w // 6, opening), 0, 0, 360, MOUTH_BGR, -1)
        yield frame


def skip_or_break(path: str) -> bool:
    """In no_output and broken modes, write nothing or junk at `path` instead of the output; True if so."""
    if mode() == "no_output":
        say("stand-in: skipping the output")
        return True
    if mode() == "broken":
        with open(path, "wb") as handle:
            handle.write(b"\x00\x00\x00\x18ftypmp42" + os.urandom(2000))
        say(f"stand-in: wrote a broken {path}")
        return True
    return False


def mux(video: str, audio: str, path: str, ffmpeg: str | None = None) -> None:
    """The final step of most scripts: `video` with `audio` to `path` (misbehaving when asked)."""
    if skip_or_break(path):
        return
    subprocess.check_call([ffmpeg_exe(ffmpeg), "-y", "-loglevel", "error", "-i", video, "-i", audio,
                           "-c:v", "copy", "-c:a", "aac", path])
    say(f"stand-in: wrote {path}")


def encode(path: str, frames, fps: float, audio: str | None = None, ffmpeg: str | None = None,
           misbehave: bool = True) -> None:
    """Write BGR frames as an H.264 mp4 (with an audio track when given) through ffmpeg.

    With misbehave (the script's final output), no_output and broken modes apply; intermediate files
    are written with misbehave=False.
    """
    if misbehave and skip_or_break(path):
        return
    frames = iter(frames)
    first = next(frames)
    h, w = first.shape[:2]
    args = [ffmpeg_exe(ffmpeg), "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "bgr24",
            "-s", f"{w}x{h}", "-r", str(fps), "-i", "-"]
    if audio:
        args += ["-i", audio, "-c:a", "aac"]
    args += ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", path]
    process = subprocess.Popen(args, stdin=subprocess.PIPE)
    process.stdin.write(first.tobytes())
    for frame in frames:
        process.stdin.write(frame.tobytes())
    process.stdin.close()
    if process.wait() != 0:
        raise SystemExit(f"ffmpeg failed writing {path}")
    say(f"stand-in: wrote {path}")
