"""Claim: running all 15 crops through the backbone in one call trains faster than the reference's per-crop loop.

Times one training step (forward + backward + AdamW step) of the same LipFD model on the same batch,
once with the batched backbone and once with the one-crop-at-a-time loop; prints the medians and the ratio.

    python benchmarks/backbone_batched_vs_loop.py                         # vit-tiny + resnet18, batch 4, CPU
    python benchmarks/backbone_batched_vs_loop.py --backbone resnet50 --steps 2

Measured 2026-11-26 on a quiet 2-core CPU (torch 2.13, 2 threads, median of 5 or 3 steps):
- the CPU demo's configuration (`--encoder vit-tiny-p16 --batch 16 --crop 32`): 0.460 s vs 0.760 s per
  step, 1.65x: with 32-pixel crops each of the loop's 15 calls is mostly per-call overhead;
- reference-size crops (`--batch 4`, 224 pixels, resnet18): 0.89x, no gain: one call of 60 large
  crops is compute-bound, as are 15 calls of 4.
On an H100 (benchmarks/train_step_gpu.py, ViT-L/14 + ResNet-50, bf16, batch 16) it is 1.49x with the
encoder frozen and 1.66x with it trained. On a loaded CPU (load average > cores) the loop looks
slower still, because each of its parallel regions waits on descheduled threads; the script flags that.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch


from avlips.model.lipfd import LipFD, build_lipfd  # noqa: E402
from avlips.model.losses import lipfd_loss  # noqa: E402


def train_step(model: LipFD, optimizer: torch.optim.Optimizer, batch: tuple[torch.Tensor, ...], batched: bool) -> float:
    """Seconds for one forward + backward + optimizer step."""
    global_input, crops, target = batch
    if global_input.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    out = model(global_input, crops, batched=batched)
    lipfd_loss(out, target).total.backward()
    optimizer.step()
    if global_input.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    """Parse arguments, time both variants interleaved, print medians and the ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", default="vit-tiny")
    parser.add_argument("--backbone", default="resnet18", choices=["resnet18", "resnet50"])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--crop", type=int, default=224, help="crop side: 224 is the reference, 32 the CPU demo's")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per variant (after one warm-up each)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    model = build_lipfd(encoder=args.encoder, backbone=args.backbone).to(device).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    gen = torch.Generator().manual_seed(1)
    batch = (
        torch.randn(args.batch, 3, model.global_size, model.global_size, generator=gen).to(device),
        torch.randn(args.batch, 15, 3, args.crop, args.crop, generator=gen).to(device),
        torch.randint(0, 2, (args.batch,), generator=gen).float().to(device),
    )
    print(
        f"LipFD {args.encoder} + {args.backbone}, batch {args.batch} ({args.batch * 15} crops of {args.crop}x{args.crop}), "
        f"device {device}, torch threads {torch.get_num_threads()}, cpus {os.cpu_count()}, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    for batched in (True, False):  # warm-up: allocator, kernels selection, AdamW state
        train_step(model, optimizer, batch, batched)
    times: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(args.steps):  # interleaved, so background load hits both variants alike
        for batched in (True, False):
            times[batched].append(train_step(model, optimizer, batch, batched))
    batched_s, loop_s = statistics.median(times[True]), statistics.median(times[False])
    for label, batched, median in (
        (f"batched backbone (1 call of {args.batch * 15})", True, batched_s),
        (f"per-crop loop (15 calls of {args.batch})", False, loop_s),
    ):
        runs = ", ".join(f"{t:.3f}" for t in times[batched])
        print(f"{label:<34} median {median:.3f} s/step  (runs: {runs})")
    print(f"speed-up (loop / batched): {loop_s / batched_s:.2f}x")
    load = os.getloadavg()[0]
    if device.type == "cpu" and load > (os.cpu_count() or 1):
        # Oversubscribed cores make every OpenMP barrier costly, which punishes the loop's 15x more calls.
        print(f"warning: load average {load:.1f} > {os.cpu_count()} cpus; the ratio is inflated by contention")


if __name__ == "__main__":
    main()
