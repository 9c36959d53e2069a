"""Native Wav2Lip: the generator network, its audio front end, checkpoint loading and a frame runner."""

from __future__ import annotations

import importlib
from typing import Any

# Names resolve lazily so that importing the package (e.g. for plugin discovery) does not pull in
# torch, librosa and OpenCV until one of them is used.
_EXPORTS = {
    "Wav2Lip": "network",
    "load_wav2lip": "checkpoint",
    "CheckpointMismatchError": "checkpoint",
    "melspectrogram": "audio",
    "mel_chunks": "audio",
    "chunk_count": "audio",
    "Wav2LipRunner": "inference",
    "pad_boxes": "inference",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    """Import an exported name from its submodule on first use."""
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """Module attributes including the lazy exports."""
    return sorted(set(globals()) | set(_EXPORTS))
