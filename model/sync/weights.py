"""Lip-sync expert weights: the released `lipsync_expert.pth` and our own checkpoints, loaded strictly.

Both carry the model under `state_dict` (keys possibly prefixed `module.`, as saved from DataParallel) and
a `global_step`; ours add `config`, `provenance`, `val` and `calibration` (see train.py). The widths are
read from the weights' shapes, so a released file needs no config. Files are read weights-only.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch

from avlips.model.detectors import DetectorError
from avlips.model.sync.network import FACE_STAGE_FIRST_UNITS, SyncNet, SyncNetConfig

__all__ = ["SyncWeightsError", "LoadedExpert", "load_expert", "expert_from_state", "save_expert", "config_from_state"]

FORMAT = "avlips-sync-expert"  # marks our checkpoints; a released file has no `format`
_BN_COUNTER = "num_batches_tracked"  # absent from files saved by torch before 0.4.1; its value is unused in eval


class SyncWeightsError(DetectorError):
    """A lip-sync expert file is missing, foreign, cut, or does not match the architecture."""


@dataclass
class LoadedExpert:
    """A loaded expert (in eval mode) and what its file said about it."""

    model: SyncNet
    path: str
    global_step: int
    released: bool                       # True: no avlips keys (a released lipsync_expert.pth or the like)
    extra: dict = field(default_factory=dict)  # our keys: config, provenance, val, calibration


def _read(path: str) -> Any:
    if not os.path.isfile(path):
        raise SyncWeightsError(f"{path}: lip-sync expert weights not found")
    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:  # a foreign or cut file fails with EOFError, pickle or zip errors
        reason = "the file is empty or cut short" if isinstance(exc, EOFError) else \
            f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0]}"
        if "WeightsUnpickler error:" in str(exc):
            reason = "weights-only loading refused it (not a plain tensor checkpoint)"
        raise SyncWeightsError(f"{path}: not a readable lip-sync expert checkpoint ({reason})") from None


def _strip_module(state: Mapping[str, Any], path: str) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise SyncWeightsError(f"{path}: state_dict entry {key!r} is {type(value).__name__}, not a tensor")
        name = key[len("module."):] if key.startswith("module.") else key
        if name in out:
            raise SyncWeightsError(f"{path}: key {name!r} appears both with and without 'module.'")
        out[name] = value
    return out


def config_from_state(state: Mapping[str, torch.Tensor], path: str = "weights", face_size: int = 96
                      ) -> SyncNetConfig:
    """The config of a SyncNet state dict: widths from its face tower's conv shapes (strides are not stored)."""
    keys = [f"face_encoder.{index}.conv_block.0.weight" for index in FACE_STAGE_FIRST_UNITS]
    if not all(key in state and state[key].dim() == 4 for key in keys):
        raise SyncWeightsError(f"{path}: not a lip-sync expert (SyncNet_color): no face_encoder stage weights")
    widths = [int(state[key].shape[0]) for key in keys]
    return SyncNetConfig(tuple(widths), face_size)


def expert_from_state(state: Mapping[str, Any], path: str = "weights", face_size: int = 96) -> SyncNet:
    """A SyncNet (eval mode) holding exactly `state` (module. prefixes allowed); mismatches name `path`."""
    state = _strip_module(state, path)
    model = SyncNet(config_from_state(state, path, face_size))
    expected = model.state_dict()
    missing = sorted(k for k in expected if k not in state and not k.endswith(_BN_COUNTER))
    unexpected = sorted(k for k in state if k not in expected)
    shapes = sorted(k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape))
    problems = [f"{len(found)} {what}: {', '.join(found[:4])}{', ...' if len(found) > 4 else ''}"
                for what, found in (("missing keys", missing), ("unexpected keys", unexpected),
                                    ("shape mismatches", shapes)) if found]
    if problems:
        raise SyncWeightsError(f"{path}: does not match the lip-sync expert architecture ({'; '.join(problems)})")
    full = {k: state.get(k, expected[k]) for k in expected}
    model.load_state_dict(full, strict=True)
    return model.eval()


def load_expert(path: str | os.PathLike[str]) -> LoadedExpert:
    """The expert in a released `lipsync_expert.pth` or one of our checkpoints."""
    path = os.fspath(path)
    blob = _read(path)
    if not isinstance(blob, Mapping) or not isinstance(blob.get("state_dict"), Mapping):
        what = f"a {type(blob).__name__}" if not isinstance(blob, Mapping) else f"keys {sorted(map(str, blob))[:6]}"
        raise SyncWeightsError(f"{path}: not a lip-sync expert checkpoint (expected a dict with 'state_dict', got {what})")
    extra = {k: blob[k] for k in ("config", "provenance", "val", "calibration", "format") if k in blob}
    config = extra.get("config") if isinstance(extra.get("config"), Mapping) else {}
    try:
        face_size = int(config.get("face_size", 96))
        model = expert_from_state(blob["state_dict"], path, face_size)
    except ValueError as exc:  # a config value the architecture does not take
        raise SyncWeightsError(f"{path}: {exc}") from None
    stored = config.get("stage_channels")
    if stored is not None and tuple(int(c) for c in stored) != model.config.stage_channels:
        raise SyncWeightsError(f"{path}: config says widths {list(stored)} but the weights have "
                               f"{list(model.config.stage_channels)}")
    step = blob.get("global_step", 0)
    return LoadedExpert(model=model, path=path, global_step=int(step) if isinstance(step, (int, float)) else 0,
                        released="format" not in blob, extra=extra)


def save_expert(path: str | os.PathLike[str], model: SyncNet, global_step: int, extra: Mapping[str, Any]) -> None:
    """Write the released layout (`state_dict`, `global_step`) plus our keys, never a half-written file."""
    path = os.fspath(path)
    architecture = {"stage_channels": list(model.config.stage_channels), "face_size": model.config.face_size}
    payload = {**dict(extra), "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
               "global_step": int(global_step), "format": FORMAT,
               "config": {**dict(extra.get("config") or {}), **architecture}}
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=".sync-expert-", suffix=".tmp")
    os.close(handle)
    try:
        torch.save(payload, temporary)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise
