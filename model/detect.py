"""Score one video with a detector: its windows (made as compose makes them, audio included), each
window's probability of being a lip-sync fake, a verdict, and what the model was trained on."""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from avlips.media.errors import MediaError, NoFace, TooShort
from avlips.media.windows import WindowConfig, WindowFailure, iter_windows
from avlips.model.detectors import Detector, DetectorError

# Numbers of a window's details worth a column: a sync detector's offset search.
SYNC_COLUMNS = ("best_offset", "confidence", "dist_at_0", "offsets_available")


@dataclass
class Detection:
    """The verdict on one video and the scores behind it."""

    video: str
    audio: str
    probability: float | None  # mean over the windows that were scored; None when every window abstained
    verdict: str  # "fake", "real", or "none" (every window abstained)
    threshold: float
    windows: list[dict] = field(default_factory=list)  # key, start/end time, score (None: abstained), reason, offsets
    skipped: list[dict] = field(default_factory=list)  # windows that could not be made, and why
    model: str = ""
    detector: str = "lipfd"
    provenance: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # what the scores do not mean (a model trained on synthetic data)
    audio_denoised: bool = False  # the audio went through the dataset's denoiser first (as compose's input did)

    def to_dict(self) -> dict:
        """Plain dict for --json."""
        return {"video": self.video, "audio": self.audio, "detector": self.detector,
                "probability_fake": self.probability, "verdict": self.verdict, "threshold": self.threshold,
                "windows": self.windows, "skipped_windows": self.skipped, "model": self.model,
                "provenance": self.provenance, "warnings": self.warnings, "audio_denoised": self.audio_denoised}


