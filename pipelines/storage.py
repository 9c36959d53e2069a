"""Every file a stage writes goes through here, on Beam's filesystems.

Local paths, gs:// and s3:// all work, so a stage's output can move to a bucket without code
changes. Writes go to a temporary name and are renamed into place, so a final name never holds
a partial file. Local paths are served by the os module directly: Beam's filesystems (about a
CPU-second of imports) load only when a path names a scheme.
"""
from __future__ import annotations

import json
import os
import posixpath
import uuid
from typing import Iterable

import pyarrow as pa
import pyarrow.parquet as pq


def _remote(path: str) -> bool:
    """Whether a path names a filesystem scheme (gs://, s3://, ...) that Beam serves."""
    return "://" in path


def _filesystems():
    from apache_beam.io.filesystems import FileSystems

    return FileSystems


def join(base: str, *parts: str) -> str:
    """Join path parts on any Beam filesystem."""
    base = str(base)
    return _filesystems().join(base, *parts) if _remote(base) else os.path.join(base, *parts)


def exists(path: str) -> bool:
    """Whether a file exists."""
    path = str(path)
    return _filesystems().exists(path) if _remote(path) else os.path.exists(path)


def makedirs(path: str) -> None:
    """Create a directory (a no-op on object stores, which have none)."""
    path = str(path)
    if not _remote(path):
        os.makedirs(path, exist_ok=True)
        return
    if not _filesystems().exists(path):
        try:
            _filesystems().mkdirs(path)
        except OSError:
            pass  # made concurrently by another worker, or not needed on this filesystem


def write_bytes(path: str, data: bytes) -> None:
    """Write a whole file atomically: temporary name first, then rename."""
    path = str(path)
    directory = posixpath.dirname(path) if _remote(path) else os.path.dirname(path)
    if directory:
        makedirs(directory)
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    if not _remote(path):
        with open(tmp, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
        return
    filesystems = _filesystems()
    with filesystems.create(tmp) as handle:
        handle.write(data)
    if filesystems.exists(path):
        filesystems.delete([path])
    filesystems.rename([tmp], [path])


def read_bytes(path: str) -> bytes:
    """Read a whole file."""
    path = str(path)
    if not _remote(path):
        with open(path, "rb") as handle:
            return handle.read()
    with _filesystems().open(path) as handle:
        return handle.read()


def write_json(path: str, data: dict) -> None:
    """Write JSON with sorted keys (stable bytes for the same data)."""
    write_bytes(path, (json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode())


def read_json(path: str) -> dict:
    """Read a JSON file."""
    return json.loads(read_bytes(path))


def read_finished_record(sidecar: str, output: str) -> dict | None:
    """An earlier run's JSON sidecar for `output`, or None when either file is missing or the sidecar is
    unreadable (a writer that crashed mid-way): the caller then redoes that item."""
    if not (exists(sidecar) and exists(output)):
        return None
    try:
        return read_json(sidecar)
    except (OSError, ValueError):
        return None


def write_parquet(path: str, rows: Iterable[dict], schema: pa.Schema) -> None:
    """Write rows as a parquet table with a fixed schema (an empty table still has its columns)."""
    from avlips.pipelines.arrow_rows import rows_to_table

    table = rows_to_table(list(rows), schema)  # from_pylist's table, without importing pandas
    # Arrow's own memory, not a Python file object: Arrow threads that call back into Python for a file's
    # bytes can still be at it when the interpreter exits, which aborts a finished stage (exit -6,
    # "terminate called without an active exception"; apache/arrow#34314, #50482; seen after perturb in CI).
    buffer = pa.BufferOutputStream()
    pq.write_table(table, buffer, compression="zstd")
    write_bytes(path, buffer.getvalue().to_pybytes())


def read_parquet(path: str) -> pa.Table:
    """Read a parquet table (a manifest: small, read on the calling thread, from Arrow's memory)."""
    # One file: ParquetFile reads it as read_table would, without pyarrow.dataset (which loads pandas).
    return pq.ParquetFile(pa.BufferReader(read_bytes(path))).read(use_threads=False)
