"""data/sync_quality.parquet: its columns and stored facts, written by the sync_quality stage, read by the card.

Kept apart from the stage (pipelines/sync_quality.py) so that reading the table needs no model code:
the card depends on this file, not on the expert's.
"""
from __future__ import annotations

import json
import os
from typing import Any, Mapping

import pyarrow as pa
import pyarrow.parquet as pq

__all__ = ["SCHEMA", "SCORE_COLUMNS", "LEFT_OUT", "write_rows", "read_metadata"]

SCORE_COLUMNS = ("lse_c", "lse_d", "best_offset", "windows", "offsets_available")
LEFT_OUT = "LeftOutByCompose"  # the error of a video compose does not use (its own stage recorded why)
SCHEMA = pa.schema([
    ("video_id", pa.string()), ("path", pa.string()),
    ("kind", pa.string()),     # real | fake
    ("generator", pa.string()), ("split", pa.string()), ("identity", pa.string()), ("centred", pa.bool_()),
    ("audio", pa.string()),    # the audio the video was scored with ("" : its own track)
    ("lse_c", pa.float64()), ("lse_d", pa.float64()), ("best_offset", pa.int64()), ("windows", pa.int64()),
    ("offsets_available", pa.int64()),
    ("error", pa.string()),    # the error class when the video could not be scored, else ""
    ("reason", pa.string()),   # why it was not scored, or why a fake is not kept
    ("kept", pa.bool_()),      # false: a fake below synthesize.min_sync_confidence, or one not scored with it set
    ("inputs_hash", pa.string()),
])
_METADATA_KEY = b"avlips_sync_quality"  # the stage's facts: expert, its sha256, offsets, threshold


def write_rows(path: str, rows: list[dict], metadata: Mapping[str, Any]) -> None:
    """The rows sorted by video id, with the stage's facts as schema metadata, never half written."""
    table = pa.Table.from_pylist(sorted(rows, key=lambda r: r["video_id"]), schema=SCHEMA)
    table = table.replace_schema_metadata({_METADATA_KEY: json.dumps(dict(metadata), sort_keys=True).encode()})
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    temporary = f"{path}.tmp"
    pq.write_table(table, temporary)
    os.replace(temporary, path)


def read_metadata(path: str) -> dict:
    """The stage's facts stored with the table; {} when it has none. Raises ValueError for unreadable JSON."""
    stored = (pq.read_schema(path).metadata or {}).get(_METADATA_KEY)
    return json.loads(stored) if stored else {}
