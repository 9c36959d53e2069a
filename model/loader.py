"""Streaming LipFD loader: WebDataset shards -> batches of (global input, 15 region crops, labels).

Shards are paths or URLs in brace notation (`data/shards/clean/train-{000000..000009}.tar`,
`http://host/train-{000000..000009}.tar`, `pipe:aws s3 cp s3://b/train-000000.tar -`); webdataset
opens and expands them. Every sample is decoded with `media.sample.WindowSample.decode`, rendered in
the reference layout (`media.render_fast`, the uint8 composite of `media.render.render_sample`) and
turned into the network inputs of `model.inputs.prepare_inputs` (`model.composite_inputs`): in the
collate (worker processes) by the numba kernels, or on the training device by torch
(`resize_on="device"`). Workers hand batches over in shared buffers that they reuse once the trainer
has dropped a batch (`model.worker_memory`); what a process keeps for this is `model.loader_process`.

Data order is a pure function of (seed, epoch, rank, logical worker), never of timing, so a run can
stop and continue exactly: each batch carries its worker's cursor (epoch, raw samples consumed), the
trainer keeps the latest cursor per worker in its checkpoint, and a resumed loader skips that many raw
samples (before decoding) and rotates its worker ids so that the DataLoader's round robin goes on from
the right worker.

Bad input never stops the stream: an unreadable or truncated shard and a sample with missing or
undecodable fields are skipped, warned about (naming shard and key) and counted.
"""

from __future__ import annotations

import functools

import hashlib
import logging
import random
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from avlips.config import config_from_dict
from avlips.media.render_fast import render_sample_fast
from avlips.media.sample import SampleError, WindowSample
from avlips.model.shard_errors import ShardErrorHandler
from avlips.model.shard_samples import stored_clip

from .composite_inputs import composite_inputs, fast_path_available, fast_path_suits, fill_fast, torch_inputs
from .inputs import CROP_SIZE, GLOBAL_SIZE, NUM_FRAMES, SCALE_BOXES
from .lipfd import INPUT_MODES
from .loader_process import this_process
from .worker_memory import SharedParts, lend, receive

__all__ = [
    "LoaderConfig",
    "LoaderStats",
    "Batch",
    "LipFDStream",
    "expand_shards",
    "split_by_node",
    "split_by_worker",
    "make_loader",
    "batch_inputs",
    "composite_inputs",  # kept importable here; it lives in model.composite_inputs
    "distributed_rank_world",
]

log = logging.getLogger("avlips.loader")

_FRAMES = 5
_REQUIRED = ("mel.npy", "cls", "json")
_MAX_ERRORS_KEPT = 50  # recent warning messages kept in the stats


