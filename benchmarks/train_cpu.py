"""The demo training on the CPU as a user runs it (`avlips train`), torch's default threads against ours.

Both sides are whole `avlips train` processes on the same shards with params.yaml's train block, a short
run (`--steps`, default 30) and no validation; they alternate (before, after, before, ...) so that both
see the same load on a shared machine. "before" pins torch's threads to torch's default (one per core),
what `threads: 0` meant until the auto setting; "after" is the configuration as it is now (`threads: 0`:
the cores the loader workers leave, see model.train._torch_threads). Each run reports the trainer's
samples/s (metrics JSON: samples over the training loop's wall time) and CPU-seconds per sample (user +
system of the process and its loader workers, resource.getrusage(RUSAGE_CHILDREN) around it).

    python benchmarks/train_cpu.py --train-shards 'data/shards/clean/train-*.tar' [--steps 30] [--repeat 3]
                                   [--after-set train.key=value ...]

Prints every run, the medians and the ratio after/before of samples/s (issue 14 item 6's target: 1.5x).

Where the time goes (measured 2026-12-07 on the 2-core AMD EPYC of the build machine, demo config, batch
16; per sample, thread CPU time, one torch thread): the training step 54 ms (forward 17.5, backward 33.6,
AdamW 3: the ResNet-18 over 240 crops of 32x32 is about 600 of the step's 860 ms a batch, the global 5x5
conv1 over 1120x1120 about 110, the ViT about 90); the loader worker about 37 ms (decode and render ~23,
the numba resizes ~7, shrinking the 224-pixel crops to 32 ~6). With torch's default 2 threads beside a
busy loader worker the step cost 2.9-3.4 s of CPU a batch instead of 0.9 (OpenMP threads waiting for
a descheduled partner), so the trainer, not the loader, was the limit (loader wait under 30 ms a step).
Tried and not taken: bf16 autocast on this CPU (avx512_bf16) trained no faster at 1 thread (889 vs 886 ms
a step); foreach/fused AdamW (within noise of 886 ms); channels_last for the ResNet (5%, gradients
reordered). Taken besides the threads: the loader writes the global view in channels-last memory (the same
values), where the global conv costs about 40% less (107 -> 62 ms a batch; 4-9% of a step; both sides here).
Not applicable: the global view cannot be made smaller (conv1 is a learned 5x5/stride-5 conv over the
1120x1120 bilinear resize, not a resize); with freeze_encoder the ViT's backward is still needed, for conv1.
Also taken: ResNet-18's layer4 runs 3x3 convs on 1x1 maps (crop 32), where 8 of the 9 taps meet only
padding (87 ms a batch forward + backward in the profile); model.resnet computes them as the product with
the centre tap (same values and gradients up to rounding): ResNet-18 forward + backward over a batch's
240 crops about 726 -> 636 ms (medians of 4 alternating pairs, one thread). Both changes are on both sides
here: the benchmark isolates the thread setting; on this loaded machine whole runs did not resolve them.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

from timing import run_timed  # benchmarks/timing.py: this script's folder is on sys.path

REPO = Path(__file__).resolve().parents[1]


def avlips_command() -> list[str]:
    """The console script beside this interpreter (as a user runs it), else the module."""
    script = Path(sys.executable).with_name("avlips")
    return [str(script)] if script.exists() else [sys.executable, "-m", "avlips"]


def run_train(label: str, shards: str, steps: int, settings: list[str], out: Path) -> dict:
    """One `avlips train` process; its samples/s, CPU-seconds per sample and wall time."""
    out.mkdir(parents=True, exist_ok=True)
    metrics = out / "metrics.json"
    command = [*avlips_command(), "train", "--params", str(REPO / "params.yaml"), "--train-shards", shards,
               "--val-shards", "", "--model", str(out / "lipfd.pt"), "--metrics", str(metrics),
               "-S", f"train.steps={steps}", "-S", f"train.checkpoint_every={steps}"]
    for setting in settings:
        command += ["-S", setting]
    done, wall, user, system = run_timed(command, out)
    if done.returncode != 0:
        raise SystemExit(f"{label}: avlips train failed ({done.returncode}):\n{done.stderr[-3000:]}")
    result = json.loads(metrics.read_text())
    samples = result["samples_per_s"] * result["seconds_training"]  # trained on (the loader reads ahead)
    cpu = user + system
    return {"label": label, "samples_per_s": result["samples_per_s"], "cpu_ms_per_sample": 1000 * cpu / samples,
            "wall_s": wall, "load": os.getloadavg()[0]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train-shards", default="data/shards/clean/train-*.tar")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--before-threads", type=int, default=0,
                        help="torch threads of the 'before' side (0: torch's default, one per core)")
    parser.add_argument("--after-set", action="append", default=[], help="extra -S for the 'after' side")
    args = parser.parse_args()
    import glob

    import torch

    shards = args.train_shards
    if "*" in shards and not glob.glob(shards):
        raise SystemExit(f"no shards match {shards}")
    before_threads = args.before_threads or torch.get_num_threads()
    sides = {"before": [f"train.threads={before_threads}"], "after": list(args.after_set)}
    runs: dict[str, list[dict]] = {"before": [], "after": []}
    with tempfile.TemporaryDirectory(prefix="train_cpu_") as tmp:
        for i in range(args.repeat):
            for label, settings in sides.items():
                row = run_train(label, os.path.abspath(shards) if "://" not in shards else shards, args.steps,
                                settings, Path(tmp) / f"{label}{i}")
                runs[label].append(row)
                print(f"{label:6s} run {i}: {row['samples_per_s']:.2f} samples/s, {row['cpu_ms_per_sample']:.0f} "
                      f"CPU-ms/sample, wall {row['wall_s']:.0f} s, load {row['load']:.1f}", flush=True)
    med = {label: {k: statistics.median(r[k] for r in rows) for k in ("samples_per_s", "cpu_ms_per_sample")}
           for label, rows in runs.items()}
    for label in ("before", "after"):
        print(f"median {label:6s}: {med[label]['samples_per_s']:.2f} samples/s, "
              f"{med[label]['cpu_ms_per_sample']:.0f} CPU-ms/sample")
    print(f"ratio after/before: {med['after']['samples_per_s'] / med['before']['samples_per_s']:.2f}x samples/s, "
          f"{med['before']['cpu_ms_per_sample'] / med['after']['cpu_ms_per_sample']:.2f}x fewer CPU-ms/sample "
          f"(before: train.threads={before_threads}; after: {sides['after'] or 'params.yaml as is'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
