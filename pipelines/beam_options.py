"""Beam pipeline options from params.yaml and the command line, for any runner, and counters read back."""
from __future__ import annotations

from typing import Any, Sequence

from apache_beam.options.pipeline_options import PipelineOptions


_RUNNER_ALIASES = {"DaskRunner": "apache_beam.runners.dask.dask_runner.DaskRunner"}


def pipeline_options(runner: str = "DirectRunner", workers: int = 1,
                     extra: Sequence[str] = ()) -> PipelineOptions:
    """Options for `runner`; `workers` > 1 makes the DirectRunner use that many processes.

    Anything in `extra` (e.g. --dask_client_address=..., --flink_master=..., --project=...)
    is passed to Beam untouched, so other runners need no code here.
    """
    # Beam knows the Dask runner only by its full name.
    runner = _RUNNER_ALIASES.get(runner, runner)
    args = [f"--runner={runner}"]
    if runner == "DirectRunner":
        if workers > 1:
            args += [f"--direct_num_workers={workers}", "--direct_running_mode=multi_processing"]
        else:
            args += ["--direct_num_workers=1", "--direct_running_mode=in_memory"]
    args += list(extra)
    return PipelineOptions(args)


def counter_value(result: Any, namespace: str, name: str) -> int:
    """A Beam counter's committed value after a run (0 when the runner reports none)."""
    from apache_beam.metrics.metric import MetricsFilter

    try:
        found = result.metrics().query(MetricsFilter().with_namespace(namespace).with_name(name))["counters"]
        return int(sum(c.committed or 0 for c in found))
    except Exception:  # some runners do not report metrics
        return 0
