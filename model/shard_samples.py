"""Window samples of a set of shards, in shard order, each decoded once: what every detector is fed.

Evaluate and the fused detector's calibration read shards through this, and hand the same decoded
samples to every detector. The order is the LipFD loader's one-pass, unshuffled order (shards as
listed, samples as stored), so LipFD sees the same batches as when it read the shards itself. Bad
input never stops the pass, as in the loader: an unreadable or truncated shard and a sample that
does not decode are warned about (naming shard and key), counted and skipped. A pass that perturbs
samples on the fly keeps each sample's stored bytes too (`keep_members`): the perturbed copy of an
audio type reuses the clean frames' bytes, as the perturb stage stores them.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np
import xxhash

from avlips.media.sample import WindowSample
from avlips.model.shard_errors import ShardErrorHandler

log = logging.getLogger("avlips.shard_samples")

_REQUIRED = ("mel.npy", "cls", "json")


@dataclass
class ReadStats:
    """What a pass read and what it skipped."""

    samples: int = 0
    skipped_samples: int = 0
    bad_shards: list[str] = field(default_factory=list)
    excluded_samples: int = 0  # windows of videos the pass was told to leave out


@dataclass(frozen=True)
class ShardSample:
    """A decoded sample and the shard it came from (error messages name it)."""

    shard: str
    sample: WindowSample
    members: dict[str, bytes] | None = None  # the stored bytes, when the pass was asked to keep them


class DecodedFrames:
    """Decoded frames by the digest of their stored bytes, up to `max_bytes`: an audio-perturbed copy of a window
    stores the clean window's frame bytes, and takes its decoded frames instead of decoding them again.

    Entries are kept while there is room and never pushed out (a reader clears the whole at a point of its
    own, evaluate at each clean shard): a least-recently-used bound would drop every entry before its reuse
    when the copies come a shard later and the shard does not fit. Kept frames are read-only, being shared.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = int(max_bytes)
        self._items: dict[bytes, np.ndarray] = {}
        self._bytes = 0
        self.hits = 0

    def get(self, digest: bytes) -> np.ndarray | None:
        found = self._items.get(digest)
        self.hits += found is not None
        return found

    def put(self, digest: bytes, frames: np.ndarray) -> None:
        if digest in self._items or self._bytes + frames.nbytes > self.max_bytes:
            return
        frames.flags.writeable = False
        self._items[digest] = frames
        self._bytes += frames.nbytes

    def clear(self) -> None:
        self._items.clear()
        self._bytes = 0


def frames_digest(members: dict[str, bytes]) -> bytes:
    """xxh3-128 of a stored sample's frame members (names and bytes, in name order)."""
    digest = xxhash.xxh3_128()
    for name in sorted(n for n in members if n.startswith("f") and n[1:].split(".")[0].isdigit()):
        digest.update(f"{name}:{len(members[name])}:".encode())
        digest.update(members[name])
    return digest.digest()


def decode_window(key: str, members: dict[str, bytes], frames_cache: DecodedFrames | None = None,
                  remember: bool = True) -> WindowSample:
    """A window sample from its stored members; ValueError/SampleError saying what is wrong with it.

    frames_cache: decoded frames by their bytes, taken from it when there and (remember) put in it otherwise."""
    missing = [name for name in _REQUIRED if name not in members]
    if missing:
        raise ValueError(f"missing field(s) {missing}")
    if frames_cache is None:
        sample = WindowSample.decode(key, members)
    else:
        digest = frames_digest(members)
        sample = WindowSample.decode(key, members, frames=frames_cache.get(digest))
        if remember:
            frames_cache.put(digest, sample.frames)
    if sample.label not in (0, 1):
        raise ValueError(f"label {sample.label} (0 real, 1 fake)")
    return sample


def stored_clip(members: dict[str, bytes]) -> str:
    """The clip (video id) a stored sample belongs to, read from its json member without decoding the frames."""
    return str(json.loads(members["json"]).get("clip", ""))


def iter_shard_samples(shards: str | Sequence[str], stats: ReadStats | None = None,
                       keep_members: bool = False, exclude_clips: frozenset[str] = frozenset(),
                       frames_cache: DecodedFrames | None = None, remember_frames: bool = True
                       ) -> Iterator[ShardSample]:
    """Every readable sample of the shards (paths, URLs, brace notation), in order, but those of `exclude_clips`.

    frames_cache: frames decoded before, by their bytes (decode_window); remember_frames: keep these shards'."""
    from webdataset.tariterators import group_by_keys, tar_file_expander, url_opener

    from avlips.model.loader import expand_shards

    stats = stats if stats is not None else ReadStats()
    handler = ShardErrorHandler(lambda message: log.warning("%s", message),
                                lambda where: stats.bad_shards.append(where))
    opened = handler.track(url_opener(({"url": url} for url in expand_shards(shards)), handler=handler))
    for raw in group_by_keys(tar_file_expander(opened, handler=handler), handler=handler):
        key, url = str(raw.get("__key__")), str(raw.get("__url__"))
        members = {k: v for k, v in raw.items() if not k.startswith("__")}
        try:
            if exclude_clips and stored_clip(members) in exclude_clips:
                stats.excluded_samples += 1  # left out on purpose, before its frames are decoded
                continue
            sample = decode_window(key, members, frames_cache, remember_frames)
        except Exception as exc:  # one bad sample must not end the pass
            log.warning("skipped sample %r of shard %s: %s: %s", key, url, type(exc).__name__, exc)
            stats.skipped_samples += 1
            continue
        stats.samples += 1
        yield ShardSample(url, sample, members if keep_members else None)
