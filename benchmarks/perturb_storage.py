"""Bytes of the perturbed shards and the noise they keep: gaussian_noise as PNG (before) and as noise JPEG (now).

Clean shards from real frames, made as a user makes them: the corpus stage on a folder of videos (default
../shared/media/video, one identity per file) and the compose stage (face tracking, 500x500 face crops, JPEG
q92). Or `--clean DIR`: existing clean shards (for example the demo's data/shards/clean). Then the perturb
stage with params.yaml's perturb block on every split found there, once as configured (gaussian_noise as 4:4:4
JPEG with flat tables, avlips.media.noise_jpeg) and once more for gaussian_noise alone written as PNG
(`lossless_types: [gaussian_noise]`, the old setting). The other types' shards do not depend on that setting,
so the PNG grid is the first run's other cells with the PNG noise cells.

Prints, for both storages in one run:
  - bytes per perturbed sample / bytes per clean sample over the whole grid, over the six video types, and
    per type (issue 14 target: <= 2 over the grid);
  - per level, the stored gaussian_noise's variance / the applied noise's variance, over each sample's five
    frames (all RGB values pooled, and the extreme channel), where the applied noise is apply() on the
    decoded clean frames with the sample's seed (target: within 0.95..1.05 at every level).

    python benchmarks/perturb_storage.py [--videos DIR | --clean DIR] [--n-windows 10] [--workers 2] [--keep DIR]

Measured 2026-12-07 on the dev machine (params.yaml's 12 types x 5 levels, noise_step 0.5):
  the seven shared videos, 70 windows (243.6 kB a clean sample): grid 2.04 -> 1.41 (PNG -> noise JPEG), six video
  types 3.11 -> 1.83, gaussian_noise 14.3 -> 6.6; stored / applied variance 1.025..1.036 at level 1, 0.970..0.982
  at level 5 (per channel 0.958..1.038).
  a demo-source clean set (128-pixel clips composed at 500, 60 windows, 122.8 kB): grid 3.29 -> 1.98, six video
  types 5.57 -> 2.95, gaussian_noise 28.7 -> 13.0; variance 1.035..1.038 at level 1, 0.971..0.975 at level 5.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NUMBA_CACHE_DIR", str(Path(__file__).resolve().parents[1] / ".numba_cache"))
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import numpy as np  # noqa: E402

from avlips.media.sample import WindowSample  # noqa: E402
from avlips.params import load_params  # noqa: E402
from avlips.perturbations import AVLIPS_TYPES, apply  # noqa: E402
from avlips.pipelines import storage  # noqa: E402
from avlips.pipelines.shards import iter_tar_samples  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED_VIDEOS = Path(os.environ.get("AVLIPS_SHARED_MEDIA", REPO.parent / "shared" / "media")) / "video"
NOISE = "gaussian_noise"


def compose_real_clips(videos: Path, root: Path, n_windows: int, workers: int) -> Path:
    """Clean shards of `videos` through the corpus and compose stages (compose's params.yaml settings)."""
    from avlips.pipelines.compose import run_compose
    from avlips.pipelines.corpus import run_corpus

    params = load_params(str(REPO / "params.yaml"))
    params["corpus"] = {**params["corpus"], "identity_from": "stem"}
    run_corpus(f"folder:{videos}", str(root / "corpus"), params)
    params["compose"] = {**params["compose"], "clips": str(root / "corpus" / "clips.parquet"), "audio": "",
                         "fakes": "", "n_windows": n_windows}
    run_compose(str(root / "clean"), params, workers=workers)
    return root / "clean"


def splits_in(clean: Path) -> list[str]:
    return sorted({p.name.rsplit("-", 1)[0] for p in clean.glob("*-000000.tar")})


def clean_samples(clean: Path, splits: list[str]) -> dict[str, tuple[int, WindowSample]]:
    """Clean key -> (bytes of the sample's members, the decoded sample), for the given splits."""
    found = {}
    for split in splits:
        for tar in sorted(clean.glob(f"{split}-*.tar")):
            for key, members in iter_tar_samples(tar.read_bytes()):
                found[key] = (sum(len(b) for b in members.values()), WindowSample.decode(key, members))
    return found


def cell_bytes(out: Path, name: str, levels: list[int]) -> list[int]:
    """The bytes of every perturbed sample of a type, from the cells' manifests."""
    sizes: list[int] = []
    for level in levels:
        sizes += storage.read_parquet(str(out / name / str(level) / "samples.parquet")).column("bytes").to_pylist()
    return sizes


def kept_variance(out: Path, level: int, clean: dict[str, tuple[int, WindowSample]]) -> tuple[np.ndarray, np.ndarray]:
    """Per sample of a gaussian_noise cell: stored / applied variance pooled over RGB, and per channel (n, 3)."""
    pooled, channels = [], []
    for tar in sorted((out / NOISE / str(level)).glob("*.tar")):
        for key, members in iter_tar_samples(tar.read_bytes()):
            stored = WindowSample.decode(key, members)
            source = clean[stored.meta["clean_key"]][1].frames
            applied = apply(NOISE, source, level, int(stored.meta["perturbation"]["seed"])).astype(np.float64) - source
            kept = stored.frames.astype(np.float64) - source
            pooled.append(kept.var() / applied.var())
            channels.append([kept[..., c].var() / applied[..., c].var() for c in range(3)])
    return np.array(pooled), np.array(channels)


def perturb(clean: Path, out: Path, params: dict, workers: int, **settings) -> float:
    """One perturb run with the params' block plus `settings`; its wall seconds."""
    from avlips.pipelines.perturb import run_perturb

    started = time.time()
    run_perturb(str(clean), str(out), {**params, "perturb": {**params["perturb"], **settings}}, workers=workers)
    return time.time() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--videos", type=Path, default=SHARED_VIDEOS, help="folder of videos to compose")
    source.add_argument("--clean", type=Path, help="existing clean shards instead of composing")
    parser.add_argument("--n-windows", type=int, default=10, help="windows per video when composing")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--keep", type=Path, help="work here and keep the shards (default: a temporary folder)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    root = args.keep or Path(tempfile.mkdtemp(prefix="perturb_storage_"))
    root.mkdir(parents=True, exist_ok=True)
    clean = args.clean or compose_real_clips(args.videos, root, args.n_windows, args.workers)
    splits = splits_in(clean)
    if not splits:
        print(f"{clean}: no clean shards", file=sys.stderr)
        return 2
    params = load_params(str(REPO / "params.yaml"))
    block = params["perturb"]
    types, levels = list(block["types"]), list(block["levels"])
    now_dir, png_dir = root / "perturbed", root / "perturbed_png_noise"
    now_s = perturb(clean, now_dir, params, args.workers, splits=splits)
    png_s = perturb(clean, png_dir, params, args.workers, splits=splits, types=[NOISE],
                    lossless_types=[NOISE], noise_types=[])

    samples = clean_samples(clean, splits)
    clean_mean = float(np.mean([size for size, _ in samples.values()]))
    print(f"clean: {len(samples)} samples in splits {splits} of {clean}, {clean_mean / 1e3:.1f} kB per sample")
    print(f"perturb wall: {now_s:.1f} s for {len(types)} types x {len(levels)} levels ({args.workers} workers); "
          f"{png_s:.1f} s for {NOISE} as PNG alone")
    sizes = {name: cell_bytes(now_dir, name, levels) for name in types}
    storages = {"PNG (before)": {**sizes, NOISE: cell_bytes(png_dir, NOISE, levels)}, "noise JPEG (now)": sizes}
    print(f"\nbytes per perturbed sample / clean sample ({clean_mean / 1e3:.1f} kB); target <= 2 over the grid")
    print(f"{'storage':18s} {'grid':>6s} {'video6':>7s} {NOISE:>15s}   per type")
    for label, by_type in storages.items():
        every = [s for name in types for s in by_type[name]]
        video = [s for name in types if name in AVLIPS_TYPES for s in by_type[name]]
        per_type = " ".join(f"{name}={np.mean(by_type[name]) / clean_mean:.2f}" for name in types if name != NOISE)
        print(f"{label:18s} {np.mean(every) / clean_mean:6.2f} {np.mean(video) / clean_mean if video else float('nan'):7.2f} "
              f"{np.mean(by_type[NOISE]) / clean_mean:15.2f}   {per_type}")

    print(f"\nstored / applied noise variance per level, per sample (target 0.95..1.05)")
    print(f"{'level':>5s} {'storage':18s} {'pooled min':>10s} {'mean':>7s} {'max':>7s} {'channel min':>12s} "
          f"{'max':>7s} {'kB/sample':>10s}")
    worst = 0.0
    for level in levels:
        for label, out in (("PNG (before)", png_dir), ("noise JPEG (now)", now_dir)):
            pooled, channels = kept_variance(out, level, samples)
            kilobytes = np.mean(cell_bytes(out, NOISE, [level])) / 1e3
            print(f"{level:5d} {label:18s} {pooled.min():10.4f} {pooled.mean():7.4f} {pooled.max():7.4f} "
                  f"{channels.min():12.4f} {channels.max():7.4f} {kilobytes:10.0f}")
            if out == now_dir:
                worst = max(worst, float(np.abs(pooled - 1).max()))
    print(f"\nnoise JPEG: largest departure of the stored variance from the applied one: {worst:.2%}")
    if not args.keep:
        print(f"(shards in {root}; pass --keep DIR to choose where)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
