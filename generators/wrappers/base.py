"""Shared machinery for generators that run a research checkout's own script in its own environment.

A wrapper never imports the checkout: it runs `<python> <script> <args>` as a child process with an
argument list (never a shell string), the checkout (or a private overlay of it) as working directory,
and its own process group so a timeout can kill everything the script started. Each job gets a
private scratch directory; the driving audio is handed over as a 16 kHz mono PCM wav, a rotated or
odd-sized target video as an upright even-sized copy (old OpenCV ignores rotation). The script's
output is found, checked (decodable, duration close to the driving audio), post-processed where
needed and muxed with the driving audio to the requested path, which is written under a temporary
name and renamed, so a failed job never leaves a half-written fake behind.

Overlays: a checkout that writes fixed scratch paths (Wav2Lip's, LatentSync's and VideoRetalking's
`temp/`, MakeItTalk's `examples/` and `out.mp4`, IP_LAP's `tempfile_of_<name>/`) is run in a directory
of symlinks to the checkout's top-level entries, with the colliding entries replaced by fresh private
directories (or left out, for files the script creates); the script sees its whole checkout, two jobs
never share scratch, and the checkout itself is never written to. Files the script reads at run time
besides its checkpoints (runtime_files) are checked before any job, so a missing one makes the wrapper
not ready instead of failing every fake.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from avlips.generators.base import (
    VIDEO,
    DrivingAudio,
    GenerationResult,
    GeneratorError,
    GeneratorNotReady,
    LipGenerator,
    Readiness,
    Target,
)
from avlips.media.errors import MediaError
from avlips.media.audio_decode import read_audio
from avlips.media.encode import mux_audio, write_wav
from avlips.media.ffmpeg_binary import ffmpeg_exe
from avlips.media.probe import VideoInfo, probe

AUDIO_RATE = 16000  # every wrapped script expects (or resamples to) 16 kHz mono speech
TAIL_LINES = 20  # lines of the script's stderr quoted in a GeneratorError
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
# Variables of our own environment that would point an old checkout interpreter at our packages.
_SCRUBBED_ENV = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV", "PYTHONSAFEPATH")

# How a per-job option maps to the script's command line: a flag without value, one value, several.
FLAG, VALUE, VALUES = "flag", "value", "values"
# Per-job keys the synthesize stage sends to every generator: recorded in provenance, never turned into
# option flags (a wrapper whose script takes a seed, like LatentSync's, passes it in its command()).
PIPELINE_KEYS = ("seed",)


@dataclass
class Job:
    """One generation in progress: its private scratch space and the files handed to the script."""

    scratch: Path  # private to this job, removed afterwards
    workdir: Path  # where the script runs: the checkout or a private overlay of it
    audio: Path  # the driving audio as 16 kHz mono PCM wav
    audio_seconds: float
    target: Target
    driving: DrivingAudio
    params: dict
    extra: dict = field(default_factory=dict)  # wrapper-specific facts (output names, result dirs)


class ExternalCheckoutGenerator(LipGenerator):
    """Base of wrappers around a research checkout's script; subclasses say how to call it.

    Settings (params.yaml `synthesize.generators.<name>`): `checkout` (directory), `python` (the
    checkout's interpreter: a name on PATH, a path, or an argv prefix list such as
    `[conda, run, -n, wav2lip, python]`; relative paths are taken from the checkout), `extra_args`
    (appended to every command), `env` (extra environment variables), `timeout_s`,
    `duration_tolerance_s`, `scratch_dir` (where job scratch lives; default the system temp dir),
    `keep_scratch` (leave it for debugging), `required_files` (more files that must exist, relative
    to the checkout), plus each wrapper's checkpoint settings.
    """

    version = "external"
    input_kind = VIDEO
    script: str = ""  # the checkout's script, relative to the checkout
    options: dict[str, str] = {}  # per-job params the script accepts: name -> FLAG / VALUE / VALUES
    default_timeout_s: float = 3600.0
    default_tolerance_s: float = 0.5
    target_fps: float | None = None  # a script that only works at one frame rate gets the target converted

    def __init__(self, **settings: Any) -> None:
        super().__init__(**settings)
        self.checkout = Path(str(settings.get("checkout") or "")).expanduser()
        self.python = settings.get("python") or "python"
        self.extra_args = [str(a) for a in settings.get("extra_args") or []]
        self.env = {str(k): str(v) for k, v in (settings.get("env") or {}).items()}
        self.timeout_s = float(settings.get("timeout_s") or self.default_timeout_s)
        tolerance = settings.get("duration_tolerance_s")
        self.duration_tolerance_s = float(self.default_tolerance_s if tolerance is None else tolerance)
        self.scratch_dir = settings.get("scratch_dir") or None
        self.keep_scratch = bool(settings.get("keep_scratch", False))
        self.required_files = [str(p) for p in settings.get("required_files") or []]

    # ---- what a subclass provides -------------------------------------------------------------

    def checkpoints(self) -> list[tuple[str, Path | None]]:
        """(label, path) of every checkpoint file or directory the script needs; None = not configured."""
        return []

    def runtime_files(self) -> list[tuple[Path, str]]:
        """(path, what reads it) of the other files the script loads from its checkout at run time.

        Without them the script would crash mid-job (or download them into the checkout, where
        parallel jobs race); check() names the first one missing, so no fake is attempted.
        """
        return []

    def launch(self) -> list[str]:
        """How the interpreter starts the script: its path, or `-m module` for one run as a module."""
        return [self.script]

    def prepare(self, job: Job) -> None:
        """Convert the target into what the script reads, and set up the job's workdir contents."""

    def command(self, job: Job) -> list[str]:
        """The script's arguments (after the script name) for this job."""
        raise NotImplementedError

    def find_output(self, job: Job) -> Path:
        """The video the script wrote for this job; raise GeneratorError when there is none."""
        raise NotImplementedError

    def finish(self, job: Job, raw: Path, info: VideoInfo, out_path: Path) -> None:
        """Turn the script's validated output into the final fake: by default, its video with our audio."""
        mux_audio(raw, job.audio, out_path)

    def needs_overlay(self) -> bool:
        """Whether the script runs in a private overlay: it does when it writes fixed paths inside its checkout,
        which a wrapper states by naming them in `overlay_private` or `overlay_excluded`."""
        return bool(self.overlay_private() or self.overlay_excluded())

    def overlay_private(self) -> tuple[str, ...]:
        """Top-level checkout entries replaced by fresh private directories in the overlay."""
        return ()

    def overlay_excluded(self) -> tuple[str, ...]:
        """Top-level names left out of the overlay: files the script creates in its working directory
        (a leftover of the same name in the checkout would be written through its link)."""
        return ()

    # ---- readiness ------------------------------------------------------------------------------

    def resolve(self, path: str | os.PathLike | None) -> Path | None:
        """A setting's path, relative ones taken from the checkout; None when unset."""
        if path is None or str(path) == "":
            return None
        path = Path(str(path)).expanduser()
        return path if path.is_absolute() else self.checkout / path

    def interpreter(self) -> list[str] | None:
        """The interpreter argv prefix with its program resolved, or None when it cannot be found."""
        argv = [str(a) for a in (self.python if isinstance(self.python, (list, tuple)) else [self.python])]
        if not argv or not argv[0]:
            return None
        program = argv[0]
        if os.sep in program or (os.altsep and os.altsep in program):
            resolved = self.resolve(program)
            found = str(resolved) if resolved is not None and resolved.is_file() and os.access(resolved, os.X_OK) else None
        else:
            found = shutil.which(program)
        return [found, *argv[1:]] if found else None

    def check(self) -> Readiness:
        """Ready only when the checkout, its script, the interpreter and every checkpoint exist."""
        if not str(self.settings.get("checkout") or ""):
            return Readiness(False, f"{self.name}: setting 'checkout' is not set")
        if not self.checkout.is_dir():
            return Readiness(False, f"{self.name}: checkout {self.checkout} not found")
        if not (self.checkout / self.script).is_file():
            return Readiness(False, f"{self.name}: script {self.script} not found in checkout {self.checkout}")
        if self.interpreter() is None:
            return Readiness(False, f"{self.name}: interpreter {self.python!r} not found")
        for label, path in self.checkpoints():
            if path is None:
                return Readiness(False, f"{self.name}: setting {label!r} is not set")
            if not path.exists():
                return Readiness(False, f"{self.name}: {label} {path} not found")
        for path, why in self.runtime_files():
            if not path.exists():
                return Readiness(False, f"{self.name}: {path} not found ({why})")
        for extra in self.required_files:
            path = self.resolve(extra)
            if path is None or not path.exists():
                return Readiness(False, f"{self.name}: required file {path} not found")
        return Readiness(True)

    # ---- running a job --------------------------------------------------------------------------

    def generate(self, target: Target, driving: DrivingAudio, out_path: str | Path,
                 params: dict | None = None) -> GenerationResult:
        """Run the checkout's script on `target` and `driving`; write the fake (with the driving audio) to out_path."""
        started = time.perf_counter()
        state = self.check()
        if not state.ready:
            raise GeneratorNotReady(state.reason)
        params = dict(params or {})
        option_args = self.option_args(params)  # reject unknown options before any work
        out_path = Path(out_path)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f"avlips-{self.name or 'wrapper'}-", dir=self.scratch_dir))
        try:
            job = self._new_job(scratch, target, driving, params)
            self.prepare(job)
            args = [*self.interpreter(), *self.launch(), *self.command(job), *option_args, *self.extra_args]
            stderr_tail = self._run(args, job)
            raw = self.find_output(job)
            info = self._validate(raw, job, stderr_tail)
            # ffmpeg writes in place: a failure half-way must leave nothing under the final name.
            partial = out_path.with_name(f".{out_path.stem}.partial-{scratch.name}{out_path.suffix}")
            try:
                self.finish(job, raw, info, partial)
                final = probe(partial)
                os.replace(partial, out_path)
            except MediaError as exc:
                raise GeneratorError(f"{self.name}: could not finish the output {raw.name}: {exc}") from exc
            finally:
                partial.unlink(missing_ok=True)
        finally:
            if not self.keep_scratch:
                shutil.rmtree(scratch, ignore_errors=True)
        return GenerationResult(
            path=str(out_path), generator=self.name, version=self.version,
            params=self.provenance_params(params), seconds=self.timed(started),
            frames=final.frames, fps=round(final.fps, 3),
            extra={"script": self.script, "raw_fps": round(info.fps, 3), "raw_frames": info.frames,
                   "raw_size": [info.width, info.height]},
        )

    def option_args(self, params: dict) -> list[str]:
        """Per-job params as the script's optional flags; pipeline keys are skipped, unknown names are an error."""
        args: list[str] = []
        for key in sorted(params):
            if key in PIPELINE_KEYS:
                continue
            kind = self.options.get(key)
            if kind is None:
                known = ", ".join(sorted(self.options)) or "none"
                raise GeneratorError(f"{self.name}: unknown option {key!r} (known: {known})")
            value = params[key]
            if kind == FLAG:
                if value:
                    args.append(f"--{key}")
            elif kind == VALUES:
                args += [f"--{key}", *(str(v) for v in value)]
            else:
                args += [f"--{key}", str(value)]
        return args

    def provenance_params(self, params: dict) -> dict:
        """What decides the fake's look: checkpoint names, extra args and per-job options (no machine paths)."""
        record: dict[str, Any] = {"script": self.script, "extra_args": list(self.extra_args)}
        for label, path in self.checkpoints():
            record[label] = path.name if path is not None else None
        record.update(params)
        return record

    def _new_job(self, scratch: Path, target: Target, driving: DrivingAudio, params: dict) -> Job:
        """Scratch layout, the 16 kHz mono wav of the driving audio and the workdir."""
        inputs = scratch / "in"
        inputs.mkdir()
        try:
            samples = read_audio(driving.path, AUDIO_RATE, mono=True)
        except MediaError as exc:
            raise GeneratorError(f"{self.name}: driving audio unusable: {exc}") from exc
        audio = inputs / "audio.wav"
        write_wav(audio, samples, AUDIO_RATE)
        if Path(target.path).suffix.lower() not in IMAGE_SUFFIXES:
            ready = video_for_script(Path(target.path), inputs / "target.mp4", self.target_fps, self.name)
            target = dataclasses.replace(target, path=str(ready))
        workdir = self.checkout.resolve()
        if self.needs_overlay():
            workdir = make_overlay(self.checkout.resolve(), scratch / "checkout", self.overlay_private(),
                                   self.overlay_excluded())
        return Job(scratch=scratch, workdir=workdir, audio=audio, audio_seconds=len(samples) / AUDIO_RATE,
                   target=target, driving=driving, params=params)

    def _environment(self, job: Job | None = None) -> dict[str, str]:
        """Our environment minus what would leak our packages into the checkout's interpreter, plus `env`;
        for a job, avlips's ffmpeg first on PATH."""
        env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED_ENV}
        env["PYTHONUNBUFFERED"] = "1"  # so the stderr tail is complete when the script dies
        env.update(self.env)
        if job is not None:
            env["PATH"] = str(ffmpeg_folder(job.scratch)) + os.pathsep + env.get("PATH", "")
        return env

    def _run(self, args: list[str], job: Job) -> str:
        """Run the script in its own process group; a timeout or non-zero exit is a GeneratorError."""
        stdout_path, stderr_path = job.scratch / "stdout.log", job.scratch / "stderr.log"
        # Logs go to files, not pipes: a chatty script can never block on a full pipe.
        with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
            try:
                process = subprocess.Popen(args, cwd=str(job.workdir), stdin=subprocess.DEVNULL, stdout=out,
                                           stderr=err, env=self._environment(job), start_new_session=True)
            except OSError as exc:
                raise GeneratorError(f"{self.name}: could not start {args[0]}: {exc}") from exc
            try:
                code = process.wait(timeout=self.timeout_s)
            except subprocess.TimeoutExpired:
                _kill_group(process)
                raise GeneratorError(f"{self.name}: {self.script} timed out after {self.timeout_s:g} s; "
                                     f"stderr tail:\n{tail(stderr_path, stdout_path)}") from None
            except BaseException:
                _kill_group(process)  # interrupted: leave no orphaned GPU jobs behind
                raise
            # The script may have left children running (ffmpeg, workers): they die with it.
            _kill_group(process, wait=False)
        stderr_tail = tail(stderr_path, stdout_path)
        if code != 0:
            raise GeneratorError(f"{self.name}: {self.script} exited with code {code}; stderr tail:\n{stderr_tail}")
        job.extra["stderr_tail"] = stderr_tail
        return stderr_tail

    def _validate(self, raw: Path, job: Job, stderr_tail: str) -> VideoInfo:
        """The script's output must decode and last about as long as the driving audio."""
        try:
            info = probe(raw)
        except MediaError as exc:
            raise GeneratorError(f"{self.name}: output {raw.name} is broken: {exc.problem}; "
                                 f"stderr tail:\n{stderr_tail}") from exc
        gap = abs(info.duration - job.audio_seconds)
        if gap > self.duration_tolerance_s:
            raise GeneratorError(
                f"{self.name}: output {raw.name} lasts {info.duration:.2f} s, the driving audio "
                f"{job.audio_seconds:.2f} s (tolerance {self.duration_tolerance_s:g} s); stderr tail:\n{stderr_tail}")
        return info

    def missing_output(self, job: Job, expected: str) -> GeneratorError:
        """The error for a script that exited 0 without writing its output."""
        return GeneratorError(f"{self.name}: {self.script} wrote no output ({expected}); "
                              f"stderr tail:\n{job.extra.get('stderr_tail', '')}")


