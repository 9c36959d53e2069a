"""What a model was trained on, recorded in its checkpoint, and the warning it calls for.

A checkpoint trained by `avlips train` records (in `extra["provenance"]`) its corpus (the sources the
compose stage read, from the shards' `compose_stats.json`), whether that corpus is synthetic (the
`demo` source renders its speakers), the generators of its fakes (the shards' `samples.parquet`),
and each training and validation shard's file name, size and sha256. `avlips detect` reads it back:
a model trained on the synthetic demo corpus has learnt rendered faces and synthetic speech, and its
scores on real footage mean nothing; it says so.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

from avlips.media.checksums import file_sha256

SYNTHETIC_SOURCES = frozenset({"demo"})  # corpus sources whose clips are rendered, not filmed


def _local(url: str) -> Path | None:
    if "://" in url or url.startswith("pipe:"):
        return None
    path = Path(url.removeprefix("file:"))
    return path if path.is_file() else None



def shard_records(shards: str | Sequence[str] | None) -> list[dict]:
    """Name, size and sha256 of each local shard (a URL or pipe: is recorded as given, unhashed)."""
    if not shards:
        return []
    from avlips.model.loader import expand_shards

    records = []
    for url in expand_shards(shards):
        path = _local(url)
        if path is None:
            records.append({"name": url, "sha256": None, "bytes": None})
        else:
            records.append({"name": path.name, "sha256": file_sha256(path), "bytes": path.stat().st_size})
    return records


def _shard_dirs(shards: str | Sequence[str] | None) -> list[Path]:
    if not shards:
        return []
    from avlips.model.loader import expand_shards

    return sorted({path.parent for path in (_local(url) for url in expand_shards(shards)) if path is not None})


def _corpus(directories: list[Path]) -> dict:
    """The corpus the shards were composed from, as compose recorded it."""
    sources: set[str] = set()
    for directory in directories:
        stats = directory / "compose_stats.json"
        if stats.is_file():
            sources.update((json.loads(stats.read_text(encoding="utf-8")).get("corpus") or {}).get("sources") or [])
    if not sources:
        return {"sources": [], "synthetic": None,
                "note": "the shards do not say which corpus they came from (composed before avlips recorded it)"}
    return {"sources": sorted(sources), "synthetic": sources <= SYNTHETIC_SOURCES}


def _generators(directories: list[Path], names: set[str]) -> list[str]:
    """Generators of the fakes in the named shards, from the samples.parquet beside them."""
    import pyarrow.parquet as pq

    found: set[str] = set()
    for directory in directories:
        manifest = directory / "samples.parquet"
        if not manifest.is_file():
            continue
        for row in pq.read_table(manifest, columns=["shard", "label", "generator"]).to_pylist():
            if f"{row['shard']}.tar" in names and row["label"] == 1:
                found.add(row["generator"] or "unknown")
    return sorted(found)


def training_provenance(train_shards: str | Sequence[str], val_shards: str | Sequence[str] | None = None) -> dict:
    """What a model trained on these shards was trained on (for its checkpoint's extra data)."""
    train = shard_records(train_shards)
    directories = _shard_dirs(train_shards)
    corpus = _corpus(directories)
    return {
        "corpus": corpus,
        "synthetic": corpus["synthetic"],
        "generators": _generators(directories, {r["name"] for r in train}),
        "train_shards": train,
        "val_shards": shard_records(val_shards),
    }


def provenance_warnings(provenance: Mapping[str, Any], detector: str = "") -> list[str]:
    """Plain warnings about what the scores mean, given a detector's provenance (members' for a combination)."""
    who = f"{detector}: " if detector else ""
    if not provenance:
        return [f"{who}the model does not record what it was trained on; if that was the synthetic demo corpus, "
                f"its scores on real footage mean nothing"]
    if "synthetic" not in provenance and all(isinstance(v, Mapping) for v in provenance.values()):
        # A combining detector: its members' provenance, each its own.
        return [w for name, member in provenance.items() for w in provenance_warnings(member, name)]
    if provenance.get("synthetic"):
        sources = ", ".join((provenance.get("corpus") or {}).get("sources") or ["demo"])
        return [f"{who}this model was trained on the synthetic demo corpus (source: {sources}): its scores on real "
                f"footage mean nothing. Train it on real clips before trusting a verdict."]
    if provenance.get("synthetic") is None:
        note = (provenance.get("corpus") or {}).get("note", "its corpus is not recorded")
        return [f"{who}{note}; if that was the synthetic demo corpus, its scores on real footage mean nothing"]
    return []

