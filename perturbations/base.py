"""The perturbation contract: a fixed table of five levels beside one transform.

A type is a subclass of `Perturbation` naming its parameter and its level values; its
`transform` takes a validated window and the parameter by name. `apply` checks the request
(frames, level, seed) and raises a `PerturbationError` naming the sample and the problem.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np

from .errors import BadFrames, BadLevel, BadSeed

LEVELS = (1, 2, 3, 4, 5)
# Smallest frame side served: one 8x8 block must fit (block-wise), and the resizes and the
# H.264 encoder need a few pixels; faces and frames in this project are far larger.
MIN_SIDE = 8


def check_level(level: object, name: str, sample: str | None = None) -> int:
    """The level as an int, or `BadLevel` when it is not an int in 1..5."""
    if isinstance(level, (bool, np.bool_)) or not isinstance(level, (int, np.integer)):
        raise BadLevel(f"{name}: level must be an int in 1..5, got {level!r} ({type(level).__name__})", sample)
    if not LEVELS[0] <= level <= LEVELS[-1]:
        raise BadLevel(f"{name}: level must be in 1..5, got {int(level)}", sample)
    return int(level)


def check_seed(seed: object, name: str, sample: str | None = None) -> int:
    """The seed as an int, or `BadSeed` when it is not a non-negative int."""
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise BadSeed(f"{name}: seed must be a non-negative int, got {seed!r}", sample)
    return int(seed)


def as_window(frames: object, name: str, sample: str | None = None) -> tuple[np.ndarray, bool]:
    """The frames as a contiguous (T, H, W, 3) uint8 window and whether a single frame was given."""
    if not isinstance(frames, np.ndarray):
        raise BadFrames(f"{name}: frames must be a numpy array, got {type(frames).__name__}", sample)
    if frames.dtype != np.uint8:
        raise BadFrames(f"{name}: frames must be uint8, got dtype {frames.dtype}", sample)
    if frames.ndim not in (3, 4) or frames.shape[-1] != 3:
        raise BadFrames(
            f"{name}: frames must be RGB of shape (T, H, W, 3) or (H, W, 3), got shape {frames.shape}", sample
        )
    single = frames.ndim == 3
    window = frames[None] if single else frames
    t, h, w, _ = window.shape
    if t == 0 or h == 0 or w == 0:
        raise BadFrames(f"{name}: frames are empty, shape {frames.shape}", sample)
    if h < MIN_SIDE or w < MIN_SIDE:
        raise BadFrames(f"{name}: frames are {h}x{w}, smaller than the {MIN_SIDE}x{MIN_SIDE} minimum", sample)
    return np.ascontiguousarray(window), single


class Perturbation(ABC):
    """One perturbation type: its parameter, the parameter's value at levels 1..5, and the transform."""

    name: ClassVar[str]  # catalogue key, e.g. "gaussian_blur"
    parameter: ClassVar[str]  # what the level's value means, e.g. "kernel_size"
    levels: ClassVar[tuple[float, ...]]  # the parameter's value at levels 1..5
    seeded: ClassVar[bool] = False  # True when the output depends on the seed
    per_frame: ClassVar[bool] = True  # False when frames are perturbed together (compression)
    version: ClassVar[int] = 1  # raised when the output changes, so that stored results are redone

    def value(self, level: int, sample: str | None = None) -> float:
        """The table value of the parameter at a level."""
        return self.levels[check_level(level, self.name, sample) - 1]

    def params(self, level: int, sample: str | None = None) -> dict[str, Any]:
        """The keyword parameters of `transform` at a level."""
        return {self.parameter: self.value(level, sample)}

    def apply(self, frames: np.ndarray, level: int, seed: int, *, sample: str | None = None) -> np.ndarray:
        """Perturb a (T, H, W, 3) window or one (H, W, 3) frame at a level; same shape and dtype out."""
        params = self.params(level, sample)
        seed = check_seed(seed, self.name, sample)
        window, single = as_window(frames, self.name, sample)
        out = self.transform(window, seed, **params)
        return out[0] if single else out

    @abstractmethod
    def transform(self, window: np.ndarray, seed: int, **params: Any) -> np.ndarray:
        """Perturb a validated contiguous (T, H, W, 3) uint8 window with explicit parameters."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.parameter}={self.levels})"
