"""Graded perturbations as pure functions, in three families.

Video (DeeperForensics-1.0's types), on uint8 (T, H, W, 3) RGB windows:

    from avlips.perturbations import apply, random_choice
    out = apply("gaussian_blur", frames, level=3, seed=0)

Audio (speech codecs, packet loss, background babble), on mono int16 or float signals:

    from avlips.perturbations import apply_audio
    out = apply_audio("opus", samples, sample_rate=16000, level=3, seed=0)

Call (a video call degrading picture and sound together):

    from avlips.perturbations import apply_call
    frames, samples = apply_call(frames, fps=25, samples=samples, sample_rate=16000, level=3, seed=0)

A stored window (frames, mel, audio context) is perturbed by any family with
`avlips.perturbations.window.perturb_window`, which also recomputes its mel.
"""
from .audio_base import AudioPerturbation
from .base import LEVELS, Perturbation
from .catalogue import (ALL_TYPES, AUDIO_CATALOGUE, AUDIO_TYPES, AVLIPS_TYPES, CALL, CALL_TYPES, CATALOGUE, FAMILIES,
                        all_names, apply, apply_audio, apply_call, family, get, get_audio, lookup, names,
                        random_choice, tag)
from .errors import (BadAudio, BadFrames, BadLevel, BadSeed, MissingAudio, PerturbationError, SilentAudio,
                     UnknownPerturbation)

__all__ = [
    "ALL_TYPES",
    "AUDIO_CATALOGUE",
    "AUDIO_TYPES",
    "AVLIPS_TYPES",
    "CALL",
    "CALL_TYPES",
    "CATALOGUE",
    "FAMILIES",
    "LEVELS",
    "AudioPerturbation",
    "BadAudio",
    "BadFrames",
    "BadLevel",
    "BadSeed",
    "MissingAudio",
    "Perturbation",
    "PerturbationError",
    "SilentAudio",
    "UnknownPerturbation",
    "all_names",
    "apply",
    "apply_audio",
    "apply_call",
    "family",
    "get",
    "get_audio",
    "lookup",
    "names",
    "random_choice",
    "tag",
]
