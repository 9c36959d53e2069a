"""Checkpoints: the released LipFD file, OpenAI CLIP weights, and our own training checkpoints.

Every file is read with ``torch.load(..., weights_only=True, map_location="cpu")``: nothing is unpickled
beyond tensors and plain containers. The one exception is an OpenAI CLIP TorchScript archive (the
original ``ViT-L-14.pt``), which `load_clip_visual` opens with ``torch.jit.load``; that runs no Python
pickle code but does deserialise TorchScript, so only use archives you trust.
"""

from __future__ import annotations

import os
import random
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import torch
from torch import nn

from .lipfd import LipFD, LipFDConfig, build_lipfd
from avlips.errors import AvlipsInputError

__all__ = [
    "CheckpointError",
    "CheckpointFormatError",
    "CheckpointMismatchError",
    "LoadReport",
    "LoadedCheckpoint",
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "is_text_tower_key",
    "load_reference_checkpoint",
    "load_clip_visual",
    "capture_rng_state",
    "restore_rng_state",
    "save_checkpoint",
    "load_checkpoint",
]

CHECKPOINT_FORMAT = "avlips-lipfd"
CHECKPOINT_VERSION = 1
_ARCH_FIELDS = ("encoder", "backbone", "num_frames", "num_scales")
_MAX_LISTED = 12  # keys named per category in an error message


class CheckpointError(AvlipsInputError, RuntimeError):
    """A checkpoint could not be used."""


class CheckpointFormatError(CheckpointError):
    """The file or object is not in the expected checkpoint format."""


class CheckpointMismatchError(CheckpointError):
    """Checkpoint keys or shapes do not match the model; the offending keys are attributes and in the message."""

    def __init__(
        self,
        message: str,
        missing: Iterable[str] = (),
        unexpected: Iterable[str] = (),
        shape_mismatch: Iterable[tuple[str, tuple[int, ...], tuple[int, ...]]] = (),
    ) -> None:
        super().__init__(message)
        self.missing = list(missing)
        self.unexpected = list(unexpected)
        self.shape_mismatch = list(shape_mismatch)


@dataclass
class LoadReport:
    """What a weight load did."""

    loaded: list[str] = field(default_factory=list)  # model keys that received a value
    unused: list[str] = field(default_factory=list)  # accepted but not loaded (e.g. the CLIP text tower)
    stripped_prefix: bool = False  # keys carried a `module.` prefix
    total_steps: int | None = None  # from the released format, when present


@dataclass
class LoadedCheckpoint:
    """Result of `load_checkpoint`."""

    model: nn.Module
    step: int
    config: LipFDConfig | None
    extra: Any
    optimizer_restored: bool
    scheduler_restored: bool
    rng_restored: bool


# ---------------------------------------------------------------------------------------------- helpers


def is_text_tower_key(key: str) -> bool:
    """True for CLIP text-tower keys of a LipFD state dict (under `encoder.` but not `encoder.visual.`)."""
    return key.startswith("encoder.") and not key.startswith("encoder.visual.")


def _torch_load(path: str | os.PathLike[str]) -> Any:
    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except OSError:
        raise
    except Exception as exc:  # torch.load fails on a foreign or cut file with EOFError, KeyError, pickle errors...
        text = str(exc)
        if "WeightsUnpickler error:" in text:
            # torch's message is a page of advice (load with weights_only=False: not for untrusted files);
            # its one informative line comes after this marker.
            detail = (text.split("WeightsUnpickler error:", 1)[1].strip().splitlines() or [""])[0]
            reason = f"weights-only loading refused it: {detail}"
        elif isinstance(exc, EOFError):
            reason = "the file is empty or cut short"
        else:
            reason = f"{type(exc).__name__}: {(text.splitlines() or [''])[0]}"
        raise CheckpointFormatError(f"{path}: not a readable PyTorch checkpoint ({reason})") from exc


def read_checkpoint_file(path: str | os.PathLike[str]) -> Any:
    """A checkpoint file's contents (weights_only, on the CPU), to hand to either loader without reading it twice."""
    return _torch_load(path)