def _face_present(video: str) -> bool:
    """Whether a face shows in the middle frame (decides face crops against whole frames)."""
    from avlips.media.faces import detect_face
    from avlips.media.frames import read_frames
    from avlips.media.probe import probe

    info = probe(video)
    return detect_face(read_frames(video, [info.frames // 2])[0]) is not None


def denoised_audio(source: str, settings, directory: str) -> str | None:
    """`source`'s audio through the denoise stage's own steps and settings, as a wav in `directory`.

    The detectors learnt from windows whose audio the denoise stage had cleaned (real and fake alike);
    scoring a raw track puts them on audio unlike anything they saw (the demo's sync expert called a
    real clip's raw track 0.40 fake). None when the track is silent or too short to hold speech: there is
    nothing to clean, and the windows say so themselves (a sync detector abstains).
    """
    from avlips.media.audio_decode import read_audio
    from avlips.media.denoise import SilentAudio, check_speech_audio, denoise, wav_bytes

    rate = settings.sample_rate
    audio = read_audio(source, rate, mono=True)
    try:
        check_speech_audio(audio, rate, source)
    except (SilentAudio, TooShort):
        return None
    path = os.path.join(directory, "denoised.wav")
    with open(path, "wb") as handle:
        handle.write(wav_bytes(denoise(audio, rate, settings), rate))
    return path


def _sync_numbers(details: Mapping) -> dict:
    """The offset-search numbers of a window's details: the sync detector's own, or its part in a combination."""
    numbers = {k: details[k] for k in SYNC_COLUMNS if k in details}
    for member in (details.get("members") or {}).values():
        if not numbers and isinstance(member, Mapping):
            numbers = {k: member[k] for k in SYNC_COLUMNS if k in member}
    return numbers


def build_detector(name: str, params: Mapping | None = None, checkpoint: str | None = None,
                   batch_size: int | None = None) -> Detector:
    """The named detector with its params.yaml settings; `checkpoint` (and `batch_size`) override LipFD's."""
    from avlips.model.detector_set import build_detectors

    lipfd = {k: v for k, v in (("model", checkpoint), ("batch_size", batch_size)) if v}
    detector = build_detectors([name], params or {}, {"lipfd": lipfd} if lipfd else None)[name]
    readiness = detector.readiness()
    if not readiness.ready:
        raise DetectorError(f"detector {name!r} is not ready: {readiness.reason}")
    return detector


def detect(video: str, audio: str | None = None, checkpoint: str | None = None,
           window: WindowConfig | None = None, centred: bool | None = None, threshold: float = 0.5,
           detector: Detector | str = "lipfd", batch_size: int | None = None,
           params: Mapping | None = None, denoise=None) -> Detection:
    """Compose the video's windows as the dataset does (frames, mel and audio with context), score them, average.

    `detector`: a built detector, or the name of one to build from `params` (`detectors.<name>`);
    `checkpoint` is LipFD's weights (over `detectors.lipfd.model`). `denoise`: the denoiser's settings
    (`avlips.media.denoise.DenoiseSettings`) to clean the audio with first, as the dataset's audio was;
    None scores the track as it is.
    """
    if isinstance(detector, str):
        detector = build_detector(detector, params, checkpoint, batch_size)
    window = window or WindowConfig()
    if centred is None:
        # A face found in the frame means a wide shot: crop around it as compose does for such sources.
        centred = False
        if not _face_present(video):
            raise NoFace(video, "no face found in the middle frame; pass --centred if the video is a face crop")
    keys = [f"detect_w{i:02d}" for i in range(window.n_windows)]
    samples, skipped = [], []
    with tempfile.TemporaryDirectory(prefix="avlips-detect-") as scratch:
        cleaned = denoised_audio(audio or video, denoise, scratch) if denoise is not None else None
        for item in iter_windows(video, cleaned or audio or "", keys, window, centred, 0, {"clip": "detect"}):
            if isinstance(item, WindowFailure):
                skipped.append({"key": item.key, "error": type(item.error).__name__, "message": str(item.error)})
            else:
                samples.append(item)
    if not samples:
        reasons = "; ".join(sorted({s["message"] for s in skipped})) or "no window"
        raise TooShort(video, f"no usable window ({reasons})")
    for sample in samples:
        detector.check_fields(sample, video)
    windows = []
    for sample, score in zip(samples, detector.score(samples)):
        entry = {"key": sample.key, "start_time": sample.meta["start_time"], "end_time": sample.meta["end_time"],
                 "score": score.probability, **_sync_numbers(score.details)}
        if score.abstained:
            entry["abstained"] = score.abstain_reason
        # A combination that scored without one of its members says which one abstained, and why.
        members = {name: m.get("abstain_reason") for name, m in (score.details.get("members") or {}).items()
                   if isinstance(m, Mapping) and m.get("abstain_reason")}
        if members and not score.abstained:
            entry["members_abstained"] = members
        windows.append(entry)
    scored = [w["score"] for w in windows if w["score"] is not None]
    probability = float(np.mean(scored)) if scored else None
    verdict = "none" if probability is None else ("fake" if probability >= threshold else "real")
    provenance = detector.provenance()
    from avlips.model.provenance import provenance_warnings

    return Detection(video=video, audio=audio or video, probability=probability, verdict=verdict, threshold=threshold,
                     windows=windows, skipped=skipped, model=detector.readiness().reason, detector=detector.name,
                     provenance=provenance, warnings=provenance_warnings(provenance), audio_denoised=cleaned is not None)


def _cell(value, width: int, digits: int = 3) -> str:
    if value is None:
        return "-".rjust(width)
    return (f"{value:{width}d}" if isinstance(value, int) and not isinstance(value, bool)
            else f"{value:{width}.{digits}f}")


def format_detection(result: Detection) -> str:
    """Per-window scores (and a sync detector's best offset and confidence), the clip's verdict, for a terminal."""
    sync = any(k in w for w in result.windows for k in ("best_offset", "confidence"))
    header = f"{'window':12s} {'time (s)':>14s} {'P(fake)':>8s}"
    if sync:
        header += f" {'offset':>6s} {'confidence':>10s}"
    lines = [f"{result.video} ({result.detector}: {result.model})", header]
    for entry in result.windows:
        line = f"{entry['key']:12s} {entry['start_time']:6.2f}-{entry['end_time']:6.2f} {_cell(entry['score'], 8)}"
        if sync:
            line += f" {_cell(entry.get('best_offset'), 6, 0)} {_cell(entry.get('confidence'), 10)}"
        if "abstained" in entry:
            line += f"  abstained: {entry['abstained']}"
        for name, reason in entry.get("members_abstained", {}).items():
            line += f"  ({name} abstained: {reason})"
        lines.append(line)
    for entry in result.skipped:
        lines.append(f"{entry['key']:12s} skipped: {entry['message']}")
    if result.probability is None:
        lines.append("clip probability of fake: none -> NO VERDICT (every window abstained)")
    else:
        lines.append(f"clip probability of fake: {result.probability:.3f} -> {result.verdict.upper()} "
                     f"(threshold {result.threshold})")
    return "\n".join(lines)  # the warnings go to stderr (the command prints them)


__all__ = ["Detection", "build_detector", "detect", "format_detection", "MediaError"]
