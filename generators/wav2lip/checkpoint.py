"""Loading released Wav2Lip checkpoints into the native network, strictly and without unpickling objects."""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch
from torch import Tensor

from .network import Wav2Lip
from avlips.errors import AvlipsInputError

__all__ = ["CheckpointMismatchError", "extract_state_dict", "check_state_dict", "load_wav2lip"]

_PREFIX = "module."  # added by nn.DataParallel, which the released checkpoints were trained under


class CheckpointMismatchError(AvlipsInputError, ValueError):
    """A checkpoint's keys or shapes do not match the Wav2Lip network."""


def extract_state_dict(obj: object) -> dict[str, Tensor]:
    """The bare state dict of a released checkpoint ({'state_dict': ...}) or of a bare state dict, unprefixed."""
    if not isinstance(obj, Mapping):
        raise CheckpointMismatchError(f"checkpoint is a {type(obj).__name__}, not a dict")
    sd = obj["state_dict"] if "state_dict" in obj else obj
    if not isinstance(sd, Mapping):
        raise CheckpointMismatchError(f"checkpoint 'state_dict' is a {type(sd).__name__}, not a dict")
    out: dict[str, Tensor] = {}
    for key, value in sd.items():
        if not isinstance(value, Tensor):
            raise CheckpointMismatchError(f"checkpoint entry {key!r} is a {type(value).__name__}, not a tensor")
        name = key[len(_PREFIX):] if key.startswith(_PREFIX) else key
        if name in out:
            raise CheckpointMismatchError(f"checkpoint holds {name!r} both with and without the {_PREFIX!r} prefix")
        out[name] = value
    return out


def check_state_dict(model: torch.nn.Module, state_dict: Mapping[str, Tensor]) -> None:
    """Raise CheckpointMismatchError naming every missing, unexpected or wrongly shaped key."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    shapes = [
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state_dict and state_dict[k].shape != v.shape
    ]
    problems = []
    if missing:
        problems.append(f"missing keys ({len(missing)}): {', '.join(missing)}")
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {', '.join(unexpected)}")
    if shapes:
        problems.append(f"shape mismatches ({len(shapes)}): {'; '.join(shapes)}")
    if problems:
        raise CheckpointMismatchError("checkpoint does not match Wav2Lip: " + " | ".join(problems))


def load_wav2lip(path: str | os.PathLike[str]) -> Wav2Lip:
    """A Wav2Lip network on the CPU in eval mode with the weights of a checkpoint file (wav2lip.pth, wav2lip_gan.pth)."""
    # weights_only: a checkpoint is data, never code (the released files hold only tensors and plain containers).
    obj = torch.load(path, map_location="cpu", weights_only=True)
    state_dict = extract_state_dict(obj)
    model = Wav2Lip()
    check_state_dict(model, state_dict)  # clearer message than load_state_dict's, and covers shapes
    model.load_state_dict(state_dict, strict=True)
    return model.eval()
