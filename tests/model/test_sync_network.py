"""The lip-sync expert port: released-format checkpoints load strictly, and match the reference layer table."""
from __future__ import annotations

import torch
import pytest
from torch import nn
from torch.nn import functional as F

from avlips.model.detectors import DetectorError
from avlips.model.sync.network import SyncNet, SyncNetConfig
from avlips.model.sync.weights import SyncWeightsError, load_expert, save_expert


# ---- an independent re-statement of Wav2Lip's models/syncnet.py layer table (not using the port) ----

class RefConv(nn.Module):
    def __init__(self, cin, cout, kernel_size, stride, padding, residual=False):
        super().__init__()
        self.conv_block = nn.Sequential(nn.Conv2d(cin, cout, kernel_size, stride, padding), nn.BatchNorm2d(cout))
        self.residual = residual

    def forward(self, x):
        out = self.conv_block(x)
        return F.relu(out + x if self.residual else out)


# (cin, cout, kernel, stride, padding, residual), written out row by row as in the reference file.
FACE_TABLE = [
    (15, 32, 7, 1, 3, False),
    (32, 64, 5, (1, 2), 1, False), (64, 64, 3, 1, 1, True), (64, 64, 3, 1, 1, True),
    (64, 128, 3, 2, 1, False), (128, 128, 3, 1, 1, True), (128, 128, 3, 1, 1, True), (128, 128, 3, 1, 1, True),
    (128, 256, 3, 2, 1, False), (256, 256, 3, 1, 1, True), (256, 256, 3, 1, 1, True),
    (256, 512, 3, 2, 1, False), (512, 512, 3, 1, 1, True), (512, 512, 3, 1, 1, True),
    (512, 512, 3, 2, 1, False), (512, 512, 3, 1, 0, False), (512, 512, 1, 1, 0, False),
]
AUDIO_TABLE = [
    (1, 32, 3, 1, 1, False), (32, 32, 3, 1, 1, True), (32, 32, 3, 1, 1, True),
    (32, 64, 3, (3, 1), 1, False), (64, 64, 3, 1, 1, True), (64, 64, 3, 1, 1, True),
    (64, 128, 3, 3, 1, False), (128, 128, 3, 1, 1, True), (128, 128, 3, 1, 1, True),
    (128, 256, 3, (3, 2), 1, False), (256, 256, 3, 1, 1, True), (256, 256, 3, 1, 1, True),
    (256, 512, 3, 1, 0, False), (512, 512, 1, 1, 0, False),
]


class ReferenceSyncNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.face_encoder = nn.Sequential(*[RefConv(*row) for row in FACE_TABLE])
        self.audio_encoder = nn.Sequential(*[RefConv(*row) for row in AUDIO_TABLE])

    def forward(self, audio, face):
        a = F.normalize(self.audio_encoder(audio).view(audio.size(0), -1), p=2, dim=1)
        v = F.normalize(self.face_encoder(face).view(face.size(0), -1), p=2, dim=1)
        return a, v


def _randomise_batchnorm(model: nn.Module, generator: torch.Generator) -> None:
    """Non-trivial BatchNorm statistics, so eval-mode BN is not the identity."""
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.copy_(torch.randn(module.running_mean.shape, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(module.running_var.shape, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(module.weight.shape, generator=generator) + 0.5)
            module.bias.data.copy_(torch.randn(module.bias.shape, generator=generator) * 0.1)


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    """A checkpoint in the released lipsync_expert.pth format with random weights, keys prefixed `module.`."""
    torch.manual_seed(0)
    reference = ReferenceSyncNet()
    with torch.no_grad():
        _randomise_batchnorm(reference, torch.Generator().manual_seed(1))
    state = {f"module.{k}": v for k, v in reference.state_dict().items()}
    path = tmp_path_factory.mktemp("expert") / "lipsync_expert.pth"
    torch.save({"state_dict": state, "global_step": 0, "optimizer": None, "global_epoch": 0}, path)
    return path, reference.eval()


def _inputs(batch=3, face_size=96):
    generator = torch.Generator().manual_seed(7)
    faces = torch.rand(batch, 15, face_size // 2, face_size, generator=generator)
    mels = torch.rand(batch, 1, 80, 16, generator=generator) * 8 - 4
    return mels, faces


def test_released_checkpoint_loads_strictly_and_matches_the_reference(released):
    path, reference = released
    expert = load_expert(path)
    assert expert.released and expert.global_step == 0
    assert expert.model.config == SyncNetConfig()
    mels, faces = _inputs()
    with torch.no_grad():
        audio, face = expert.model(mels, faces)
        ref_audio, ref_face = reference(mels, faces)
    assert audio.shape == (3, 512) and face.shape == (3, 512)
    torch.testing.assert_close(audio.norm(dim=1), torch.ones(3))
    assert (audio - ref_audio).abs().max() <= 1e-5
    assert (face - ref_face).abs().max() <= 1e-5
    # Random BN statistics make the embeddings input-dependent: the comparison is not between constants.
    assert (face[0] - face[1]).abs().max() > 1e-3


def test_unprefixed_keys_load_too(released, tmp_path):
    path, reference = released
    plain = tmp_path / "plain.pth"
    torch.save({"state_dict": reference.state_dict(), "global_step": 3}, plain)
    assert load_expert(plain).global_step == 3


def test_foreign_cut_and_mismatched_files_are_one_line_errors_naming_the_file(released, tmp_path):
    path, reference = released
    foreign = tmp_path / "foreign.pth"
    foreign.write_bytes(b"this is not a checkpoint" * 10)
    cut = tmp_path / "cut.pth"
    cut.write_bytes(path.read_bytes()[:4096])
    wrong = tmp_path / "wrong.pth"
    state = dict(reference.state_dict())
    state.pop("audio_encoder.3.conv_block.0.weight")
    torch.save({"state_dict": state, "global_step": 0}, wrong)
    other = tmp_path / "other.pth"
    torch.save({"model": {}}, other)
    for bad in (foreign, cut, wrong, other, tmp_path / "absent.pth"):
        with pytest.raises(SyncWeightsError) as caught:
            load_expert(bad)
        message = str(caught.value)
        assert str(bad) in message and "\n" not in message
        assert isinstance(caught.value, DetectorError)
    with pytest.raises(SyncWeightsError, match="audio_encoder.3.conv_block.0.weight"):
        load_expert(wrong)


def test_small_variant_round_trips_with_its_config(tmp_path):
    torch.manual_seed(0)
    model = SyncNet(SyncNetConfig((4, 8, 8, 16, 16), face_size=48)).eval()
    mels, faces = _inputs(2, face_size=48)
    with torch.no_grad():
        audio, face = model(mels, faces)
    assert audio.shape == (2, 16) and face.shape == (2, 16)
    # Same keys as the released layout, only narrower.
    assert set(model.state_dict()) == set(ReferenceSyncNet().state_dict())
    path = tmp_path / "ours.pt"
    save_expert(path, model, 12, {"provenance": {"trained_on": "real only"}, "config": {"steps": 5}})
    loaded = load_expert(path)
    assert not loaded.released and loaded.global_step == 12
    assert loaded.model.config == model.config
    assert loaded.extra["config"]["steps"] == 5 and loaded.extra["provenance"]["trained_on"] == "real only"
    with torch.no_grad():
        again = loaded.model(mels, faces)
    torch.testing.assert_close(again[1], face)
    with pytest.raises(ValueError, match=r"\(B, 15, 24, 48\)"):
        model.embed_faces(torch.zeros(1, 15, 48, 96))
