"""The catalogue of perturbation types: a registry of name -> Perturbation, and the random mode.

Adding a type is one new class (a table of five levels beside its transform) and one entry below.
"""
from __future__ import annotations

import numpy as np

from .base import LEVELS, Perturbation, check_seed
from .block_wise import BlockWise
from .blur import GaussianBlur
from .colour import Contrast, Saturation
from .compression import Compression
from .errors import UnknownPerturbation
from .noise import GaussianNoise
from .pixelation import Pixelation

CATALOGUE: dict[str, Perturbation] = {
    p.name: p
    for p in (
        Saturation(),
        Contrast(),
        GaussianNoise(),
        GaussianBlur(),
        Pixelation(),
        Compression(),
        BlockWise(),
    )
}

# The six types AVLips uses (DeeperForensics-1.0's set minus block-wise). The random mode draws an
# index into this tuple, so its order is part of the dataset's definition: append, never reorder.
AVLIPS_TYPES: tuple[str, ...] = (
    "saturation",
    "contrast",
    "gaussian_noise",
    "gaussian_blur",
    "pixelation",
    "compression",
)

# Mixed into the random mode's seed so that its draws are independent of a perturbation's own
# draws from the same key seed (noise and block positions use default_rng(seed) directly).
_CHOICE_STREAM = 0x5E1EC7


def names() -> list[str]:
    """All type names in the catalogue, in catalogue order."""
    return list(CATALOGUE)


def get(name: str, *, sample: str | None = None) -> Perturbation:
    """The Perturbation registered under a name, or `UnknownPerturbation`."""
    try:
        return CATALOGUE[name]
    except (KeyError, TypeError):
        known = ", ".join(CATALOGUE)
        raise UnknownPerturbation(f"unknown perturbation type {name!r}; known: {known}", sample) from None


def apply(name: str, frames: np.ndarray, level: int, seed: int, *, sample: str | None = None) -> np.ndarray:
    """Perturb a (T, H, W, 3) window or one (H, W, 3) uint8 RGB frame with a type at a level 1..5."""
    return get(name, sample=sample).apply(frames, level, seed, sample=sample)


def random_choice(key_seed: int) -> tuple[str, int]:
    """A (type, level) drawn uniformly from AVLIPS_TYPES x 1..5, determined by the seed."""
    rng = np.random.default_rng([check_seed(key_seed, "random_choice"), _CHOICE_STREAM])
    return AVLIPS_TYPES[int(rng.integers(len(AVLIPS_TYPES)))], int(rng.integers(LEVELS[0], LEVELS[-1] + 1))


def tag(name: str, level: int) -> str:
    """The `TYPE:LEVEL` label DeeperForensics' random mode records, e.g. `gaussian_blur:3`."""
    return f"{name}:{level}"
