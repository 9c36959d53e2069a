"""Rows of plain Python values as an Arrow table, without pyarrow's pandas shim.

`pa.Table.from_pylist` converts each column with `pa.array`, whose first call on a Python list
imports pandas to ask whether the list is a pandas object (about 0.3 CPU-seconds in every
process that writes a manifest, for a few hundred rows). The columns the stages write (strings,
integers, floats, lists of integers, no nulls) are built here from their buffers instead, to the
same arrays; anything else is left to `from_pylist`.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa

_INTEGERS = {pa.int8(): np.int8, pa.int16(): np.int16, pa.int32(): np.int32, pa.int64(): np.int64}
_OFFSET_LIMIT = 2**31 - 1  # int32 offsets of string and list arrays


def rows_to_table(rows: list[dict], schema: pa.Schema) -> pa.Table:
    """The table `pa.Table.from_pylist(rows, schema=schema)` gives."""
    arrays = []
    for field in schema:
        values = [row.get(field.name) for row in rows]
        array = _column(values, field.type)
        if array is None:
            return pa.Table.from_pylist(rows, schema=schema)
        arrays.append(array)
    return pa.Table.from_arrays(arrays, schema=schema)


def _column(values: list, kind: pa.DataType) -> pa.Array | None:
    """One column from its buffers; None when it holds a value or type handled only by pa.array (nulls among them)."""
    count = len(values)
    if kind in _INTEGERS:
        numbers = _integers(values, _INTEGERS[kind])
        return None if numbers is None else pa.Array.from_buffers(kind, count, [None, pa.py_buffer(numbers)])
    if kind == pa.float64():
        if not all(type(v) is float or type(v) is int for v in values):
            return None
        numbers = np.array(values, dtype=np.float64)
        return pa.Array.from_buffers(kind, count, [None, pa.py_buffer(numbers)])
    if kind == pa.string():
        if not all(type(v) is str for v in values):
            return None
        encoded = [v.encode("utf-8") for v in values]
        offsets = _offsets([len(b) for b in encoded])
        if offsets is None:
            return None
        return pa.Array.from_buffers(kind, count, [None, pa.py_buffer(offsets), pa.py_buffer(b"".join(encoded))])
    if pa.types.is_list(kind) and kind.value_type in _INTEGERS:
        if not all(type(v) is list for v in values):
            return None
        flat = [item for v in values for item in v]
        numbers = _integers(flat, _INTEGERS[kind.value_type])
        offsets = _offsets([len(v) for v in values])
        if numbers is None or offsets is None:
            return None
        child = pa.Array.from_buffers(kind.value_type, len(flat), [None, pa.py_buffer(numbers)])
        return pa.Array.from_buffers(kind, count, [None, pa.py_buffer(offsets)], children=[child])
    return None


def _integers(values: list, dtype: type) -> np.ndarray | None:
    """Python ints as `dtype`; None for other values (bools included) or any out of its range."""
    if not all(type(v) is int for v in values):
        return None
    limits = np.iinfo(dtype)
    if values and (min(values) < limits.min or max(values) > limits.max):
        return None  # pa.array raises on these: let it, with its message
    return np.array(values, dtype=dtype)


def _offsets(lengths: list[int]) -> np.ndarray | None:
    """int32 start offsets (n + 1) of consecutive items of these lengths; None past int32."""
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    if offsets[-1] > _OFFSET_LIMIT:
        return None
    return offsets.astype(np.int32)
