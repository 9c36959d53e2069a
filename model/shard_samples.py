"""Window samples of a set of shards, in shard order, each decoded once: what every detector is fed.

Evaluate and the fused detector's calibration read shards through this, and hand the same decoded
samples to every detector. The order is the LipFD loader's one-pass, unshuffled order (shards as
listed, samples as stored), so LipFD sees the same batches as when it read the shards itself. Bad
input never stops the pass, as in the loader: an unreadable or truncated shard and a sample that
does not decode are warned about (naming shard and key), counted and skipped.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Iterator, Sequence

from avlips.media.sample import WindowSample

log = logging.getLogger("avlips.shard_samples")

_REQUIRED = ("mel.npy", "cls", "json")


@dataclass
class ReadStats:
    """What a pass read and what it skipped."""

    samples: int = 0
    skipped_samples: int = 0
    bad_shards: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ShardSample:
    """A decoded sample and the shard it came from (error messages name it)."""

    shard: str
    sample: WindowSample


class _Handler:
    """webdataset's error handler: warn naming the shard, remember it, go on with the next one."""

    def __init__(self, stats: ReadStats) -> None:
        self.stats = stats
        self.current = "?"

    def track(self, sources: Iterator[dict]) -> Iterator[dict]:
        for source in sources:
            self.current = str(source.get("url"))
            yield source

    def __call__(self, exn: Exception) -> bool:
        args = getattr(exn, "args", ())
        named = [a for a in args[1:] if isinstance(a, str)]  # webdataset appends the URL where it knows it
        where = named[-1] if named else self.current
        log.warning("shard %s unreadable or truncated (%s: %s)", where, type(exn).__name__,
                    args[0] if args else repr(exn))
        if where not in self.stats.bad_shards:
            self.stats.bad_shards.append(where)
        return True


def iter_shard_samples(shards: str | Sequence[str], stats: ReadStats | None = None) -> Iterator[ShardSample]:
    """Every readable sample of the shards (paths, URLs, brace notation), in order."""
    from webdataset.tariterators import group_by_keys, tar_file_expander, url_opener

    from avlips.model.loader import expand_shards

    stats = stats if stats is not None else ReadStats()
    handler = _Handler(stats)
    opened = handler.track(url_opener(({"url": url} for url in expand_shards(shards)), handler=handler))
    for raw in group_by_keys(tar_file_expander(opened, handler=handler), handler=handler):
        key, url = str(raw.get("__key__")), str(raw.get("__url__"))
        members = {k: v for k, v in raw.items() if not k.startswith("__")}
        try:
            missing = [name for name in _REQUIRED if name not in members]
            if missing:
                raise ValueError(f"missing field(s) {missing}")
            sample = WindowSample.decode(key, members)
            if sample.label not in (0, 1):
                raise ValueError(f"label {sample.label} (0 real, 1 fake)")
        except Exception as exc:  # one bad sample must not end the pass
            log.warning("skipped sample %r of shard %s: %s: %s", key, url, type(exc).__name__, exc)
            stats.skipped_samples += 1
            continue
        stats.samples += 1
        yield ShardSample(url, sample)
