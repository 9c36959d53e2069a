"""LipFD ("Lips Are Lying", NeurIPS 2024): global CLIP view + region-aware ResNet over 5 frames x 3 scales."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Mapping, NamedTuple

import torch
from torch import nn

from avlips.config import config_from_dict

from .resnet import RESNETS, ResNet, build_resnet
from .vit import VIT_CONFIGS, VisionTransformer, build_vit

__all__ = ["LipFDConfig", "LipFDOutput", "CLIPImageEncoder", "LipFD", "build_lipfd", "INPUT_MODES"]

INPUT_MODES = ("reference_compatible", "normalized")


@dataclass(frozen=True)
class LipFDConfig:
    """Architecture and input contract of a LipFD model; stored in checkpoints as a plain dict."""

    encoder: str = "clip-vit-l14"
    backbone: str = "resnet50"
    # Freeze only the CLIP encoder; conv1 and the region backbone stay trainable.
    freeze_encoder: bool = False
    # One backbone call for all crops (True) or the reference's one call per crop (False). Equal in
    # eval mode; in train mode BatchNorm differs: batched normalises with statistics over all 15 crops
    # of the batch and updates the running statistics once per step, the reference's loop normalises
    # each (frame, scale) crop set on its own and updates them 15 times per step (momentum 0.1 each).
    batched_backbone: bool = True
    # Which input preparation the weights expect (see model.inputs); recorded, not used by the network.
    input_mode: str = "reference_compatible"
    num_frames: int = 5
    num_scales: int = 3

    def __post_init__(self) -> None:
        if self.encoder not in VIT_CONFIGS:
            raise ValueError(f"unknown encoder {self.encoder!r}; known: {sorted(VIT_CONFIGS)}")
        if self.backbone not in RESNETS:
            raise ValueError(f"unknown backbone {self.backbone!r}; known: {sorted(RESNETS)}")
        if self.input_mode not in INPUT_MODES:
            raise ValueError(f"unknown input_mode {self.input_mode!r}; known: {INPUT_MODES}")
        if self.num_frames < 1 or self.num_scales < 1:
            raise ValueError("num_frames and num_scales must be positive")

    def to_dict(self) -> dict[str, Any]:
        """The config as a plain dict of str/int/bool (weights_only-loadable)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "LipFDConfig":
        """Rebuild a config from `to_dict` output; an unknown key or a mistyped value is a ParamsError."""
        return config_from_dict(cls, data, "LipFDConfig")


class LipFDOutput(NamedTuple):
    """Network outputs: the fake logit and the per-frame scale weights used by the region loss."""

    logit: torch.Tensor  # (B,)
    weight_max: torch.Tensor  # (B, num_frames): max softmaxed weight over the scales
    weight_org: torch.Tensor  # (B, num_frames): softmaxed weight of scale 0 (the whole frame)


class CLIPImageEncoder(nn.Module):
    """Holds the image tower as `.visual`, so OpenAI CLIP keys (`encoder.visual.*`) map one to one."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.visual: VisionTransformer = build_vit(name)

    @property
    def output_dim(self) -> int:
        """Size of the image embedding."""
        return self.visual.output_dim

    @property
    def image_size(self) -> int:
        """Side of the square input image."""
        return self.visual.image_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Embed images (B, 3, S, S) -> (B, output_dim)."""
        return self.visual(x)


