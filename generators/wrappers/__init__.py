"""Wrappers that run research checkouts (Wav2Lip, TalkLip, SadTalker, MakeItTalk, LatentSync, MuseTalk,
VideoRetalking, IP_LAP) as generators."""
from __future__ import annotations

import importlib
from typing import Any

# Lazy, like generators.wav2lip: discovery must not import OpenCV or the media stack.
_EXPORTS = {
    "ExternalCheckoutGenerator": "base",
    "Wav2LipRepo": "wav2lip_repo",
    "TalkLip": "talklip",
    "SadTalker": "sadtalker",
    "MakeItTalk": "makeittalk",
    "LatentSync": "latentsync",
    "MuseTalk": "musetalk",
    "VideoRetalking": "videoretalking",
    "IPLAP": "ip_lap",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    """Import an exported name from its submodule on first use."""
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value
