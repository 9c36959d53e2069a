"""LipFD loss: BCE on the single logit and the region-awareness term, against hand computations."""

from __future__ import annotations

import math

import pytest
import torch

from avlips.model.lipfd import LipFDOutput
from avlips.model.losses import classification_loss, lipfd_loss, region_awareness_loss


def test_bce_matches_formula() -> None:
    logit = torch.tensor([2.0, -1.0, 0.5, -3.0])
    target = torch.tensor([1, 0, 0, 1])
    by_hand = []
    for z, y in zip(logit.tolist(), target.tolist()):
        p = 1 / (1 + math.exp(-z))
        by_hand.append(-(y * math.log(p) + (1 - y) * math.log(1 - p)))
    assert classification_loss(logit, target).item() == pytest.approx(sum(by_hand) / 4, rel=1e-6)


def test_bce_depends_on_the_logit() -> None:
    # CrossEntropyLoss over a single class (the reference's bug) is always 0; BCE must not be.
    target = torch.tensor([1.0, 1.0])
    confident = classification_loss(torch.tensor([5.0, 5.0]), target)
    wrong = classification_loss(torch.tensor([-5.0, -5.0]), target)
    assert confident.item() < 0.01 < 4.0 < wrong.item()


def test_bce_accepts_column_targets_and_bf16_logits() -> None:
    logit = torch.tensor([0.3, -0.7], dtype=torch.bfloat16)
    loss = classification_loss(logit, torch.tensor([[1.0], [0.0]]))
    assert loss.dtype == torch.float32
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logit.float(), torch.tensor([1.0, 0.0]))
    assert torch.allclose(loss, expected)


def test_region_loss_matches_hand_computation() -> None:
    # B=3 samples, 2 frames (unequal, so mixing up the batch and frame axes shows).
    w_max = torch.tensor([[0.5, 0.4], [0.6, 0.34], [0.9, 0.5]])
    w_org = torch.tensor([[0.2, 0.4], [0.1, 0.33], [0.05, 0.25]])
    frame0 = (10 / math.exp(0.5 - 0.2) + 10 / math.exp(0.6 - 0.1) + 10 / math.exp(0.9 - 0.05)) / 3
    frame1 = (10 / math.exp(0.0) + 10 / math.exp(0.34 - 0.33) + 10 / math.exp(0.5 - 0.25)) / 3
    assert region_awareness_loss(w_max, w_org).item() == pytest.approx(frame0 + frame1, rel=1e-6)


def test_region_loss_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError):
        region_awareness_loss(torch.zeros(2, 5), torch.zeros(2, 4))


def test_total_loss_weights_the_region_term() -> None:
    out = LipFDOutput(
        logit=torch.tensor([0.2, -0.4]),
        weight_max=torch.tensor([[0.5, 0.6], [0.4, 0.7]]),
        weight_org=torch.tensor([[0.3, 0.6], [0.2, 0.1]]),
    )
    target = torch.tensor([1, 0])
    cls = classification_loss(out.logit, target)
    region = region_awareness_loss(out.weight_max, out.weight_org)
    res = lipfd_loss(out, target, region_weight=0.25)
    assert torch.allclose(res.classification, cls) and torch.allclose(res.region, region)
    assert res.total.item() == pytest.approx(cls.item() + 0.25 * region.item(), rel=1e-6)
    assert lipfd_loss(out, target, region_weight=0.0).total.item() == pytest.approx(cls.item(), rel=1e-6)
