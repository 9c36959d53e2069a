"""Resume that keeps work, for the perturb stage as a user runs it (`avlips perturb`, a process of its own).

1. An uninterrupted run: its wall time T.
2. The same run into another folder, killed (SIGKILL to its process group) at `--kill-at` x T: how many of
   the output shards (clean shards x types x levels) it left finished, i.e. with their `_stats.json`.
3. The rerun into that folder: its wall time, and whether every output file is byte-identical to step 1's.

Issue 14 target: killed at 60% of its run, at least a third of the shards finished; the rerun skips them and
ends with the same bytes. Clean shards: `--clean DIR`, or the shared videos through the corpus and compose
stages as in benchmarks/perturb_storage.py. With params.yaml's perturb block, on its splits (test) or with
`--all-splits` every split found in the clean folder (more shards from a small set of videos).

    python benchmarks/perturb_resume.py [--clean DIR | --videos DIR] [--all-splits] [--workers 2] [--kill-at 0.6]

Measured 2026-12-07 on the dev machine (2 cores shared with other work, so the wall times are loose):
  one clean test shard of 50 windows from the shared videos, 60 output shards: uninterrupted 183 s; killed at
  110 s with 35/60 finished (58%); rerun 146 s, wrote the 25 others, rewrote none, same bytes.
  a demo-source clean set, 3 shards of 20 windows (--all-splits), 180 output shards: uninterrupted 227 s; killed
  at 136 s with 105/180 finished (58%); rerun 121 s, rewrote none, same bytes.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from perturb_storage import REPO, SHARED_VIDEOS, compose_real_clips, splits_in  # noqa: E402

from avlips.params import load_params  # noqa: E402


def command(clean: Path, out: Path, splits: list[str], workers: int) -> list[str]:
    avlips = Path(sys.executable).with_name("avlips")
    return [str(avlips), "perturb", "--clean", str(clean), "--out", str(out), "--workers", str(workers),
            "-S", f"perturb.splits=[{', '.join(splits)}]"]


def start(argv: list[str]) -> subprocess.Popen:
    return subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def output_bytes(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*"))
            if p.is_file() and ".tmp-" not in p.name}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--videos", type=Path, default=SHARED_VIDEOS)
    source.add_argument("--clean", type=Path)
    parser.add_argument("--n-windows", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--kill-at", type=float, default=0.6, help="fraction of the uninterrupted wall time")
    parser.add_argument("--all-splits", action="store_true", help="every split in the clean folder")
    args = parser.parse_args(argv)

    root = Path(tempfile.mkdtemp(prefix="perturb_resume_"))
    clean = args.clean or compose_real_clips(args.videos, root, args.n_windows, args.workers)
    block = load_params(str(REPO / "params.yaml"))["perturb"]
    splits = splits_in(clean) if args.all_splits else list(block["splits"])
    clean_shards = sum(len(list(clean.glob(f"{split}-*.tar"))) for split in splits)
    expected = clean_shards * len(block["types"]) * len(block["levels"])

    whole, killed = root / "whole", root / "killed"
    started = time.time()
    if start(command(clean, whole, splits, args.workers)).wait() != 0:
        print("the uninterrupted run failed", file=sys.stderr)
        return 1
    full_s = time.time() - started

    process = start(command(clean, killed, splits, args.workers))
    time.sleep(args.kill_at * full_s)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    finished = len(list(killed.rglob("*-*_stats.json")))  # shard stats, not perturb_stats.json
    kept = {p: p.stat().st_mtime_ns for p in killed.rglob("*-*_stats.json")}

    started = time.time()
    if start(command(clean, killed, splits, args.workers)).wait() != 0:
        print("the rerun failed", file=sys.stderr)
        return 1
    rerun_s = time.time() - started
    same = output_bytes(whole) == output_bytes(killed)
    rewritten = sum(1 for p, mtime in kept.items() if p.stat().st_mtime_ns != mtime)
    written = len(list(killed.rglob("*-*_stats.json"))) - finished

    print(f"clean: {clean_shards} shards (splits {splits}); output shards: {expected} "
          f"({len(block['types'])} types x {len(block['levels'])} levels); {args.workers} workers")
    print(f"uninterrupted run: {full_s:.1f} s wall")
    print(f"killed at {args.kill_at:.0%} ({args.kill_at * full_s:.1f} s): {finished}/{expected} shards finished "
          f"({finished / expected:.0%}; target >= 33%)")
    print(f"rerun: {rerun_s:.1f} s wall ({rerun_s / full_s:.0%} of the uninterrupted run), wrote {written} shards, "
          f"rewrote {rewritten} of the finished ones; same bytes as the uninterrupted run: {same}")
    return 0 if same and not rewritten else 1


if __name__ == "__main__":
    sys.exit(main())
