"""Training: loss goes down, exact resume, DDP over two gloo processes, architecture mismatch, config."""

from __future__ import annotations

import io
import json
import socket
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from avlips.media.sample import WindowSample
from avlips.model.checkpoints import CheckpointMismatchError, load_checkpoint, save_checkpoint
from avlips.model.config import TrainConfig
from avlips.model.lipfd import build_lipfd
from avlips.model.loader import batch_inputs, make_loader
from avlips.model.scoring import score_windows
from avlips.model.train import WarmupCosine, train


def _sample(key: str, label: int, seed: int) -> WindowSample:
    # Fakes are bright, reals dark: an easy signal, so a few steps must lower the loss.
    rng = np.random.default_rng(seed)
    base = 170 if label else 60
    frames = np.clip(rng.normal(base, 25, (5, 24, 24, 3)), 0, 255).astype(np.uint8)
    mel = rng.normal(-40, 10, (128, 8)).astype(np.float32)
    return WindowSample(key, frames, mel, label, {"clip": key[:-4], "mel_db_min": -80.0, "mel_db_max": 0.0})


def _write_shards(root: Path, shards: int, per_shard: int) -> str:
    root.mkdir(parents=True, exist_ok=True)
    for s in range(shards):
        with tarfile.open(root / f"train-{s:06d}.tar", "w") as tar:
            for n in range(per_shard):
                key = f"s{s}c{n}_w00"
                for name, data in sorted(_sample(key, n % 2, s * 100 + n).encode().items()):
                    info = tarfile.TarInfo(f"{key}.{name}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return str(root / f"train-{{000000..{shards - 1:06d}}}.tar")


def _config(**kw) -> TrainConfig:
    base = dict(encoder="vit-tiny", backbone="resnet18", freeze_encoder=False, crop_size=32, batch_size=4,
                steps=6, lr=1e-3, warmup_steps=1, num_workers=0, shuffle_buffer=6, checkpoint_every=3,
                log_every=100, val_batch_size=8, threads=2, seed=5, region_weight=0.1)
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def shard_spec(tmp_path_factory) -> str:
    return _write_shards(tmp_path_factory.mktemp("train_shards"), shards=4, per_shard=4)


def test_a_few_steps_reduce_the_loss_and_write_outputs(tmp_path, shard_spec):
    metrics = train(_config(steps=6, lr=2e-3), shard_spec, shard_spec, tmp_path / "m" / "lipfd.pt",
                    tmp_path / "metrics" / "train.json")
    cls = [h["classification"] for h in metrics["history"]]
    # Batches of four are noisy: compare the median of the last steps with the first.
    assert np.median(cls[-4:]) < 0.5 * cls[0]
    written = json.loads((tmp_path / "metrics" / "train.json").read_text())
    assert written["steps"] == 6 and written["val_samples"] == 16 and 0 <= written["val_auc"] <= 1
    assert {"final_loss", "val_acc", "samples_per_s", "seconds"} <= set(written)
    loaded = load_checkpoint(tmp_path / "m" / "lipfd.pt", restore_rng=False)
    assert loaded.step == 6 and loaded.config.backbone == "resnet18" and loaded.extra["train"]["crop_size"] == 32
    # What it was trained on: every shard by name and hash (these test shards say nothing of their corpus).
    provenance = loaded.extra["provenance"]
    assert [r["name"] for r in provenance["train_shards"]] == [f"train-{i:06d}.tar" for i in range(4)]
    assert all(len(r["sha256"]) == 64 for r in provenance["train_shards"]) and provenance["synthetic"] is None


def test_a_resumed_run_continues_exactly(tmp_path, shard_spec):
    # Two workers and an odd stopping step: the resumed DataLoader must start at worker 1, not 0.
    cfg = _config(num_workers=2, steps=4, checkpoint_every=3)
    whole = train(cfg, shard_spec, None, tmp_path / "a" / "lipfd.pt", None)
    first = train(cfg, shard_spec, None, tmp_path / "b" / "lipfd.pt", None, stop_after=3)
    assert first["steps"] == 3 and not first["finished"] and not (tmp_path / "b" / "lipfd.pt").exists()
    rest = train(cfg, shard_spec, None, tmp_path / "b" / "lipfd.pt", None, resume="auto")
    assert rest["resumed_from_step"] == 3 and rest["steps"] == 4
    expected = [h["loss"] for h in whole["history"]]
    got = [h["loss"] for h in first["history"] + rest["history"]]
    assert len(got) == len(expected) == 4
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    a = load_checkpoint(tmp_path / "a" / "lipfd.pt", restore_rng=False).model.state_dict()
    b = load_checkpoint(tmp_path / "b" / "lipfd.pt", restore_rng=False).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def _ddp_rank(rank: int, port: int, spec: str, out: str) -> None:
    import os

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    seen: list[str] = []
    final: dict[str, torch.Tensor] = {}

    def on_batch(step, batch, losses, model) -> None:
        seen.extend(batch.keys)
        final["params"] = torch.cat([p.detach().flatten() for p in model.parameters()]).clone()

    metrics = train(_config(steps=2, threads=1), spec, None, Path(out) / "lipfd.pt", None, on_batch=on_batch)
    torch.save({"keys": seen, "params": final["params"], "world": metrics["world_size"]}, Path(out) / f"rank{rank}.pt")


def test_ddp_two_gloo_processes_split_shards_and_keep_parameters_equal(tmp_path, shard_spec):
    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_rank, args=(port, shard_spec, str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2))
    assert r0["world"] == r1["world"] == 2
    assert len(r0["keys"]) == len(r1["keys"]) == 8  # one epoch: 2 steps x batch 4 = 2 shards per rank
    assert not set(r0["keys"]) & set(r1["keys"])
    shards = [{k.split("c")[0] for k in r["keys"]} for r in (r0, r1)]
    assert not shards[0] & shards[1]  # whole shards per rank
    torch.testing.assert_close(r0["params"], r1["params"], rtol=0, atol=0)


