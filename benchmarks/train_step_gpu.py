"""GPU training step of the reference-size LipFD (CLIP ViT-L/14 + ResNet-50) in bf16: samples/s and peak memory.

One step = forward under bf16 autocast, BCE + region-awareness loss, backward, AdamW step, exactly what
`avlips train` does per batch on CUDA. Inputs are random tensors already on the GPU (the loader is measured
by benchmarks/loader_vs_png.py), so this is the model's ceiling. Both backbone variants run in the same
process on the same batch, interleaved: ours (all 15 crops in one call) and the reference's per-crop loop.

    python benchmarks/train_step_gpu.py                      # batch 16, frozen encoder (the default)
    python benchmarks/train_step_gpu.py --unfrozen --batch 8

Prints samples/s per variant, the ratio, and peak GPU memory (torch.cuda.max_memory_allocated) per variant.

Measured 2026-11-26 on one NVIDIA H100 80GB HBM3 (torch 2.11.0+cu130), batch 16, bf16:
frozen encoder (23.5 M trainable): ours 146 ms/step = 109 samples/s, loop 218 ms = 73 samples/s (1.49x),
peak 15.5 GiB; encoder trained too (327.5 M): ours 156 ms = 103 samples/s, loop 259 ms (1.66x), peak 18.9 GiB.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch


from avlips.model.lipfd import LipFD, build_lipfd  # noqa: E402
from avlips.model.losses import lipfd_loss  # noqa: E402


def step(model: LipFD, optimizer: torch.optim.Optimizer, batch: tuple[torch.Tensor, ...], batched: bool) -> float:
    """Seconds for one bf16 forward + backward + AdamW step, synchronised."""
    global_input, crops, target = batch
    torch.cuda.synchronize()
    start = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = model(global_input, crops, batched=batched)
        loss = lipfd_loss(out, target).total
    loss.backward()
    optimizer.step()
    torch.cuda.synchronize()
    return time.perf_counter() - start


def measure(model: LipFD, optimizer: torch.optim.Optimizer, batch, batched: bool, steps: int) -> tuple[list[float], int]:
    """Step times after two warm-up steps, and the peak memory of those steps in bytes."""
    for _ in range(2):
        step(model, optimizer, batch, batched)
    torch.cuda.reset_peak_memory_stats()
    times = [step(model, optimizer, batch, batched) for _ in range(steps)]
    return times, torch.cuda.max_memory_allocated()


def main() -> None:
    """Parse arguments, time both variants, print samples/s, ratio and peak memory."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", default="clip-vit-l14")
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--unfrozen", action="store_true", help="train the encoder too (default: frozen, the reference's intent)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("train_step_gpu: no CUDA device here; this benchmark is for GPU machines")

    torch.manual_seed(0)
    torch.backends.cudnn.benchmark = True
    device = torch.device("cuda")
    model = build_lipfd(encoder=args.encoder, backbone=args.backbone, freeze_encoder=not args.unfrozen).to(device).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, fused=True)
    gen = torch.Generator(device=device).manual_seed(1)
    size = model.global_size
    batch = (
        torch.randn(args.batch, 3, size, size, generator=gen, device=device),
        torch.randn(args.batch, 15, 3, 224, 224, generator=gen, device=device),
        torch.randint(0, 2, (args.batch,), generator=gen, device=device).float(),
    )
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(
        f"LipFD {args.encoder} + {args.backbone}, encoder {'trainable' if args.unfrozen else 'frozen'}, "
        f"{trainable / 1e6:.1f} M trainable parameters, batch {args.batch}, bf16 autocast, "
        f"{torch.cuda.get_device_name()}, torch {torch.__version__}"
    )
    results = {}
    for batched in (True, False):
        times, peak = measure(model, optimizer, batch, batched, args.steps)
        results[batched] = (statistics.median(times), peak)
        label = "batched backbone (ours)" if batched else "per-crop loop (reference)"
        print(
            f"{label:<27} median {results[batched][0] * 1000:7.1f} ms/step  "
            f"{args.batch / results[batched][0]:7.1f} samples/s  peak memory {peak / 2**30:6.2f} GiB"
        )
    print(f"speed-up (loop / batched): {results[False][0] / results[True][0]:.2f}x")


if __name__ == "__main__":
    main()
