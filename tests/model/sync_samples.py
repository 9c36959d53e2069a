"""Small talking windows for the sync tests: a synthetic persona whose mouth follows its speech, as shards."""
from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np

from avlips.media.sample import WindowSample
from avlips.media.synthetic import make_persona, render_talking_clip, speech_like_audio

RATE, FPS, CONTEXT = 16000, 25.0, 0.6


def talking_clip(seed: int, seconds: float = 2.0, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """(frames (T, size, size, 3) RGB, audio float32 at 16 kHz) of one speaking persona."""
    persona = make_persona(f"p{seed}", seed)
    audio = speech_like_audio(persona, seconds, RATE, seed)
    return render_talking_clip(persona, audio, RATE, FPS, size, seed), audio


def window(clip: str, frames: np.ndarray, audio: np.ndarray, start: int, label: int = 0,
           silent: bool = False, with_audio: bool = True, index: int = 0) -> WindowSample:
    """The window of five frames at `start`, its audio with up to CONTEXT s either side, as compose places it."""
    per_frame = int(RATE / FPS)
    first, last = start * per_frame, (start + 5) * per_frame
    context = int(CONTEXT * RATE)
    low, high = max(0, first - context), min(len(audio), last + context)
    pcm = np.round(np.clip(audio[low:high], -1, 1) * 32767).astype(np.int16)
    if silent:
        pcm[:] = 0
    placement = {"sample_rate": RATE, "context_s": CONTEXT, "window_start": first - low,
                 "window_samples": last - first, "cut_before": context - (first - low),
                 "cut_after": context - (high - last)}
    meta = {"clip": clip, "fps": FPS, "crop": "full", "generator": "test_gen" if label else None,
            "audio": placement, "frame_indices": list(range(start, start + 5))}
    key = f"{clip}_w{index:02d}"
    return WindowSample(key, frames[start:start + 5], np.zeros((128, 8), np.float32), label, meta,
                        audio=pcm if with_audio else None)


def write_shard(path: Path, samples: list[WindowSample]) -> Path:
    """A WebDataset tar of the samples (members sorted by key)."""
    with tarfile.open(path, "w") as tar:
        for sample in sorted(samples, key=lambda s: s.key):
            for name, data in sorted(sample.encode().items()):
                info = tarfile.TarInfo(f"{sample.key}.{name}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path
