"""Sync quality of a whole clip under the expert, LSE-style: how in sync a fake (or a real clip) is.

As SyncNet's LSE scores (UPSTREAM.md section 6): every 5-frame window of the clip is compared with the
audio at each offset of -offsets..+offsets frames; the mean distance per offset over the windows that
have audio there gives the clip's curve; LSE-D is its minimum, LSE-C the median minus the minimum (higher:
more clearly in sync) and the offset its argmin. Distances are the expert's (1 - cosine of the unit
embeddings), so the numbers are on this expert's scale, not syncnet_python's: compare clips with each
other (fakes against the real clips' baseline), not with published LSE values.

Faces: for already-centred sources (the demo) the whole frame is the face; otherwise the face is tracked
(media.faces) and each frame cropped to its square face box.
"""
from __future__ import annotations

import os

import numpy as np
import torch

from avlips.generators.wav2lip.audio import MEL_FPS, MEL_STEP_SIZE, SAMPLE_RATE
from avlips.media.audio_decode import read_audio
from avlips.media.frames import iter_frames
from avlips.media.probe import probe
from avlips.model.detectors import DetectorError
from avlips.model.sync.frontend import audio_mel, lower_faces
from avlips.model.sync.network import FRAMES, SyncNet
from avlips.model.sync.weights import LoadedExpert, load_expert

__all__ = ["clip_sync_quality", "clip_curve"]


def _face_frames(video_path: str, centred: bool, face_size: int) -> np.ndarray:
    """Every frame as the face square at face_size (RGB uint8)."""
    import cv2

    frames = list(iter_frames(video_path))
    if not frames:
        raise DetectorError(f"{video_path}: no video frames")
    if centred:
        return np.stack([cv2.resize(f, (face_size, face_size), interpolation=cv2.INTER_AREA) for f in frames])
    from avlips.media.faces import crop_square, square_crop_boxes, track_faces

    track = track_faces(frames, label=video_path)
    if not track.found.any():
        raise DetectorError(f"{video_path}: no face found")
    # Frames without a trusted box take the nearest one that has it.
    found = np.flatnonzero(track.found)
    nearest = found[np.abs(np.arange(len(frames))[:, None] - found[None, :]).argmin(axis=1)]
    boxes = square_crop_boxes(track.faces[nearest], frames[0].shape, 1.0)
    return np.stack([crop_square(frame, box, face_size) for frame, box in zip(frames, boxes)])


@torch.no_grad()
def clip_curve(model: SyncNet, faces: np.ndarray, mel: np.ndarray, fps: float, offsets: int = 15,
               batch: int = 256) -> tuple[np.ndarray, np.ndarray, int]:
    """(offsets, mean distance per offset, windows) of a clip's face squares (T, s, s, 3) against its mel."""
    model.eval()
    windows = len(faces) - FRAMES + 1
    if windows < 1:
        raise DetectorError(f"a clip of {len(faces)} frames has no {FRAMES}-frame window")
    stacks = np.stack([lower_faces(faces[i:i + FRAMES], "full", face_size=model.config.face_size)
                       for i in range(windows)])
    face_embedding = torch.cat([model.embed_faces(torch.from_numpy(stacks[i:i + batch]))
                                for i in range(0, windows, batch)])
    # One audio embedding per video frame j whose chunk fits: Wav2Lip's column int(80 * j / fps).
    first_frame, last_frame = -offsets, windows - 1 + offsets
    starts = {j: int(np.floor(MEL_FPS * j / fps + 1e-6)) for j in range(first_frame, last_frame + 1)}
    valid = [j for j, c in starts.items() if c >= 0 and c + MEL_STEP_SIZE <= mel.shape[1]]
    if not valid:
        raise DetectorError("the audio is shorter than one mel chunk")
    chunks = np.stack([mel[:, starts[j]:starts[j] + MEL_STEP_SIZE] for j in valid])[:, None].astype(np.float32)
    audio_embedding = torch.cat([model.embed_audio(torch.from_numpy(chunks[i:i + batch]))
                                 for i in range(0, len(chunks), batch)])
    row = {j: n for n, j in enumerate(valid)}
    found_offsets, means = [], []
    for offset in range(-offsets, offsets + 1):
        pairs = [(i, row[i + offset]) for i in range(windows) if i + offset in row]
        if not pairs:
            continue
        faces_at, audio_at = (torch.as_tensor(p) for p in zip(*pairs))
        distance = 1.0 - (face_embedding[faces_at] * audio_embedding[audio_at]).sum(dim=1)
        found_offsets.append(offset)
        means.append(float(distance.mean()))
    return np.asarray(found_offsets), np.asarray(means), windows


def clip_sync_quality(video_path: str, audio_path: str, expert: LoadedExpert | SyncNet | str,
                      centred: bool = True, offsets: int = 15) -> dict:
    """LSE-style sync of a clip: lse_d (min mean distance), lse_c (median - min), best_offset, windows."""
    video_path = os.fspath(video_path)
    model = load_expert(expert).model if isinstance(expert, (str, os.PathLike)) else \
        (expert.model if isinstance(expert, LoadedExpert) else expert)
    fps = probe(video_path).fps
    faces = _face_frames(video_path, centred, model.config.face_size)
    audio = read_audio(os.fspath(audio_path or video_path), SAMPLE_RATE)
    pcm = np.round(np.clip(audio, -1.0, 1.0) * 32767.0).astype(np.int16)
    found, means, windows = clip_curve(model, faces, audio_mel(pcm), fps, offsets)
    best = int(np.argmin(means))
    return {"lse_d": float(means[best]), "lse_c": float(np.median(means) - means[best]),
            "best_offset": int(found[best]), "windows": int(windows), "offsets_available": int(len(found))}
