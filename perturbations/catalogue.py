"""The catalogue of perturbation types in three families, and the random mode's draw.

- video: name -> Perturbation, pure functions of (frames, level, seed) (DeeperForensics-1.0's types);
- audio: name -> AudioPerturbation, pure functions of (samples, sample_rate, level, seed);
- call: the call channel, which degrades a window's frames and audio together.

Adding a type is one new class (a table of five levels beside its transform) and one entry below.
Names are unique across the families.
"""
from __future__ import annotations

import numpy as np

from .audio_base import AudioPerturbation
from .background_noise import BackgroundNoise
from .base import LEVELS, Perturbation, check_seed
from .block_wise import BlockWise
from .call import Call
from .blur import GaussianBlur
from .colour import Contrast, Saturation
from .compression import Compression
from .errors import UnknownPerturbation
from .noise import GaussianNoise
from .packet_loss import PacketLoss
from .pixelation import Pixelation
from .speech_codecs import AmrNb, Mp3, Opus

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

AUDIO_CATALOGUE: dict[str, AudioPerturbation] = {
    p.name: p for p in (Opus(), AmrNb(), Mp3(), PacketLoss(), BackgroundNoise())
}
CALL = Call()

# The families' type names, in the order the random mode indexes them: append, never reorder.
AUDIO_TYPES: tuple[str, ...] = ("opus", "amr_nb", "mp3", "packet_loss", "background_noise")
CALL_TYPES: tuple[str, ...] = (CALL.name,)
# What the random mode may draw from when every family is allowed: AVLips' six, then the new ones.
ALL_TYPES: tuple[str, ...] = AVLIPS_TYPES + AUDIO_TYPES + CALL_TYPES
FAMILIES: dict[str, tuple[str, ...]] = {"video": tuple(CATALOGUE), "audio": AUDIO_TYPES, "call": CALL_TYPES}

# Mixed into the random mode's seed so that its draws are independent of a perturbation's own
# draws from the same key seed (noise and block positions use default_rng(seed) directly).
_CHOICE_STREAM = 0x5E1EC7


def names() -> list[str]:
    """All video type names in the catalogue, in catalogue order."""
    return list(CATALOGUE)


def all_names() -> list[str]:
    """Every type name of every family: video, then audio, then call."""
    return [name for family_names in FAMILIES.values() for name in family_names]


def family(name: str, *, sample: str | None = None) -> str:
    """The family of a type name: "video", "audio" or "call"; `UnknownPerturbation` when none has it."""
    for family_name, family_names in FAMILIES.items():
        if name in family_names:
            return family_name
    raise UnknownPerturbation(f"unknown perturbation type {name!r}; known: {', '.join(all_names())}", sample)


def lookup(name: str, *, sample: str | None = None) -> Perturbation | AudioPerturbation | Call:
    """The perturbation of any family registered under a name (each has name, parameter, levels, version)."""
    kind = family(name, sample=sample)
    if kind == "video":
        return CATALOGUE[name]
    return AUDIO_CATALOGUE[name] if kind == "audio" else CALL


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


def get_audio(name: str, *, sample: str | None = None) -> AudioPerturbation:
    """The AudioPerturbation registered under a name, or `UnknownPerturbation`."""
    try:
        return AUDIO_CATALOGUE[name]
    except (KeyError, TypeError):
        known = ", ".join(AUDIO_CATALOGUE)
        raise UnknownPerturbation(f"unknown audio perturbation type {name!r}; known: {known}", sample) from None


def apply_audio(name: str, samples: np.ndarray, sample_rate: int, level: int, seed: int, *,
                sample: str | None = None) -> np.ndarray:
    """Perturb a mono int16 or float signal with an audio type at a level 1..5; same length, dtype and rate."""
    return get_audio(name, sample=sample).apply(samples, sample_rate, level, seed, sample=sample)


def apply_call(frames: np.ndarray, fps: float, samples: np.ndarray, sample_rate: int, level: int, seed: int, *,
               sample: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A window's frames (T, H, W, 3) and audio through the call channel at a level 1..5."""
    return CALL.apply(frames, fps, samples, sample_rate, level, seed, sample=sample)


def random_choice(key_seed: int, types: tuple[str, ...] = AVLIPS_TYPES) -> tuple[str, int]:
    """A (type, level) drawn uniformly from types x 1..5, determined by the seed (AVLips' six by default).

    With the default the draws are those of the six-type random mode; pass ALL_TYPES (or any tuple of
    names from the families) to draw from audio and call types too.
    """
    if not types:
        raise ValueError("random_choice: no types to draw from")
    for name in types:
        family(name)
    rng = np.random.default_rng([check_seed(key_seed, "random_choice"), _CHOICE_STREAM])
    return types[int(rng.integers(len(types)))], int(rng.integers(LEVELS[0], LEVELS[-1] + 1))


def tag(name: str, level: int) -> str:
    """The `TYPE:LEVEL` label DeeperForensics' random mode records, e.g. `gaussian_blur:3`."""
    return f"{name}:{level}"
