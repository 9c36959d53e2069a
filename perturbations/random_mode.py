"""Seeds from sample keys, and DeeperForensics' random mode for train-time augmentation.

Both the perturb stage and a training loader derive every random number from a sample's key,
so a perturbed window is reproducible from (key, type, level) alone:

    from avlips.perturbations.random_mode import key_seed, random_perturbation
    frames, chosen = random_perturbation(frames, "c0_w03", probability=0.5, salt=epoch)
    # chosen is {"type": "gaussian_blur", "level": 3}, or None when the window was left clean

The random mode draws one (type, level) uniformly from AVLIPS_TYPES x 1..5 per window (the
reference draws per video; a window is our unit of storage and loading). On whole stored windows,
`random_window_perturbation` may draw from every family (ALL_TYPES: video, audio and the call).
It imports nothing from `pipelines` or `model`, so the loader in `model/` may use it.
"""
from __future__ import annotations

import hashlib

import numpy as np

from .base import check_seed
from .catalogue import AVLIPS_TYPES, apply, random_choice

# Mixed into the apply/skip draw so that it is independent of random_choice's draws and of the
# perturbation's own draws (all three start from the same key seed).
_APPLY_STREAM = 0xA991E5


def key_seed(key: str, salt: int = 0) -> int:
    """A non-negative 63-bit seed from a sample key (first 8 bytes of sha256 of `salt:key`)."""
    if not isinstance(key, str) or not key:
        raise ValueError(f"a seed key must be a non-empty string, got {key!r}")
    salt = check_seed(salt, "key_seed")
    digest = hashlib.sha256(f"{salt}:{key}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") >> 1  # 63 bits: a non-negative int64 for every consumer


def random_perturbation(frames: np.ndarray, key: str, probability: float,
                        salt: int = 0) -> tuple[np.ndarray, dict | None]:
    """With `probability`, perturb a window by a (type, level) drawn from its key; returns (frames, choice).

    `choice` is {"type", "level"} or None when the window stays clean (then `frames` is returned
    as given, not copied). The same (key, salt) always gives the same decision, choice and pixels;
    pass the epoch as `salt` to draw afresh each epoch. Bad frames raise `PerturbationError`.
    """
    if isinstance(probability, bool) or not isinstance(probability, (int, float)) or not 0 <= probability <= 1:
        raise ValueError(f"probability must be a number in [0, 1], got {probability!r}")
    seed = key_seed(key, salt)
    draw = np.random.default_rng([seed, _APPLY_STREAM]).random()
    if draw >= probability:  # probability 0 never perturbs, 1 always does
        return frames, None
    name, level = random_choice(seed)
    return apply(name, frames, level, seed, sample=key), {"type": name, "level": level}


def random_window_perturbation(sample, probability: float, salt: int = 0,
                               types: tuple[str, ...] = AVLIPS_TYPES):
    """The random mode on a whole stored window: with `probability`, a (type, level) drawn from `types`.

    `types` may hold names of every family (catalogue.ALL_TYPES: the video six, the audio types and
    the call): an audio or call draw changes the window's audio context and recomputes its mel
    (window.perturb_window). Returns (sample, choice) like `random_perturbation`; with the default
    `types` a window gets the same decision, choice and frames as `random_perturbation` gives it.
    A sample without audio that draws an audio or call type raises MissingAudio naming it.
    """
    from .window import perturb_window

    if isinstance(probability, bool) or not isinstance(probability, (int, float)) or not 0 <= probability <= 1:
        raise ValueError(f"probability must be a number in [0, 1], got {probability!r}")
    seed = key_seed(sample.key, salt)
    draw = np.random.default_rng([seed, _APPLY_STREAM]).random()
    if draw >= probability:
        return sample, None
    name, level = random_choice(seed, tuple(types))
    return perturb_window(sample, name, level, seed), {"type": name, "level": level}
