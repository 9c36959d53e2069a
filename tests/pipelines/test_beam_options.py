"""The local runner: Beam's FnApiRunner, with no Prism download attempt and nothing left running."""
from __future__ import annotations

import logging
import threading

import apache_beam as beam
import pytest
from apache_beam.testing.util import assert_that, equal_to

from avlips.pipelines.beam_options import LocalFnApiRunner, pipeline_options


@pytest.mark.parametrize("workers", [1, 2])
def test_direct_runner_runs_without_prism_and_leaves_no_threads(workers, caplog):
    before = set(threading.enumerate())
    with caplog.at_level(logging.INFO, logger="apache_beam"):
        with beam.Pipeline(options=pipeline_options("DirectRunner", workers=workers)) as pipeline:
            doubled = pipeline | beam.Create(range(6)) | beam.Map(lambda x: 2 * x)
            assert_that(doubled, equal_to([0, 2, 4, 6, 8, 10]))
    assert isinstance(pipeline.runner, LocalFnApiRunner)
    assert not [r for r in caplog.records if "prism" in r.getMessage().lower()]
    # Beam's own DirectRunner leaves a gRPC worker-pool server thread behind after its failed Prism try.
    left = [t.name for t in set(threading.enumerate()) - before if t.is_alive()]
    assert not [name for name in left if "_serve" in name], left


def test_other_runners_pass_through_by_name():
    options = pipeline_options("PrismRunner", extra=["--prism_location=/nowhere"])
    assert options.get_all_options()["runner"] == "PrismRunner"
    dask = pipeline_options("DaskRunner").get_all_options()["runner"]
    assert dask == "apache_beam.runners.dask.dask_runner.DaskRunner"
