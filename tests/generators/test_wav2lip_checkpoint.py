"""Loading Wav2Lip checkpoints: released format, bare state dicts, strictness and safe unpickling."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from avlips.generators.wav2lip.checkpoint import (
    CheckpointMismatchError,
    check_state_dict,
    extract_state_dict,
    load_wav2lip,
)
from avlips.generators.wav2lip.network import Wav2Lip

torch.set_num_threads(2)


class _NotATensor:
    """An arbitrary object that a weights-only load must refuse to unpickle."""


@pytest.fixture(scope="module")
def trained() -> Wav2Lip:
    """A model whose weights and BatchNorm statistics all differ from a fresh one's."""
    torch.manual_seed(0)
    model = Wav2Lip()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0.0, 0.1)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.1)
                m.num_batches_tracked.fill_(1234)
    return model.eval()


@pytest.fixture(scope="module")
def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(1, 1, 80, 16, generator=g), torch.rand(1, 6, 96, 96, generator=g)


def _forward(model: Wav2Lip, inputs: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return model(*inputs)


@pytest.fixture(scope="module")
def expected(trained, inputs) -> torch.Tensor:
    return _forward(trained, inputs)


def test_released_format_loads_strictly_and_reproduces(trained, inputs, expected, tmp_path: Path) -> None:
    sd = {"module." + k: v for k, v in trained.state_dict().items()}
    path = tmp_path / "wav2lip.pth"
    # The released files also carry optimizer state and counters beside the weights.
    torch.save({"state_dict": sd, "optimizer": {"state": {}, "param_groups": []}, "global_step": 7}, path)
    loaded = load_wav2lip(path)
    assert not loaded.training
    assert next(loaded.parameters()).device.type == "cpu"
    for k, v in trained.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    assert torch.equal(_forward(loaded, inputs), expected)


def test_bare_state_dict_loads(trained, inputs, expected, tmp_path: Path) -> None:
    path = tmp_path / "bare.pth"
    torch.save(trained.state_dict(), path)
    assert torch.equal(_forward(load_wav2lip(str(path)), inputs), expected)


def test_missing_key_in_file_is_named(trained, tmp_path: Path) -> None:
    sd = {"module." + k: v for k, v in trained.state_dict().items()}
    del sd["module.audio_encoder.3.conv_block.1.running_var"]
    path = tmp_path / "missing.pth"
    torch.save({"state_dict": sd}, path)
    with pytest.raises(CheckpointMismatchError, match=r"missing keys \(1\): audio_encoder\.3\.conv_block\.1\.running_var"):
        load_wav2lip(path)


def test_extra_key_is_named(trained) -> None:
    sd = dict(trained.state_dict())
    sd["face_decoder_blocks.7.0.conv_block.0.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointMismatchError, match=r"unexpected keys \(1\): face_decoder_blocks\.7\.0"):
        check_state_dict(trained, sd)


def test_shape_mismatch_is_named(trained) -> None:
    sd = dict(trained.state_dict())
    sd["output_block.1.weight"] = torch.zeros(3, 32, 3, 3)
    with pytest.raises(CheckpointMismatchError, match=r"output_block\.1\.weight: checkpoint \(3, 32, 3, 3\)"):
        check_state_dict(trained, sd)


def test_extract_state_dict_strips_prefix_and_rejects_junk() -> None:
    t = torch.zeros(1)
    assert extract_state_dict({"state_dict": {"module.a": t, "b": t}}) == {"a": t, "b": t}
    assert extract_state_dict({"a": t}) == {"a": t}
    with pytest.raises(CheckpointMismatchError, match="both with and without"):
        extract_state_dict({"module.a": t, "a": t})
    with pytest.raises(CheckpointMismatchError, match="'global_step' is a int"):
        extract_state_dict({"a": t, "global_step": 3})
    with pytest.raises(CheckpointMismatchError):
        extract_state_dict([t])


def test_arbitrary_objects_are_not_unpickled(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {}, "payload": _NotATensor()}, path)
    with pytest.raises(pickle.UnpicklingError):
        load_wav2lip(path)
