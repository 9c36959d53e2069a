"""Train LipFD on streamed shards: AdamW, warmup + cosine, bf16 on GPU, DDP under torchrun, exact resume.

    train(params, "data/shards/clean/train-{000000..000009}.tar", "data/shards/clean/val-{000000..000001}.tar")
    torchrun --nproc_per_node 2 -m avlips.model.train --params params.yaml --train-shards ... --val-shards ...

`train` sets up the process group and drives a `TrainingRun` (set-up, resume, steps, checkpoints,
validation, finish). Validation scores the model with `model.scoring.score_windows`, the loop the
evaluate stage uses too. `python -m avlips.model.train` takes the arguments of `avlips train`
(one parser, `avlips.cli_args.train_parser`).

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

from avlips.errors import AvlipsInputError
from avlips.params import default_param

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
from .loader import Batch, LoaderConfig, LoaderStats, batch_inputs, expand_shards, make_loader
from .losses import LipFDLoss, lipfd_loss
from .provenance import training_provenance
from .scoring import score_windows

__all__ = ["WarmupCosine", "TrainingRun", "NoShardsError", "train", "train_from_inputs", "evaluate", "data_fingerprint",
           "setup_distributed", "main", "CHECKPOINT_NAME"]

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


def _torch_threads(config: TrainConfig, device: torch.device) -> int:
    """Torch's CPU threads for a run (0: leave torch's default): `config.threads`, else on the CPU the cores
    that this rank's loader workers leave free, at least 1 and at most torch's default.

    Why: torch's default is one thread per core, and its OpenMP threads wait for each other at every op; a
    loader worker on one of those cores stalls them. The demo configuration on 2 cores (one worker), measured
    by benchmarks/train_cpu.py: 1 thread beside the worker trains faster than 2 and spends a fraction of the CPU.
    """
    if config.threads or device.type != "cpu":
        return config.threads
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    ranks_here = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))  # torchrun ranks sharing this machine
    free = cores // ranks_here - config.num_workers
    return max(1, min(torch.get_num_threads(), free))


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


# ------------------------------------------------------------------------------------------ validation


def evaluate(
    model: nn.Module,
    shards: str | Sequence[str],
    loader_config: LoaderConfig,
    device: torch.device,
    autocast: Any = None,
) -> dict[str, Any]:
    """Window-level AUC/accuracy (fake = positive, threshold 0.5) and clip-level AUC (mean score per clip)."""
    from sklearn.metrics import roc_auc_score

    stats: dict[int, dict] = {}
    scored = list(score_windows(model, shards, loader_config, device, autocast, worker_stats=stats))
    scores = [s.probability for s in scored]
    labels = [s.label for s in scored]
    result: dict[str, Any] = {"samples": len(scores), "auc": None, "acc": None, "clip_auc": None}
    if not scores:
        return result
    y, s = np.asarray(labels), np.asarray(scores)
    result["acc"] = float(((s >= 0.5) == (y == 1)).mean())
    if len(set(labels)) == 2:
        result["auc"] = float(roc_auc_score(y, s))
        per_clip: dict[str, list[float]] = {}
        clip_label: dict[str, int] = {}
        for window in scored:
            per_clip.setdefault(window.clip, []).append(window.probability)
            clip_label[window.clip] = window.label
        names = sorted(per_clip)
        if len({clip_label[n] for n in names}) == 2:
            result["clip_auc"] = float(roc_auc_score([clip_label[n] for n in names],
                                                     [float(np.mean(per_clip[n])) for n in names]))
    result["skipped_samples"] = LoaderStats.merge(list(stats.values())).skipped_samples
    return result


# ------------------------------------------------------------------------------------------ resume


def data_fingerprint(shards: str | Sequence[str]) -> list[list[Any]]:
    """The training data as resume sees it: each shard URL, with size and mtime for local files."""
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


# ------------------------------------------------------------------------------------------ a training run


class TrainingRun:
    """One training of LipFD on one rank, from set-up to the written model and metrics.

        run = TrainingRun(config, train_shards, val_shards, "models/lipfd.pt")
        run.setup()          # device, seeded model, optimizer, schedule
        run.resume("auto")   # or a checkpoint path, or None
        metrics = run.run()  # steps (checkpointing, validating), then finish()

    `run` drives `step` (one optimizer step on one batch), `checkpoint`, `validate` and `finish`; they
    are separate so that each can be read, and called, on its own. The order of set-up, resume and the
    loader's start is the order of random draws, which exact resume depends on: keep it.
    Under torchrun every rank makes its own run (`rank`, `world`, `local_rank` of setup_distributed);
    rank 0 writes the files.
    """

    def __init__(
        self,
        config: TrainConfig,
        train_shards: str | Sequence[str],
        val_shards: str | Sequence[str] | None = None,
        model_path: str | os.PathLike[str] = default_param("train.model"),
        metrics_path: str | os.PathLike[str] | None = None,
        checkpoint_dir: str | os.PathLike[str] | None = None,
        *,
        rank: int = 0,
        world: int = 1,
        local_rank: int = 0,
        on_batch: Callable[[int, Batch, LipFDLoss, LipFD], None] | None = None,
        started: float | None = None,
    ) -> None:
        self.config = config
        self.train_shards, self.val_shards = train_shards, val_shards
        self.model_path = Path(model_path)
        self.metrics_path = Path(metrics_path) if metrics_path else None
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else self.model_path.parent / "checkpoints"
        self.rank, self.world, self.local_rank = rank, world, local_rank
        self.on_batch = on_batch
        self.started = time.time() if started is None else started
        self.steps_done = 0  # optimizer steps taken, resumed ones included
        self.resumed_from = 0
        self.cursors: dict[int, tuple[int, int]] = {}  # logical loader worker -> (epoch, raw samples consumed)
        self.worker_stats: dict[int, dict] = {}  # logical loader worker -> its latest LoaderStats dict
        self.history: list[dict[str, float]] = []
        self.validations: list[dict[str, Any]] = []
        self.samples_seen = 0  # by all ranks, since this process started training
        self.data = data_fingerprint(train_shards)  # what `resume: auto` compares with the checkpoint's

    # -- set-up

    def setup(self) -> None:
        """Device, autocast, the seeded model with its initial weights, optimizer and LR schedule."""
        config = self.config
        self.device = _device(config, self.local_rank)
        threads = _torch_threads(config, self.device)
        if threads:
            torch.set_num_threads(threads)
        self.autocast = _autocast(config, self.device)
        _seed_everything(config.seed)  # the same initial weights on every rank (DDP also broadcasts them)
        self.model = build_lipfd(config.model_config()).to(self.device)
        _initial_weights(self.model, config)
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.trainable, lr=config.lr, betas=config.betas,
                                           weight_decay=config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, WarmupCosine(config.warmup_steps, config.steps, config.min_lr_ratio))
        self.train_loader_config = config.loader_config(self.device.type, train=True)

    def resume(self, resume: str | os.PathLike[str] | None) -> None:
        """Continue from a checkpoint: a path, or "auto" for this run's last one when it was made by the same
        training (same settings, same shards); model, optimizer, schedule, RNG states and loader cursors."""
        contents = None  # the checkpoint file, read once for the check and the restore
        if resume == "auto":
            resume, contents = self._auto_resume_file()
        if not resume:
            return
        loaded = load_checkpoint(contents if contents is not None else resume, self.model, self.optimizer,
                                 self.scheduler, restore_rng=True)
        self.steps_done = self.resumed_from = loaded.step
        self.cursors = _start_cursors(loaded.extra, self.rank, self.world, self.config.num_workers)
        log.info("resumed from %s at step %d", resume, self.steps_done)

    def _auto_resume_file(self) -> tuple[Path | None, Any]:
        """(this run's last checkpoint, its contents), or (None, None) when there is none to continue."""
        last = self.checkpoint_dir / CHECKPOINT_NAME
        if not last.exists():
            return None, None
        try:
            contents = read_checkpoint_file(last)
        except CheckpointFormatError as exc:
            # Cut short (a full disk, a killed copy): nothing to continue. Kept aside, not overwritten.
            kept = last.with_name(last.name + ".unreadable")
            if self.rank == 0:
                os.replace(last, kept)
            log.warning("not resuming: %s; moved to %s, starting afresh", exc, kept)
            return None, None
        if not isinstance(contents, Mapping) or not _same_run(contents, self.config, self.data):
            # A leftover of other settings or other shards: continuing it would mix two trainings.
            log.warning("not resuming %s: it was trained with other settings or shards; starting afresh", last)
            return None, None
        return last, contents

    # -- training

    def run(self, stop_after: int | None = None) -> dict[str, Any]:
        """Train to config.steps (or stop, checkpointed, at `stop_after`, as a preemption would); then finish."""
        config = self.config
        self.net: nn.Module = self.model
        if self.world > 1:
            self.net = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.local_rank] if self.device.type == "cuda" else None)
        workers = max(1, config.num_workers)
        loader = make_loader(self.train_shards, self.train_loader_config, rank=self.rank, world_size=self.world,
                             start=self.cursors, worker_offset=self.steps_done % workers)
        end = config.steps if stop_after is None else min(config.steps, stop_after)
        progress = None
        if self.rank == 0 and _is_tty():
            from tqdm import tqdm

            progress = tqdm(total=config.steps, initial=self.steps_done, desc="train", unit="step", dynamic_ncols=True)
        self.training_started = time.time()
        self.net.train()
        batches = iter(loader)
        while self.steps_done < end:
            row = self.step(next(batches))
            self._report(row, end, progress)
            if self.steps_done % max(1, config.checkpoint_every) == 0 or self.steps_done == end:
                self.checkpoint()
            if config.val_every and self.steps_done % config.val_every == 0 and self.steps_done < config.steps:
                self._record(self.validate())
        if progress is not None:
            progress.close()
        del batches, loader  # ends the workers before validation starts its own
        return self.finish(time.time() - self.training_started)

    def step(self, batch: Batch) -> dict[str, float]:
        """One optimizer step on a batch; returns its history row (losses averaged over ranks, LR)."""
        config = self.config
        global_input, crops = batch_inputs(batch, self.train_loader_config, self.device)
        labels = batch.labels.to(self.device)
        with self.autocast:
            output = self.net(global_input, crops)
        losses = lipfd_loss(output, labels, config.region_weight)
        self.optimizer.zero_grad(set_to_none=True)
        losses.total.backward()
        if config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.trainable, config.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.steps_done += 1
        self.cursors[batch.worker] = batch.cursor
        self.worker_stats[batch.worker] = batch.stats
        self.samples_seen += len(batch.keys) * self.world
        values = torch.stack([losses.total.detach(), losses.classification.detach(), losses.region.detach()]).float()
        if self.world > 1:
            torch.distributed.all_reduce(values)
            values /= self.world
        total, cls, region = (float(v) for v in values.cpu())
        row = {"step": self.steps_done, "loss": total, "classification": cls, "region": region,
               "lr": float(self.scheduler.get_last_lr()[0])}
        self.history.append(row)
        if self.on_batch is not None:
            self.on_batch(self.steps_done, batch, losses, self.model)
        return row

    def _report(self, row: dict[str, float], end: int, progress: Any) -> None:
        """The progress bar on a terminal, else a log line every log_every steps (rank 0)."""
        rate = self.samples_seen / max(1e-9, time.time() - self.training_started)
        if progress is not None:
            progress.update(1)
            progress.set_postfix(loss=f"{row['loss']:.4f}", cls=f"{row['classification']:.4f}", sps=f"{rate:.1f}")
        elif self.rank == 0 and (self.steps_done % max(1, self.config.log_every) == 0 or self.steps_done == end):
            log.info("step %d/%d loss %.4f cls %.4f region %.4f lr %.2e %.2f samples/s", self.steps_done,
                     self.config.steps, row["loss"], row["classification"], row["region"], row["lr"], rate)

    def checkpoint(self, path: str | os.PathLike[str] | None = None) -> None:
        """Save everything resume needs (default `<checkpoint_dir>/last.pt`), with every rank's loader cursors."""
        path = Path(path) if path is not None else self.checkpoint_dir / CHECKPOINT_NAME
        gathered: list[Any] = [self.cursors]
        if self.world > 1:
            gathered = [None] * self.world
            torch.distributed.all_gather_object(gathered, {int(k): list(v) for k, v in self.cursors.items()})
        if self.rank == 0:
            extra = {"cursors": {str(r): {str(k): list(v) for k, v in dict(c).items()} for r, c in enumerate(gathered)},
                     "world_size": self.world, "num_workers": self.config.num_workers, "train": self.config.to_dict(),
                     "data": self.data}
            save_checkpoint(path, self.model, self.optimizer, self.scheduler, step=self.steps_done,
                            config=self.model.config, extra=extra)
        if self.world > 1:
            torch.distributed.barrier()

    def validate(self) -> dict[str, Any] | None:
        """Validation metrics of the current model on rank 0 (None without validation shards or on other ranks)."""
        if not self.val_shards:
            return None
        result = None
        if self.rank == 0:
            result = evaluate(self.model, self.val_shards, self.config.loader_config(self.device.type, train=False),
                              self.device, self.autocast)
            log.info("validation at step %d: auc=%s acc=%s clip_auc=%s (%d samples)", self.steps_done,
                     _fmt(result["auc"]), _fmt(result["acc"]), _fmt(result["clip_auc"]), result["samples"])
        if self.world > 1:
            torch.distributed.barrier()
        return result

    def _record(self, validation: dict[str, Any] | None) -> None:
        if validation is not None:
            self.validations.append({"step": self.steps_done, **validation})

    def finish(self, seconds_training: float) -> dict[str, Any]:
        """The final validation and metrics; rank 0 writes the model (when all steps are done) and the metrics."""
        config = self.config
        finished = self.steps_done >= config.steps
        val = self.validate() if finished else None
        self._record(val)
        recent = self.history[-10:]
        loader_totals = (LoaderStats.merge(list(self.worker_stats.values())) if self.worker_stats
                         else LoaderStats()).to_dict()
        metrics: dict[str, Any] = {
            "steps": self.steps_done,
            "finished": finished,
            "resumed_from_step": self.resumed_from,
            "final_loss": float(np.mean([h["loss"] for h in recent])) if recent else None,
            "final_classification_loss": float(np.mean([h["classification"] for h in recent])) if recent else None,
            "val_auc": val["auc"] if val else None,
            "val_acc": val["acc"] if val else None,
            "val_clip_auc": val["clip_auc"] if val else None,
            "val_samples": val["samples"] if val else 0,
            "samples_per_s": self.samples_seen / max(1e-9, seconds_training),
            "seconds": time.time() - self.started,
            "seconds_training": seconds_training,
            "world_size": self.world,
            "device": str(self.device),
            "loader": {k: v for k, v in loader_totals.items() if k != "errors"},
            "validations": self.validations,
        }
        if self.rank == 0:
            if finished:
                save_checkpoint(self.model_path, self.model, step=self.steps_done, config=self.model.config,
                                extra={"train": config.to_dict(), "metrics": {k: v for k, v in metrics.items()
                                                                              if k not in ("validations", "loader")},
                                       "provenance": training_provenance(self.train_shards, self.val_shards)})
            if self.metrics_path:
                self.metrics_path.parent.mkdir(parents=True, exist_ok=True)
                tmp = self.metrics_path.with_suffix(".json.tmp")
                tmp.write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
                os.replace(tmp, self.metrics_path)
        metrics["history"] = self.history
        return metrics


