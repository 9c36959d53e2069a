"""How many torch threads a training run takes on the CPU (model.train._torch_threads)."""

from __future__ import annotations

import os

import pytest
import torch

from avlips.model.config import TrainConfig
from avlips.model.train import _torch_threads

CPU = torch.device("cpu")


@pytest.fixture
def four_cores(monkeypatch):
    """A 4-core machine where torch's default is 4 threads, one rank."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 4)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)


def test_the_loader_workers_cores_are_left_to_them(four_cores):
    assert _torch_threads(TrainConfig(num_workers=1), CPU) == 3
    assert _torch_threads(TrainConfig(num_workers=0), CPU) == 4  # the loader runs in the trainer's thread


def test_at_least_one_thread_and_never_more_than_torchs_default(four_cores, monkeypatch):
    assert _torch_threads(TrainConfig(num_workers=6), CPU) == 1
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)  # e.g. OMP_NUM_THREADS=2
    assert _torch_threads(TrainConfig(num_workers=1), CPU) == 2


def test_torchrun_ranks_on_one_machine_share_its_cores(four_cores, monkeypatch):
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert _torch_threads(TrainConfig(num_workers=1), CPU) == 1


def test_a_set_value_is_kept_and_a_gpu_run_leaves_torch_alone(four_cores):
    assert _torch_threads(TrainConfig(num_workers=1, threads=2), CPU) == 2
    assert _torch_threads(TrainConfig(num_workers=1), torch.device("cuda")) == 0
