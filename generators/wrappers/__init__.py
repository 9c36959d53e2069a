"""Wrappers that run the research checkouts of Wav2Lip, TalkLip, SadTalker and MakeItTalk as generators."""
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
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    """Import an exported name from its submodule on first use."""
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value
