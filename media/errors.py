"""Errors of the media layer: one class per way an input can be unusable.

Stages turn these into failure records (input, stage, error class, message); the class
name is the error class recorded, so keep names stable.
"""
from __future__ import annotations

from avlips.errors import AvlipsInputError


class MediaError(AvlipsInputError):
    """An input file cannot be used; the message names the file and the problem."""

    def __init__(self, path: str, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


class UnreadableFile(MediaError):
    """The path does not exist or cannot be opened."""


class NotAVideo(MediaError):
    """The file opens but holds no decodable video stream."""


class TruncatedMedia(MediaError):
    """The container or a stream ends before its headers say it should."""


class NoFrames(MediaError):
    """The video stream decodes to zero frames or has zero duration."""


class NoAudio(MediaError):
    """Audio is needed and the file has no audio stream (or it is empty)."""


class TooShort(MediaError):
    """The clip is shorter than the work asked of it (e.g. one window)."""


class NoFace(MediaError):
    """No face was found in enough frames."""
