"""Train LipFD on streamed shards: AdamW, warmup + cosine, bf16 on GPU, DDP under torchrun, exact resume.

    train(params, "data/shards/clean/train-{000000..000009}.tar", "data/shards/clean/val-{000000..000001}.tar")
    torchrun --nproc_per_node 2 -m avlips.model.train --params params.yaml --train-shards ... --val-shards ...

A run resumed from its checkpoint continues exactly (same losses as an uninterrupted run on CPU): the
checkpoint holds model, optimizer, scheduler, step, RNG states and every loader worker's cursor (see
model.loader), and the resumed loader skips what was already seen and rotates its workers to match.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from .checkpoints import (
    CheckpointFormatError,
    load_checkpoint,
    load_clip_visual,
    load_reference_checkpoint,
    read_checkpoint_file,
    save_checkpoint,
)
from .config import TrainConfig
from .lipfd import LipFD, build_lipfd
from .loader import Batch, LoaderConfig, LoaderStats, batch_inputs, make_loader
from .losses import LipFDLoss, lipfd_loss

__all__ = ["WarmupCosine", "train", "evaluate", "setup_distributed", "main", "CHECKPOINT_NAME"]

log = logging.getLogger("avlips.train")
CHECKPOINT_NAME = "last.pt"


class WarmupCosine:
    """LR factor: linear warmup from 0 to 1, then cosine decay to `min_ratio` at `total` steps."""

    def __init__(self, warmup: int, total: int, min_ratio: float) -> None:
        self.warmup, self.total, self.min_ratio = int(warmup), int(total), float(min_ratio)

    def __call__(self, step: int) -> float:
        """The factor for the optimizer step about to be taken (`step` counts from 0)."""
        if step < self.warmup:
            return (step + 1) / self.warmup
        span = max(1, self.total - self.warmup)
        progress = min(1.0, (step - self.warmup) / span)
        return self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


# ------------------------------------------------------------------------------------------ set-up


def setup_distributed() -> tuple[int, int, int, bool]:
    """(rank, world size, local rank, created): joins the torchrun process group named by env vars."""
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or not dist.is_available():
        return 0, 1, 0, False
    local_rank = int(os.environ.get("LOCAL_RANK", os.environ.get("RANK", "0")))
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), local_rank, False
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend, init_method="env://")
    return dist.get_rank(), dist.get_world_size(), local_rank, True


def _device(config: TrainConfig, local_rank: int) -> torch.device:
    if config.device != "auto":
        return torch.device(config.device)
    return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")


def _autocast(config: TrainConfig, device: torch.device) -> Any:
    use = config.amp == "bf16" or (config.amp == "auto" and device.type == "cuda")
    if use and device.type != "cuda":
        raise ValueError("bf16 autocast is for GPU training only; set train.amp to auto or none on CPU")
    return torch.autocast("cuda", dtype=torch.bfloat16) if use else nullcontext()


def _initial_weights(model: LipFD, config: TrainConfig) -> None:
    if config.clip_weights:
        report = load_clip_visual(config.clip_weights, model)
        log.info("encoder initialised from %s (%d tensors)", config.clip_weights, len(report.loaded))
    if config.init:
        try:
            load_checkpoint(config.init, model, restore_rng=False)
        except CheckpointFormatError:
            load_reference_checkpoint(config.init, model)  # the released LipFD file
        log.info("weights initialised from %s", config.init)


def _seed_everything(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _is_tty() -> bool:
    return sys.stderr.isatty()


# ------------------------------------------------------------------------------------------ evaluate


@torch.no_grad()
def evaluate(
    model: nn.Module,
    shards: str | Sequence[str],
    loader_config: LoaderConfig,
    device: torch.device,
    autocast: Any = None,
) -> dict[str, Any]:
    """Window-level AUC/accuracy (fake = positive, threshold 0.5) and clip-level AUC (mean score per clip)."""
    from sklearn.metrics import roc_auc_score

    was_training = model.training
    model.eval()
    scores: list[float] = []
    labels: list[int] = []
    clips: list[str] = []
    stats: dict[int, dict] = {}
    for batch in make_loader(shards, loader_config, rank=0, world_size=1):
        global_input, crops = batch_inputs(batch, loader_config, device)
        with autocast or nullcontext():
            out = model(global_input, crops)
        scores += torch.sigmoid(out.logit.float()).cpu().tolist()
        labels += [int(v) for v in batch.labels.tolist()]
        clips += batch.clips
        stats[batch.worker] = batch.stats
    model.train(was_training)
    result: dict[str, Any] = {"samples": len(scores), "auc": None, "acc": None, "clip_auc": None}
    if not scores:
        return result
    y, s = np.asarray(labels), np.asarray(scores)
    result["acc"] = float(((s >= 0.5) == (y == 1)).mean())
    if len(set(labels)) == 2:
        result["auc"] = float(roc_auc_score(y, s))
        per_clip: dict[str, list[float]] = {}
        clip_label: dict[str, int] = {}
        for clip, score, label in zip(clips, scores, labels):
            per_clip.setdefault(clip, []).append(score)
            clip_label[clip] = label
        names = sorted(per_clip)
        if len({clip_label[n] for n in names}) == 2:
            result["clip_auc"] = float(roc_auc_score([clip_label[n] for n in names],
                                                     [float(np.mean(per_clip[n])) for n in names]))
    result["skipped_samples"] = LoaderStats.merge(list(stats.values())).skipped_samples
    return result


# ------------------------------------------------------------------------------------------ train


def data_fingerprint(shards: str | Sequence[str]) -> list[list[Any]]:
    """The training data as resume sees it: each shard URL, with size and mtime for local files."""
    from .loader import expand_shards

    rows = []
    for url in expand_shards(shards):
        path = Path(url.removeprefix("file:"))
        if "://" not in url and not url.startswith("pipe:") and path.is_file():
            stat = path.stat()
            rows.append([url, stat.st_size, stat.st_mtime_ns])
        else:
            rows.append([url])
    return rows


def _same_run(contents: Mapping[str, Any], config: TrainConfig, data: list[list[Any]]) -> bool:
    """Whether a checkpoint found by `resume: auto` was made by this training: same settings, same shards."""
    extra = contents.get("extra") or {}
    return extra.get("train") == config.to_dict() and extra.get("data") == data


def _resolve_config(params_or_config: TrainConfig | Mapping[str, Any]) -> TrainConfig:
    if isinstance(params_or_config, TrainConfig):
        return params_or_config
    return TrainConfig.from_params(params_or_config)


def _start_cursors(extra: Mapping[str, Any] | None, rank: int, world: int, workers: int) -> dict[int, tuple[int, int]]:
    """This rank's loader cursors from a checkpoint's extra data (approximate when the layout changed)."""
    if not extra or "cursors" not in extra:
        return {}
    saved = extra["cursors"]
    if int(extra.get("world_size", 1)) == world and int(extra.get("num_workers", 0)) == workers:
        return {int(w): (int(c[0]), int(c[1])) for w, c in dict(saved.get(str(rank), {})).items()}
    # A different rank/worker layout cannot replay the same order; start everyone on a fresh epoch.
    latest = max((int(c[0]) for per_rank in saved.values() for c in dict(per_rank).values()), default=-1)
    log.warning("resuming with %d rank(s) x %d worker(s) instead of %s x %s: data order is not exact "
                "(all workers start epoch %d)", world, workers, extra.get("world_size"), extra.get("num_workers"),
                latest + 1)
    return {w: (latest + 1, 0) for w in range(max(1, workers))}


def train(
    params_or_config: TrainConfig | Mapping[str, Any],
    train_shards: str | Sequence[str],
    val_shards: str | Sequence[str] | None = None,
    model_path: str | os.PathLike[str] = "models/lipfd.pt",
    metrics_path: str | os.PathLike[str] | None = "metrics/train.json",
    checkpoint_dir: str | os.PathLike[str] | None = None,
    resume: str | os.PathLike[str] | None = None,
    stop_after: int | None = None,
    on_batch: Callable[[int, Batch, LipFDLoss, LipFD], None] | None = None,
) -> dict[str, Any]:
    """Train LipFD and return its metrics; writes the model, `metrics_path` and periodic checkpoints.

    `resume`: a checkpoint path, or "auto" for `<checkpoint_dir>/last.pt` when it exists.
    `stop_after`: stop (after checkpointing) at this step, as a preemption would; for tests and budgets.
    `on_batch(step, batch, losses, model)`: called after every optimizer step (tests, custom logging).
    """
    config = _resolve_config(params_or_config)
    started = time.time()
    rank, world, local_rank, created_group = setup_distributed()
    try:
        return _train(config, train_shards, val_shards, Path(model_path), metrics_path, checkpoint_dir, resume,
                      stop_after, on_batch, rank, world, local_rank, started)
    finally:
        if created_group:
            torch.distributed.destroy_process_group()


def _train(config, train_shards, val_shards, model_path, metrics_path, checkpoint_dir, resume, stop_after,
           on_batch, rank, world, local_rank, started) -> dict[str, Any]:
    import torch.distributed as dist

    if config.threads:
        torch.set_num_threads(config.threads)
    device = _device(config, local_rank)
    autocast = _autocast(config, device)
    _seed_everything(config.seed)  # the same initial weights on every rank (DDP also broadcasts them)
    model = build_lipfd(config.model_config()).to(device)
    _initial_weights(model, config)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, WarmupCosine(config.warmup_steps, config.steps, config.min_lr_ratio))

    checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else model_path.parent / "checkpoints"
    data = data_fingerprint(train_shards)
    contents = None  # the checkpoint file, read once for the check and the restore
    if resume == "auto":
        resume = checkpoint_dir / CHECKPOINT_NAME if (checkpoint_dir / CHECKPOINT_NAME).exists() else None
        if resume is not None:
            try:
                contents = read_checkpoint_file(resume)
            except CheckpointFormatError as exc:
                # Cut short (a full disk, a killed copy): nothing to continue. Kept aside, not overwritten.
                kept = resume.with_name(resume.name + ".unreadable")
                if rank == 0:
                    os.replace(resume, kept)
                log.warning("not resuming: %s; moved to %s, starting afresh", exc, kept)
                resume = None
            if resume is not None and (not isinstance(contents, Mapping) or not _same_run(contents, config, data)):
                # A leftover of other settings or other shards: continuing it would mix two trainings.
                log.warning("not resuming %s: it was trained with other settings or shards; starting afresh", resume)
                resume, contents = None, None
    step, cursors = 0, {}
    if resume:
        loaded = load_checkpoint(contents if contents is not None else resume, model, optimizer, scheduler,
                                 restore_rng=True)
        step = loaded.step
        cursors = _start_cursors(loaded.extra, rank, world, config.num_workers)
        log.info("resumed from %s at step %d", resume, step)
    resumed_from = step

    net: nn.Module = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[local_rank] if device.type == "cuda" else None)
    train_loader_config = config.loader_config(device.type, train=True)
    workers = max(1, config.num_workers)
    loader = make_loader(train_shards, train_loader_config, rank=rank, world_size=world, start=cursors,
                         worker_offset=step % workers)

    def save(path: Path) -> None:
        # Every rank's cursors, so that each rank resumes its own stream.
        gathered = [cursors]
        if world > 1:
            gathered = [None] * world
            dist.all_gather_object(gathered, {int(k): list(v) for k, v in cursors.items()})
        if rank == 0:
            extra = {"cursors": {str(r): {str(k): list(v) for k, v in dict(c).items()} for r, c in enumerate(gathered)},
                     "world_size": world, "num_workers": config.num_workers, "train": config.to_dict(),
                     "data": data}
            save_checkpoint(path, model, optimizer, scheduler, step=step, config=model.config, extra=extra)
        if world > 1:
            dist.barrier()

    def validate() -> dict[str, Any] | None:
        if not val_shards:
            return None
        result = None
        if rank == 0:
            result = evaluate(model, val_shards, config.loader_config(device.type, train=False), device, autocast)
            log.info("validation at step %d: auc=%s acc=%s clip_auc=%s (%d samples)", step, _fmt(result["auc"]),
                     _fmt(result["acc"]), _fmt(result["clip_auc"]), result["samples"])
        if world > 1:
            dist.barrier()
        return result

    history: list[dict[str, float]] = []
    worker_stats: dict[int, dict] = {}
    validations: list[dict[str, Any]] = []
    end = config.steps if stop_after is None else min(config.steps, stop_after)
    progress = None
    if rank == 0 and _is_tty():
        from tqdm import tqdm

        progress = tqdm(total=config.steps, initial=step, desc="train", unit="step", dynamic_ncols=True)
    run_started, samples_seen = time.time(), 0
    net.train()
    batches = iter(loader)
    while step < end:
        batch = next(batches)
        global_input, crops = batch_inputs(batch, train_loader_config, device)
        labels = batch.labels.to(device)
        with autocast:
            output = net(global_input, crops)
        losses = lipfd_loss(output, labels, config.region_weight)
        optimizer.zero_grad(set_to_none=True)
        losses.total.backward()
        if config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(trainable, config.grad_clip)
        optimizer.step()
        scheduler.step()
        step += 1
        cursors[batch.worker] = batch.cursor
        worker_stats[batch.worker] = batch.stats
        samples_seen += len(batch.keys) * world
        values = torch.stack([losses.total.detach(), losses.classification.detach(), losses.region.detach()]).float()
        if world > 1:
            dist.all_reduce(values)
            values /= world
        total, cls, region = (float(v) for v in values.cpu())
        history.append({"step": step, "loss": total, "classification": cls, "region": region,
                        "lr": float(scheduler.get_last_lr()[0])})
        if on_batch is not None:
            on_batch(step, batch, losses, model)
        rate = samples_seen / max(1e-9, time.time() - run_started)
        if progress is not None:
            progress.update(1)
            progress.set_postfix(loss=f"{total:.4f}", cls=f"{cls:.4f}", sps=f"{rate:.1f}")
        elif rank == 0 and (step % max(1, config.log_every) == 0 or step == end):
            log.info("step %d/%d loss %.4f cls %.4f region %.4f lr %.2e %.2f samples/s", step, config.steps, total,
                     cls, region, history[-1]["lr"], rate)
        if step % max(1, config.checkpoint_every) == 0 or step == end:
            save(checkpoint_dir / CHECKPOINT_NAME)
        if config.val_every and step % config.val_every == 0 and step < config.steps:
            result = validate()
            if result is not None:
                validations.append({"step": step, **result})
    if progress is not None:
        progress.close()
    del batches, loader  # ends the workers before validation starts its own
    seconds_training = time.time() - run_started

    finished = step >= config.steps
    val = validate() if finished else None
    if val is not None:
        validations.append({"step": step, **val})
    recent = history[-10:]
    loader_totals = LoaderStats.merge(list(worker_stats.values())).to_dict() if worker_stats else LoaderStats().to_dict()
    metrics: dict[str, Any] = {
        "steps": step,
        "finished": finished,
        "resumed_from_step": resumed_from,
        "final_loss": float(np.mean([h["loss"] for h in recent])) if recent else None,
        "final_classification_loss": float(np.mean([h["classification"] for h in recent])) if recent else None,
        "val_auc": val["auc"] if val else None,
        "val_acc": val["acc"] if val else None,
        "val_clip_auc": val["clip_auc"] if val else None,
        "val_samples": val["samples"] if val else 0,
        "samples_per_s": samples_seen / max(1e-9, seconds_training),
        "seconds": time.time() - started,
        "seconds_training": seconds_training,
        "world_size": world,
        "device": str(device),
        "loader": {k: v for k, v in loader_totals.items() if k != "errors"},
        "validations": validations,
    }
    if rank == 0:
        if finished:
            save_checkpoint(model_path, model, step=step, config=model.config,
                            extra={"train": config.to_dict(), "metrics": {k: v for k, v in metrics.items()
                                                                          if k not in ("validations", "loader")}})
        if metrics_path:
            Path(metrics_path).parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(metrics_path).with_suffix(".json.tmp")
            tmp.write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
            os.replace(tmp, metrics_path)
    metrics["history"] = history
    return metrics


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


# ------------------------------------------------------------------------------------------ command line


def expand_shard_pattern(pattern: str | Sequence[str] | None) -> str | list[str] | None:
    """Local glob patterns (train-*.tar) expanded, so params need not know shard counts; others as given."""
    import glob

    if isinstance(pattern, str) and "*" in pattern and "://" not in pattern and not pattern.startswith("pipe:"):
        found = sorted(glob.glob(pattern))
        if not found:
            raise SystemExit(f"avlips: no shards match {pattern}")
        return found
    return pattern


def train_from_inputs(inputs: Any) -> dict[str, Any]:
    """Train as a command line says (avlips.cli_args.TrainInputs): `avlips train` and this module's main alike."""
    return train(TrainConfig.from_dict(inputs.settings), expand_shard_pattern(inputs.train_shards),
                 expand_shard_pattern(inputs.val_shards), inputs.model, inputs.metrics, inputs.checkpoint_dir,
                 inputs.resume)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m avlips.model.train` / `torchrun -m avlips.model.train`: train from params.yaml's `train:` block."""
    # One parser for this entry point and `avlips train` (avlips/cli_args.py): --params, -S key=value, the paths.
    from avlips.cli_args import params_from_args, train_inputs, train_parser
    from avlips.errors import AvlipsInputError

    parser = train_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        inputs = train_inputs(args, params_from_args(args))
        metrics = train_from_inputs(inputs)
    except AvlipsInputError as exc:
        print(f"{parser.prog}: {exc}", file=sys.stderr)
        return exc.exit_status
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"train: steps={metrics['steps']} final_loss={_fmt(metrics['final_loss'])} "
              f"val_auc={_fmt(metrics['val_auc'])} val_acc={_fmt(metrics['val_acc'])} "
              f"{metrics['samples_per_s']:.2f} samples/s in {metrics['seconds']:.0f}s -> {inputs.model}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
