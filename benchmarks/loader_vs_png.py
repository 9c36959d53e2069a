"""Claim: streaming windows from shards (JPEG frames + mel numbers, composite rendered on the fly) feeds
LipFD at least 3x faster than the reference approach of reading 1000x2500 PNG composites from a folder.

Setup writes, from the same samples, shards (or uses `--shards`) and the reference-layout PNGs (via
media.render.render_sample, as the reference preprocessing stored them). Both paths produce the same
network inputs (reference_compatible: BGR 0..255, global 1120x1120 + 15 crops 224x224); the script
checks that they are equal, then times a full pass of each and prints samples/s and the ratio.

    python benchmarks/loader_vs_png.py                       # 64 synthetic windows, batch 8, no workers
    python benchmarks/loader_vs_png.py --shards 'data/shards/clean/val-{000000..000001}.tar' --workers 2

Measured 2026-11-26 on a 2-core machine, --samples 256 (session 3, after the worker memory changes of
model/worker_memory.py): --workers 2, 4.25-5.32x in five runs (72-100 samples/s against 16-20), 4.90x at
512 samples; --workers 0, 3.46-4.08x in three runs. Before those changes --workers 2 gave only 2.27-2.57x:
perf showed a third of the workers' CPU time in the kernel, faulting in fresh shared memory for every batch.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch


from avlips.media.render import render_sample  # noqa: E402
from avlips.media.sample import WindowSample  # noqa: E402
from avlips.model.inputs import global_view, region_crops  # noqa: E402
from avlips.model.loader import LoaderConfig, LipFDStream, batch_inputs, make_loader  # noqa: E402


def synthetic_shards(root: Path, samples: int, per_shard: int = 16) -> str:
    """Shards of talking-face windows at the reference frame size (500x500 JPEG frames)."""
    import tarfile
    import io

    from avlips.media.synthetic import make_persona, render_face

    rng = np.random.default_rng(0)
    shards = (samples + per_shard - 1) // per_shard
    for s in range(shards):
        with tarfile.open(root / f"bench-{s:06d}.tar", "w") as tar:
            for n in range(min(per_shard, samples - s * per_shard)):
                persona = make_persona(f"p{s}{n}", s * 1000 + n)
                frames = np.stack([render_face(persona, 500, float(rng.uniform())) for _ in range(5)])
                mel = rng.normal(-30, 15, (128, 9)).astype(np.float32)
                key = f"s{s}n{n}_w00"
                sample = WindowSample(key, frames, mel, n % 2, {"clip": key, "mel_db_min": -80.0, "mel_db_max": 0.0})
                for name, data in sorted(sample.encode().items()):
                    info = tarfile.TarInfo(f"{key}.{name}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return str(root / f"bench-{{000000..{shards - 1:06d}}}.tar")


def write_pngs(shards: str, folder: Path, limit: int) -> list[tuple[str, Path, int]]:
    """The reference-layout PNG of every sample (BGR, as OpenCV writes), with its key and label."""
    out = []
    raw = LipFDStream(shards, LoaderConfig(shuffle=False, repeat=False))
    for sample in raw._raw_epoch(0, 0, 1, raw.stats):
        members = {k: v for k, v in sample.items() if not k.startswith("__")}
        window = WindowSample.decode(sample["__key__"], members)
        path = folder / f"{window.key}.png"
        cv2.imwrite(str(path), cv2.cvtColor(render_sample(window), cv2.COLOR_RGB2BGR))
        out.append((window.key, path, window.label))
        if len(out) == limit:
            break
    return out


class PngDataset(torch.utils.data.Dataset):
    """The reference loader: OpenCV reads the PNG (BGR, 0..255), torch resizes it per sample."""

    def __init__(self, items: list[tuple[str, Path, int]]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, float]:
        _, path, label = self.items[index]
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        x = torch.from_numpy(image).permute(2, 0, 1).float()[None]
        return global_view(x)[0], region_crops(x)[0], float(label)


def time_pass(loader, count_of) -> tuple[float, int]:
    """Seconds and samples for one full pass."""
    start, seen = time.perf_counter(), 0
    for batch in loader:
        seen += count_of(batch)
    return time.perf_counter() - start, seen


def main() -> int:
    """Run the comparison and print the ratio."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shards", default="", help="shards to read (default: synthetic ones)")
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2,
                        help="torch and OpenCV threads of both paths (the loader's resize kernels use one)")
    parser.add_argument("--atol", type=float, default=1e-4,
                        help="largest absolute difference (0..255 scale) accepted between the two paths' tensors; "
                             "torch's own CPU bilinear results differ by ~5e-5 between 1 and 2 threads")
    parser.add_argument("--resize-on", choices=("collate", "device"), default="collate",
                        help="device: the stream yields uint8 composites and the resizes are left to the training "
                             "device (a GPU); only the loader's share of the work is timed then")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        shards = args.shards or synthetic_shards(root, args.samples)
        items = write_pngs(shards, root, args.samples)
        n = len(items)
        png_mb = sum(p.stat().st_size for _, p, _ in items) / n / 1e6
        print(f"{n} windows; reference PNG {png_mb:.2f} MB per window")
        config = LoaderConfig(batch_size=args.batch, shuffle=False, repeat=False, drop_last=False,
                              num_workers=args.workers, input_mode="reference_compatible", resize_on=args.resize_on)
        # Equal tensors: the first batch of each path, sample by sample.
        first = next(iter(make_loader(shards, config)))
        if first.composites is not None:
            first.global_input, first.crops = batch_inputs(first, config, "cpu")
        by_key = {key: i for i, (key, _, _) in enumerate(items)}
        png = PngDataset(items)
        worst, exact = 0.0, True
        for j, key in enumerate(first.keys):
            g, c, _ = png[by_key[key]]
            diff = max(float((g - first.global_input[j]).abs().max()), float((c - first.crops[j]).abs().max()))
            exact = exact and torch.equal(g, first.global_input[j]) and torch.equal(c, first.crops[j])
            worst = max(worst, diff)
            if diff > args.atol:
                print(f"MISMATCH for {key}: max abs diff {diff:.3g} > {args.atol:g} (0..255 scale)")
                return 1
        print(f"outputs equal for {len(first.keys)} windows (global 1120x1120, 15 crops 224x224): "
              f"{'bit-identical' if exact else f'max abs diff {worst:.3g} <= {args.atol:g}'} (BGR 0..255)")

        def limited():
            seen = 0
            for batch in make_loader(shards, config):
                yield batch
                seen += len(batch.keys)
                if seen >= n:
                    return

        png_loader = torch.utils.data.DataLoader(png, batch_size=args.batch, num_workers=args.workers)
        for warm in (limited(), png_loader):  # two batches of each first (page cache, compiled kernels)
            for _ in itertools.islice(warm, 2):
                pass
        base_s, base_n = time_pass(png_loader, lambda b: len(b[2]))
        ours_s, ours_n = time_pass(limited(), lambda b: len(b.keys))
    base_rate, ours_rate = base_n / base_s, ours_n / ours_s
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"PNG folder + per-sample torch resize: {base_rate:.2f} samples/s ({base_n} in {base_s:.1f}s)")
    print(f"shard stream ({args.resize_on} resize):     {ours_rate:.2f} samples/s ({ours_n} in {ours_s:.1f}s)")
    print(f"ratio: {ours_rate / base_rate:.2f}x (workers={args.workers}, threads={args.threads}, load avg {load:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
