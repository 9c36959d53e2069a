"""The lip-generator plugin contract: what a generator is, and how avlips finds them.

A generator turns a target (a face video, or a still image for static generators) and driving
speech into a lip-synced fake. Plugins are ordinary Python distributions that register a
factory under the entry-point group `avlips.generators`:

    [project.entry-points."avlips.generators"]
    my_generator = "my_package.module:MyGenerator"

The factory is called with the generator's settings from params.yaml (`synthesize.generators.<name>`)
as keyword arguments. A plugin needs only this module and `media`.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Callable

from avlips.errors import AvlipsInputError

ENTRY_POINT_GROUP = "avlips.generators"

VIDEO = "video"  # the target is a face video; the fake keeps its motion (dynamic generators)
IMAGE = "image"  # the target is a still face image (static generators such as MakeItTalk)


class GeneratorError(RuntimeError):
    """A generator could not make a fake; the message says why (recorded as a failure)."""


class GeneratorNotReady(GeneratorError, AvlipsInputError):
    """A generator cannot run here (missing checkout, checkpoint, interpreter...)."""


@dataclass(frozen=True)
class Readiness:
    """Whether a generator can run here, and if not, why."""

    ready: bool
    reason: str = ""


@dataclass(frozen=True)
class Target:
    """What a fake is made from: the target clip (or a still of it) and facts about it."""

    clip_id: str
    path: str  # a video for VIDEO generators, an image for IMAGE generators
    fps: float
    frames: int
    duration: float
    video_path: str = ""  # the source clip, also for IMAGE targets


@dataclass(frozen=True)
class DrivingAudio:
    """The speech that drives the lips: a 16 kHz mono wav (denoised), and whose it is."""

    clip_id: str
    path: str
    duration: float
    sample_rate: int = 16000


@dataclass
class GenerationResult:
    """A made fake and its provenance."""

    path: str
    generator: str
    version: str
    params: dict
    seconds: float
    frames: int = 0
    fps: float = 0.0
    extra: dict = field(default_factory=dict)

    def provenance(self) -> dict:
        """The plain-dict record for fakes.parquet."""
        record = asdict(self)
        record["params_hash"] = params_hash(self.params)
        return record


def params_hash(params: dict) -> str:
    """A short stable hash of a generator's parameters (keys sorted)."""
    text = json.dumps(params, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


class LipGenerator:
    """Base class of generators: subclass, set `name`, `version`, `input_kind`, implement generate()."""

    name: str = ""
    version: str = "0"
    input_kind: str = VIDEO
    needs_face: bool = True  # the synthesize stage rejects targets with no face in most frames when set

    def __init__(self, **settings: Any) -> None:
        self.settings = dict(settings)

    def check(self) -> Readiness:
        """Whether this generator can run here; override to check checkouts and checkpoints."""
        return Readiness(True)

    def generate(self, target: Target, driving: DrivingAudio, out_path: str | Path,
                 params: dict | None = None) -> GenerationResult:
        """Write a fake of `target` speaking `driving` to `out_path` (mp4 with the driving audio)."""
        raise NotImplementedError

    def describe(self) -> dict:
        """Name, version, input kind and readiness, for `avlips generators list`."""
        state = self.check()
        return {"name": self.name, "version": self.version, "input": self.input_kind,
                "ready": state.ready, "reason": state.reason}

    def timed(self, started: float) -> float:
        """Seconds since `started` (a helper for GenerationResult.seconds)."""
        return round(time.perf_counter() - started, 3)


def discover() -> dict[str, Callable[..., LipGenerator]]:
    """Generator factories registered under the `avlips.generators` entry-point group, by name."""
    found: dict[str, Callable[..., LipGenerator]] = {}
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        found[entry.name] = entry  # loaded lazily: a broken plugin must not break the others
    return found


def load_generator(name: str, settings: dict | None = None) -> LipGenerator:
    """An instance of the generator registered as `name`, built with its settings."""
    registered = discover()
    if name not in registered:
        raise GeneratorNotReady(f"generator {name!r} is not installed (known: {', '.join(sorted(registered)) or 'none'})")
    try:
        factory = registered[name].load()
    except Exception as exc:  # an import error inside a plugin is that plugin's problem
        raise GeneratorNotReady(f"generator {name!r} failed to load: {type(exc).__name__}: {exc}") from exc
    generator = factory(**(settings or {}))
    if not generator.name:
        generator.name = name
    return generator


def list_generators(settings: dict | None = None) -> list[dict]:
    """describe() of every installed generator, with load errors reported as not ready."""
    settings = settings or {}
    rows = []
    for name in sorted(discover()):
        try:
            rows.append(load_generator(name, settings.get(name, {})).describe())
        except Exception as exc:
            rows.append({"name": name, "version": "?", "input": "?", "ready": False, "reason": str(exc)})
    return rows
