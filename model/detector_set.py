"""Detectors built from params.yaml: `detectors.<name>` holds each one's settings.

A detector that combines others (it has `members` and `bind`, as `fused`) gets its members built
with their own settings and shared: evaluate and detect score each member once and combine.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping, Sequence

from avlips.model import detectors as contract
from avlips.model.detectors import Detector, DetectorError


def detector_settings(params: Mapping, name: str) -> dict:
    """The settings of one detector (`detectors.<name>`), {} when params has none."""
    block = (params.get("detectors") or {}) if isinstance(params, Mapping) else {}
    settings = block.get(name) or {}
    if not isinstance(settings, Mapping):
        raise DetectorError(f"detectors.{name}: expected a mapping of settings, got {settings!r}")
    return dict(settings)


def build_detectors(names: Sequence[str], params: Mapping,
                    overrides: Mapping[str, Mapping] | None = None) -> dict[str, Detector]:
    """name -> detector for each name and the members of combining ones (members first)."""
    overrides = overrides or {}
    built: dict[str, Detector] = {}

    def build(name: str, chain: tuple[str, ...]) -> None:
        if name in built:
            return
        if name in chain:
            raise DetectorError(f"detectors: {' -> '.join(chain + (name,))} is a cycle")
        settings = {**detector_settings(params, name), **dict(overrides.get(name) or {})}
        try:
            detector = contract.load_detector_plugin(name, settings)
        except TypeError as exc:  # a setting the factory does not take
            raise DetectorError(f"detectors.{name}: {exc}") from exc
        for member in getattr(detector, "members", ()):
            build(member, chain + (name,))
        if hasattr(detector, "bind"):
            detector.bind({member: built[member] for member in detector.members})
        built[name] = detector

    for name in names:
        build(name, ())
    return built


@dataclass(frozen=True)
class DetectorListing:
    """One line of `avlips detectors list`."""

    name: str
    version: str
    reads: tuple[str, ...]
    ready: bool
    reason: str


def list_detectors(params: Mapping) -> list[DetectorListing]:
    """Every installed detector with its readiness under the params' settings (errors become the reason)."""
    listings = []
    for name in sorted(contract.detector_entry_points()):
        try:
            detector = build_detectors([name], params)[name]
            readiness = detector.readiness()
            listings.append(DetectorListing(name, detector.version, tuple(detector.reads), readiness.ready,
                                            readiness.reason))
        except Exception as exc:  # a plugin that cannot even be built is listed with why
            listings.append(DetectorListing(name, "?", (), False, f"{type(exc).__name__}: {exc}"))
    return listings


def format_detector_table(listings: Sequence[DetectorListing]) -> str:
    """The listing as an aligned table for a terminal."""
    rows = [("name", "version", "reads", "ready", "why")]
    rows += [(d.name, d.version, ",".join(d.reads) or "-", "yes" if d.ready else "no", d.reason) for d in listings]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row[:4], widths)) + "  " + row[4]
                     for row in rows)


def default_detector(params: Mapping) -> str:
    """The detector `avlips detect` uses unless told: fused when its members' weights all exist, else lipfd."""
    try:
        built = build_detectors(["fused"], params)
    except Exception:  # fused or a member not installed, or settings it rejects: the reference detector
        return "lipfd"
    from avlips.model.fused import weights_file

    members = getattr(built["fused"], "members", ())
    paths = [weights_file(built[m]) or detector_settings(params, m).get("model", "") for m in members]
    return "fused" if paths and all(p and os.path.isfile(str(p)) for p in paths) else "lipfd"