@dataclass(frozen=True)
class LoaderConfig:
    """How shards become batches."""

    batch_size: int = 8
    input_mode: str = "reference_compatible"
    crop_size: int = CROP_SIZE  # 224 is the reference; smaller only for a CPU configuration
    shuffle: bool = True  # shard order per epoch and a sample shuffle buffer
    shuffle_buffer: int = 256
    shuffle_initial: int = 64
    resampled: bool = False  # draw shards with replacement (no split), for epoch-less training
    repeat: bool = True  # loop over epochs forever (training); False: one pass (validation)
    num_workers: int = 0
    resize_on: str = "collate"  # collate: resized in the workers; device: uint8 composites, resized by batch_inputs
    perturb_probability: float = 0.0  # train-time random-mode perturbation of a window
    # The types it draws from (video, audio and call names: perturbations.ALL_TYPES); empty: the reference's six
    # video types, which draw the same (type, level) and frames per window as the reference random mode.
    perturb_types: tuple[str, ...] = ()
    drop_last: bool = True  # full batches only (training); the last partial batch of a pass is kept otherwise
    seed: int = 0
    prefetch_factor: int = 2
    # Windows of these videos (meta "clip") are left out and counted: the fakes synthesize.min_sync_confidence drops.
    exclude_clips: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.input_mode not in INPUT_MODES:
            raise ValueError(f"unknown input_mode {self.input_mode!r}; known: {INPUT_MODES}")
        if self.resize_on not in ("collate", "device"):
            raise ValueError(f"resize_on must be 'collate' or 'device', got {self.resize_on!r}")
        if self.batch_size < 1 or self.crop_size < 8 or self.num_workers < 0:
            raise ValueError("batch_size >= 1, crop_size >= 8 and num_workers >= 0 are required")
        if not 0.0 <= self.perturb_probability <= 1.0:
            raise ValueError(f"perturb_probability must be in [0, 1], got {self.perturb_probability}")
        if self.perturb_types:
            from avlips.perturbations import ALL_TYPES

            unknown = [name for name in self.perturb_types if name not in ALL_TYPES]
            if unknown:
                raise ValueError(f"perturb_types: unknown type(s) {unknown}; known: {list(ALL_TYPES)}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "LoaderConfig":
        """A config from a dict; an unknown key or a mistyped value is a ParamsError."""
        return config_from_dict(cls, data, "loader")


@dataclass
class LoaderStats:
    """Counters of one stream (one worker); `merge` adds those of several."""

    samples: int = 0  # decoded and yielded
    skipped_samples: int = 0  # missing or undecodable fields
    shard_errors: int = 0  # shards that could not be opened or read to the end
    perturbed: int = 0
    shared_buffers: int = 0  # batch buffers a worker keeps (reused once the trainer drops a batch)
    excluded: int = 0  # windows of videos in LoaderConfig.exclude_clips, left out on purpose
    errors: list[str] = field(default_factory=list)  # the latest warning messages

    def to_dict(self) -> dict[str, Any]:
        """Plain-data copy."""
        return asdict(self)

    @classmethod
    def merge(cls, parts: Sequence[Mapping[str, Any]]) -> "LoaderStats":
        """The sum of several workers' counters."""
        total = cls()
        for part in parts:
            total.samples += int(part["samples"])
            total.skipped_samples += int(part["skipped_samples"])
            total.shard_errors += int(part["shard_errors"])
            total.perturbed += int(part["perturbed"])
            total.shared_buffers += int(part.get("shared_buffers", 0))
            total.excluded += int(part.get("excluded", 0))
            total.errors = (total.errors + list(part["errors"]))[-_MAX_ERRORS_KEPT:]
        return total


@dataclass
class Batch:
    """One batch: network inputs (or uint8 composites), labels, keys and the producing worker's state."""

    labels: torch.Tensor  # (B,) float32, 1 = fake
    keys: list[str]
    clips: list[str]
    worker: int  # logical worker id
    cursor: tuple[int, int]  # (epoch, raw samples consumed in that epoch) after this batch
    stats: dict[str, Any]  # the worker's cumulative LoaderStats
    global_input: torch.Tensor | None = None  # (B, 3, 1120, 1120) when resized in the collate (channels-last memory)
    crops: torch.Tensor | None = None  # (B, 15, 3, c, c)
    composites: torch.Tensor | None = None  # (B, 1000, 2500, 3) uint8 when resized on the device
    shared: SharedParts | None = field(default=None, repr=False, compare=False)  # set in a worker only

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        """Pickled by a worker: the tensors travel as their shared slot, to be released by the receiver."""
        plain = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "shared"}
        if self.shared is None:
            return _plain_batch, (plain,)
        for name, *_ in self.shared.layout:
            plain[name] = None
        return _batch_from_slot, (plain, self.shared.slot, self.shared.layout)

    def pin_memory(self) -> "Batch":
        """Page-locked copies of the tensors (called by the DataLoader when pin_memory is on)."""
        for name in ("labels", "global_input", "crops", "composites"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, value.pin_memory())
        return self


def _plain_batch(plain: dict[str, Any]) -> Batch:
    return Batch(**plain)


def _batch_from_slot(plain: dict[str, Any], slot: torch.Tensor, layout: tuple) -> Batch:
    # In the receiving process: tensors over the worker's slot, which is freed when they are all gone.
    return Batch(**{**plain, **_network_layout(receive(slot, layout))})


# Kept channels-last ((B, H, W, 3) memory) and handed on as their (B, 3, H, W) view: the same values, but the
# network's 5x5/stride-5 conv1 over the 1120x1120 global view costs about 40% less CPU time in this layout
# (about 6% of a demo training step; benchmarks/train_cpu.py).
_CHANNELS_LAST = ("global_input",)