def _kill_group(process: subprocess.Popen, wait: bool = True) -> None:
    """SIGKILL the process group started for the script (the script and everything it spawned)."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if wait:
        process.wait()


def tail(stderr_path: Path, stdout_path: Path | None = None, lines: int = TAIL_LINES) -> str:
    """The last `lines` lines of the script's stderr (its stdout when stderr is empty)."""
    for path, label in ((stderr_path, ""), (stdout_path, "(stderr empty; stdout) ")):
        if path is None or not path.exists():
            continue
        with open(path, "rb") as handle:
            handle.seek(max(0, os.path.getsize(path) - 64 * 1024))  # enough for 20 long lines
            text = handle.read().decode("utf-8", errors="replace")
        kept = [line for line in text.splitlines() if line.strip()][-lines:]
        if kept:
            return label + "\n".join(kept)
    return "(no output on stderr or stdout)"


def ffmpeg_folder(scratch: Path) -> Path:
    """A folder in the job's scratch holding only `ffmpeg`, a link to the binary avlips encodes with.

    First on the script's PATH, it serves the scripts' own `ffmpeg` calls (Wav2Lip's and MakeItTalk's
    audio conversion and final encode): their output bytes then depend on the pinned build too.
    """
    folder = scratch / "ffmpeg-bin"
    if not folder.is_dir():
        folder.mkdir()
        os.symlink(ffmpeg_exe(), folder / "ffmpeg")
    return folder


