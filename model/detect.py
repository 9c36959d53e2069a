"""Score one video: its LipFD windows, each window's probability of being a lip-sync fake, a verdict."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from avlips.media.errors import MediaError, NoFace, TooShort
from avlips.media.render import render_sample
from avlips.media.windows import WindowConfig, WindowFailure, iter_windows
from avlips.model.evaluate import Detector, load_detector
from avlips.model.loader import composite_inputs


@dataclass
class Detection:
    """The verdict on one video and the scores behind it."""

    video: str
    audio: str
    probability: float  # mean of the window scores
    verdict: str  # "fake" or "real"
    threshold: float
    windows: list[dict] = field(default_factory=list)  # key, start/end time, score
    skipped: list[dict] = field(default_factory=list)  # windows that could not be made, and why
    model: str = ""

    def to_dict(self) -> dict:
        """Plain dict for --json."""
        return {"video": self.video, "audio": self.audio, "probability_fake": self.probability,
                "verdict": self.verdict, "threshold": self.threshold, "windows": self.windows,
                "skipped_windows": self.skipped, "model": self.model}


def _face_present(video: str) -> bool:
    """Whether a face shows in the middle frame (decides face crops against whole frames)."""
    from avlips.media.faces import detect_face
    from avlips.media.frames import read_frames
    from avlips.media.probe import probe

    info = probe(video)
    return detect_face(read_frames(video, [info.frames // 2])[0]) is not None


@torch.no_grad()
def detect(video: str, audio: str | None = None, checkpoint: str = "models/lipfd.pt",
           window: WindowConfig | None = None, centred: bool | None = None, threshold: float = 0.5,
           detector: Detector | None = None, batch_size: int = 8) -> Detection:
    """Compose the video's windows as the dataset does, score them, and average."""
    detector = detector or load_detector(checkpoint)
    window = window or WindowConfig()
    if centred is None:
        # A face found in the frame means a wide shot: crop around it as compose does for such sources.
        centred = False
        if not _face_present(video):
            raise NoFace(video, "no face found in the middle frame; pass --centred if the video is a face crop")
    stem = Path(video).stem
    keys = [f"detect_w{i:02d}" for i in range(window.n_windows)]
    windows, skipped, composites = [], [], []
    for item in iter_windows(video, audio or "", keys, window, centred, 0, {"clip": stem}):
        if isinstance(item, WindowFailure):
            skipped.append({"key": item.key, "error": type(item.error).__name__, "message": str(item.error)})
            continue
        composites.append(render_sample(item))
        windows.append({"key": item.key, "start_time": item.meta["start_time"], "end_time": item.meta["end_time"]})
    if not windows:
        reasons = "; ".join(sorted({s["message"] for s in skipped})) or "no window"
        raise TooShort(video, f"no usable window ({reasons})")
    config = detector.loader_config(batch_size)
    scores: list[float] = []
    for first in range(0, len(composites), batch_size):
        batch = torch.from_numpy(np.stack(composites[first:first + batch_size]))
        global_input, crops = composite_inputs(batch, config, detector.device)
        scores += torch.sigmoid(detector.model(global_input, crops).logit.float()).cpu().tolist()
    for entry, score in zip(windows, scores):
        entry["score"] = float(score)
    probability = float(np.mean(scores))
    return Detection(video=video, audio=audio or video, probability=probability,
                     verdict="fake" if probability >= threshold else "real", threshold=threshold,
                     windows=windows, skipped=skipped, model=f"{checkpoint} ({detector.source})")


def format_detection(result: Detection) -> str:
    """Per-window scores, the clip's fake probability and the verdict, for a terminal."""
    lines = [f"{result.video}", f"{'window':12s} {'time (s)':>14s} {'P(fake)':>8s}"]
    for entry in result.windows:
        lines.append(f"{entry['key']:12s} {entry['start_time']:6.2f}-{entry['end_time']:6.2f} {entry['score']:8.3f}")
    for entry in result.skipped:
        lines.append(f"{entry['key']:12s} skipped: {entry['message']}")
    lines.append(f"clip probability of fake: {result.probability:.3f} -> {result.verdict.upper()} "
                 f"(threshold {result.threshold})")
    return "\n".join(lines)


__all__ = ["Detection", "detect", "format_detection", "MediaError"]
