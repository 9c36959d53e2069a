"""File checksums: one streamed sha256 for shards, checkpoints and weights (files can be gigabytes)."""
from __future__ import annotations

import hashlib
import os

CHUNK_BYTES = 1 << 20  # read 1 MiB at a time: a shard or a released checkpoint never sits whole in memory


def file_sha256(path: str | os.PathLike) -> str:
    """The hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()
