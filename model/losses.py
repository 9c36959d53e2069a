"""LipFD training loss: binary cross-entropy on the logit plus the region-awareness term."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from .lipfd import LipFDOutput

__all__ = ["LipFDLoss", "classification_loss", "region_awareness_loss", "lipfd_loss"]


class LipFDLoss(NamedTuple):
    """The total loss and its two parts (for logging)."""

    total: torch.Tensor
    classification: torch.Tensor
    region: torch.Tensor


def classification_loss(logit: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy of one fake-logit per sample against labels 0 (real) / 1 (fake)."""
    # The reference (trainer/trainer.py) applies nn.CrossEntropyLoss to the (B,) logits and float labels:
    # torch reads that as ONE unbatched sample with B classes and soft targets, i.e.
    # -sum_b label_b * log_softmax over the batch -- a softmax across samples, not a per-sample loss.
    # BCE on each logit is what was meant; this is a deliberate fix (UPSTREAM.md 1.3).
    return F.binary_cross_entropy_with_logits(logit.float(), target.to(torch.float32).reshape(logit.shape))


def region_awareness_loss(weight_max: torch.Tensor, weight_org: torch.Tensor) -> torch.Tensor:
    """Sum over frames of the batch mean of 10 / exp(w_max - w_scale0); inputs are (B, num_frames)."""
    if weight_max.shape != weight_org.shape or weight_max.ndim != 2:
        raise ValueError(f"weights must both be (B, frames); got {tuple(weight_max.shape)}, {tuple(weight_org.shape)}")
    per_sample = 10.0 / torch.exp(weight_max.float() - weight_org.float())
    return per_sample.mean(dim=0).sum()


def lipfd_loss(output: LipFDOutput, target: torch.Tensor, region_weight: float = 1.0) -> LipFDLoss:
    """Classification loss plus `region_weight` times the region-awareness loss."""
    cls = classification_loss(output.logit, target)
    region = region_awareness_loss(output.weight_max, output.weight_org)
    return LipFDLoss(cls + region_weight * region, cls, region)
