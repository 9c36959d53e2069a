"""A generator shipped as its own distribution is found by its entry point and used by the stage unchanged."""
from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from avlips.generators.base import IMAGE, discover, list_generators, load_generator
from avlips.generators.registry_cli import format_generator_table
from avlips.media.frames import read_frames
from avlips.media.probe import probe
from avlips.pipelines.synthesize import run_synthesize
from tests.builders import tiny_corpus

PLUGIN_SOURCE = Path(__file__).parent / "plugin_example"
PLUGIN_MODULE = "avlips_example_generator"


@pytest.fixture(scope="module")
def installed_plugin(tmp_path_factory, request):
    """Builds and installs avlips-example-generator into a scratch site dir on sys.path; removed afterwards."""
    base = tmp_path_factory.mktemp("plugin")
    source, site = base / "source", base / "site"
    # A copy: building in place would leave build/ and *.egg-info in the checkout.
    shutil.copytree(PLUGIN_SOURCE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
         "--disable-pip-version-check", "--quiet", "--target", str(site), str(source)],
        capture_output=True, text=True, timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert list(site.glob("avlips_example_generator-*.dist-info")), sorted(p.name for p in site.iterdir())
    sys.path.insert(0, str(site))
    importlib.invalidate_caches()
    try:
        yield site
    finally:
        sys.path.remove(str(site))
        for name in [m for m in sys.modules if m == PLUGIN_MODULE or m.startswith(PLUGIN_MODULE + ".")]:
            del sys.modules[name]
        importlib.invalidate_caches()


def test_the_plugin_is_discovered_and_listed_as_ready(installed_plugin):
    assert "example_still" in discover()
    rows = {row["name"]: row for row in list_generators()}
    assert rows["example_still"] == {"name": "example_still", "version": "0.1", "input": IMAGE, "ready": True,
                                     "reason": ""}
    assert rows["audio_swap"]["ready"]  # the built-ins are still there beside it
    # Its own readiness check speaks through the same listing.
    missing = list_generators({"example_still": {"weights": "/nowhere/w.pth"}})
    assert {r["name"]: r for r in missing}["example_still"]["reason"] == "weights not found: /nowhere/w.pth"
    table = format_generator_table(missing)
    line = next(line for line in table.splitlines() if line.startswith("example_still"))
    assert line.split()[:4] == ["example_still", "0.1", "image", "not"] and line.endswith("/nowhere/w.pth")


def test_the_stage_runs_the_plugin(installed_plugin, tmp_path):
    corpus = tiny_corpus(tmp_path, identities=6, clips_per_identity=1)
    params = {"seed": 2, "synthesize": {**corpus, "fakes_per_clip": 1, "max_failure_fraction": 0.0,
                                        "generators": {"example_still": {"enabled": True, "fps": 20}}}}
    stats = run_synthesize(str(tmp_path / "fakes"), params)
    fakes = pd.read_parquet(tmp_path / "fakes" / "fakes.parquet")
    clips = pd.read_parquet(corpus["clips"]).set_index("clip_id")

    assert stats["inputs"] == stats["fakes"] == len(fakes) == len(clips) == 6 and stats["failures"] == 0
    assert stats["generators"]["example_still"]["input"] == IMAGE
    assert set(fakes.generator) == {"example_still"} and set(fakes.generator_version) == {"0.1"}
    for fake in fakes.itertuples():
        # A held still of the target at the plugin's own rate, as long as the driving speech.
        info = probe(fake.path)
        assert info.fps == pytest.approx(20.0) and fake.fps == 20.0 and fake.frames == info.frames
        assert fake.seconds == pytest.approx(clips.loc[fake.driving_clip, "duration"], abs=0.05)
        assert clips.loc[fake.driving_clip, "identity"] != clips.loc[fake.target_clip, "identity"]
        first, last = read_frames(fake.path, [0, info.frames - 1])
        assert abs(first.astype(float) - last.astype(float)).mean() < 1.0  # held: only coding noise
        # The still comes from the target clip: closer to its own frames than to the driver's.
        target = read_frames(clips.loc[fake.target_clip, "path"], [0])[0].astype(float)
        driver = read_frames(clips.loc[fake.driving_clip, "path"], [0])[0].astype(float)
        assert abs(first - target).mean() < abs(first - driver).mean()
    # The plugin is built on the contract alone: generate() got a real still image.
    assert load_generator("example_still").generate.__module__ == "avlips_example_generator"
