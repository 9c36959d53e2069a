"""Lazy import of albumentations, with its network update check turned off."""
from __future__ import annotations

import os
from types import ModuleType


def albumentations() -> ModuleType:
    """The albumentations module, imported on first use (it costs about a second)."""
    # Without this, importing albumentations may try to reach PyPI to look for a newer version.
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    import albumentations as A

    return A