def _is_torchscript_archive(path: str | os.PathLike[str]) -> bool:
    # TorchScript zips carry `constants.pkl`; torch.save zips never do.
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return any(name.rsplit("/", 1)[-1] == "constants.pkl" for name in zf.namelist())


def _strip_module_prefix(state: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
    out: dict[str, Any] = {}
    stripped = False
    for key, value in state.items():
        if key.startswith("module."):
            key, stripped = key[len("module.") :], True
        if key in out:
            raise CheckpointFormatError(f"key {key!r} appears both with and without the 'module.' prefix")
        out[key] = value
    return out, stripped


def _check_tensors(state: Mapping[str, Any], what: str) -> None:
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise CheckpointFormatError(f"{what}: entry {key!r} is {type(value).__name__}, not a tensor")


def _compare(
    expected: Mapping[str, torch.Tensor], given: Mapping[str, torch.Tensor]
) -> tuple[list[str], list[str], list[tuple[str, tuple[int, ...], tuple[int, ...]]]]:
    missing = sorted(k for k in expected if k not in given)
    unexpected = sorted(k for k in given if k not in expected)
    mismatch = sorted(
        (k, tuple(given[k].shape), tuple(expected[k].shape))
        for k in expected
        if k in given and tuple(given[k].shape) != tuple(expected[k].shape)
    )
    return missing, unexpected, mismatch


def _listing(keys: list[Any]) -> str:
    shown = ", ".join(str(k) for k in keys[:_MAX_LISTED])
    more = f", ... ({len(keys) - _MAX_LISTED} more)" if len(keys) > _MAX_LISTED else ""
    return shown + more


def _raise_on_mismatch(
    context: str, expected: Mapping[str, torch.Tensor], given: Mapping[str, torch.Tensor], hint: str = ""
) -> None:
    missing, unexpected, mismatch = _compare(expected, given)
    if not (missing or unexpected or mismatch):
        return
    parts = []
    if hint:
        parts.append(hint)
    if missing:
        parts.append(f"{len(missing)} missing key(s): {_listing(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s): {_listing(unexpected)}")
    if mismatch:
        shown = [f"{k} (checkpoint {list(a)} vs model {list(b)})" for k, a, b in mismatch]
        parts.append(f"{len(mismatch)} shape mismatch(es): {_listing(shown)}")
    raise CheckpointMismatchError(f"{context}: " + "; ".join(parts), missing, unexpected, mismatch)


def _unwrap_model(model: nn.Module) -> nn.Module:
    # DataParallel / DistributedDataParallel keep the real model in `.module`.
    return model.module if isinstance(getattr(model, "module", None), nn.Module) else model


# ------------------------------------------------------------------------------------ released LipFD file


def load_reference_checkpoint(
    path_or_state: str | os.PathLike[str] | Mapping[str, Any], model: LipFD | None = None
) -> tuple[LipFD, LoadReport]:
    """Load the released LipFD checkpoint (or its state dict) strictly into a clip-vit-l14 + resnet50 model.

    Text-tower keys are accepted and reported as unused; any other missing, unexpected or
    shape-mismatched key raises CheckpointMismatchError. Without `model`, one is built directly from
    the checkpoint's tensors (no random initialisation, no second copy in memory).
    """
    # Anything not a path is already-read contents (read_checkpoint_file), whatever its type.
    obj = _torch_load(path_or_state) if isinstance(path_or_state, (str, os.PathLike)) else path_or_state
    if not isinstance(obj, Mapping):
        raise CheckpointFormatError(f"not a LipFD checkpoint: holds a {type(obj).__name__}, not a dict of tensors")
    total_steps = None
    if isinstance(obj.get("model"), Mapping):
        state, steps = obj["model"], obj.get("total_steps")
        total_steps = int(steps) if isinstance(steps, (int, torch.Tensor)) else None
    elif isinstance(obj.get("state_dict"), Mapping):
        state = obj["state_dict"]
    else:
        state = obj
    _check_tensors(state, "reference checkpoint")
    state, stripped = _strip_module_prefix(state)
    unused = [k for k in state if is_text_tower_key(k)]
    wanted = {k: v for k, v in state.items() if not is_text_tower_key(k)}

    build_here = model is None
    if model is None:
        target = build_lipfd(LipFDConfig(encoder="clip-vit-l14", backbone="resnet50"), device="meta")
    else:
        target = model
    target_inner = _unwrap_model(target)
    expected = target_inner.state_dict()
    _raise_on_mismatch("reference checkpoint does not fit the model", expected, wanted)
    if build_here:
        # Adopt the loaded tensors as the parameters (float32, like a freshly built model).
        wanted = {k: (v.float() if v.is_floating_point() else v) for k, v in wanted.items()}
        target_inner.load_state_dict(wanted, strict=True, assign=True)
        left_on_meta = [n for n, t in [*target_inner.named_parameters(), *target_inner.named_buffers()] if t.is_meta]
        if left_on_meta:
            raise CheckpointError(f"tensors not covered by the checkpoint: {_listing(left_on_meta)}")
    else:
        target_inner.load_state_dict(wanted, strict=True)
    report = LoadReport(loaded=sorted(wanted), unused=sorted(unused), stripped_prefix=stripped, total_steps=total_steps)
    return target, report


# ----------------------------------------------------------------------------------- OpenAI CLIP weights


def load_clip_visual(path: str | os.PathLike[str], model: nn.Module) -> LoadReport:
    """Initialise the image encoder of `model` (LipFD, CLIPImageEncoder or VisionTransformer) from OpenAI CLIP weights.

    Accepts a plain state-dict file (keys `visual.*`; text keys are ignored and reported as unused,
    a `module.` prefix is stripped) or an original OpenAI TorchScript archive (read with
    torch.jit.load on CPU, then `.state_dict()`). fp16 weights are converted to the model's dtype.
    """
    if _is_torchscript_archive(path):
        state = dict(torch.jit.load(str(path), map_location="cpu").state_dict())
    else:
        state = _torch_load(path)
        if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
            state = state["state_dict"]
    if not isinstance(state, Mapping):
        raise CheckpointFormatError(f"{path}: expected a state dict, got {type(state).__name__}")
    _check_tensors(state, str(path))
    state, stripped = _strip_module_prefix(state)
    visual = {k[len("visual.") :]: v for k, v in state.items() if k.startswith("visual.")}
    if not visual:
        raise CheckpointFormatError(f"{path}: no 'visual.*' keys; not an OpenAI CLIP state dict")
    unused = sorted(k for k in state if not k.startswith("visual."))

    inner = _unwrap_model(model)
    encoder = getattr(inner, "encoder", inner)
    encoder = getattr(encoder, "visual", encoder)
    _raise_on_mismatch(f"CLIP weights {path} do not fit the image encoder", encoder.state_dict(), visual)
    encoder.load_state_dict(visual, strict=True)  # copy_ converts fp16 -> the model's dtype
    return LoadReport(loaded=sorted("visual." + k for k in visual), unused=unused, stripped_prefix=stripped)


# ---------------------------------------------------------------------------------------- RNG states


def capture_rng_state() -> dict[str, Any]:
    """torch (CPU, CUDA if available), numpy and python RNG states as tensors/ints/floats (weights_only-loadable)."""
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "bit_generator": str(np_name),
            "keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "cached_gaussian": float(np_gauss),
        },
        "python": {
            "version": int(py_version),
            "state": torch.tensor(py_state, dtype=torch.int64),
            "gauss_next": py_gauss,
        },
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Restore RNG states captured by `capture_rng_state` (CUDA only where available)."""
    torch.set_rng_state(state["torch"])
    np_state = state["numpy"]
    np.random.set_state(
        (
            np_state["bit_generator"],
            np_state["keys"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached_gaussian"],
        )
    )
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = list(state["cuda"])[: torch.cuda.device_count()]
        for index, cuda_state in enumerate(cuda_states):
            torch.cuda.set_rng_state(cuda_state, device=index)


# ---------------------------------------------------------------------------------------- own format


_PLAIN_TYPES = (str, int, float, bool, type(None), torch.Tensor)


def _check_plain(value: Any, where: str) -> None:
    # Refuse at save time what weights_only loading would refuse later.
    if isinstance(value, Mapping):
        for k, v in value.items():
            if not isinstance(k, (str, int)):
                raise TypeError(f"{where}: key {k!r} is not str/int")
            _check_plain(v, f"{where}[{k!r}]")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_plain(v, f"{where}[{i}]")
    elif not isinstance(value, _PLAIN_TYPES):
        raise TypeError(f"{where} is {type(value).__name__}; only plain data and tensors can be stored")


def _config_dict(config: LipFDConfig | Mapping[str, Any] | None, model: nn.Module) -> dict[str, Any] | None:
    if config is None:
        config = getattr(model, "config", None)
    if config is None:
        return None
    if isinstance(config, LipFDConfig):
        return config.to_dict()
    return dict(config)


def save_checkpoint(
    path: str | os.PathLike[str],
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    step: int = 0,
    config: LipFDConfig | Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write model, optimizer, scheduler, step, RNG states and config atomically (temp file, then rename)."""
    inner = _unwrap_model(model)
    payload: dict[str, Any] = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "model": inner.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "step": int(step),
        "config": _config_dict(config, inner),
        "rng": capture_rng_state(),
        "extra": dict(extra) if extra is not None else None,
    }
    for name in ("optimizer", "scheduler", "config", "extra"):
        _check_plain(payload[name], name)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            torch.save(payload, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)  # never a half-written file under the final name
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _arch_hint(saved: LipFDConfig | None, model: nn.Module) -> str:
    current = getattr(model, "config", None)
    if saved is None or not isinstance(current, LipFDConfig):
        return ""
    diffs = [
        f"{name}: checkpoint {getattr(saved, name)!r} vs model {getattr(current, name)!r}"
        for name in _ARCH_FIELDS
        if getattr(saved, name) != getattr(current, name)
    ]
    return ("architecture differs (" + ", ".join(diffs) + ")") if diffs else ""


