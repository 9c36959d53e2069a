"""Research-checkout wrappers driven the way a user drives them: `avlips synthesize` and `avlips generators list`.

A MakeItTalk stand-in checkout laid out as MakeItTalk's README says (checkpoints in examples/ckpt, the
downloaded speaker embedding in examples/dump/emb.pickle) is configured with only `checkout` and `python`.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from avlips.cli import main as avlips_main
from avlips.pipelines.synthesize import run_synthesize
from tests.builders import checkout_tree, make_checkout, tiny_corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict:
    """Six one-clip identities, two per split: six targets, each driven by the other identity of its split."""
    return tiny_corpus(tmp_path_factory.mktemp("wrapped"), identities=6, clips_per_identity=1)


def _makeittalk(root: Path) -> dict:
    """A README-layout MakeItTalk stand-in checkout; the settings a user writes: checkout and python."""
    settings = make_checkout(root, "makeittalk")
    return {"checkout": settings["checkout"], "python": sys.executable}


def _params(corpus: dict, makeittalk: dict, scratch: Path) -> dict:
    block = {"enabled": True, **makeittalk, "scratch_dir": str(scratch), "timeout_s": 120}
    return {"seed": 11, "synthesize": {**corpus, "fakes_per_clip": 1, "max_failure_fraction": 1.0,
                                       "generators": {"makeittalk": block}}}


@pytest.mark.slow
def test_synthesize_with_two_workers_makes_every_makeittalk_fake_from_a_readme_layout_checkout(corpus, tmp_path):
    settings = _makeittalk(tmp_path)
    examples = Path(settings["checkout"]) / "examples"
    before = checkout_tree(Path(settings["checkout"]))
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    out = tmp_path / "fakes"
    stats = run_synthesize(str(out), _params(corpus, settings, scratch), workers=2)

    assert stats["generators"]["makeittalk"]["ready"], stats["generators"]["makeittalk"]["reason"]
    assert (stats["fakes"], stats["failures"]) == (6, 0), stats.get("failures_by_error")
    fakes = pd.read_parquet(out / "fakes.parquet")
    assert len(fakes) == 6 and set(fakes["generator"]) == {"makeittalk"} and set(fakes["fps"]) == {25.0}
    assert all(Path(path).is_file() for path in fakes["path"])
    # The checkout is as the user left it: emb.pickle read through a link, nothing written there.
    assert checkout_tree(Path(settings["checkout"])) == before
    assert (examples / "dump" / "emb.pickle").read_bytes() == b"weights"
    assert list(scratch.iterdir()) == []  # every job's scratch removed


@pytest.mark.slow
def test_a_checkout_without_emb_pickle_is_not_ready_and_no_fake_is_attempted(corpus, tmp_path, capsys):
    settings = _makeittalk(tmp_path)
    embeddings = Path(settings["checkout"]) / "examples" / "dump" / "emb.pickle"
    embeddings.unlink()
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    params = _params(corpus, settings, scratch)

    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump({"synthesize": {"generators": params["synthesize"]["generators"]}}))
    assert avlips_main(["--params", str(params_file), "generators", "list"]) == 0
    listed = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert "not ready" in listed["makeittalk"] and f"{embeddings} not found" in listed["makeittalk"]

    out = tmp_path / "fakes"
    stats = run_synthesize(str(out), params, workers=2)
    assert stats["fakes"] == 0 and stats["failures_by_error"] == {"GeneratorNotReady": 6}
    failures = pd.read_parquet(out / "failures.parquet")
    assert failures["message"].str.contains("emb.pickle not found", regex=False).all()
    assert list(scratch.iterdir()) == []  # no job started: no scratch, no script run
