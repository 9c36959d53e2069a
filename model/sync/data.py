"""Windows for the lip-sync expert from WebDataset shards: decoded, front-ended and held in memory.

The expert trains and calibrates on real windows only: fakes are skipped before they are decoded. A
sample without the audio field is an error naming its shard and the field (shards composed before the
field existed); windows whose own audio is quieter than `min_speech_dbfs` are counted and left out.
"""
from __future__ import annotations

import glob
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np

from avlips.media.sample import WindowSample
from avlips.model.detectors import AUDIO, DetectorError
from avlips.model.sync.frontend import window_inputs

__all__ = ["PreparedWindow", "WindowSet", "expand_shards", "iter_shard_samples", "read_real_windows"]


@dataclass
class PreparedWindow:
    """One real window's expert inputs."""

    key: str
    clip: str
    faces: np.ndarray    # (15, h, w) float32
    chunks: np.ndarray   # (K, 1, 80, 16) float32
    offsets: np.ndarray  # (K,) int
    start: int = 0       # the window's first frame in its clip


@dataclass
class WindowSet:
    """The real windows of some shards, and what was left out."""

    shards: list[str]
    windows: list[PreparedWindow] = field(default_factory=list)
    fakes_skipped: int = 0
    silent_skipped: int = 0

    def counts(self) -> dict:
        return {"windows": len(self.windows), "fakes_skipped": self.fakes_skipped,
                "silent_skipped": self.silent_skipped, "clips": len({w.clip for w in self.windows})}


def expand_shards(patterns: str | Sequence[str]) -> list[str]:
    """Shard paths from globs, brace notation or `::` lists (a local glob must match something)."""
    from webdataset.shardlists import expand_urls

    items = [patterns] if isinstance(patterns, str) else list(patterns)
    urls: list[str] = []
    for item in items:
        for url in expand_urls(item):
            if "://" not in url and not url.startswith("pipe:") and glob.has_magic(url):
                found = sorted(glob.glob(url))
                if not found:
                    raise DetectorError(f"no shards match {url!r}")
                urls.extend(found)
            else:
                urls.append(url)
    if not urls:
        raise DetectorError(f"no shards in {patterns!r}")
    return urls


def iter_shard_samples(shards: Sequence[str], real_only: bool = False) -> Iterator[tuple[str, WindowSample | None]]:
    """(shard, sample) in shard order; with real_only, fakes come as (shard, None) without being decoded."""
    import webdataset as wds

    dataset = wds.WebDataset(list(shards), shardshuffle=False, handler=wds.reraise_exception, empty_check=False)
    for raw in dataset:
        shard, key = str(raw.get("__url__", "")), raw["__key__"]
        members = {name: value for name, value in raw.items() if not name.startswith("__")}
        if real_only and members.get("cls", b"0").strip() not in (b"0", b""):
            yield shard, None
            continue
        yield shard, WindowSample.decode(key, members)


def read_real_windows(shards: Sequence[str], max_offset: int, face_size: int, min_speech_dbfs: float) -> WindowSet:
    """The real windows with speech of `shards`, front-ended for the expert."""
    found = WindowSet(shards=list(shards))
    for shard, sample in iter_shard_samples(shards, real_only=True):
        if sample is None:
            found.fakes_skipped += 1
            continue
        if sample.audio is None:
            raise DetectorError(f"{shard}: sample {sample.key} lacks field {AUDIO!r}, which the lip-sync expert "
                                f"needs (shards composed before the field existed: rerun compose)")
        inputs = window_inputs(sample, max_offset, face_size)
        if inputs.speech_dbfs < min_speech_dbfs:
            found.silent_skipped += 1
            continue
        start = int((sample.meta.get("frame_indices") or [0])[0])
        found.windows.append(PreparedWindow(sample.key, str(sample.meta.get("clip", sample.key)), inputs.faces,
                                            inputs.chunks, inputs.offsets, start))
    return found
