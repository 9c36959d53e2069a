"""pipelines.arrow_rows: from_pylist's tables without importing pandas."""
from __future__ import annotations

import subprocess
import sys

import pyarrow as pa
import pytest

from avlips.pipelines.arrow_rows import rows_to_table
from avlips.pipelines.compose import SAMPLE_SCHEMA
from avlips.pipelines.failures import SCHEMA as FAILURE_SCHEMA

SAMPLE_ROW = {"key": "clip_é_w00", "shard": "train-000000", "split": "train", "label": 1, "clip": "clip_é",
              "identity": "id", "generator": "", "window": 3, "frame_indices": [0, 1, 2, 3, 4],
              "start_time": 0.1, "end_time": 1 / 3, "bytes": 2**40, "extra": "not in the schema"}


@pytest.mark.parametrize("rows", [
    [],
    [SAMPLE_ROW],
    [SAMPLE_ROW, {**SAMPLE_ROW, "key": "", "frame_indices": [], "start_time": 2, "label": -128}],
])
def test_sample_rows_give_from_pylists_table(rows):
    built = rows_to_table(rows, SAMPLE_SCHEMA)
    built.validate(full=True)
    assert built.equals(pa.Table.from_pylist(rows, schema=SAMPLE_SCHEMA))
    assert built.schema == SAMPLE_SCHEMA


@pytest.mark.parametrize("change", [
    {"generator": None},  # a null
    {"label": True},  # a bool is an int to Python, not to pa.array's int8
    {"frame_indices": (0, 1)},  # a tuple
    {"start_time": None},
])
def test_values_it_does_not_build_go_to_from_pylist(change):
    """Its table, or its error."""
    rows = [SAMPLE_ROW, {**SAMPLE_ROW, **change}]
    try:
        expected = pa.Table.from_pylist(rows, schema=SAMPLE_SCHEMA)
    except pa.ArrowException as exc:
        with pytest.raises(type(exc)):
            rows_to_table(rows, SAMPLE_SCHEMA)
    else:
        assert rows_to_table(rows, SAMPLE_SCHEMA).equals(expected)


def test_out_of_range_integers_fail_as_from_pylist_does():
    with pytest.raises(pa.ArrowInvalid):
        rows_to_table([{**SAMPLE_ROW, "label": 300}], SAMPLE_SCHEMA)


def test_writing_a_manifest_does_not_import_pandas(tmp_path):
    """The point of the module: a stage process that writes parquet manifests never loads pandas."""
    code = ("import sys\n"
            "from avlips.pipelines import storage\n"
            "from avlips.pipelines.failures import SCHEMA\n"
            f"storage.write_parquet({str(tmp_path / 'f.parquet')!r}, "
            "[{'input': 'a', 'stage': 'compose', 'error': 'E', 'message': 'm'}], SCHEMA)\n"
            "print(storage.read_parquet(" + repr(str(tmp_path / "f.parquet")) + ").num_rows, 'pandas' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["1", "False"]
    assert FAILURE_SCHEMA.names == ["input", "stage", "error", "message"]
