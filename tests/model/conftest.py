"""Shared fixtures for the LipFD model tests."""

from __future__ import annotations

from typing import Callable

import pytest
import torch

from avlips.model.lipfd import LipFD, build_lipfd


@pytest.fixture(autouse=True)
def _few_threads() -> None:
    # The test machines are shared: keep torch to two threads.
    torch.set_num_threads(2)


@pytest.fixture
def tiny_model() -> LipFD:
    """A fast CPU LipFD (vit-tiny + resnet18) with a fixed seed."""
    torch.manual_seed(0)
    return build_lipfd(encoder="vit-tiny", backbone="resnet18")


def _small_inputs(batch: int = 2, crop: int = 64, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, 1120, 1120, generator=gen), torch.randn(batch, 15, 3, crop, crop, generator=gen)


@pytest.fixture
def make_inputs() -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
    """Factory of random (global input (B, 3, 1120, 1120), crops (B, 15, 3, c, c)); small crops keep CPU tests fast."""
    return _small_inputs
