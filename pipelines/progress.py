"""Progress of one Beam worker: a tqdm bar on a terminal, else a log line every N items (done, rate, failed).

Each stage keeps one WorkerProgress per process as a module global; its DoFns call `count` or
`tick` per finished item. In the launching process (the in-memory DirectRunner, one worker) the
stage can say how many items to `expect` and `finish` the bar when the pipeline is done; worker
processes of other runners count their own share, and their stderr is seldom a terminal.
"""
from __future__ import annotations

import logging
import sys
import time
from contextlib import contextmanager
from typing import Any, Iterator


def on_terminal() -> bool:
    """Whether progress goes to a person's terminal (stderr is a TTY)."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False


class WorkerProgress:
    """Counts the items a worker finishes: a bar on a terminal, else a log line every `every` items."""

    def __init__(self, stage: str, noun: str, every: int) -> None:
        self.log = logging.getLogger(f"avlips.{stage}")
        self.stage, self.noun, self.every = stage, noun, every
        self.done = self.failed = 0
        self.started = 0.0
        self.total: int | None = None
        self._bar: Any = None

    def expect(self, total: int) -> None:
        """How many items this process will see (the launching process of an in-memory run)."""
        self.total = total

    def start(self) -> None:
        """Start the clock (and the bar, on a terminal) at the worker's first item."""
        if not self.started:
            self.started = time.time()
            if on_terminal():
                from tqdm import tqdm

                self._bar = tqdm(total=self.total, desc=self.stage, unit=self.noun.rstrip("s") or "item",
                                 dynamic_ncols=True, leave=True)

    def tick(self, failed: bool = False, note: str = "") -> None:
        """Count one finished item; `note` (what the item was) is logged when there is no bar."""
        self.start()
        self.done += 1
        self.failed += bool(failed)
        if self._bar is not None:
            self._bar.set_postfix(failed=self.failed, refresh=False)
            self._bar.update(1)
            return
        if note:
            self.log.info("%s", note)
        if self.done % self.every == 0:
            elapsed = max(time.time() - self.started, 1e-6)
            self.log.info("%s: %d %s done in this worker (%.2f/s), %d failed", self.stage, self.done, self.noun,
                          self.done / elapsed, self.failed)

    def count(self, result: dict) -> dict:
        """Count a finished item (a failure when it holds 'failure'); return it unchanged."""
        self.tick("failure" in result)
        return result

    @contextmanager
    def running(self, total: int) -> Iterator["WorkerProgress"]:
        """Expect `total` items while the block runs the pipeline, then finish."""
        self.expect(total)
        try:
            yield self
        finally:
            self.finish()

    def finish(self) -> None:
        """Close the bar and start afresh (a process may run the stage again)."""
        if self._bar is not None:
            self._bar.close()
        self._bar = None
        self.done = self.failed = 0
        self.started = 0.0
        self.total = None
