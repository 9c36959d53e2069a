"""Stage progress: a tqdm bar (done, rate, failures) on a terminal, the plain log line otherwise."""
from __future__ import annotations

import logging

from avlips.pipelines import progress as progress_module
from avlips.pipelines.progress import WorkerProgress


def test_without_a_terminal_it_logs_every_n_items_and_each_note(monkeypatch, caplog):
    monkeypatch.setattr(progress_module, "on_terminal", lambda: False)
    progress = WorkerProgress("stagex", "clips", every=2)
    with caplog.at_level(logging.INFO, logger="avlips.stagex"):
        with progress.running(3):
            progress.count({"audio": 1})
            progress.count({"failure": {}})
            progress.tick(note="unit three done")
            assert (progress.done, progress.failed) == (3, 1)
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("stagex: 2 clips done in this worker (") and lines[0].endswith("/s), 1 failed")
    assert lines[1] == "unit three done" and len(lines) == 2
    assert (progress.done, progress.failed, progress.total) == (0, 0, None)  # finished: a rerun starts afresh


def test_on_a_terminal_it_draws_a_bar_with_rate_and_failures(monkeypatch, capsys, caplog):
    monkeypatch.setattr(progress_module, "on_terminal", lambda: True)
    progress = WorkerProgress("stagey", "fakes", every=1)
    with caplog.at_level(logging.INFO, logger="avlips.stagey"):
        with progress.running(3):
            for failed in (False, True, False):
                progress.tick(failed, note="not logged under a bar")
    bar = capsys.readouterr().err
    assert "stagey" in bar and "3/3" in bar and "failed=1" in bar and "fake/s" in bar
    assert not caplog.records  # the bar replaces the log lines