def _network_layout(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: t.permute(0, 3, 1, 2) if name in _CHANNELS_LAST else t for name, t in tensors.items()}


# ------------------------------------------------------------------------------------------ shard lists


def expand_shards(shards: str | Sequence[str]) -> list[str]:
    """Shard URLs from brace notation (`a-{000..009}.tar`), `::`-separated lists or a sequence of them."""
    from webdataset.shardlists import expand_urls

    items = [shards] if isinstance(shards, str) else list(shards)
    urls: list[str] = []
    for item in items:
        urls.extend(expand_urls(item))
    if not urls:
        raise ValueError(f"no shards in {shards!r}")
    return urls


def split_by_node(urls: Sequence[str], rank: int, world_size: int) -> list[str]:
    """This node's share of the shards: every world_size-th from its rank (webdataset's rule, explicit rank)."""
    return list(urls[rank::world_size])


def split_by_worker(urls: Sequence[str], worker: int, num_workers: int) -> list[str]:
    """This worker's share of a node's shards: every num_workers-th from its id."""
    return list(urls[worker::num_workers])


def distributed_rank_world() -> tuple[int, int]:
    """(rank, world size) of the initialised process group, else (0, 1)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _seed_of(*parts: Any) -> int:
    # A stable 64-bit seed from several values (Python's hash() is salted per process).
    digest = hashlib.sha256("/".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big")


# ---------------------------------------------------------------------------------------------- stream


class LipFDStream(IterableDataset):
    """An iterable of Batch from shards; one instance per node, split over DataLoader workers.

    `start` maps a logical worker id to its cursor (epoch, raw samples to skip); `worker_offset`
    renames physical worker w to logical (w + offset) % workers, so that a resumed DataLoader's round
    robin starts at the worker the interrupted run would have asked next.
    """

    def __init__(
        self,
        shards: str | Sequence[str],
        config: LoaderConfig | None = None,
        rank: int | None = None,
        world_size: int | None = None,
        start: Mapping[int, Sequence[int]] | None = None,
        worker_offset: int = 0,
    ) -> None:
        super().__init__()
        self.urls = expand_shards(shards)
        self.config = config or LoaderConfig()
        self._excluded = frozenset(self.config.exclude_clips)
        found_rank, found_world = distributed_rank_world()
        self.rank = found_rank if rank is None else rank
        self.world_size = found_world if world_size is None else world_size
        self.start = {int(k): (int(v[0]), int(v[1])) for k, v in (start or {}).items()}
        self.worker_offset = worker_offset
        self.stats = LoaderStats()  # of the in-process stream (num_workers=0)
        self.fast_checked: bool | None = None  # the parent's fast_path_available(), handed to its workers

    # -- the raw sample stream of one consumer

    def _consumer(self) -> tuple[int, int]:
        info = get_worker_info()
        workers = max(1, self.config.num_workers)
        physical = info.id if info is not None else 0
        return (physical + self.worker_offset) % workers, workers

    def _epoch_shards(self, epoch: int, worker: int, workers: int) -> tuple[list[str], int, int]:
        """(shards, sample stride, sample phase) of this consumer in an epoch."""
        cfg = self.config
        if cfg.resampled:
            # Shards drawn with replacement, independently per consumer (webdataset's ResampledShards).
            rng = random.Random(_seed_of(cfg.seed, "resample", epoch, self.rank, worker))
            return [rng.choice(self.urls) for _ in self.urls], 1, 0
        urls = list(self.urls)
        if cfg.shuffle:
            # The same permutation on every rank and worker, so the splits stay disjoint.
            random.Random(_seed_of(cfg.seed, "shards", epoch)).shuffle(urls)
        consumers = self.world_size * workers
        if len(urls) >= consumers:
            return split_by_worker(split_by_node(urls, self.rank, self.world_size), worker, workers), 1, 0
        # Fewer shards than consumers: everyone reads every shard and keeps every n-th sample.
        return urls, consumers, self.rank * workers + worker

    def _raw_epoch(self, epoch: int, worker: int, workers: int, stats: LoaderStats) -> Iterator[dict]:
        from webdataset import shuffle
        from webdataset.tariterators import group_by_keys, tar_file_expander, url_opener

        shards, stride, phase = self._epoch_shards(epoch, worker, workers)
        handler = _shard_error_handler(stats)
        opened = handler.track(url_opener(({"url": u} for u in shards), handler=handler))
        samples = group_by_keys(tar_file_expander(opened, handler=handler), handler=handler)
        if stride > 1:
            samples = (s for i, s in enumerate(samples) if i % stride == phase)
        if self.config.shuffle and self.config.shuffle_buffer > 1:
            rng = random.Random(_seed_of(self.config.seed, "buffer", epoch, self.rank, worker))
            # webdataset's buffer shuffle (its public, curried form): the order follows from rng alone.
            samples = shuffle(self.config.shuffle_buffer, self.config.shuffle_initial, rng=rng)(samples)
        return samples

    def __iter__(self) -> Iterator[Batch]:
        cfg = self.config
        worker, workers = self._consumer()
        in_worker = get_worker_info() is not None
        if in_worker:
            this_process.enter_worker(self.fast_checked)  # the parent checked the kernels already
        stats = LoaderStats() if in_worker else self.stats
        perturb = None
        if cfg.perturb_probability > 0:
            # Imported only when enabled: the random mode is an optional, train-time dependency.
            from avlips.perturbations.random_mode import random_window_perturbation

            # An audio or call draw changes the window's audio context and recomputes its mel.
            types = {"types": cfg.perturb_types} if cfg.perturb_types else {}
            perturb = functools.partial(random_window_perturbation, **types)
        epoch, skip = self.start.get(worker, (0, 0))
        while True:
            consumed, batches = 0, 0
            pending: list[tuple[str, str, np.ndarray, int]] = []
            for raw in self._raw_epoch(epoch, worker, workers, stats):
                consumed += 1
                if consumed <= skip:
                    continue  # trained on before the interruption: skipped undecoded
                decoded = self._decode(raw, epoch, stats, perturb)
                if decoded is None:
                    continue
                pending.append(decoded)
                if len(pending) == cfg.batch_size:
                    yield self._collate(pending, worker, (epoch, consumed), stats)
                    pending, batches = [], batches + 1
            if not cfg.repeat:
                if pending and not cfg.drop_last:
                    yield self._collate(pending, worker, (epoch, consumed), stats)
                return
            # Leftovers of an epoch are dropped, so every cursor sits on a batch boundary of one epoch.
            if batches == 0 and skip == 0:
                raise RuntimeError(
                    f"worker {worker} of rank {self.rank} made no full batch of {cfg.batch_size} in epoch {epoch} "
                    f"from {len(self.urls)} shard(s) ({stats.samples} good, {stats.skipped_samples} skipped "
                    f"samples so far); use fewer workers/ranks, a smaller batch or more data")
            epoch, skip = epoch + 1, 0

    # -- one sample

    def _decode(self, raw: dict, epoch: int, stats: LoaderStats, perturb: Any = None
                ) -> tuple[str, str, np.ndarray, int] | None:
        """(key, clip, composite, label) of a raw sample, or None (warned and counted) when it is bad."""
        key, url = str(raw.get("__key__")), str(raw.get("__url__"))
        members = {k: v for k, v in raw.items() if not k.startswith("__")}
        try:
            missing = [name for name in _REQUIRED if name not in members]
            missing += [f"f{i}" for i in range(_FRAMES) if f"f{i}.jpg" not in members and f"f{i}.png" not in members]
            if missing:
                raise SampleError(f"missing field(s) {missing}")
            if self._excluded and stored_clip(members) in self._excluded:
                stats.excluded += 1  # before its frames are decoded
                return None
            sample = WindowSample.decode(key, members)
            if sample.frames.shape[0] != _FRAMES or sample.label not in (0, 1):
                raise SampleError(f"{sample.frames.shape[0]} frames, label {sample.label}")
            if perturb is not None:
                sample, info = perturb(sample, self.config.perturb_probability, salt=epoch)
                if info and (not isinstance(info, Mapping) or info.get("type", "none") != "none"):
                    stats.perturbed += 1
            composite = render_sample_fast(sample)
        except Exception as exc:  # one bad sample must not end the stream
            _warn(stats, f"skipped sample {key!r} of shard {url}: {type(exc).__name__}: {exc}")
            stats.skipped_samples += 1
            return None
        stats.samples += 1
        return key, str(sample.meta.get("clip", "")), composite, int(sample.label)

    def _collate(self, items: list, worker: int, cursor: tuple[int, int], stats: LoaderStats) -> Batch:
        cfg = self.config
        keys = [k for k, _, _, _ in items]
        clips = [c for _, c, _, _ in items]
        arrays = [c for _, _, c, _ in items]
        labels = torch.tensor([lab for _, _, _, lab in items], dtype=torch.float32)
        b = len(arrays)
        if cfg.resize_on == "device":
            parts = {"composites": ((b, *arrays[0].shape), np.uint8)}
        elif fast_path_suits(arrays, None):
            parts = {"global_input": ((b, GLOBAL_SIZE, GLOBAL_SIZE, 3), np.float32),  # channels-last
                     "crops": ((b, NUM_FRAMES * len(SCALE_BOXES), 3, cfg.crop_size, cfg.crop_size), np.float32)}
        else:  # torch's resizes (no numba): tensors of their own, shared the usual way
            global_input, crops = torch_inputs(torch.from_numpy(np.stack(arrays)), cfg)
            return Batch(labels, keys, clips, worker, cursor, stats.to_dict(), global_input, crops)
        shared = None
        if get_worker_info() is not None:
            shared = lend(this_process.batch_slots(), parts)
            stats.shared_buffers = len(this_process.batch_slots())
            out = dict(shared.arrays)
        else:
            out = {name: np.empty(shape, dtype) for name, (shape, dtype) in parts.items()}
        if cfg.resize_on == "device":
            np.stack(arrays, out=out["composites"])
        else:
            # Straight from the composites; the kernels write the global view through its (B, 3, H, W) view.
            fill_fast(arrays, cfg, out["global_input"].transpose(0, 3, 1, 2), out["crops"])
        tensors = _network_layout({name: torch.from_numpy(array) for name, array in out.items()})
        return Batch(labels, keys, clips, worker, cursor, stats.to_dict(), shared=shared, **tensors)


def _shard_error_handler(stats: LoaderStats) -> ShardErrorHandler:
    """Warnings kept in the stream's stats; each failing shard counted once."""

    def count(_where: str) -> None:
        stats.shard_errors += 1

    return ShardErrorHandler(lambda message: _warn(stats, message), count)


