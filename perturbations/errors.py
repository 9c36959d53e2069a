"""Errors of the perturbation layer: one class per way a request can be unusable.

Stages turn these into failure records; the class name is the error class recorded.
"""
from __future__ import annotations

from avlips.errors import AvlipsInputError


class PerturbationError(AvlipsInputError, ValueError):
    """A perturbation request cannot be served; the message names the sample (if given) and the problem."""

    def __init__(self, problem: str, sample: str | None = None) -> None:
        self.problem = problem
        self.sample = sample
        super().__init__(f"{sample}: {problem}" if sample else problem)

    def __reduce__(self):  # keep problem and sample apart when pickled (Beam ships errors between workers)
        return (type(self), (self.problem, self.sample))


class BadFrames(PerturbationError):
    """The frames are not a non-empty uint8 RGB array of shape (T, H, W, 3) or (H, W, 3)."""


class BadLevel(PerturbationError):
    """The level is not an int in 1..5."""


class BadSeed(PerturbationError):
    """The seed is not a non-negative int."""


class UnknownPerturbation(PerturbationError):
    """The perturbation type is not in the catalogue."""


class BadAudio(PerturbationError):
    """The audio is not a non-empty mono int16 or float signal with a positive integer sample rate."""


class SilentAudio(PerturbationError):
    """The audio is silent, so a perturbation defined against its level (a noise's SNR) has nothing to act on."""


class MissingAudio(PerturbationError):
    """An audio or call perturbation was asked of a sample that stores no audio (made before audio.npy)."""