def make_overlay(checkout: Path, overlay: Path, private: Sequence[str], excluded: Sequence[str] = ()) -> Path:
    """A directory of symlinks to the checkout's top-level entries; `private` names become fresh empty dirs,
    `excluded` names are left out (the script creates them itself)."""
    overlay.mkdir(parents=True)
    for entry in checkout.iterdir():
        if entry.name in private or entry.name in excluded:
            continue
        os.symlink(entry, overlay / entry.name, target_is_directory=entry.is_dir())
    for name in private:
        (overlay / name).mkdir()
    return overlay


def link_input(job: Job, stem: str) -> Path:
    """The target under a fixed name in the job's inputs (a link), for scripts that name outputs after it."""
    source = Path(job.target.path).resolve()
    link = job.scratch / "in" / f"{stem}{source.suffix.lower()}"
    if link != source:
        os.symlink(source, link)
    return link


def video_for_script(source: Path, dest: Path, fps: float | None = None, label: str = "wrapper") -> Path:
    """`source` itself, or when a research script could not read it as shown, an upright even-sized copy at `dest`.

    The checkouts read frames with old OpenCV builds that ignore rotation metadata (a phone clip would be
    processed lying on its side) and encode with H.264 4:2:0, which refuses odd sizes; `fps` converts the
    frame rate too (frames dropped or repeated, no blending). Odd sizes gain one edge row or column, as
    media.encode does for every video it writes.
    """
    try:
        info = probe(source)
    except MediaError as exc:
        raise GeneratorError(f"{label}: target video unusable: {exc}") from exc
    pad_w, pad_h = info.width % 2, info.height % 2
    new_fps = bool(fps) and abs(info.fps - float(fps)) > 0.01
    if not (info.rotation or pad_w or pad_h or new_fps):
        return source
    filters = [f"fps={fps}"] if new_fps else []
    if pad_w or pad_h:  # ffmpeg has applied the rotation before these filters (autorotate)
        filters.append(f"pad={info.width + pad_w}:{info.height + pad_h},"
                       f"fillborders=right={pad_w}:bottom={pad_h}:mode=smear")
    args = [ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-y", "-i", str(source)]
    args += ["-vf", ",".join(filters)] if filters else []
    args += ["-c:v", "libx264", "-crf", "12", "-pix_fmt", "yuv420p", "-c:a", "aac", str(dest)]
    done = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True)
    if done.returncode != 0:
        lines = done.stderr.decode(errors="replace").strip().splitlines()[-5:]
        raise GeneratorError(f"{label}: could not convert {source} for the script: " + " | ".join(lines))
    return dest


