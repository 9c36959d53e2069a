"""Streaming LipFD loader: WebDataset shards -> batches of (global input, 15 region crops, labels).

Shards are paths or URLs in brace notation (`data/shards/clean/train-{000000..000009}.tar`,
`http://host/train-{000000..000009}.tar`, `pipe:aws s3 cp s3://b/train-000000.tar -`); webdataset
opens and expands them. Every sample is decoded with `media.sample.WindowSample.decode`, rendered in
the reference layout (the uint8 composite of `media.render.render_sample`) and turned into the network
inputs of `model.inputs.prepare_inputs`: in the collate (worker processes) by numba kernels of torch's
bilinear formula (within 1e-4 of torch on 0..255, see `composite_inputs`), or on the training device
by torch (`resize_on="device"`). Workers hand batches over in shared buffers that they reuse once the
trainer has dropped a batch (`model.worker_memory`).

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
import os
import random
import threading
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Iterator, Mapping, Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from avlips.config import config_from_dict
from avlips.media import render as media_render
from avlips.media.render import render_sample
from avlips.media.sample import SampleError, WindowSample

from .inputs import (CLIP_MEAN, CLIP_STD, COMPOSITE_SHAPE, CROP_SIZE, FRAME_SIZE, GLOBAL_SIZE, NUM_FRAMES,
                     SCALE_BOXES, global_view, region_crops)
from .lipfd import INPUT_MODES
from .worker_memory import SharedParts, SlotPool, lend, receive, tune_allocator

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
    "composite_inputs",
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
    perturb_probability: float = 0.0  # train-time random-mode perturbation of the frames
    drop_last: bool = True  # full batches only (training); the last partial batch of a pass is kept otherwise
    seed: int = 0
    prefetch_factor: int = 2

    def __post_init__(self) -> None:
        if self.input_mode not in INPUT_MODES:
            raise ValueError(f"unknown input_mode {self.input_mode!r}; known: {INPUT_MODES}")
        if self.resize_on not in ("collate", "device"):
            raise ValueError(f"resize_on must be 'collate' or 'device', got {self.resize_on!r}")
        if self.batch_size < 1 or self.crop_size < 8 or self.num_workers < 0:
            raise ValueError("batch_size >= 1, crop_size >= 8 and num_workers >= 0 are required")
        if not 0.0 <= self.perturb_probability <= 1.0:
            raise ValueError(f"perturb_probability must be in [0, 1], got {self.perturb_probability}")

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
    global_input: torch.Tensor | None = None  # (B, 3, 1120, 1120) when resized in the collate
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
    return Batch(**{**plain, **receive(slot, layout)})


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
        found_rank, found_world = distributed_rank_world()
        self.rank = found_rank if rank is None else rank
        self.world_size = found_world if world_size is None else world_size
        self.start = {int(k): (int(v[0]), int(v[1])) for k, v in (start or {}).items()}
        self.worker_offset = worker_offset
        self.stats = LoaderStats()  # of the in-process stream (num_workers=0)
        self.fast_checked: bool | None = None  # the parent's _fast_available(), handed to its workers

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
        from webdataset.filters import _shuffle
        from webdataset.tariterators import group_by_keys, tar_file_expander, url_opener

        shards, stride, phase = self._epoch_shards(epoch, worker, workers)
        handler = _ShardErrorHandler(stats)
        opened = handler.track(url_opener(({"url": u} for u in shards), handler=handler))
        samples = group_by_keys(tar_file_expander(opened, handler=handler), handler=handler)
        if stride > 1:
            samples = (s for i, s in enumerate(samples) if i % stride == phase)
        if self.config.shuffle and self.config.shuffle_buffer > 1:
            rng = random.Random(_seed_of(self.config.seed, "buffer", epoch, self.rank, worker))
            samples = _shuffle(samples, self.config.shuffle_buffer, self.config.shuffle_initial, rng=rng)
        return samples

    def __iter__(self) -> Iterator[Batch]:
        cfg = self.config
        if self.fast_checked is not None:
            _fast_state.setdefault("ok", self.fast_checked)  # a worker need not check the kernels again
        worker, workers = self._consumer()
        in_worker = get_worker_info() is not None
        if in_worker:
            tune_allocator()
        stats = LoaderStats() if in_worker else self.stats
        perturb = None
        if cfg.perturb_probability > 0:
            # Imported only when enabled: the random mode is an optional, train-time dependency.
            from avlips.perturbations.random_mode import random_perturbation as perturb
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
            sample = WindowSample.decode(key, members)
            if sample.frames.shape[0] != _FRAMES or sample.label not in (0, 1):
                raise SampleError(f"{sample.frames.shape[0]} frames, label {sample.label}")
            if perturb is not None:
                frames, info = perturb(sample.frames, key, self.config.perturb_probability, salt=epoch)
                if info and (not isinstance(info, Mapping) or info.get("type", "none") != "none"):
                    stats.perturbed += 1
                sample.frames = np.asarray(frames)
            composite = _render(sample)
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
        elif _fast_ok_for(arrays, None):
            parts = {"global_input": ((b, 3, GLOBAL_SIZE, GLOBAL_SIZE), np.float32),
                     "crops": ((b, NUM_FRAMES * len(SCALE_BOXES), 3, cfg.crop_size, cfg.crop_size), np.float32)}
        else:  # torch's resizes (no numba): tensors of their own, shared the usual way
            global_input, crops = _torch_inputs(torch.from_numpy(np.stack(arrays)), cfg)
            return Batch(labels, keys, clips, worker, cursor, stats.to_dict(), global_input, crops)
        shared = None
        if get_worker_info() is not None:
            shared = lend(_worker_pool(), parts)
            stats.shared_buffers = len(_worker_pool())
            out = dict(shared.arrays)
        else:
            out = {name: np.empty(shape, dtype) for name, (shape, dtype) in parts.items()}
        if cfg.resize_on == "device":
            np.stack(arrays, out=out["composites"])
        else:
            _fast_fill(arrays, cfg, out["global_input"], out["crops"])  # straight from the composites
        tensors = {name: torch.from_numpy(array) for name, array in out.items()}
        return Batch(labels, keys, clips, worker, cursor, stats.to_dict(), shared=shared, **tensors)


@functools.lru_cache(maxsize=1)
def _viridis() -> Any:
    # One colormap object per process (the registry hands out a copy per lookup).
    from matplotlib import colormaps

    return colormaps["viridis"]


def _render(sample: WindowSample) -> np.ndarray:
    """avlips.media.render.render_sample's composite (the same uint8 values), made with less copying.

    The colormap is looked up once per process and the strip and frames are written straight into the
    composite (no concatenations; a frame already 500x500 is copied, which is what cv2.resize does for
    an unchanged size). Anything unusual (not five uint8 RGB frames) goes through render_sample itself.
    """
    frames = sample.frames
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        return render_sample(sample)
    meta = sample.meta
    try:
        db_min, db_max = float(meta["mel_db_min"]), float(meta["mel_db_max"])
    except KeyError as exc:
        raise ValueError(f"{sample.key}: metadata lacks {exc.args[0]!r}, needed to colour the mel") from exc
    span = db_max - db_min
    mel_db = sample.mel_db
    normalised = (mel_db - db_min) / span if span > 0 else np.zeros_like(mel_db)
    mel_rgb = np.ascontiguousarray(_viridis()(normalised, bytes=True)[..., :3])
    side, strip_height = media_render.FRAME_SIDE, media_render.STRIP_HEIGHT
    count = len(frames)
    composite = np.empty((strip_height + side, side * count, 3), dtype=np.uint8)
    strip = composite[:strip_height]  # contiguous: OpenCV writes into it
    written = cv2.resize(mel_rgb, (side * count, strip_height), dst=strip, interpolation=cv2.INTER_LINEAR)
    if written is not None and written.__array_interface__["data"][0] != strip.__array_interface__["data"][0]:
        strip[...] = written
    for i, frame in enumerate(frames):
        if frame.shape[:2] != (side, side):
            frame = cv2.resize(np.ascontiguousarray(frame), (side, side), interpolation=cv2.INTER_LINEAR)
        composite[strip_height:, i * side:(i + 1) * side] = frame
    return composite


class _ShardErrorHandler:
    """webdataset handler: warn naming the shard, count each failing shard once, go on with the next."""

    def __init__(self, stats: LoaderStats) -> None:
        self.stats = stats
        self.current = "?"  # the shard being read (set by `track`)
        self.failed: set[str] = set()

    def track(self, sources: Iterator[dict]) -> Iterator[dict]:
        """Pass opened shards through, remembering which one is being read."""
        for source in sources:
            self.current = str(source.get("url"))
            yield source

    def __call__(self, exn: Exception) -> bool:
        args = getattr(exn, "args", ())
        # webdataset appends the URL to the exception's args where it knows it.
        named = [a for a in args[1:] if isinstance(a, str)]
        where = named[-1] if named else self.current
        message = str(args[0]) if args else repr(exn)
        _warn(self.stats, f"shard {where} unreadable or truncated ({type(exn).__name__}: {message})")
        if where not in self.failed:
            self.failed.add(where)
            self.stats.shard_errors += 1
        return True


def _warn(stats: LoaderStats, message: str) -> None:
    log.warning("%s", message)
    stats.errors = (stats.errors + [message])[-_MAX_ERRORS_KEPT:]


def _torch_inputs(composites: torch.Tensor, config: LoaderConfig, device: torch.device | str | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched global view and region crops of uint8 composites (B, H, W, 3) with torch (any device).

    The same values as model.inputs.prepare_inputs, computed in channels-last layout: the channel flip
    happens on uint8 and no channels-first copy of the float composite is made.
    """
    x = composites.to(device=device)
    if config.input_mode == "reference_compatible":
        x = x.flip(-1)  # RGB -> BGR, 0..255 (what the released checkpoint saw)
    x = x.permute(0, 3, 1, 2).to(torch.float32)  # NCHW view of NHWC memory
    if config.input_mode == "normalized":
        mean = torch.tensor(CLIP_MEAN, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(CLIP_STD, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
        x = (x / 255.0 - mean) / std
    global_input = global_view(x).contiguous()
    crops = region_crops(x)
    return global_input, _shrink_crops(crops, config).contiguous()


def _shrink_crops(crops: torch.Tensor, config: LoaderConfig) -> torch.Tensor:
    """(B, 15, 3, 224, 224) crops at config.crop_size (a further torch bilinear resize when it is not 224)."""
    if config.crop_size == CROP_SIZE:
        return crops
    b, n = crops.shape[:2]
    small = F.interpolate(crops.flatten(0, 1), size=(config.crop_size,) * 2, mode="bilinear",
                          align_corners=False, antialias=False)
    return small.reshape(b, n, 3, config.crop_size, config.crop_size)


# ------------------------------------------------------------------------------- the CPU fast path
#
# torch's CPU bilinear resize (align_corners=False, no antialias) is separable: for each output pixel it
# takes the two source columns of each of the two source rows, t = fma(x0, w0, x1 * w1), then
# out = fma(t0, h0, t1 * h1), with source coordinates src = fma(in/out, dst + 0.5, -0.5) in float32
# (measured on torch 2.13's AVX2 kernels: weights bit-identical, values within 1-3 float32 ulps; torch's
# own results differ by as much between 1 and 2 threads, its vectorised and scalar loops rounding
# differently). The numba kernels below compute that formula straight from the uint8 composite, with the
# channel flip / normalisation folded into a 256-entry table per channel: no float copy of the composite,
# one pass per axis, about 10x less CPU time than torch. OpenCV's float INTER_LINEAR is not used: it
# computes coordinates in double, which moves values by up to 0.05 (of 255) from torch's.
# The first use in a process compares the kernels with torch on random images of every shape involved
# and falls back to torch (warning once) if they differ by more than _FAST_ATOL (of 255).

_FAST_ATOL = 1e-4  # on the 0..255 scale; the crops/global view are checked against torch within this
_fast_state: dict[str, Any] = {}  # "ok": bool after the first check in this process


def _bilinear_coords(n_in: int, n_out: int, offset: int = 0
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """torch's source indices (i0, i1, shifted by offset) and float32 weights (w0, w1) of a bilinear resize."""
    f32 = np.float32
    if n_in == n_out:
        index = np.arange(n_out, dtype=np.int64) + offset
        return index, index.copy(), np.ones(n_out, f32), np.zeros(n_out, f32)
    scale = f32(n_in) / f32(n_out)  # float32 division, as torch's area_pixel_compute_scale
    centre = np.arange(n_out, dtype=f32) + f32(0.5)
    # One rounding of scale * centre - 0.5 (a fused multiply-add): the float64 product of two float32
    # values is exact, and the sum is exact in float64 for these magnitudes.
    src = (np.float64(scale) * centre.astype(np.float64) - 0.5).astype(f32)
    src = np.maximum(src, f32(0))
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    w1 = np.clip(src - i0.astype(f32), f32(0), f32(1)).astype(f32)
    i1 = i0 + (i0 < n_in - 1)
    w0 = (f32(1) - w1).astype(f32)
    return i0 + offset, i1 + offset, w0, w1


try:  # numba comes with librosa; without it the torch path is used
    from numba import njit, types
    from numba.extending import intrinsic
except ImportError:  # pragma: no cover
    njit = None

if njit is not None:

    @intrinsic
    def _fma32(typingctx, a, b, c):
        """a * b + c with one rounding (llvm.fma: the FMA instruction), as torch's contracted float32 code."""
        sig = types.float32(types.float32, types.float32, types.float32)

        def codegen(context, builder, signature, args):
            return builder.fma(*args)
        return sig, codegen

    @njit(nogil=True, cache=True)
    def _width_pass_u8(row, lut, chan, xs0, xs1, ww0, ww1, t):
        """One source row (W, 3) uint8 resized along its width into t (3, ow), through the channel table."""
        c0, c1, c2 = chan[0], chan[1], chan[2]
        l0, l1, l2 = lut[0], lut[1], lut[2]
        t0, t1, t2 = t[0], t[1], t[2]
        for x in range(t.shape[1]):
            p = row[xs0[x]]
            q = row[xs1[x]]
            a = ww0[x]
            b = ww1[x]
            t0[x] = _fma32(l0[p[c0]], a, l0[q[c0]] * b)
            t1[x] = _fma32(l1[p[c1]], a, l1[q[c1]] * b)
            t2[x] = _fma32(l2[p[c2]], a, l2[q[c2]] * b)

    @njit(nogil=True, cache=True)
    def _resize_u8(src, lut, chan, ys0, ys1, hw0, hw1, xs0, xs1, ww0, ww1, out, tmp):
        """Bilinear resize of rows/cols (ys, xs) of src (H, W, 3) uint8 into out (3, oh, ow) float32.

        Output channel c reads lut[c][src[..., chan[c]]]; width pass first, then the height pass, as
        torch. Output rows go in order and need two source rows each, so only the last two width-passed
        rows are kept (tmp (2, 3, ow)): they stay in cache, and each source row is width-passed once.
        """
        oh, ow = out.shape[1], out.shape[2]
        held = np.array([-1, -1])  # the source row in each tmp slot
        for y in range(oh):
            for r, other in ((ys0[y], ys1[y]), (ys1[y], ys0[y])):
                if held[0] != r and held[1] != r:
                    slot = 1 if held[0] == other else 0  # never overwrite the other row this y needs
                    _width_pass_u8(src[r], lut, chan, xs0, xs1, ww0, ww1, tmp[slot])
                    held[slot] = r
            s0 = 0 if held[0] == ys0[y] else 1
            s1 = 0 if held[0] == ys1[y] else 1
            h0 = hw0[y]
            h1 = hw1[y]
            for c in range(3):
                ta = tmp[s0, c]
                tb = tmp[s1, c]
                o = out[c, y]
                for x in range(ow):
                    o[x] = _fma32(ta[x], h0, tb[x] * h1)

    @njit(nogil=True, cache=True)
    def _resize_f32(src, ys0, ys1, hw0, hw1, xs0, xs1, ww0, ww1, out, tmp):
        """Bilinear resize of rows/cols (ys, xs) of src (3, H, W) float32 into out (3, oh, ow) float32."""
        oh, ow = out.shape[1], out.shape[2]
        r_lo = min(ys0.min(), ys1.min())
        r_hi = max(ys0.max(), ys1.max()) + 1
        for c in range(3):
            plane = src[c]
            for r in range(r_lo, r_hi):
                row = plane[r]
                t = tmp[r - r_lo]
                for x in range(ow):
                    t[x] = _fma32(row[xs0[x]], ww0[x], row[xs1[x]] * ww1[x])
            for y in range(oh):
                ta = tmp[ys0[y] - r_lo]
                tb = tmp[ys1[y] - r_lo]
                h0 = hw0[y]
                h1 = hw1[y]
                o = out[c, y]
                for x in range(ow):
                    o[x] = _fma32(ta[x], h0, tb[x] * h1)


def _fast_kernels() -> dict[str, Any] | None:
    """The numba kernels (compiled on first use, cached on disk under NUMBA_CACHE_DIR), or None without numba."""
    if njit is None:
        return None
    return {"u8": _resize_u8, "f32": _resize_f32}


@functools.lru_cache(maxsize=None)
def _plan() -> dict[str, Any]:
    """Index/weight tables of every resize of the fast path (global view, five frames, two scale crops)."""
    height, width = COMPOSITE_SHAPE
    plan: dict[str, Any] = {
        "global": _bilinear_coords(height, GLOBAL_SIZE) + _bilinear_coords(width, GLOBAL_SIZE),
        "frame_rows": _bilinear_coords(FRAME_SIZE, CROP_SIZE, offset=FRAME_SIZE),
        "frame_cols": [_bilinear_coords(FRAME_SIZE, CROP_SIZE, offset=i * FRAME_SIZE) for i in range(NUM_FRAMES)],
        "scales": [],
    }
    for start, stop in SCALE_BOXES[1:]:
        plan["scales"].append(_bilinear_coords(stop - start, CROP_SIZE, offset=start))
    return plan


@functools.lru_cache(maxsize=None)
def _channel_table(input_mode: str) -> tuple[np.ndarray, np.ndarray]:
    """(lut (3, 256) float32, source channel of each output channel) of an input mode.

    The values are those of the torch path's elementwise ops (uint8 -> float32, then for `normalized`
    (x / 255 - mean) / std), computed by the same torch ops on the 256 possible values.
    """
    values = torch.arange(256, dtype=torch.float32).view(1, 1, 256).expand(1, 3, 256)
    if input_mode == "normalized":
        mean = torch.tensor(CLIP_MEAN, dtype=torch.float32).view(1, 3, 1)
        std = torch.tensor(CLIP_STD, dtype=torch.float32).view(1, 3, 1)
        values = (values / 255.0 - mean) / std
        chan = np.array([0, 1, 2], dtype=np.int64)
    else:
        chan = np.array([2, 1, 0], dtype=np.int64)  # RGB -> BGR
    return np.ascontiguousarray(values[0].numpy(), dtype=np.float32), chan


def _fast_one(composite: np.ndarray, lut: np.ndarray, chan: np.ndarray, global_out: np.ndarray,
              crops_out: np.ndarray, kernels: dict[str, Any], scratch: dict[str, np.ndarray]) -> None:
    """Fill global_out (3, 1120, 1120) and crops_out (15, 3, 224, 224) from one uint8 composite (1000, 2500, 3)."""
    plan = _plan()
    kernels["u8"](composite, lut, chan, *plan["global"], global_out, scratch["global"])
    ys = plan["frame_rows"]
    for i, xs in enumerate(plan["frame_cols"]):
        whole = crops_out[i * 3]  # scale 1.0: the frame resized to 224
        kernels["u8"](composite, lut, chan, *ys, *xs, whole, scratch["frame"])
        for j, coords in enumerate(plan["scales"], start=1):  # 0.65 and 0.45: slices of it resized to 224
            kernels["f32"](whole, *coords, *coords, crops_out[i * 3 + j], scratch["scale"])


def _scratch() -> dict[str, np.ndarray]:
    """Work buffers of the kernels' width passes (one set per call, reused over a batch)."""
    return {"global": np.empty((2, 3, GLOBAL_SIZE), np.float32),
            "frame": np.empty((2, 3, CROP_SIZE), np.float32),
            "scale": np.empty((CROP_SIZE, CROP_SIZE), np.float32)}


def _fast_available() -> bool:
    """Whether the numba path is usable here: compiled and, once per process, checked against torch."""
    if "ok" in _fast_state:
        return _fast_state["ok"]
    ok = False
    try:
        kernels = _fast_kernels()
        if kernels is not None:
            ok = _fast_matches_torch(kernels)
            if not ok:
                log.warning("loader: the CPU resize kernels differ from torch's here; using torch's resizes")
    except Exception as exc:  # never let the fast path stop a stream
        log.warning("loader: CPU resize kernels unavailable (%s: %s); using torch's resizes", type(exc).__name__, exc)
    _fast_state["ok"] = ok
    return ok


def _fast_matches_torch(kernels: dict[str, Any]) -> bool:
    """One random composite through both paths: equal within _FAST_ATOL (0..255 scale)."""
    rng = np.random.default_rng(12345)
    composite = rng.integers(0, 256, (1, *COMPOSITE_SHAPE, 3), dtype=np.uint8)
    cfg = LoaderConfig(batch_size=1, crop_size=CROP_SIZE, input_mode="reference_compatible")
    expected_global, expected_crops = _torch_inputs(torch.from_numpy(composite), cfg)
    got_global, got_crops = _fast_inputs([composite[0]], cfg)
    return bool((got_global - expected_global).abs().max() <= _FAST_ATOL
                and (got_crops - expected_crops).abs().max() <= _FAST_ATOL)


def _fast_inputs(composites: Sequence[np.ndarray], config: LoaderConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """(global input, crops) of uint8 RGB composites (H, W, 3) with the numba kernels, on the CPU."""
    b = len(composites)
    # numpy's memory: large blocks are advised as huge pages, about twice as cheap to touch first as torch.empty's.
    g = np.empty((b, 3, GLOBAL_SIZE, GLOBAL_SIZE), np.float32)
    c = np.empty((b, NUM_FRAMES * len(SCALE_BOXES), 3, config.crop_size, config.crop_size), np.float32)
    _fast_fill(composites, config, g, c)
    return torch.from_numpy(g), torch.from_numpy(c)


def _fast_fill(composites: Sequence[np.ndarray], config: LoaderConfig, g: np.ndarray, crops_out: np.ndarray) -> None:
    """Fill g (B, 3, 1120, 1120) and crops_out (B, 15, 3, c, c) float32 from uint8 composites with the numba kernels."""
    kernels = _fast_kernels()
    assert kernels is not None
    lut, chan = _channel_table(config.input_mode)
    b = len(composites)
    full_size = config.crop_size == CROP_SIZE
    c = crops_out if full_size else _crops_scratch(b)  # 224-pixel crops, shrunk by torch afterwards

    def run(samples: range) -> None:
        scratch = _scratch()
        for k in samples:
            _fast_one(np.ascontiguousarray(composites[k]), lut, chan, g[k], c[k], kernels, scratch)

    # The kernels release the GIL: as many threads as torch may use here (1 in a DataLoader worker).
    threads = min(torch.get_num_threads(), b)
    if threads > 1:
        list(_resize_pool(threads).map(run, [range(i, b, threads) for i in range(threads)]))
    else:
        run(range(b))
    if not full_size:
        crops_out[...] = _shrink_crops(torch.from_numpy(c), config).numpy()


_scratch_local = threading.local()


def _crops_scratch(b: int) -> np.ndarray:
    """A reused (b, 15, 3, 224, 224) float32 buffer of this thread: full-size crops before they are shrunk."""
    buffer = getattr(_scratch_local, "crops", None)
    if buffer is None or buffer.shape[0] < b:
        buffer = np.empty((b, NUM_FRAMES * len(SCALE_BOXES), 3, CROP_SIZE, CROP_SIZE), np.float32)
        _scratch_local.crops = buffer
    return buffer[:b]


_pools: dict[int, Any] = {}
_slot_pool: list[SlotPool] = []  # this worker process's shared batch buffers (made on first use)


def _worker_pool() -> SlotPool:
    if not _slot_pool:
        _slot_pool.append(SlotPool())
    return _slot_pool[0]


def _forget_in_child() -> None:
    # A child has none of the parent's threads, and must not lend the parent's slots.
    _pools.clear()
    _slot_pool.clear()


def _resize_pool(threads: int) -> Any:
    """A thread pool for the resize kernels (one per size, made on first use; forgotten in a forked child)."""
    if threads not in _pools:
        from concurrent.futures import ThreadPoolExecutor

        _pools[threads] = ThreadPoolExecutor(threads, thread_name_prefix="lipfd-resize")
    return _pools[threads]


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)


def _fast_ok_for(composites: Sequence[np.ndarray] | torch.Tensor, device: torch.device | str | None) -> bool:
    if device is not None and torch.device(device).type != "cpu":
        return False
    if isinstance(composites, torch.Tensor):
        if composites.device.type != "cpu" or composites.dtype != torch.uint8 or composites.ndim != 4:
            return False
        shapes = {tuple(composites.shape[1:])}
    else:
        shapes = {tuple(np.shape(c)) for c in composites}
        if any(np.asarray(c).dtype != np.uint8 for c in composites):
            return False
    return shapes == {(*COMPOSITE_SHAPE, 3)} and _fast_available()


def composite_inputs(composites: torch.Tensor, config: LoaderConfig, device: torch.device | str | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Network inputs (global input (B, 3, 1120, 1120), crops (B, 15, 3, c, c)) of uint8 RGB composites (B, H, W, 3).

    The values of model.inputs.prepare_inputs in config.input_mode, crops at config.crop_size, on `device`.
    On the CPU the numba kernels compute them (within 1e-4 of torch's on the 0..255 scale, about the
    difference between torch's own results at 1 and 2 threads); elsewhere (a GPU) torch's resizes do.
    """
    if _fast_ok_for(composites, device):
        return _fast_inputs(list(composites.numpy()), config)
    return _torch_inputs(composites, config, device=device)


def batch_inputs(batch: Batch, config: LoaderConfig, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
    """(global input, crops) of a batch on `device`, resizing there when the loader left composites."""
    if batch.composites is not None:
        return composite_inputs(batch.composites, config, device=device)
    assert batch.global_input is not None and batch.crops is not None
    non_blocking = torch.device(device).type == "cuda"
    return batch.global_input.to(device, non_blocking=non_blocking), batch.crops.to(device, non_blocking=non_blocking)


def warm_up() -> None:
    """Load the CPU resize kernels and the colormap in this process (never fails: the first use retries)."""
    try:
        _viridis()
        kernels = _fast_kernels()
        if kernels is not None:
            lut, chan = _channel_table("reference_compatible")
            composite = np.zeros((*COMPOSITE_SHAPE, 3), np.uint8)
            global_out = np.empty((3, GLOBAL_SIZE, GLOBAL_SIZE), np.float32)
            crops_out = np.empty((NUM_FRAMES * len(SCALE_BOXES), 3, CROP_SIZE, CROP_SIZE), np.float32)
            _fast_one(composite, lut, chan, global_out, crops_out, kernels, _scratch())
    except Exception as exc:  # a worker without the kernels decides again, and warns, on first use
        log.debug("loader warm-up failed: %s: %s", type(exc).__name__, exc)


def _worker_context() -> Any:
    """How loader workers start: from a clean forkserver (spawn where there is none), never a plain fork.

    A fork copies every lock that this process's other threads (Beam, Dask, numba, gRPC) hold at that
    instant; a worker that then needs one waits forever (seen: a worker stuck in torch.manual_seed).
    The server imports this module once and loads the resize kernels (model.loader_worker_template), so
    each worker starts in milliseconds, not seconds.
    """
    import multiprocessing

    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["avlips.model.loader_worker_template"])
    return context


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
            stream.fast_checked = _fast_available()  # checked once here, not in every worker
        kwargs.update(prefetch_factor=config.prefetch_factor, persistent_workers=False,
                      multiprocessing_context=_worker_context())
    return DataLoader(stream, batch_size=None, num_workers=config.num_workers,
                      pin_memory=torch.cuda.is_available(), collate_fn=_identity, **kwargs)


def _identity(batch: Batch) -> Batch:
    return batch
