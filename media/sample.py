"""The window sample: what one LipFD window is, and its WebDataset encoding.

A sample is the members of a tar sharing a `__key__`: `f0.jpg`..`f4.jpg` (the face-centred
frames, RGB), `mel.npy` (the window's mel columns in dB, float32, rows = mel bins), `cls` (0 real,
1 fake) and `json` (clip, identity, generator, perturbation, frame indices, times, fps, sources, and
the clip-level dB range the reference colours the mel with), and `audio.npy`: the window's audio with
context, int16 mono at 16 kHz, so that any audio front end (a sync expert's mel, a codec) can be computed
from the shard. Its placement is in `json["audio"]` (see AUDIO_CONTEXT_KEYS). Shards made before the
audio field existed decode with `audio = None`. The LipFD composite is rendered from
these when loading, so one dataset serves the reference layout and others.
"""
from __future__ import annotations

import io
import json
from dataclasses import dataclass, field

import cv2
import numpy as np

from avlips.errors import AvlipsInputError


class SampleError(AvlipsInputError, ValueError):
    """A stored sample is missing a field or holds one that cannot be decoded."""


@dataclass
class WindowSample:
    """One window: frames (T, H, W, 3) RGB uint8, mel (n_mels, columns) dB, label and metadata."""

    key: str
    frames: np.ndarray
    mel_db: np.ndarray
    label: int
    meta: dict = field(default_factory=dict)
    # int16 mono samples at meta["audio"]["sample_rate"] (16 kHz): the window's span plus context either side.
    audio: np.ndarray | None = None

    def encode(self, frame_format: str = "jpg", jpeg_quality: int = 92) -> dict[str, bytes]:
        """Tar members (name without key -> bytes); the same sample always gives the same bytes."""
        if "." in self.key or "/" in self.key:
            raise SampleError(f"{self.key}: a sample key may not contain '.' or '/'")
        members: dict[str, bytes] = {}
        for index, frame in enumerate(self.frames):
            members[f"f{index}.{frame_format}"] = encode_image(frame, frame_format, jpeg_quality)
        buffer = io.BytesIO()
        np.save(buffer, np.ascontiguousarray(self.mel_db, dtype=np.float32), allow_pickle=False)
        members["mel.npy"] = buffer.getvalue()
        if self.audio is not None:
            buffer = io.BytesIO()
            np.save(buffer, np.ascontiguousarray(self.audio, dtype=np.int16), allow_pickle=False)
            members["audio.npy"] = buffer.getvalue()
        members["cls"] = str(int(self.label)).encode()
        members["json"] = json.dumps(self.meta, sort_keys=True, ensure_ascii=False).encode()
        return members

    @classmethod
    def decode(cls, key: str, members: dict[str, bytes], frames: np.ndarray | None = None) -> "WindowSample":
        """A sample from its tar members (names without the key); errors name the key and field.

        frames: the frames already decoded from these members' frame bytes (a reader that has seen the
        same bytes before), used instead of decoding them again."""
        frame_names = sorted((n for n in members if n.startswith("f") and n[1:].split(".")[0].isdigit()),
                             key=lambda n: int(n[1:].split(".")[0]))
        for needed in ("mel.npy", "cls", "json"):
            if needed not in members:
                raise SampleError(f"{key}: missing field {needed!r}")
        if not frame_names:
            raise SampleError(f"{key}: no frames (f0.jpg ...)")
        try:
            if frames is None:
                frames = np.stack([decode_image(members[name]) for name in frame_names])
            mel = np.load(io.BytesIO(members["mel.npy"]), allow_pickle=False)
            label = int(members["cls"].decode().strip())
            meta = json.loads(members["json"].decode())
            audio = np.load(io.BytesIO(members["audio.npy"]), allow_pickle=False) if "audio.npy" in members else None
        except Exception as exc:
            raise SampleError(f"{key}: cannot decode ({type(exc).__name__}: {exc})") from exc
        return cls(key=key, frames=frames, mel_db=mel, label=label, meta=meta, audio=audio)


# json["audio"] describes audio.npy: sample_rate (16000); context_s (the margin asked for either side);
# window_start (index in audio.npy of the window's first frame time); window_samples (samples spanned by the
# window's frames); cut_before / cut_after (context samples missing because the clip starts or ends there).
AUDIO_CONTEXT_KEYS = ("sample_rate", "context_s", "window_start", "window_samples", "cut_before", "cut_after")


def encode_image(rgb: np.ndarray, image_format: str = "jpg", jpeg_quality: int = 92) -> bytes:
    """An RGB uint8 image as JPEG or PNG bytes."""
    params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)] if image_format == "jpg" else []
    ok, data = cv2.imencode(f".{image_format}", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise SampleError(f"cannot encode a {rgb.shape} image as {image_format}")
    return data.tobytes()


# OpenCV >= 4.10 decodes straight to RGB: the same pixels as decoding to BGR and flipping, without the flip's
# pass over the image (about a quarter of a frame's decoding time).
_IMREAD_RGB = getattr(cv2, "IMREAD_COLOR_RGB", None)


def decode_image(data: bytes) -> np.ndarray:
    """JPEG/PNG bytes as an RGB uint8 image."""
    buffer = np.frombuffer(data, dtype=np.uint8)
    image = cv2.imdecode(buffer, cv2.IMREAD_COLOR if _IMREAD_RGB is None else _IMREAD_RGB)
    if image is None:
        raise SampleError("image bytes do not decode")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB) if _IMREAD_RGB is None else image
