"""Perturb-stage wall time for a test split across the whole grid (6 types x 5 levels), and ms per sample by type.

A clean test split of synthetic 500x500 windows (five frames panning across a photo, JPEG at the
compose default quality, mel as numbers) is written as shards first, untimed; then `run_perturb` is
timed with N workers on the DirectRunner. Per-type cost is measured separately on one core: decode +
perturb + encode of one window at all five levels, divided by five (ms per sample per (type, level)).

    python benchmarks/perturb_stage.py [--samples 1000] [--samples-per-shard 200] [--workers 2]

With --samples below 1000 the full-size time is extrapolated linearly and printed as such.
"""
from __future__ import annotations

import argparse
import logging
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NUMBA_CACHE_DIR", str(Path(__file__).resolve().parents[1] / ".numba_cache"))
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from avlips.media.sample import WindowSample  # noqa: E402
from avlips.perturbations import AVLIPS_TYPES, LEVELS  # noqa: E402
from avlips.pipelines import storage  # noqa: E402
from avlips.pipelines.shards import iter_tar_samples, shard_count, shard_name, shard_of, tar_bytes  # noqa: E402

FULL = 1000
SHARED_MEDIA = Path(os.environ.get("AVLIPS_SHARED_MEDIA", Path(__file__).resolve().parents[2] / "shared" / "media"))
PHOTO = SHARED_MEDIA / "image" / "sadtalker_people_0.png"


def base_image(side: int) -> np.ndarray:
    """A photo at side x side (a smooth synthetic texture when the shared media are absent)."""
    if PHOTO.exists():
        return cv2.cvtColor(cv2.resize(cv2.imread(str(PHOTO)), (side, side), interpolation=cv2.INTER_CUBIC),
                            cv2.COLOR_BGR2RGB)
    yy, xx = np.mgrid[0:side, 0:side] / side
    return np.stack([128 + 90 * np.sin(9 * xx + 4 * yy), 128 + 90 * np.cos(7 * yy),
                     128 + 60 * np.sin(20 * xx * yy)], axis=-1).round().astype(np.uint8)


def build_clean(out: Path, samples: int, per_shard: int, side: int) -> int:
    """Write a clean test split of `samples` windows as shards placed by key hash; returns the shard count."""
    image = base_image(side)
    shards = shard_count(samples, per_shard)
    by_shard: dict[int, list] = {i: [] for i in range(shards)}
    rng = np.random.default_rng(0)
    for n in range(samples):
        key = f"clip{n // 10:04d}_w{n % 10:02d}"
        shift = int(rng.integers(0, side))
        frames = np.stack([np.roll(image, (shift + 3 * i, shift // 2), axis=(1, 0)) for i in range(5)])
        mel = rng.normal(-40, 10, (128, 9)).astype(np.float32)
        meta = {"key": key, "clip": key[:8], "identity": key[:8], "split": "test", "label": n % 2, "generator": "",
                "window": n % 10, "perturbation": {"type": "none", "level": 0}}
        by_shard[shard_of(key, shards)].append((key, WindowSample(key, frames, mel, n % 2, meta).encode()))
    out.mkdir(parents=True, exist_ok=True)
    for index, items in by_shard.items():
        (out / f"{shard_name('test', index)}.tar").write_bytes(tar_bytes(items))
    return shards


def per_type_ms(clean: Path, count: int) -> dict[str, float]:
    """One core: ms per sample per (type, level), decode + perturb + encode, over `count` samples."""
    from avlips.pipelines.perturb import PerturbConfig, perturb_sample

    config = PerturbConfig.from_params({})
    items = list(iter_tar_samples((clean / "test-000000.tar").read_bytes()))[:count]
    result = {}
    for name in AVLIPS_TYPES:
        perturb_sample(*items[0], name, LEVELS, config, "warm-up")  # lazy imports and first-call set-up
        started = time.process_time()
        for key, members in items:
            records = perturb_sample(key, members, name, LEVELS, config, "bench")
            assert all(r["kind"] == "sample" for r in records.values()), records
        result[name] = (time.process_time() - started) * 1000 / (len(items) * len(LEVELS))
    return result


def main() -> None:
    """Build the clean split, time the stage, print the per-type costs."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=FULL)
    parser.add_argument("--samples-per-shard", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--frame-size", type=int, default=500)
    parser.add_argument("--per-type-samples", type=int, default=10)
    parser.add_argument("--keep", help="keep the clean and perturbed shards in this directory")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)  # Beam's worker chatter off; the results are printed

    from avlips.pipelines.perturb import run_perturb

    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="perturb_bench_"))
    try:
        clean = root / "clean"
        shards = build_clean(clean, args.samples, args.samples_per_shard, args.frame_size)
        clean_bytes = sum(p.stat().st_size for p in clean.glob("*.tar"))
        print(f"clean split: {args.samples} samples at {args.frame_size}x{args.frame_size} in {shards} shards, "
              f"{clean_bytes / args.samples / 1e3:.0f} kB/sample (built untimed)")
        cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime + resource.getrusage(
            resource.RUSAGE_SELF).ru_utime
        started = time.perf_counter()
        totals = run_perturb(str(clean), str(root / "perturbed"), {}, workers=args.workers)
        wall = time.perf_counter() - started
        cpu = resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime + resource.getrusage(
            resource.RUSAGE_SELF).ru_utime - cpu_before
        assert totals["failures"] == 0 and totals["samples"] == args.samples * 30, totals
        out_bytes = sum(p.stat().st_size for p in (root / "perturbed").rglob("*.tar"))
        cells = totals["cells"]
        print(f"stage: {args.samples} samples x {cells} cells = {totals['samples']} perturbed samples, "
              f"{args.workers} workers: {wall:.1f} s wall, {cpu:.1f} s user CPU (parent + worker processes), "
              f"{totals['samples'] / wall:.1f} perturbed samples/s, {out_bytes / 1e9:.2f} GB written")
        by_type = {name: sum(p.stat().st_size for p in (root / "perturbed" / name).rglob("*.tar")) / 1e3
                   / (args.samples * len(LEVELS)) for name in AVLIPS_TYPES}
        print("kB per perturbed sample: " + ", ".join(f"{n} {kb:.0f}" for n, kb in by_type.items()))
        if args.samples != FULL:
            print(f"EXTRAPOLATED (linear, from {args.samples} samples) to {FULL} samples: "
                  f"{wall * FULL / args.samples:.0f} s wall = {wall * FULL / args.samples / 60:.1f} min, "
                  f"{out_bytes * FULL / args.samples / 1e9:.1f} GB")
        print(f"per type, one core, decode + perturb + encode, ms per sample per level "
              f"(mean over {args.per_type_samples} samples x 5 levels):")
        costs = per_type_ms(clean, args.per_type_samples)
        for name, ms in costs.items():
            print(f"  {name:15s} {ms:7.1f} ms   ({ms * 5:6.0f} ms for its 5 levels)")
        grid_ms = sum(costs.values()) * 5
        print(f"  whole grid      {grid_ms:7.0f} ms per clean sample on one core -> {FULL} samples: "
              f"{grid_ms * FULL / 1000 / args.workers:.0f} s ideal with {args.workers} free cores")
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