class LipFD(nn.Module):
    """LipFD detector: `forward(global_input, crops)` -> LipFDOutput.

    global_input: (B, 3, 5*S, 5*S), the composite resized (1120 for S=224);
    crops: (B, num_frames*num_scales, 3, H, W), frame-major (frame i, scale j at index i*num_scales+j).
    """

    def __init__(self, config: LipFDConfig | None = None) -> None:
        super().__init__()
        self.config = config or LipFDConfig()
        # Learned 5x5/stride-5 downsampling of the global view to the encoder's input size.
        self.conv1 = nn.Conv2d(3, 3, kernel_size=5, stride=5)
        self.encoder = CLIPImageEncoder(self.config.encoder)
        self.backbone: ResNet = build_resnet(self.config.backbone)
        dim = self.backbone.num_features + self.encoder.output_dim
        # The heads live inside `backbone` because that is where the released checkpoint keeps them.
        self.backbone.get_weight = nn.Sequential(nn.Linear(dim, 1), nn.Sigmoid())
        self.backbone.fc = nn.Linear(dim, 1)
        self.set_encoder_frozen(self.config.freeze_encoder)

    @property
    def global_size(self) -> int:
        """Side of the global input image (5x the encoder input)."""
        return 5 * self.encoder.image_size

    def set_encoder_frozen(self, frozen: bool = True) -> None:
        """Freeze (or unfreeze) the CLIP encoder only; gradients still flow through it into conv1."""
        for p in self.encoder.parameters():
            p.requires_grad_(not frozen)

    def encode_global(self, global_input: torch.Tensor) -> torch.Tensor:
        """Global feature (B, encoder.output_dim) of the resized composite."""
        size = self.global_size
        if global_input.ndim != 4 or global_input.shape[1:] != (3, size, size):
            raise ValueError(f"global_input must be (B, 3, {size}, {size}), got {tuple(global_input.shape)}")
        return self.encoder(self.conv1(global_input))

    def crop_features(self, crops: torch.Tensor, batched: bool = True) -> torch.Tensor:
        """Pooled backbone features (B, num_frames, num_scales, num_features) of the crops."""
        n_frames, n_scales = self.config.num_frames, self.config.num_scales
        if crops.ndim != 5 or crops.shape[1] != n_frames * n_scales or crops.shape[2] != 3:
            raise ValueError(f"crops must be (B, {n_frames * n_scales}, 3, H, W), got {tuple(crops.shape)}")
        b = crops.shape[0]
        if batched:
            # One call over B*15 images: far fewer kernel launches and better device utilisation.
            feats = self.backbone.features(crops.flatten(0, 1))
            return feats.view(b, n_frames, n_scales, -1)
        # The reference's loop: one backbone call per (frame, scale), same frame-major order.
        per_crop = [self.backbone.features(crops[:, k]) for k in range(n_frames * n_scales)]
        return torch.stack(per_crop, dim=1).view(b, n_frames, n_scales, -1)

    def head(self, feats: torch.Tensor, global_feat: torch.Tensor) -> LipFDOutput:
        """Scale weighting, frame averaging and the classifier on top of crop and global features."""
        b, n_frames, n_scales, _ = feats.shape
        glob = global_feat[:, None, None, :].expand(b, n_frames, n_scales, global_feat.shape[-1])
        x = torch.cat([feats, glob.to(feats.dtype)], dim=-1)  # (B, F, S, D)
        w = self.backbone.get_weight(x)  # (B, F, S, 1), sigmoid
        w = torch.softmax(w, dim=2)  # over the scales
        weight_max = w.amax(dim=2)[..., 0]
        weight_org = w[:, :, 0, 0]
        frames = (x * w).sum(dim=2) / w.sum(dim=2)  # weighted mean over scales: (B, F, D)
        pooled = frames.mean(dim=1)  # average of the frames: (B, D)
        logit = self.backbone.fc(pooled)[:, 0]
        return LipFDOutput(logit, weight_max, weight_org)

    def forward(self, global_input: torch.Tensor, crops: torch.Tensor, batched: bool | None = None) -> LipFDOutput:
        """Logit and per-frame scale weights; `batched` overrides config.batched_backbone."""
        if crops.shape[0] != global_input.shape[0]:
            raise ValueError(f"batch sizes differ: global {global_input.shape[0]}, crops {crops.shape[0]}")
        use_batched = self.config.batched_backbone if batched is None else batched
        global_feat = self.encode_global(global_input)
        feats = self.crop_features(crops, batched=use_batched)
        return self.head(feats, global_feat)

    def forward_loop(self, global_input: torch.Tensor, crops: torch.Tensor) -> LipFDOutput:
        """Forward with the reference's one-crop-at-a-time backbone loop."""
        return self.forward(global_input, crops, batched=False)


def build_lipfd(
    config: LipFDConfig | Mapping[str, Any] | None = None,
    device: torch.device | str | None = None,
    **overrides: Any,
) -> LipFD:
    """Build a LipFD model from a config (object or dict) plus keyword overrides, on `device` ("meta" allowed)."""
    if config is None:
        cfg = LipFDConfig()
    elif isinstance(config, LipFDConfig):
        cfg = config
    else:
        cfg = LipFDConfig.from_dict(config)
    if overrides:
        cfg = replace(cfg, **overrides)
    if device is None:
        return LipFD(cfg)
    # Allocate directly on the target device (on "meta": shapes only, no memory, no init cost).
    with torch.device(device):
        return LipFD(cfg)
