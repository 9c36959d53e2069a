"""An example avlips generator plugin: the target's still, held for the length of the driving speech.

A static (IMAGE) generator, like MakeItTalk or SadTalker in shape: it gets one frame of the target
and the driving speech, and writes an mp4 at a fixed frame rate. It imports only avlips'
`generators.base` and `media`, as any plugin should.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from avlips.generators.base import IMAGE, DrivingAudio, GenerationResult, LipGenerator, Readiness, Target


class ExampleStill(LipGenerator):
    """The still image repeated at `fps` for the driving audio's duration, with that audio."""

    name = "example_still"
    version = "0.1"
    input_kind = IMAGE
    needs_face = True

    def __init__(self, fps: float = 25.0, weights: str = "", **settings) -> None:
        super().__init__(fps=fps, weights=weights, **settings)
        self.fps = float(fps)
        self.weights = weights

    def check(self) -> Readiness:
        """Ready unless a `weights` file is named and missing (as a real plugin checks its checkpoint)."""
        if self.weights and not os.path.isfile(self.weights):
            return Readiness(False, f"weights not found: {self.weights}")
        return Readiness(True)

    def generate(self, target: Target, driving: DrivingAudio, out_path: str | Path,
                 params: dict | None = None) -> GenerationResult:
        """Write the held still with the driving speech."""
        import cv2

        from avlips.media.audio_decode import read_audio
        from avlips.media.encode import write_video

        started = time.perf_counter()
        still = cv2.cvtColor(cv2.imread(target.path, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        audio = read_audio(driving.path, driving.sample_rate)
        frames = max(1, int(round(len(audio) / driving.sample_rate * self.fps)))
        write_video(out_path, (still for _ in range(frames)), self.fps, audio, driving.sample_rate)
        return GenerationResult(path=str(out_path), generator=self.name, version=self.version,
                                params={"fps": self.fps, **(params or {})}, seconds=self.timed(started),
                                frames=frames, fps=self.fps, extra={"still_shape": list(np.shape(still))})
