"""Read ahead on a thread: the next items of a stream are made while the caller works on the current ones.

Evaluate's stream reads tar members and decodes JPEG frames; OpenCV's decoder releases the GIL, so the
decoding overlaps the detectors' work instead of stalling it. Order, items and exceptions are those of
the stream itself; closing the consumer stops the thread.
"""
from __future__ import annotations

import queue
import threading
from typing import Iterable, Iterator, TypeVar

__all__ = ["prefetch"]

T = TypeVar("T")
_END = object()


class _Raised:
    def __init__(self, error: BaseException) -> None:
        self.error = error


def prefetch(items: Iterable[T], ahead: int = 32) -> Iterator[T]:
    """The items in order, up to `ahead` of them made in advance on a thread."""
    ready: queue.Queue = queue.Queue(maxsize=max(1, ahead))
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        ready.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            ready.put(_END)
        except BaseException as exc:  # handed to the consumer, raised there
            ready.put(_Raised(exc))

    thread = threading.Thread(target=produce, name="avlips-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = ready.get()
            if item is _END:
                return
            if isinstance(item, _Raised):
                raise item.error
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)