def _resolve_config(params_or_config: TrainConfig | Mapping[str, Any]) -> TrainConfig:
    if isinstance(params_or_config, TrainConfig):
        return params_or_config
    return TrainConfig.from_params(params_or_config)


def train(
    params_or_config: TrainConfig | Mapping[str, Any],
    train_shards: str | Sequence[str],
    val_shards: str | Sequence[str] | None = None,
    model_path: str | os.PathLike[str] = default_param("train.model"),
    metrics_path: str | os.PathLike[str] | None = default_param("train.metrics"),
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
        run = TrainingRun(config, train_shards, val_shards, model_path, metrics_path, checkpoint_dir, rank=rank,
                          world=world, local_rank=local_rank, on_batch=on_batch, started=started)
        run.setup()
        run.resume(resume)
        return run.run(stop_after)
    finally:
        if created_group:
            torch.distributed.destroy_process_group()


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


# ------------------------------------------------------------------------------------------ command line


class NoShardsError(AvlipsInputError, FileNotFoundError):
    """A shard pattern of the command line or params matches no file."""


def expand_shard_pattern(pattern: str | Sequence[str] | None) -> str | list[str] | None:
    """Local glob patterns (train-*.tar) expanded, so params need not know shard counts; others as given."""
    import glob

    if isinstance(pattern, str) and "*" in pattern and "://" not in pattern and not pattern.startswith("pipe:"):
        found = sorted(glob.glob(pattern))
        if not found:
            raise NoShardsError(f"no shards match {pattern}")
        return found
    return pattern


def train_from_inputs(inputs: Any) -> dict[str, Any]:
    """Train as a command line says (avlips.cli_args.TrainInputs): `avlips train` and this module's main alike."""
    from avlips.pipelines.dropped_videos import read_dropped

    train_shards, val_shards = expand_shard_pattern(inputs.train_shards), expand_shard_pattern(inputs.val_shards)
    settings = {**inputs.settings, "exclude_clips": list(read_dropped(inputs.exclude_videos, "train.exclude_videos"))}
    return train(TrainConfig.from_dict(settings), train_shards, val_shards, inputs.model, inputs.metrics,
                 inputs.checkpoint_dir, inputs.resume)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m avlips.model.train` / `torchrun -m avlips.model.train`: train from params.yaml's `train:` block."""
    # One parser for this entry point and `avlips train` (avlips/cli_args.py): --params, -S key=value, the paths.
    from avlips.cli_args import params_from_args, train_inputs, train_parser

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