def load_checkpoint(
    path: str | os.PathLike[str] | Mapping[str, Any],
    model: nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    restore_rng: bool = True,
    device: torch.device | str | None = None,
) -> LoadedCheckpoint:
    """Restore a `save_checkpoint` file: weights (into `model` or one built from its config), optimizer, RNG...

    `path` may also be the file's contents, already read with `read_checkpoint_file`.
    """
    obj = _torch_load(path) if isinstance(path, (str, os.PathLike)) else path
    if not isinstance(path, (str, os.PathLike)):
        path = "checkpoint"  # already-read contents: for the messages below
    if not isinstance(obj, Mapping) or obj.get("format") != CHECKPOINT_FORMAT:
        if isinstance(obj, Mapping) and "model" in obj and "total_steps" in obj:
            raise CheckpointFormatError(f"{path} is a released LipFD checkpoint; use load_reference_checkpoint")
        raise CheckpointFormatError(f"{path} is not an {CHECKPOINT_FORMAT} checkpoint")
    if obj.get("version") != CHECKPOINT_VERSION:
        raise CheckpointFormatError(f"{path}: unsupported checkpoint version {obj.get('version')!r}")
    config = LipFDConfig.from_dict(obj["config"]) if obj.get("config") else None

    if model is None:
        if config is None:
            raise CheckpointFormatError(f"{path} stores no config; pass the model to load into")
        model = build_lipfd(config, device=device)
    inner = _unwrap_model(model)
    state = obj["model"]
    hint = _arch_hint(config, inner)
    _raise_on_mismatch(f"checkpoint {path} does not fit the model", inner.state_dict(), state, hint=hint)
    inner.load_state_dict(state, strict=True)

    if optimizer is not None:
        if obj.get("optimizer") is None:
            raise CheckpointError(f"{path} holds no optimizer state")
        optimizer.load_state_dict(obj["optimizer"])
    if scheduler is not None:
        if obj.get("scheduler") is None:
            raise CheckpointError(f"{path} holds no scheduler state")
        scheduler.load_state_dict(obj["scheduler"])
    rng_restored = False
    if restore_rng and obj.get("rng") is not None:
        restore_rng_state(obj["rng"])
        rng_restored = True
    return LoadedCheckpoint(
        model=model,
        step=int(obj.get("step", 0)),
        config=config,
        extra=obj.get("extra"),
        optimizer_restored=optimizer is not None,
        scheduler_restored=scheduler is not None,
        rng_restored=rng_restored,
    )
