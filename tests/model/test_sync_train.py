"""Training the sync expert: real windows only, a checkpoint in the released layout with our provenance."""
from __future__ import annotations

import hashlib
import json

import pytest
import torch

from avlips.model.detectors import DetectorError
from avlips.model.sync.train import SyncTrainConfig, train_sync
from avlips.model.sync.weights import load_expert
from tests.model.sync_samples import talking_clip, window, write_shard

TINY = dict(stage_channels=(2, 2, 4, 4, 4), face_size=48, steps=3, batch_size=4, negatives_per_window=2,
            val_every=2, threads=1)



@pytest.fixture(autouse=True)
def _one_thread():
    # On a shared CPU, one torch thread runs these tiny convolutions several times faster than two.
    torch.set_num_threads(1)

@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """A train shard (two real clips and one fake), a val shard, and a shard composed without audio."""
    root = tmp_path_factory.mktemp("sync_shards")
    clips = [talking_clip(seed, seconds=1.6, size=48) for seed in (1, 2, 3)]
    train = [window(f"real{c}", *clips[c], start, index=i) for c in (0, 1) for i, start in enumerate((2, 12, 24, 33))]
    # A fake (label 1) whose audio is its own: had it been read, it would count as a training window.
    train += [window("fake0", *clips[2], start, label=1, index=i) for i, start in enumerate((4, 20))]
    val = [window(f"val{c}", *clips[c], start, index=i) for c in (2, 0) for i, start in enumerate((8, 18, 30))]
    val.append(window("val9", *clips[1], 16, silent=True, index=0))
    no_audio = [window("old", *clips[0], 10, with_audio=False)]
    (root / "compose_stats.json").write_text(json.dumps({"corpus": {"sources": ["demo"]}}))
    return {"train": write_shard(root / "train-000000.tar", train), "val": write_shard(root / "val-000000.tar", val),
            "old": write_shard(root / "train-000009.tar", no_audio), "root": root}


@pytest.mark.slow  # renders three talking clips and warms up librosa (about 15 s on a shared CPU)
def test_trains_on_real_windows_only_and_records_what_it_read(shards, tmp_path):
    out = tmp_path / "sync_expert.pt"
    summary = train_sync(str(shards["train"]), str(shards["val"]), str(out), SyncTrainConfig(**TINY))
    expert = load_expert(out)
    provenance = expert.extra["provenance"]
    assert provenance["trained_on"] == "real only" and provenance["synthetic"] is True
    assert provenance["corpus"]["sources"] == ["demo"] and provenance["generators"] == []
    assert provenance["train_windows"] == {"windows": 8, "fakes_skipped": 2, "silent_skipped": 0, "clips": 2}
    assert provenance["val_windows"]["silent_skipped"] == 1 and provenance["val_windows"]["windows"] == 6
    digest = hashlib.sha256(shards["train"].read_bytes()).hexdigest()
    assert [(r["name"], r["sha256"]) for r in provenance["train_shards"]] == [("train-000000.tar", digest)]
    # The released layout, plus our keys.
    blob = torch.load(out, weights_only=True)
    assert set(blob) >= {"state_dict", "global_step", "config", "provenance", "val", "calibration"}
    assert expert.model.config.stage_channels == TINY["stage_channels"] and expert.model.config.face_size == 48
    assert expert.extra["config"]["steps"] == 3
    assert 0.0 <= summary["val"]["auc"] <= 1.0 and summary["val"]["windows"] == 6
    assert expert.extra["calibration"]["fitted_on"] == 6 and expert.extra["calibration"]["scale"] > 0


def test_the_same_seed_gives_the_same_expert(shards, tmp_path):
    states = []
    for name in ("a.pt", "b.pt"):
        train_sync(str(shards["train"]), str(shards["val"]), str(tmp_path / name), SyncTrainConfig(**TINY))
        states.append(torch.load(tmp_path / name, weights_only=True)["state_dict"])
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_a_shard_without_audio_is_named_with_the_field(shards, tmp_path):
    with pytest.raises(DetectorError, match=r"train-000009\.tar: sample old_w00 lacks field 'audio.npy'"):
        train_sync(str(shards["old"]), str(shards["val"]), str(tmp_path / "x.pt"), SyncTrainConfig(**TINY))
    with pytest.raises(DetectorError, match="no shards match"):
        train_sync(str(shards["root"] / "nothing-*.tar"), str(shards["val"]), str(tmp_path / "x.pt"),
                   SyncTrainConfig(**TINY))


def test_a_released_expert_is_calibrated_without_training(shards, tmp_path):
    from avlips.model.sync.network import SyncNet, SyncNetConfig

    torch.manual_seed(1)
    released = SyncNet(SyncNetConfig((2, 2, 4, 4, 4)))  # the released crop size (96), narrow for speed
    weights = tmp_path / "lipsync_expert.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in released.state_dict().items()}, "global_step": 7}, weights)
    out = tmp_path / "calibrated.pt"
    train_sync(str(shards["train"]), str(shards["val"]), str(out),
               SyncTrainConfig(**{**TINY, "steps": 0, "expert_weights": str(weights)}))
    expert = load_expert(out)
    assert expert.model.config.face_size == 96 and expert.extra["provenance"]["init"] == str(weights)
    assert expert.extra["provenance"]["trained_on"].startswith("not trained here")
    assert expert.extra["calibration"]["fitted_on"] == 6
    assert all(torch.equal(v, released.state_dict()[k]) for k, v in expert.model.state_dict().items())


def test_the_train_sync_command(shards, tmp_path, monkeypatch, capsys):
    from avlips.cli import main

    monkeypatch.chdir(tmp_path)  # no params.yaml here: the package's defaults, `sync:` included
    out = tmp_path / "models" / "expert.pt"
    status = main(["train-sync", "--train-shards", str(shards["train"]), "--val-shards", str(shards["val"]),
                   "--out", str(out), "--steps", "2", "-S", "sync.stage_channels=[2, 2, 4, 4, 4]",
                   "-S", "sync.batch_size=4", "-S", "sync.val_every=1"])
    assert status == 0 and "real val windows" in capsys.readouterr().out
    assert load_expert(out).extra["config"]["steps"] == 2
    assert main(["train-sync", "--train-shards", str(shards["old"]), "--val-shards", str(shards["val"]),
                 "--out", str(tmp_path / "x.pt")]) == 1
    assert "train-000009.tar: sample old_w00 lacks field 'audio.npy'" in capsys.readouterr().err
    assert main(["train-sync", "--out", str(tmp_path / "x.pt")]) == 1  # the default shards are not here
    assert "no shards match 'data/shards/clean/train-*.tar'" in capsys.readouterr().err
