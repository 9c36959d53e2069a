"""A reduced demo through every stage, as `dvc repro` runs them, and the DVC pipeline's shape."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
STAGES = ["corpus", "denoise", "synthesize", "compose", "perturb", "train_sync", "sync_quality", "train", "card",
          "evaluate"]


def _reduced_params() -> dict:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["demo"].update(identities=6, clips_per_identity=1, duration_s=2.0, size=128)  # Haar-size faces
    params["corpus"]["splits"] = {"train": 0.34, "val": 0.33, "test": 0.33}
    params["compose"].update(n_windows=3, frame_size=64, samples_per_shard=8)
    params["perturb"].update(types=["gaussian_blur", "compression"], levels=[1, 5])
    params["train"].update(steps=2, warmup_steps=1, batch_size=4, val_batch_size=4, num_workers=0,
                           checkpoint_every=1, crop_size=32)
    params["sync"].update(steps=2, batch_size=4, val_every=1)
    params["evaluate"].update(bootstrap_rounds=20)
    params["detectors"]["lipfd"].update(batch_size=4)
    params["detectors"]["fused"].update(min_real_windows=4)  # the reduced corpus has 6 real val windows
    return params


@pytest.mark.slow
def test_every_stage_in_dvc_order(tmp_path):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(_reduced_params()))
    env = {**os.environ, "PYTHONPATH": str(REPO), "NO_ALBUMENTATIONS_UPDATE": "1"}
    commands = {name: stage["cmd"].split()[1:] for name, stage in
                yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"].items()}
    for stage in STAGES:
        result = subprocess.run([sys.executable, "-m", "avlips", *commands[stage]], cwd=tmp_path, env=env,
                                capture_output=True, text=True)
        assert result.returncode == 0, f"{stage} failed:\n{result.stderr[-3000:]}"
    fakes = pd.read_parquet(tmp_path / "data/fakes/fakes.parquet")
    clips = pd.read_parquet(tmp_path / "data/corpus/clips.parquet").set_index("clip_id")
    by_generator = fakes.groupby("generator").target_clip.apply(lambda c: sorted(set(clips.loc[c, "split"])))
    # The demo's generators: mouth_rewrite everywhere, audio_swap held out for the test split.
    assert by_generator.to_dict() == {"audio_swap": ["test"], "mouth_rewrite": ["test", "train", "val"]}
    assert len(fakes) == 6 + 2
    samples = pd.read_parquet(tmp_path / "data/shards/clean/samples.parquet")
    assert set(samples.split) == {"train", "val", "test"} and set(samples.label) == {0, 1}
    for kind in ("gaussian_blur", "compression"):
        for level in ("1", "5"):
            assert list((tmp_path / "data/shards/perturbed" / kind / level).glob("test-*.tar"))
    card = json.loads((tmp_path / "data/card.json").read_text())
    assert card["summary"]["windows"] == len(samples) and card["identities"]["ok"]
    # Every clip and fake scored by the expert, and the card's sync section read from it.
    quality = pd.read_parquet(tmp_path / "data/sync_quality.parquet")
    assert len(quality) == len(clips) + len(fakes) and card["sync_quality"]["available"]
    assert set(card["sync_quality"]["by_generator"]) == {"audio_swap", "mouth_rewrite"}
    assert json.loads((tmp_path / "metrics/train.json").read_text())["steps"] == 2
    report = json.loads((tmp_path / "reports/robustness.json").read_text())
    test_windows = int((samples.split == "test").sum())
    assert report["windows"] == test_windows * 5
    assert set(report["perturbations"]) == {"gaussian_blur", "compression"}
    assert "| compression |" in result.stdout  # the table printed at the end
    for name in ("robustness.md", "robustness_levels.csv", "plots/auc_by_level.png"):
        assert (tmp_path / "reports" / name).exists()


def test_dvc_pipeline_has_every_stage_in_order():
    dvc = yaml.safe_load((REPO / "dvc.yaml").read_text())
    assert list(dvc["stages"]) == STAGES
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for name, stage in dvc["stages"].items():
        assert stage["cmd"].startswith(f"avlips {name.replace('_', '-')}")  # train_sync: avlips train-sync
        for key in stage.get("params", []):
            block, _, inner = key.partition(".")  # a dotted key names one setting of a block
            assert block in params and (not inner or inner in params[block]), (name, key)
        for dep in stage.get("deps", []):
            if not dep.startswith(("data/", "models/")):
                assert (REPO / dep).exists(), (name, dep)
    # A perturbation parameter reaches only perturb (and, through its output, evaluate) and the card,
    # which reports it.
    users = [name for name, stage in dvc["stages"].items() if "perturb" in stage.get("params", [])]
    assert users == ["perturb", "card"]
    assert "data/shards/perturbed" in dvc["stages"]["evaluate"]["deps"]
    assert "data/shards/perturbed" not in dvc["stages"]["train"]["deps"]
