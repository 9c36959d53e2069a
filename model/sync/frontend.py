"""What the lip-sync expert sees of one window: five lower-face crops, and mel chunks at every offset.

Faces: the stored frames are face-centred squares. Composed from face-detected sources (`meta["crop"] ==
"face"`), the face box is the centre 1/crop_scale of the side (media/windows.py crops a square of
crop_scale x the box); from already-centred sources (`"full"`) the whole frame is the face. The face
square is resized to 96 x 96, turned BGR (the expert's channel order) and its lower half kept
(UPSTREAM.md section 6).

Audio: the Wav2Lip mel (generators/wav2lip/audio.py, 80 columns per second) of the window's audio with
context (`sample.audio`, placed by `meta["audio"]`), and the 16-column chunk starting at the window's
first frame moved by each offset of -max_offset..+max_offset frames (at 25 fps, 3.2 columns per frame).
Offsets whose chunk would need audio the context does not hold (the clip starts or ends there) are left
out; the window is scored on those it has. (compose keeps a face crop inside the frame, so near an edge
the face is off the crop's centre: this reads a slightly shifted face square there.)
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from avlips.generators.wav2lip.audio import HOP_SIZE, MEL_FPS, MEL_STEP_SIZE, N_FFT, SAMPLE_RATE, melspectrogram
from avlips.media.sample import WindowSample
from avlips.model.detectors import DetectorError
from avlips.model.sync.network import FACE_SIZE, FRAMES

__all__ = ["DEFAULT_CROP_SCALE", "WindowInputs", "lower_faces", "face_region", "audio_mel", "offset_chunks", "offset_starts",
           "speech_dbfs", "window_inputs"]

DEFAULT_CROP_SCALE = 1.8  # compose's default (params.yaml compose.crop_scale)
_SILENT_DBFS = -200.0     # the level reported for all-zero audio


@dataclass
class WindowInputs:
    """One window's expert inputs and the numbers needed to judge them."""

    faces: np.ndarray       # (15, 48, 96) float32 in 0..1, BGR, five frames stacked on channels
    chunks: np.ndarray      # (K, 1, 80, 16) float32 mel chunks, one per available offset
    offsets: np.ndarray     # (K,) int offsets in frames (positive: audio later than the lips)
    offsets_wanted: int     # 2 * max_offset + 1
    speech_dbfs: float      # RMS level of the window's own audio span, dBFS


def face_region(frame: np.ndarray, crop: str, crop_scale: float) -> np.ndarray:
    """The face square of a stored frame: the centre 1/crop_scale for face crops, else the whole frame."""
    if crop != "face":
        return frame
    height, width = frame.shape[:2]
    side = max(1, int(round(min(height, width) / max(crop_scale, 1.0))))
    top, left = (height - side) // 2, (width - side) // 2
    return frame[top:top + side, left:left + side]


