"""A stored window perturbed by a type of any family: its frames, its audio context and its mel.

- video types change the frames; the audio and the mel stay as stored;
- audio types change the audio context (audio.npy) and the mel recomputed from it; the frames stay;
- the call changes the frames and the audio, and the mel with the audio.

The mel is recomputed on the clean clip's dB scale (window_mel.py); the result is a WindowSample
with the same key and metadata, which the caller relabels.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .catalogue import CALL, apply_audio, family, get
from .errors import MissingAudio
from .window_mel import clip_reference_db, placement, window_mel_db

if TYPE_CHECKING:
    from avlips.media.sample import WindowSample

DEFAULT_FPS = 25.0  # AVLips-style clips; used only when a sample's metadata lacks its fps


def needs_audio(name: str) -> bool:
    """Whether a type acts on the sound (audio and call families)."""
    return family(name) != "video"


def perturb_window(sample: "WindowSample", name: str, level: int, seed: int) -> "WindowSample":
    """The window perturbed by `name` at `level` with `seed`; errors are PerturbationErrors naming the key."""
    from avlips.media.sample import WindowSample

    key = sample.key
    kind = family(name, sample=key)
    if kind == "video":
        frames = get(name).apply(sample.frames, level, seed, sample=key)
        return WindowSample(key, frames, sample.mel_db, sample.label, sample.meta, sample.audio)
    if sample.audio is None:
        raise MissingAudio(f"{name} perturbs the sound, but the sample has no audio field (audio.npy): "
                           "shards composed before audio was stored cannot take audio or call types", key)
    rate, _ = placement(sample.meta, key)
    if kind == "audio":
        frames = sample.frames
        audio = apply_audio(name, sample.audio, rate, level, seed, sample=key)
    else:
        fps = float(sample.meta.get("fps") or DEFAULT_FPS)
        frames, audio = CALL.apply(sample.frames, fps, sample.audio, rate, level, seed, sample=key)
    reference = clip_reference_db(sample.audio, sample.mel_db, sample.meta, key)
    mel = window_mel_db(audio, reference, sample.meta, key)
    return WindowSample(key, frames, mel, sample.label, sample.meta, audio)