def test_checkpoint_of_another_architecture_is_a_clear_error(tmp_path, shard_spec):
    torch.manual_seed(0)
    other = build_lipfd(encoder="vit-tiny", backbone="resnet18")
    save_checkpoint(tmp_path / "r18.pt", other, step=3)
    cfg = _config(backbone="resnet50", steps=2, init=str(tmp_path / "r18.pt"))
    with pytest.raises(CheckpointMismatchError, match="backbone: checkpoint 'resnet18' vs model 'resnet50'"):
        train(cfg, shard_spec, None, tmp_path / "m.pt", None)


def test_config_from_params_checks_keys_and_coerces_yaml_numbers():
    cfg = TrainConfig.from_params({"seed": 9, "train": {"lr": "1e-3", "steps": 50, "encoder": "vit-tiny"}})
    assert cfg.lr == 1e-3 and cfg.seed == 9 and cfg.steps == 50
    with pytest.raises(ValueError, match="train: unknown key 'learning_rate'"):
        TrainConfig.from_params({"train": {"learning_rate": 1e-3}})
    assert cfg.loader_config("cpu").resize_on == "collate" and cfg.loader_config("cuda").resize_on == "device"


def test_schedule_warms_up_then_decays_to_the_floor():
    schedule = WarmupCosine(warmup=4, total=20, min_ratio=0.1)
    factors = [schedule(s) for s in range(21)]
    assert factors[:4] == [0.25, 0.5, 0.75, 1.0]
    assert all(a >= b for a, b in zip(factors[3:], factors[4:]))
    assert factors[20] == pytest.approx(0.1)


def test_module_entry_point_reads_paths_and_globs_from_a_params_file_like_the_repos(tmp_path, shard_spec, capsys):
    # `torchrun -m avlips.model.train` reads params.yaml, whose train block also holds the stage's paths.
    import yaml

    from avlips.model.train import main
    from avlips.params import package_defaults

    shard_dir = Path(shard_spec).parent
    # Only the keys params.yaml has: a params file may not name others (betas is a Python-only setting).
    known = package_defaults()["train"]
    block = {k: v for k, v in _config(steps=2).to_dict().items() if k in known}
    block.update(train_shards=str(shard_dir / "train-*.tar"), val_shards=str(shard_dir / "train-000000.tar"),
                 model=str(tmp_path / "m.pt"), metrics=str(tmp_path / "metrics.json"))
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"seed": 3, "train": block}))
    assert main(["--params", str(params), "-S", "train.steps=1", "-S", "train.warmup_steps=0"]) == 0
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written["steps"] == 1 and written["val_samples"] == 4
    assert load_checkpoint(tmp_path / "m.pt", restore_rng=False).step == 1
    # A pattern that matches nothing: one line naming it, exit 1, from this entry point and `avlips train`.
    from avlips.cli import main as avlips_main

    capsys.readouterr()
    none = str(tmp_path / "none-*.tar")
    entry_points = {"avlips.model.train": main, "avlips train": lambda argv: avlips_main(["train", *argv])}
    for prog, entry_point in entry_points.items():
        assert entry_point(["--params", str(params), "--train-shards", none]) == 1
        err = capsys.readouterr().err
        assert err == f"{prog}: no shards match {none}\n"


