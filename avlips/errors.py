"""The one base class of the project's input errors, so that a command catches one thing.

An input error means what the user gave cannot be used (a file, a path, a checkpoint, a setting),
and its message names it. Commands print the message as one line instead of a traceback. A leaf
module: every subpackage may import it without an import cycle.
"""
from __future__ import annotations


class AvlipsInputError(Exception):
    """What the user gave cannot be used; the message names it and the problem.

    `exit_status` is what the command exits with: 1 for inputs found unusable while working,
    2 for a command line or settings that cannot even start (nothing is written then).
    """

    exit_status = 1


class ParamsError(AvlipsInputError, ValueError):
    """A setting is wrong: params file missing or malformed, an unknown key, a value of the wrong type."""

    exit_status = 2