def still_image(target: Target, dest: Path, frame: int = 0, size: int | None = None) -> Path:
    """A still of the target as an image file at `dest` (the format follows its suffix).

    An image target is read as it is; a video target gives its frame `frame`. With `size`, the still
    is centre-cropped to a square and resized to size x size (for scripts that expect a fixed size).
    """
    import cv2

    source = Path(target.path)
    if source.suffix.lower() in IMAGE_SUFFIXES:
        bgr = cv2.imread(str(source), cv2.IMREAD_COLOR)
        if bgr is None:
            raise GeneratorError(f"target image {source} cannot be read")
    else:
        from avlips.media.frames import read_frames

        try:
            count = probe(source).frames
            rgb = read_frames(source, [min(max(frame, 0), count - 1)])[0]
        except MediaError as exc:
            raise GeneratorError(f"target video unusable: {exc}") from exc
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    if size:
        h, w = bgr.shape[:2]
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        bgr = cv2.resize(bgr[top:top + side, left:left + side], (size, size), interpolation=cv2.INTER_AREA)
    params = [cv2.IMWRITE_JPEG_QUALITY, 95] if dest.suffix.lower() in (".jpg", ".jpeg") else []
    if not cv2.imwrite(str(dest), np.ascontiguousarray(bgr), params):
        raise GeneratorError(f"could not write the still image {dest}")
    return dest
