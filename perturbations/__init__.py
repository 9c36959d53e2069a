"""The graded perturbations of DeeperForensics-1.0 as pure functions of (frames, level, seed).

    from avlips.perturbations import apply, random_choice
    out = apply("gaussian_blur", frames, level=3, seed=0)   # frames: uint8 (T, H, W, 3) RGB
"""
from .base import LEVELS, Perturbation
from .catalogue import AVLIPS_TYPES, CATALOGUE, apply, get, names, random_choice, tag
from .errors import BadFrames, BadLevel, BadSeed, PerturbationError, UnknownPerturbation

__all__ = [
    "AVLIPS_TYPES",
    "CATALOGUE",
    "LEVELS",
    "BadFrames",
    "BadLevel",
    "BadSeed",
    "Perturbation",
    "PerturbationError",
    "UnknownPerturbation",
    "apply",
    "get",
    "names",
    "random_choice",
    "tag",
]
