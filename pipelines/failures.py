"""Failures are data: one record per input that a stage could not use."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import pyarrow as pa

from avlips.errors import AvlipsInputError

SCHEMA = pa.schema([
    ("input", pa.string()),
    ("stage", pa.string()),
    ("error", pa.string()),
    ("message", pa.string()),
])


@dataclass(frozen=True)
class Failure:
    """An input, the stage it failed in, the error class and a message naming the problem."""

    input: str
    stage: str
    error: str
    message: str

    @classmethod
    def from_exception(cls, input_: str, stage: str, exc: BaseException) -> "Failure":
        """The record for an exception raised while handling `input_`."""
        return cls(input=str(input_), stage=stage, error=type(exc).__name__, message=str(exc))

    def to_row(self) -> dict:
        """The parquet row."""
        return asdict(self)


def failure_rows(failures: list[Failure]) -> list[dict]:
    """Rows sorted by input then stage, so the file's bytes do not depend on arrival order."""
    return [f.to_row() for f in sorted(failures, key=lambda f: (f.input, f.stage, f.error))]


def counts_by_error(failures: list[Failure]) -> dict[str, int]:
    """How many failures of each error class, sorted by class (for a stage's stats file)."""
    counts: dict[str, int] = {}
    for failure in failures:
        counts[failure.error] = counts.get(failure.error, 0) + 1
    return dict(sorted(counts.items()))


def write_manifest_and_failures(out_dir: str, name: str, rows: list[dict], schema: pa.Schema,
                                failures: list[Failure]) -> dict[str, int]:
    """Write a stage's sorted manifest `name` and its failures.parquet; return the failure counts by error."""
    from avlips.pipelines import storage  # storage imports Beam: only the stages that write need it

    storage.write_parquet(storage.join(out_dir, name), rows, schema)
    storage.write_parquet(storage.join(out_dir, "failures.parquet"), failure_rows(failures), SCHEMA)
    return counts_by_error(failures)


def check_threshold(stage: str, inputs: int, failed: int, max_fraction: float) -> None:
    """Raise StageFailed when the share of failed inputs passes the threshold from params.yaml."""
    if inputs and failed / inputs > max_fraction:
        raise StageFailed(f"{stage}: {failed} of {inputs} inputs failed "
                          f"({failed / inputs:.0%} > max_failure_fraction {max_fraction:.0%})")


class StageFailed(AvlipsInputError, RuntimeError):
    """A stage ran but too many of its inputs failed."""
