"""The `audio_swap` generator: the target's frames untouched, with another person's speech.

The cheapest fake there is, and the one LipFD must catch on sync alone: nothing in any frame is
altered, only the audio no longer belongs to the lips. The driving speech is trimmed, or looped,
to the target's length; an H.264 target keeps its video stream bit for bit (stream copy), any
other codec is re-encoded to H.264 at the target's frame rate.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from avlips.generators.base import VIDEO, DrivingAudio, GenerationResult, GeneratorError, LipGenerator, Target

FITS = ("loop", "pad")  # how speech shorter than the target is extended: repeat it, or silence after it


def fit_audio(audio: np.ndarray, samples: int, fit: str = "loop") -> np.ndarray:
    """`audio` trimmed to `samples`, or extended by looping it (fit='loop') or by silence (fit='pad')."""
    if fit not in FITS:
        raise ValueError(f"fit must be one of {FITS}, got {fit!r}")
    if samples <= 0:
        return np.zeros(0, dtype=np.float32)
    if len(audio) == 0:
        raise ValueError("no audio samples to fit")
    if len(audio) >= samples:
        return np.ascontiguousarray(audio[:samples], dtype=np.float32)
    if fit == "pad":
        return np.concatenate([audio, np.zeros(samples - len(audio), dtype=np.float32)]).astype(np.float32)
    repeats = -(-samples // len(audio))  # ceiling division
    return np.tile(audio, repeats)[:samples].astype(np.float32)


class AudioSwap(LipGenerator):
    """Target frames unchanged, driving speech trimmed or looped to the target's length."""

    name = "audio_swap"
    version = "1"
    input_kind = VIDEO
    needs_face = False  # the frames are not touched, so a face is not needed

    def __init__(self, fit: str = "loop", sample_rate: int = 16000, **settings: Any) -> None:
        super().__init__(fit=fit, sample_rate=sample_rate, **settings)
        if fit not in FITS:
            raise ValueError(f"audio_swap: fit must be one of {FITS}, got {fit!r}")
        self.fit = fit
        self.sample_rate = int(sample_rate)

    def generate(self, target: Target, driving: DrivingAudio, out_path: str | Path,
                 params: dict | None = None) -> GenerationResult:
        """Write the target's video with the driving speech as its only audio track."""
        from avlips.media.audio_decode import read_audio
        from avlips.media.encode import mux_audio, write_video
        from avlips.media.frames import iter_frames
        from avlips.media.probe import probe

        started = time.perf_counter()
        run = {"fit": self.fit, "sample_rate": self.sample_rate, **(params or {})}
        rate = int(run["sample_rate"])
        # Media errors (unreadable target, no audio...) propagate: their class names the failure.
        info = probe(target.video_path or target.path)
        speech = read_audio(driving.path, rate, mono=True)
        if len(speech) == 0:
            raise GeneratorError(f"audio_swap: {driving.path}: driving audio has no samples")
        # The video's own length decides: the fake must be neither longer nor shorter than its frames.
        samples = int(round(info.duration * rate))
        audio = fit_audio(speech, samples, str(run["fit"]))
        if info.codec == "h264":
            mux_audio(info.path, audio, out_path, sample_rate=rate)
            video = "copy"
        else:
            write_video(out_path, iter_frames(info.path), info.fps, audio, rate)
            video = "h264"
        return GenerationResult(
            path=str(out_path), generator=self.name, version=self.version, params=run,
            seconds=self.timed(started), frames=info.frames, fps=info.fps,
            extra={"video": video, "driving_seconds": round(len(speech) / rate, 3)},
        )
