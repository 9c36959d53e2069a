"""Reading ahead on a thread keeps the stream's order, items and errors, and stops when the reader stops."""
from __future__ import annotations

import threading
import time

import pytest

from avlips.model.prefetch import prefetch


def test_items_in_order_and_the_streams_error_raised_where_it_occurred():
    assert list(prefetch(iter(range(100)), ahead=3)) == list(range(100))

    def failing():
        yield 1
        yield 2
        raise ValueError("shard cut")

    got = []
    with pytest.raises(ValueError, match="shard cut"):
        for item in prefetch(failing(), ahead=8):
            got.append(item)
    assert got == [1, 2]


def test_closing_the_reader_stops_the_thread():
    made = []

    def endless():
        n = 0
        while True:
            made.append(n)
            yield n
            n += 1

    stream = prefetch(endless(), ahead=2)
    assert next(stream) == 0
    stream.close()
    time.sleep(0.3)
    assert not [t for t in threading.enumerate() if t.name == "avlips-prefetch"]
    assert len(made) <= 5  # it read only a little ahead