def test_auto_resume_continues_only_the_same_training(tmp_path, shard_spec):
    ckpt = tmp_path / "ckpt"
    first = train(_config(steps=2, checkpoint_every=1), shard_spec, None, tmp_path / "a.pt", None, ckpt)
    assert first["resumed_from_step"] == 0
    # Killed after step 2 of 4, restarted with the same settings and shards: it continues.
    longer = _config(steps=4, checkpoint_every=1)
    train(longer, shard_spec, None, tmp_path / "b.pt", None, ckpt, stop_after=2)
    again = train(longer, shard_spec, None, tmp_path / "b.pt", None, ckpt, resume="auto")
    assert again["resumed_from_step"] == 2 and again["steps"] == 4
    # Other settings (or other shards) leave the old checkpoint alone and start afresh.
    other = train(_config(steps=4, checkpoint_every=1, lr=5e-4), shard_spec, None, tmp_path / "c.pt", None, ckpt,
                  resume="auto")
    assert other["resumed_from_step"] == 0
    fewer = str(Path(shard_spec).parent / "train-{000000..000001}.tar")
    assert train(_config(steps=4, checkpoint_every=1, lr=5e-4), fewer, None, tmp_path / "d.pt", None, ckpt,
                 resume="auto")["resumed_from_step"] == 0


def test_auto_resume_from_a_cut_checkpoint_starts_afresh_and_keeps_the_file(tmp_path, shard_spec):
    ckpt = tmp_path / "ckpt"
    train(_config(steps=2, checkpoint_every=1), shard_spec, None, tmp_path / "a.pt", None, ckpt, stop_after=1)
    last = ckpt / "last.pt"
    cut = last.read_bytes()[: last.stat().st_size // 2]  # a copy killed half-way
    last.write_bytes(cut)
    again = train(_config(steps=2, checkpoint_every=1), shard_spec, None, tmp_path / "a.pt", None, ckpt, resume="auto")
    assert again["resumed_from_step"] == 0 and again["steps"] == 2
    assert (ckpt / "last.pt.unreadable").read_bytes() == cut
    assert load_checkpoint(last).step == 2  # the new run's own checkpoint


@pytest.mark.slow
def test_scoring_covers_every_window_in_loader_order_in_eval_mode_and_restores_the_mode(shard_spec):
    # The loop of training's validation and of evaluate: one pass, sigmoid of the eval-mode logit.
    torch.manual_seed(0)
    model = build_lipfd(encoder="vit-tiny", backbone="resnet18").train()
    cfg = _config(num_workers=0, val_batch_size=3).loader_config("cpu", train=False)
    one_shard = str(Path(shard_spec).parent / "train-000000.tar")  # 4 windows: batches of 3 and 1
    stats: dict = {}
    scored = list(score_windows(model, one_shard, cfg, "cpu", worker_stats=stats))
    assert model.training  # put back as it was
    batches = list(make_loader(one_shard, cfg))
    assert [w.key for w in scored] == [k for b in batches for k in b.keys] and len(scored) == 4
    assert [w.label for w in scored] == [int(v) for b in batches for v in b.labels.tolist()]
    assert stats[0]["samples"] == 4 and stats[0]["skipped_samples"] == 0
    with torch.no_grad():
        last = model.eval()(*batch_inputs(batches[-1], cfg, "cpu")).logit.float().sigmoid().tolist()
    np.testing.assert_allclose([w.probability for w in scored[-len(last):]], last, rtol=0, atol=0)
