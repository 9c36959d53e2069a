"""Progress lines of one Beam worker: items done, rate, failures, every N items."""
from __future__ import annotations

import logging
import time


class WorkerProgress:
    """Counts the items a worker finishes and logs a line every `every` items."""

    def __init__(self, stage: str, noun: str, every: int) -> None:
        self.log = logging.getLogger(f"avlips.{stage}")
        self.stage, self.noun, self.every = stage, noun, every
        self.done = self.failed = 0
        self.started = 0.0

    def start(self) -> None:
        """Start the clock at the worker's first item."""
        if not self.started:
            self.started = time.time()

    def count(self, result: dict) -> dict:
        """Count a finished item (a failure when it holds 'failure'); return it unchanged."""
        self.start()
        self.done += 1
        self.failed += "failure" in result
        if self.done % self.every == 0:
            elapsed = max(time.time() - self.started, 1e-6)
            self.log.info("%s: %d %s done in this worker (%.2f/s), %d failed", self.stage, self.done, self.noun,
                          self.done / elapsed, self.failed)
        return result