def _warn(stats: LoaderStats, message: str) -> None:
    log.warning("%s", message)
    stats.errors = (stats.errors + [message])[-_MAX_ERRORS_KEPT:]


# ------------------------------------------------------------------------------------------ the DataLoader


def batch_inputs(batch: Batch, config: LoaderConfig, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
    """(global input, crops) of a batch on `device`, resizing there when the loader left composites."""
    if batch.composites is not None:
        return composite_inputs(batch.composites, config, device=device)
    assert batch.global_input is not None and batch.crops is not None
    non_blocking = torch.device(device).type == "cuda"
    return batch.global_input.to(device, non_blocking=non_blocking), batch.crops.to(device, non_blocking=non_blocking)


def make_loader(
    shards: str | Sequence[str],
    config: LoaderConfig | None = None,
    rank: int | None = None,
    world_size: int | None = None,
    start: Mapping[int, Sequence[int]] | None = None,
    worker_offset: int = 0,
) -> DataLoader:
    """A torch DataLoader of Batch over the shards (batching happens in the stream; workers per config)."""
    config = config or LoaderConfig()
    stream = LipFDStream(shards, config, rank=rank, world_size=world_size, start=start, worker_offset=worker_offset)
    kwargs: dict[str, Any] = {}
    if config.num_workers > 0:
        if config.resize_on == "collate":
            stream.fast_checked = fast_path_available()  # checked once here, not in every worker
        kwargs.update(prefetch_factor=config.prefetch_factor, persistent_workers=False,
                      multiprocessing_context=this_process.worker_context())
    return DataLoader(stream, batch_size=None, num_workers=config.num_workers,
                      pin_memory=torch.cuda.is_available(), collate_fn=_identity, **kwargs)


def _identity(batch: Batch) -> Batch:
    return batch
