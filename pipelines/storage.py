"""Every file a stage writes goes through here, on Beam's filesystems.

Local paths, gs:// and s3:// all work, so a stage's output can move to a bucket without code
changes. Writes go to a temporary name and are renamed into place, so a final name never holds
a partial file.
"""
from __future__ import annotations

import io
import json
import posixpath
import uuid
from typing import Iterable

import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems


def join(base: str, *parts: str) -> str:
    """Join path parts on any Beam filesystem."""
    return FileSystems.join(str(base), *parts)


def exists(path: str) -> bool:
    """Whether a file exists."""
    return FileSystems.exists(str(path))


def makedirs(path: str) -> None:
    """Create a directory (a no-op on object stores, which have none)."""
    if not FileSystems.exists(str(path)):
        try:
            FileSystems.mkdirs(str(path))
        except OSError:
            pass  # made concurrently by another worker, or not needed on this filesystem


def write_bytes(path: str, data: bytes) -> None:
    """Write a whole file atomically: temporary name first, then rename."""
    path = str(path)
    directory = posixpath.dirname(path) if "://" in path else __import__("os").path.dirname(path)
    if directory:
        makedirs(directory)
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    with FileSystems.create(tmp) as handle:
        handle.write(data)
    if FileSystems.exists(path):
        FileSystems.delete([path])
    FileSystems.rename([tmp], [path])


def read_bytes(path: str) -> bytes:
    """Read a whole file."""
    with FileSystems.open(str(path)) as handle:
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
    table = pa.Table.from_pylist(list(rows), schema=schema)
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    write_bytes(path, buffer.getvalue())


def read_parquet(path: str) -> pa.Table:
    """Read a parquet table."""
    return pq.read_table(io.BytesIO(read_bytes(path)))
