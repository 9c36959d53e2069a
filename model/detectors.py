"""The detector plugin contract: what a detector is, and how avlips finds them.

A detector scores LipFD windows (shard samples, `avlips.media.sample.WindowSample`) with a probability
that the window is a lip-sync fake. Plugins are ordinary Python distributions that register a factory
under the entry-point group `avlips.detectors`:

    [project.entry-points."avlips.detectors"]
    my_detector = "my_package.module:MyDetector"

The factory is called with the detector's settings from params.yaml (`detectors.<name>`) as keyword
arguments. Built in: `lipfd` (the reference detector) and `sync` (a lip-sync expert trained on real
video only). A detector may abstain on a window (for example the sync detector on a window with no
speech): it then returns no probability and a reason, and the report counts abstentions.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, ClassVar, Iterable, Iterator

from avlips.errors import AvlipsInputError
from avlips.media.sample import WindowSample

ENTRY_POINT_GROUP = "avlips.detectors"

# Sample fields a detector may need (`reads`); a shard sample lacking one is an error naming both.
FRAMES = "frames"      # f0.jpg .. f4.jpg
MEL = "mel.npy"        # the reference mel columns
AUDIO = "audio.npy"    # the window's 16 kHz mono audio with context (see media/sample.py)


class DetectorError(AvlipsInputError, RuntimeError):
    """A detector cannot run (no weights, unreadable weights, a sample without a field it needs)."""


@dataclass(frozen=True)
class Readiness:
    """Whether a detector can score here (its weights exist and load), and if not, why."""

    ready: bool
    reason: str = ""


@dataclass(frozen=True)
class WindowScore:
    """One window's verdict: a probability of fake, or an abstention with its reason."""

    key: str
    probability: float | None           # None: the detector abstained
    abstain_reason: str = ""            # why it abstained ("no speech", ...); empty when it scored
    details: dict = field(default_factory=dict)  # detector-specific numbers (best offset, confidence, ...)

    @property
    def abstained(self) -> bool:
        return self.probability is None


class Detector(ABC):
    """A window-level lip-sync deepfake detector."""

    name: ClassVar[str] = ""
    version: ClassVar[str] = "0"
    reads: ClassVar[tuple[str, ...]] = (FRAMES,)
    trainable: ClassVar[bool] = False

    @abstractmethod
    def readiness(self) -> Readiness:
        """Whether `score` can run here (weights found and loadable), and if not, why."""

    @abstractmethod
    def score(self, samples: Iterable[WindowSample]) -> Iterator[WindowScore]:
        """One WindowScore per sample, in order. May batch internally."""

    def provenance(self) -> dict:
        """What the detector's weights were trained on (corpus, its nature, generators, shard hashes)."""
        return {}

    def check_fields(self, sample: WindowSample, shard: str = "") -> None:
        """Raise DetectorError naming the shard, the sample and the field when a needed field is missing."""
        missing = [f for f in self.reads if not sample_has(sample, f)]
        if missing:
            where = f"{shard}: " if shard else ""
            raise DetectorError(f"{where}sample {sample.key} lacks field {missing[0]!r}, which detector "
                                f"{self.name!r} needs (shards made before this field existed: rerun compose)")


def sample_has(sample: WindowSample, field_name: str) -> bool:
    """Whether a decoded sample carries a field of `reads`."""
    if field_name == FRAMES:
        return sample.frames is not None and len(sample.frames) > 0
    if field_name == MEL:
        return sample.mel_db is not None
    if field_name == AUDIO:
        return getattr(sample, "audio", None) is not None
    return field_name in sample.meta


def detector_entry_points() -> dict[str, Any]:
    """name -> entry point for every installed detector."""
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def load_detector_plugin(name: str, settings: dict | None = None) -> Detector:
    """The detector registered as `name`, built with its params.yaml settings."""
    found = detector_entry_points()
    if name not in found:
        known = ", ".join(sorted(found)) or "none"
        raise DetectorError(f"no detector named {name!r} is installed (installed: {known})")
    factory = found[name].load()
    return factory(**(settings or {}))