def lower_faces(frames: np.ndarray, crop: str = "full", crop_scale: float = DEFAULT_CROP_SCALE,
                face_size: int = FACE_SIZE) -> np.ndarray:
    """(T, H, W, 3) RGB uint8 frames -> (3T, face_size/2, face_size) float32 lower-face BGR stack in 0..1."""
    out = []
    for frame in frames:
        face = face_region(frame, crop, crop_scale)
        shrink = face.shape[0] > face_size
        face = cv2.resize(face, (face_size, face_size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        out.append(face[face_size // 2:, :, ::-1])  # lower half, RGB -> BGR
    stacked = np.concatenate(out, axis=2)  # H x W x 3T: frame-major channels, as the expert was trained
    return np.ascontiguousarray(stacked.transpose(2, 0, 1), dtype=np.float32) / 255.0


def audio_mel(audio: np.ndarray) -> np.ndarray:
    """The Wav2Lip mel (80, columns) of int16 16 kHz mono samples."""
    return melspectrogram(np.asarray(audio, dtype=np.float32) / 32768.0).astype(np.float32)


def offset_starts(columns: int, window_start: int, fps: float, max_offset: int,
                  sample_rate: int = SAMPLE_RATE) -> tuple[np.ndarray, np.ndarray]:
    """First mel column of the chunk at each offset -max_offset..max_offset that fits in `columns`, and those offsets.

    `window_start` is the sample of the audio where the window's first frame is shown; the chunk for
    offset o starts at column int(80 * (window_start / rate + o / fps)), Wav2Lip's frame-to-column rule.
    """
    starts, offsets = [], []
    for offset in range(-max_offset, max_offset + 1):
        # The small epsilon keeps exact products (e.g. 80 * 0.6) from rounding down to the column before.
        start = int(np.floor(MEL_FPS * (window_start / sample_rate + offset / fps) + 1e-6))
        if start >= 0 and start + MEL_STEP_SIZE <= columns:
            starts.append(start)
            offsets.append(offset)
    return np.asarray(starts, dtype=np.int64), np.asarray(offsets, dtype=np.int64)


def offset_chunks(mel: np.ndarray, window_start: int, fps: float, max_offset: int,
                  sample_rate: int = SAMPLE_RATE) -> tuple[np.ndarray, np.ndarray]:
    """Mel chunks (K, 1, 80, 16) at the offsets -max_offset..max_offset that fit in `mel`, and those offsets."""
    starts, offsets = offset_starts(mel.shape[1], window_start, fps, max_offset, sample_rate)
    if not starts.size:
        return np.zeros((0, 1, mel.shape[0], MEL_STEP_SIZE), np.float32), offsets
    chunks = np.stack([mel[:, start:start + MEL_STEP_SIZE] for start in starts])
    return chunks[:, None].astype(np.float32), offsets


def speech_dbfs(audio: np.ndarray) -> float:
    """RMS level of int16 samples in dBFS (full scale 32768); all-zero or empty audio gives -200."""
    if audio.size == 0:
        return _SILENT_DBFS
    rms = float(np.sqrt(np.mean(np.square(audio.astype(np.float64)))))
    return 20.0 * np.log10(rms / 32768.0) if rms > 0 else _SILENT_DBFS


def window_inputs(sample: WindowSample, max_offset: int = 15, face_size: int = FACE_SIZE,
                  with_chunks: bool = True, with_faces: bool = True) -> WindowInputs:
    """The expert's inputs for a decoded window; a window without audio or too few frames is a DetectorError.

    with_chunks=False skips the mel (chunks is then empty) for a caller that has the audio's embeddings;
    with_faces=False skips the face crops (faces is then empty) for one that has the lips' embedding.
    """
    meta = sample.meta or {}
    if sample.audio is None:
        raise DetectorError(f"sample {sample.key} has no audio field ('audio.npy'): rerun compose to add it")
    if sample.frames is None or len(sample.frames) < FRAMES:
        count = 0 if sample.frames is None else len(sample.frames)
        raise DetectorError(f"sample {sample.key}: the lip-sync expert needs {FRAMES} frames, the window has {count}")
    placement = meta.get("audio") or {}
    rate = int(placement.get("sample_rate", SAMPLE_RATE))
    if rate != SAMPLE_RATE:
        raise DetectorError(f"sample {sample.key}: audio at {rate} Hz, the expert's front end needs {SAMPLE_RATE}")
    audio = np.asarray(sample.audio).reshape(-1)
    start = int(placement.get("window_start", 0))
    span = int(placement.get("window_samples", audio.size - start))
    fps = float(meta.get("fps") or 25.0)
    crop_scale = float(meta.get("crop_scale") or DEFAULT_CROP_SCALE)
    faces = lower_faces(sample.frames[:FRAMES], str(meta.get("crop", "full")), crop_scale, face_size) if with_faces \
        else np.zeros((0, face_size // 2, face_size), np.float32)
    too_short = audio.size <= N_FFT // 2  # no STFT frame, so no chunk
    columns = 0 if too_short else 1 + audio.size // HOP_SIZE  # melspectrogram's column count
    if with_chunks and not too_short:
        chunks, offsets = offset_chunks(audio_mel(audio), start, fps, max_offset)
    else:
        _, offsets = offset_starts(columns, start, fps, max_offset)
        chunks = np.zeros((0, 1, 80, MEL_STEP_SIZE), np.float32)
    return WindowInputs(faces=faces, chunks=chunks, offsets=offsets, offsets_wanted=2 * max_offset + 1,
                        speech_dbfs=speech_dbfs(audio[start:start + span]))
