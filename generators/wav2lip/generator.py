"""The native Wav2Lip generator: the released network run in-process, faces from media.faces."""
from __future__ import annotations

import pickle
import time
from pathlib import Path
from typing import Any

import numpy as np

from avlips.generators.base import VIDEO, DrivingAudio, GenerationResult, GeneratorError, GeneratorNotReady, LipGenerator, Readiness, Target

__all__ = ["DEFAULTS", "Wav2LipGenerator", "output_frame_count"]

NO_CHECKPOINT = "no checkpoint: set synthesize.generators.wav2lip.checkpoint to wav2lip.pth or wav2lip_gan.pth"

DEFAULTS: dict[str, Any] = {
    "checkpoint": "",  # wav2lip.pth or wav2lip_gan.pth (the released files)
    "device": "auto",  # auto: cuda when available, else cpu
    "batch_size": 64,
    "pads": [0, 10, 0, 0],  # top, bottom, left, right: the reference's default padding
    # The Haar face box ends at about the lower lip; S3FD's, which Wav2Lip was trained on, reaches the
    # chin. The box is grown by this fraction of its height at the bottom before the reference padding.
    "chin_extend": 0.12,
    "face_stride": 1,  # run the face detector on every n-th frame
    "min_face_fraction": 0.5,  # of the frames used, else no face
    "frame_count": "audio",  # audio: round(duration x fps) frames; reference: the reference's chunk count
    "crf": 18,
    "preset": "medium",
}


def output_frame_count(n_samples: int, sample_rate: int, fps: float, rule: str = "audio") -> int:
    """Frames made for audio of n_samples: round(duration x fps), or the reference's mel chunk count."""
    from .audio import HOP_SIZE, chunk_count

    if rule == "reference":
        return chunk_count(1 + n_samples // HOP_SIZE, fps)
    if rule != "audio":
        raise GeneratorError(f"wav2lip: frame_count must be 'audio' or 'reference', got {rule!r}")
    return max(1, int(round(n_samples / sample_rate * fps)))


class Wav2LipGenerator(LipGenerator):
    """Wav2Lip (Prajwal et al. 2020) from a released checkpoint, on CPU or GPU."""

    name = "wav2lip"
    version = "1"
    input_kind = VIDEO
    needs_face = True

    def __init__(self, **settings: Any) -> None:
        super().__init__(**{**DEFAULTS, **settings})
        self._model: Any = None  # loaded once per instance, on first use
        self._model_key: tuple[str, float] | None = None

    def check(self) -> Readiness:
        """Ready when the checkpoint file exists."""
        path = str(self.settings.get("checkpoint") or "")
        if not path:
            return Readiness(False, NO_CHECKPOINT)
        if not Path(path).is_file():
            return Readiness(False, f"{NO_CHECKPOINT} (not found: {path})")
        return Readiness(True)

    def device(self) -> str:
        """The torch device to run on, resolving 'auto'."""
        import torch

        wanted = str(self.settings.get("device", "auto"))
        if wanted == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        return wanted

    def model(self) -> Any:
        """The Wav2Lip network with the checkpoint's weights (cached while the file is unchanged)."""
        from .checkpoint import CheckpointMismatchError, load_wav2lip

        path = Path(str(self.settings["checkpoint"]))
        key = (str(path.resolve()), path.stat().st_mtime)
        if self._model is None or self._model_key != key:
            try:
                self._model = load_wav2lip(path)
            except (CheckpointMismatchError, RuntimeError, OSError) as exc:
                raise GeneratorNotReady(f"wav2lip checkpoint {path} unusable: {exc}") from exc
            except (pickle.UnpicklingError, EOFError) as exc:
                # Not torch's text: it advises weights_only=False, which this project never does.
                why = "the file is empty or cut short" if isinstance(exc, EOFError) else \
                    "it holds something other than tensors and plain containers"
                raise GeneratorNotReady(f"wav2lip checkpoint {path} unusable: not a released Wav2Lip "
                                        f"checkpoint ({why})") from exc
            self._model_key = key
        return self._model

    def face_boxes(self, frames: np.ndarray, fps: float, label: str, options: dict) -> np.ndarray:
        """Smoothed face boxes (T, 4) grown to the chin; NaN rows where no face is known."""
        from avlips.media.errors import MediaError
        from avlips.media.faces import require_face, track_faces

        track = track_faces(frames, stride=int(options["face_stride"]), fps=fps, label=label)
        try:
            require_face(track, float(options["min_face_fraction"]), label=label)
        except MediaError as exc:
            raise GeneratorError(f"no face: {exc}") from exc
        boxes = track.faces.copy()
        boxes[:, 3] += float(options["chin_extend"]) * (boxes[:, 3] - boxes[:, 1])
        boxes[~track.found] = np.nan  # the runner passes frames without a face through unchanged
        return boxes

    def generate(self, target: Target, driving: DrivingAudio, out_path: str | Path,
                 params: dict | None = None) -> GenerationResult:
        """Write the target lip-synced to the driving audio by Wav2Lip, with that audio, to out_path."""
        import torch

        from avlips.media.errors import MediaError
        from avlips.media.audio_decode import read_audio
        from avlips.media.encode import write_video
        from avlips.media.frames import iter_frames
        from avlips.media.probe import probe

        from .audio import SAMPLE_RATE, mel_chunks, melspectrogram
        from .inference import Wav2LipRunner

        started = time.perf_counter()
        options = {**self.settings, **{k: v for k, v in (params or {}).items() if k in DEFAULTS}}
        state = self.check()
        if not state.ready:
            raise GeneratorNotReady(state.reason)
        try:
            audio = read_audio(driving.path, SAMPLE_RATE)
        except MediaError as exc:
            raise GeneratorError(f"driving audio unreadable: {exc}") from exc
        if len(audio) < SAMPLE_RATE // 5:  # under one 16-column mel chunk (0.2 s)
            raise GeneratorError(f"driving audio too short: {len(audio) / SAMPLE_RATE:.3f} s (need 0.2 s)")
        try:
            info = probe(target.path)
            fps = info.fps or target.fps or 25.0
            n_out = output_frame_count(len(audio), SAMPLE_RATE, fps, str(options["frame_count"]))
            # Output frame j shows input frame j mod T: frames past n_out are never shown, so not decoded.
            frames = np.stack(list(iter_frames(target.path, stop=n_out)))
        except MediaError as exc:
            raise GeneratorError(f"target unreadable: {exc}") from exc
        boxes = self.face_boxes(frames, fps, target.path, options)
        chunks = mel_chunks(melspectrogram(audio), fps, n_out)
        device = self.device()
        runner = Wav2LipRunner(self.model(), device=device, batch_size=int(options["batch_size"]),
                               pads=tuple(int(p) for p in options["pads"]))
        out_path = Path(out_path)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with torch.inference_mode():
                write_video(out_path, runner.iter_run(frames, boxes, chunks, channels="rgb"), fps,
                            audio=audio, sample_rate=SAMPLE_RATE, crf=int(options["crf"]), preset=str(options["preset"]))
        except MediaError as exc:
            raise GeneratorError(f"encoding failed: {exc}") from exc
        # The device does not change what the fake is, and where the checkpoint lies is not its identity.
        recorded = {k: v for k, v in options.items() if k != "device"}
        recorded["checkpoint"] = Path(str(options["checkpoint"])).name
        return GenerationResult(
            path=str(out_path), generator=self.name, version=self.version, params=recorded,
            seconds=self.timed(started), frames=int(n_out), fps=float(fps),
            extra={"device": device, "faces": int(np.isfinite(boxes).all(axis=1).sum()), "source_frames": len(frames)},
        )
