"""Running Wav2Lip over a video: crop faces, batch them with their mel chunks, paste the generated mouths back."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Literal

import cv2
import numpy as np
import torch
from torch import nn

from .network import FACE_SIZE, MEL_STEPS, NUM_MELS

__all__ = ["DEFAULT_PADS", "pad_boxes", "Wav2LipRunner"]

DEFAULT_PADS = (0, 10, 0, 0)  # top, bottom, left, right: the reference extends the box 10 px down to cover the chin


def pad_boxes(
    boxes: np.ndarray, height: int, width: int, pads: tuple[int, int, int, int] = DEFAULT_PADS
) -> np.ndarray:
    """Boxes (T,4) x1,y1,x2,y2 grown by pads (top, bottom, left, right), clipped to the image, as int; -1 rows for no face."""
    boxes = np.asarray(boxes, dtype=np.float64)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"face boxes must have shape (T, 4) as x1, y1, x2, y2; got {boxes.shape}")
    top, bottom, left, right = pads
    out = np.full(boxes.shape, -1, dtype=np.int64)
    ok = np.isfinite(boxes).all(axis=1)
    b = np.rint(boxes[ok]).astype(np.int64)
    out[ok, 0] = np.maximum(0, b[:, 0] - left)
    out[ok, 1] = np.maximum(0, b[:, 1] - top)
    out[ok, 2] = np.minimum(width, b[:, 2] + right)
    out[ok, 3] = np.minimum(height, b[:, 3] + bottom)
    empty = (out[:, 2] <= out[:, 0]) | (out[:, 3] <= out[:, 1])
    out[empty] = -1
    return out


class Wav2LipRunner:
    """Lip-syncs frames to mel chunks with a Wav2Lip model, one output frame per mel chunk.

    Output length follows the audio: output frame j is made from input frame j % T, so a video shorter than
    the audio is cycled from its start (as the reference does; a single image gives a static-face video) and a
    longer one is cut. Face boxes come from the caller (any detector); a box that is NaN or empty after padding
    and clipping means "no face": that frame is passed through unchanged.
    """

    def __init__(
        self,
        model: nn.Module,
        device: str | torch.device = "cpu",
        batch_size: int = 128,
        pads: tuple[int, int, int, int] = DEFAULT_PADS,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()  # moves the caller's model; BatchNorm must use running stats
        self.batch_size = batch_size
        self.pads = tuple(int(p) for p in pads)

    def run(
        self,
        frames: np.ndarray | Sequence[np.ndarray],
        face_boxes: np.ndarray,
        mel_chunks: np.ndarray,
        channels: Literal["bgr", "rgb"] = "bgr",
    ) -> np.ndarray:
        """Lip-synced frames (N,H,W,3) uint8 for frames (T,H,W,3) uint8, boxes (T,4) and N mel chunks."""
        out = list(self.iter_run(frames, face_boxes, mel_chunks, channels))
        return np.stack(out)

    def iter_run(
        self,
        frames: np.ndarray | Sequence[np.ndarray],
        face_boxes: np.ndarray,
        mel_chunks: np.ndarray,
        channels: Literal["bgr", "rgb"] = "bgr",
    ) -> Iterator[np.ndarray]:
        """Like run, yielding output frames one by one so long audio need not sit in memory."""
        if channels not in ("bgr", "rgb"):
            raise ValueError(f"channels must be 'bgr' or 'rgb', got {channels!r}")
        n_src = len(frames)
        if n_src == 0:
            raise ValueError("no frames")
        height, width = frames[0].shape[:2]
        for f in frames:
            if f.shape != (height, width, 3) or f.dtype != np.uint8:
                raise ValueError(f"frames must be uint8 (H, W, 3) of one size; got {f.shape} {f.dtype}")
        boxes = pad_boxes(face_boxes, height, width, self.pads)
        if len(boxes) != n_src:
            raise ValueError(f"{len(boxes)} face boxes for {n_src} frames")
        mels = np.asarray(mel_chunks, dtype=np.float32)
        if mels.ndim == 3:
            mels = mels[:, None]
        if mels.ndim != 4 or mels.shape[1:] != (1, NUM_MELS, MEL_STEPS):
            raise ValueError(f"mel chunks must have shape (N, 1, {NUM_MELS}, {MEL_STEPS}); got {mels.shape}")

        for start in range(0, len(mels), self.batch_size):
            sources = [j % n_src for j in range(start, min(start + self.batch_size, len(mels)))]
            with_face = [k for k, s in enumerate(sources) if boxes[s, 0] >= 0]
            preds = self._predict(
                [self._face(frames[sources[k]], boxes[sources[k]], channels) for k in with_face],
                mels[start + np.asarray(with_face, dtype=np.int64)],
            )
            pred_of = dict(zip(with_face, preds))
            for k, s in enumerate(sources):
                out = np.array(frames[s], copy=True)
                if k in pred_of:
                    x1, y1, x2, y2 = boxes[s]
                    p = cv2.resize(pred_of[k], (int(x2 - x1), int(y2 - y1)))  # bilinear, as the reference
                    out[y1:y2, x1:x2] = p[..., ::-1] if channels == "rgb" else p
                yield out

    @staticmethod
    def _face(frame: np.ndarray, box: np.ndarray, channels: str) -> np.ndarray:
        """The padded face crop as a 96x96 BGR uint8 image (the model was trained on BGR)."""
        x1, y1, x2, y2 = box
        crop = frame[y1:y2, x1:x2]
        if channels == "rgb":
            crop = crop[..., ::-1]
        return cv2.resize(np.ascontiguousarray(crop), (FACE_SIZE, FACE_SIZE))

    def _predict(self, faces: list[np.ndarray], mels: np.ndarray) -> list[np.ndarray]:
        """Generated 96x96 BGR uint8 faces for a batch of reference faces and mel chunks."""
        if not faces:
            return []
        ref = np.stack(faces).astype(np.float32) / 255.0  # (N, 96, 96, 3)
        masked = ref.copy()
        masked[:, FACE_SIZE // 2 :] = 0.0  # hide the lower half (mouth): the model must draw it from audio
        x = np.concatenate([masked, ref], axis=3).transpose(0, 3, 1, 2)  # (N, 6, 96, 96): masked first
        face_t = torch.from_numpy(np.ascontiguousarray(x)).to(self.device)
        mel_t = torch.from_numpy(np.ascontiguousarray(mels)).to(self.device)
        with torch.no_grad():
            pred = self.model(mel_t, face_t)
        pred = pred.float().cpu().numpy().transpose(0, 2, 3, 1) * 255.0
        return list(pred.astype(np.uint8))  # truncation, as the reference casts
