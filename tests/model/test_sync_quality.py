"""Clip-level sync quality (LSE-style) under the expert: the numbers a manifest can record per fake."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from avlips.model.sync.network import SyncNet, SyncNetConfig
from avlips.model.sync.quality import clip_curve, clip_sync_quality
from avlips.model.sync.weights import save_expert
from tests.builders import talking_clip


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny_expert():
    torch.manual_seed(0)
    return SyncNet(SyncNetConfig((2, 2, 4, 4, 8), face_size=48)).eval()


def test_curve_covers_the_offsets_the_audio_holds(tiny_expert):
    faces = np.random.default_rng(0).integers(0, 255, (30, 48, 48, 3), dtype=np.uint8)
    mel = np.random.default_rng(1).normal(0, 1, (80, 97)).astype(np.float32)  # 1.2 s of columns at 80/s
    offsets, means, windows = clip_curve(tiny_expert, faces, mel, 25.0, offsets=15)
    assert windows == 26 and list(offsets) == list(range(-15, 16))
    assert means.shape == (31,) and np.all((means >= 0) & (means <= 1 + 1e-6))
    short = np.zeros((80, 40), np.float32)  # 0.5 s of audio: the late windows' positive offsets are missing
    offsets, _, _ = clip_curve(tiny_expert, faces, short, 25.0, offsets=15)
    assert offsets.min() == -15 and offsets.max() < 15
    with pytest.raises(Exception, match="no 5-frame window"):
        clip_curve(tiny_expert, faces[:3], mel, 25.0)


@pytest.mark.slow  # encodes a video and warms up librosa
def test_clip_quality_of_a_video_with_its_audio(tiny_expert, tmp_path):
    video = talking_clip(tmp_path / "clip.mp4", seed=3, seconds=1.2, size=48)
    path = tmp_path / "expert.pt"
    save_expert(path, tiny_expert, 0, {})
    quality = clip_sync_quality(str(video), str(video), str(path))
    assert set(quality) == {"lse_d", "lse_c", "best_offset", "windows", "offsets_available"}
    assert quality["windows"] == 30 - 4 and quality["offsets_available"] == 31
    assert quality["lse_c"] >= 0 and -15 <= quality["best_offset"] <= 15
    # The same answer from the model object as from its file.
    assert clip_sync_quality(str(video), "", tiny_expert) == pytest.approx(quality)
