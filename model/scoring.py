"""Scoring a LipFD model: each window's probability of being a fake.

`fake_probabilities` is the one forward pass every scorer uses: training's validation and
`model.evaluate.score_shards` through `score_windows` (one loader pass over shards), and the `lipfd`
detector that evaluate and detect use on decoded windows (`model.lipfd_detector`). A model's
validation numbers and its evaluation come from the same inputs and the same sigmoid of the same logit.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any, Iterator, NamedTuple, Sequence

import torch
from torch import nn

from .loader import LoaderConfig, batch_inputs, make_loader

__all__ = ["WindowProbability", "fake_probabilities", "probabilities_of", "score_windows"]


class WindowProbability(NamedTuple):
    """One scored window."""

    key: str
    clip: str
    label: int  # 1 = fake
    probability: float  # the model's probability that the window is a fake


@torch.no_grad()
def fake_probabilities(model: nn.Module, global_input: torch.Tensor, crops: torch.Tensor,
                       autocast: Any = None) -> list[float]:
    """P(fake) of each window of a batch of network inputs (the model already in eval mode, on their device)."""
    with autocast or nullcontext():
        out = model(global_input, crops)
    return probabilities_of(out)


def probabilities_of(output: Any) -> list[float]:
    """P(fake) per window of a LipFD output (its logit's sigmoid, in float32)."""
    return torch.sigmoid(output.logit.float()).cpu().tolist()


@torch.no_grad()
def score_windows(
    model: nn.Module,
    shards: str | Sequence[str],
    loader_config: LoaderConfig,
    device: torch.device | str,
    autocast: Any = None,
    worker_stats: dict[int, dict[str, Any]] | None = None,
) -> Iterator[WindowProbability]:
    """Every readable window of the shards, scored in loader order, the model in eval mode meanwhile.

    `loader_config` should be a one-pass config (repeat=False); `autocast` is a context the forward
    pass runs in (bf16 on a GPU). `worker_stats`, when given, receives each loader worker's latest
    counters (`model.loader.LoaderStats` as a dict), for the skipped samples.
    """
    was_training = model.training
    model.eval()
    try:
        for batch in make_loader(shards, loader_config, rank=0, world_size=1):
            global_input, crops = batch_inputs(batch, loader_config, device)
            probabilities = fake_probabilities(model, global_input, crops, autocast)
            if worker_stats is not None:
                worker_stats[batch.worker] = batch.stats
            for key, clip, label, probability in zip(batch.keys, batch.clips, batch.labels.tolist(), probabilities):
                yield WindowProbability(key, clip, int(label), float(probability))
    finally:
        model.train(was_training)
