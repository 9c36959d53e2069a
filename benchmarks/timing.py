"""The timer the per-call benchmarks share: median wall and CPU time of repeated calls.

CPU time counts this process and the child processes it waited for (an ffmpeg command line run as a
baseline), so a baseline that shells out is charged for its work.
"""
from __future__ import annotations

import resource
import statistics
import subprocess
import time
from typing import Callable


def cpu_seconds() -> float:
    """User + system seconds of this process and of its children that have ended."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def median_ms(fn: Callable[[], object], repeat: int) -> tuple[float, float]:
    """Median wall and CPU milliseconds of `repeat` calls of `fn`, after one warm-up call."""
    fn()
    wall, cpu = [], []
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), cpu_seconds()
        fn()
        wall.append(time.perf_counter() - start)
        cpu.append(cpu_seconds() - start_cpu)
    return statistics.median(wall) * 1000.0, statistics.median(cpu) * 1000.0


def run_timed(command: list[str], cwd) -> tuple[subprocess.CompletedProcess, float, float, float]:
    """Run a process to its end, output captured: (its result, wall seconds, user CPU s, system CPU s)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return done, wall, after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime
