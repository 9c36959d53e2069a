"""Training configuration: the `train:` block of params.yaml as a typed, validated dataclass."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Mapping

from avlips.config import config_from_dict

from .lipfd import INPUT_MODES, LipFDConfig
from .loader import LoaderConfig

__all__ = ["TrainConfig"]


@dataclass(frozen=True)
class TrainConfig:
    """Every knob of `avlips train`; defaults are the reference-sized GPU setup."""

    # model
    encoder: str = "clip-vit-l14"
    backbone: str = "resnet50"
    freeze_encoder: bool = True  # the intent of the reference: frozen CLIP, trained conv1 + region backbone
    batched_backbone: bool = True
    input_mode: str = "reference_compatible"
    crop_size: int = 224  # region crops; smaller only as a CPU configuration
    init: str = ""  # optional weights to start from: our checkpoint or the released LipFD file
    clip_weights: str = ""  # optional OpenAI CLIP weights for the encoder
    # optimisation
    steps: int = 1000
    batch_size: int = 16
    lr: float = 2e-4
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 50
    min_lr_ratio: float = 0.01  # cosine decays to lr * min_lr_ratio
    region_weight: float = 1.0  # weight of the region-awareness loss
    grad_clip: float = 0.0  # max gradient norm; 0 = off
    # data
    shuffle_buffer: int = 256
    num_workers: int = 2
    resampled: bool = False
    perturb_probability: float = 0.0  # train-time random-mode perturbation
    perturb_types: tuple[str, ...] = ()  # what it draws from (perturbations.ALL_TYPES); empty: the six video types
    resize_on: str = "auto"  # auto: on the device for CUDA, in the collate on CPU
    val_batch_size: int = 16
    # Videos left out of training and validation (train.exclude_videos' list: the fakes that
    # synthesize.min_sync_confidence drops); recorded in the checkpoint with the other settings.
    exclude_clips: tuple[str, ...] = ()
    # run
    device: str = "auto"  # auto: cuda if available
    amp: str = "auto"  # auto: bf16 autocast on CUDA, none on CPU; "bf16" or "none" to force
    threads: int = 0  # torch CPU threads; 0 = auto: on the CPU the cores the loader workers leave (train._torch_threads)
    seed: int = 1234
    checkpoint_every: int = 200
    val_every: int = 0  # steps between validations; 0 = only at the end
    log_every: int = 10

    def __post_init__(self) -> None:
        if self.input_mode not in INPUT_MODES:
            raise ValueError(f"unknown input_mode {self.input_mode!r}; known: {INPUT_MODES}")
        if self.amp not in ("auto", "bf16", "none"):
            raise ValueError(f"amp must be auto, bf16 or none, got {self.amp!r}")
        if self.steps < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError("steps, batch_size and lr must be positive")
        if not 0 <= self.warmup_steps <= self.steps:
            raise ValueError(f"warmup_steps must be within 0..steps, got {self.warmup_steps}")
        LipFDConfig(encoder=self.encoder, backbone=self.backbone)  # checks the names early

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> "TrainConfig":
        """The config from params.yaml: the `train` block (top-level `seed` when the block has none)."""
        block = dict(params.get("train", params) or {})
        if "seed" not in block and "seed" in params:
            block["seed"] = params["seed"]
        return cls.from_dict(block)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TrainConfig":
        """A config from a flat dict; an unknown key or a mistyped value is a ParamsError (a typo must not pass)."""
        return config_from_dict(cls, data, "train")

    def to_dict(self) -> dict[str, Any]:
        """Plain-data copy (lists for tuples), storable in a checkpoint."""
        out = asdict(self)
        out["betas"] = list(self.betas)
        out["perturb_types"] = list(self.perturb_types)
        out["exclude_clips"] = list(self.exclude_clips)
        return out

    def replace(self, **changes: Any) -> "TrainConfig":
        """A copy with some fields changed."""
        return replace(self, **changes)

    def model_config(self) -> LipFDConfig:
        """The network's config."""
        return LipFDConfig(encoder=self.encoder, backbone=self.backbone, freeze_encoder=self.freeze_encoder,
                           batched_backbone=self.batched_backbone, input_mode=self.input_mode)

    def loader_config(self, device_type: str, train: bool = True) -> LoaderConfig:
        """The loader's config for training (shuffled, endless) or validation (one ordered pass)."""
        resize_on = self.resize_on if self.resize_on != "auto" else ("device" if device_type == "cuda" else "collate")
        common = dict(input_mode=self.input_mode, crop_size=self.crop_size, resize_on=resize_on, seed=self.seed,
                      exclude_clips=tuple(self.exclude_clips))
        if train:
            return LoaderConfig(batch_size=self.batch_size, shuffle=True, shuffle_buffer=self.shuffle_buffer,
                                shuffle_initial=min(self.shuffle_buffer, max(1, self.shuffle_buffer // 4)),
                                resampled=self.resampled, repeat=True, num_workers=self.num_workers,
                                perturb_probability=self.perturb_probability,
                                perturb_types=tuple(self.perturb_types), drop_last=True, **common)
        return LoaderConfig(batch_size=self.val_batch_size, shuffle=False, resampled=False, repeat=False,
                            num_workers=self.num_workers, drop_last=False, **common)
