"""WebDataset shards: deterministic tar bytes, stable placement by key, shard names.

Members are sorted by key then field, with fixed metadata (mtime 0, root owner, mode 0644), so
the same samples always give the same tar bytes whatever order they arrived in.
"""
from __future__ import annotations

import hashlib
import io
import math
import tarfile
from typing import Iterable, Iterator


def shard_name(split: str, index: int) -> str:
    """`<split>-NNNNNN`, zero-padded so brace notation lists shards."""
    return f"{split}-{index:06d}"


def shard_count(expected_samples: int, samples_per_shard: int) -> int:
    """How many shards a split gets: fixed by the expected sample count, not by arrival."""
    return max(1, math.ceil(expected_samples / max(1, samples_per_shard)))


def shard_of(key: str, shards: int) -> int:
    """The shard a key goes to: a hash of the key, so placement is independent of workers and order."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % shards


def tar_bytes(samples: Iterable[tuple[str, dict[str, bytes]]]) -> bytes:
    """A tar holding each (key, members) sample as `<key>.<field>` entries, sorted, fixed metadata."""
    ordered = sorted(samples, key=lambda item: item[0])
    keys = [key for key, _ in ordered]
    if len(keys) != len(set(keys)):
        duplicated = sorted({k for k in keys if keys.count(k) > 1})
        raise ValueError(f"duplicate sample keys in one shard: {duplicated[:5]}")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for key, members in ordered:
            for name in sorted(members):
                data = members[name]
                info = tarfile.TarInfo(f"{key}.{name}")
                info.size, info.mtime, info.mode = len(data), 0, 0o644
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def iter_tar_samples(data: bytes | io.BufferedIOBase) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, members) for each sample of a tar, members grouped while their key repeats."""
    fileobj = io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data
    current_key, members = None, {}
    with tarfile.open(fileobj=fileobj, mode="r|*") as tar:
        for info in tar:
            if not info.isfile():
                continue
            base = info.name.rsplit("/", 1)[-1]
            key, _, field = base.partition(".")
            if key != current_key and current_key is not None:
                yield current_key, members
                members = {}
            current_key = key
            members[field] = tar.extractfile(info).read()
    if current_key is not None:
        yield current_key, members
