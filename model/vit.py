"""CLIP-style Vision Transformer image encoder (OpenAI CLIP module names, so its weights load as-is)."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ViTConfig",
    "VIT_CONFIGS",
    "LayerNorm",
    "QuickGELU",
    "ResidualAttentionBlock",
    "Transformer",
    "VisionTransformer",
    "build_vit",
]


@dataclass(frozen=True)
class ViTConfig:
    """Shape of a CLIP-style ViT image encoder."""

    image_size: int
    patch_size: int
    width: int
    layers: int
    heads: int
    output_dim: int

    @property
    def grid(self) -> int:
        """Patches per side."""
        return self.image_size // self.patch_size


VIT_CONFIGS: dict[str, ViTConfig] = {
    # OpenAI CLIP ViT-L/14, the encoder inside the released LipFD checkpoint.
    "clip-vit-l14": ViTConfig(image_size=224, patch_size=14, width=1024, layers=24, heads=16, output_dim=768),
    # Small enough for CPU tests and benchmarks: 7x7 patches, two narrow blocks.
    "vit-tiny": ViTConfig(image_size=224, patch_size=32, width=64, layers=2, heads=4, output_dim=64),
    # CPU demo training: 14x14 patches of 16 pixels, so a mouth in the 45-pixel-wide frames of the
    # global view lies within one or two tokens, and the mel column above it in the same token column.
    "vit-tiny-p16": ViTConfig(image_size=224, patch_size=16, width=64, layers=2, heads=4, output_dim=64),
    "vit-small-p16": ViTConfig(image_size=224, patch_size=16, width=128, layers=3, heads=4, output_dim=128),
}


class LayerNorm(nn.LayerNorm):
    """LayerNorm that always computes in float32 and returns the input's dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Low-precision normalisation is unstable; autocast also keeps layer_norm in float32.
        weight = self.weight.float() if self.weight is not None else None
        bias = self.bias.float() if self.bias is not None else None
        return F.layer_norm(x.float(), self.normalized_shape, weight, bias, self.eps).to(x.dtype)


class QuickGELU(nn.Module):
    """The sigmoid approximation of GELU that CLIP was trained with: x * sigmoid(1.702 x)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock(nn.Module):
    """Pre-LayerNorm transformer block: self-attention then a QuickGELU MLP, each residual."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.ln_1 = LayerNorm(width)
        # batch_first only changes the call convention; the packed in_proj_* parameters are CLIP's.
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_2 = LayerNorm(width)
        self.mlp = nn.Sequential(
            OrderedDict(
                [
                    ("c_fc", nn.Linear(width, width * 4)),
                    ("gelu", QuickGELU()),
                    ("c_proj", nn.Linear(width * 4, width)),
                ]
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block to tokens of shape (batch, tokens, width)."""
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    """A stack of residual attention blocks (`resblocks.N`)."""

    def __init__(self, width: int, layers: int, heads: int) -> None:
        super().__init__()
        self.width = width
        self.layers = layers
        self.resblocks = nn.Sequential(*[ResidualAttentionBlock(width, heads) for _ in range(layers)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply every block in order."""
        return self.resblocks(x)


class VisionTransformer(nn.Module):
    """CLIP image tower: patchify, class token, positions, transformer, ln_post on the class token, proj."""

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        if config.image_size % config.patch_size:
            raise ValueError(f"image_size {config.image_size} is not a multiple of patch_size {config.patch_size}")
        self.config = config
        self.image_size = config.image_size
        self.output_dim = config.output_dim
        width = config.width
        self.conv1 = nn.Conv2d(3, width, kernel_size=config.patch_size, stride=config.patch_size, bias=False)
        self.class_embedding = nn.Parameter(torch.empty(width))
        self.positional_embedding = nn.Parameter(torch.empty(config.grid**2 + 1, width))
        self.ln_pre = LayerNorm(width)
        self.transformer = Transformer(width, config.layers, config.heads)
        self.ln_post = LayerNorm(width)
        self.proj = nn.Parameter(torch.empty(width, config.output_dim))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Initialise like CLIP: width^-0.5 embeddings, depth-scaled residual projections."""
        width, layers = self.config.width, self.config.layers
        scale = width**-0.5
        nn.init.normal_(self.class_embedding, std=scale)
        nn.init.normal_(self.positional_embedding, std=scale)
        nn.init.normal_(self.proj, std=scale)
        proj_std = scale * (2 * layers) ** -0.5
        for block in self.transformer.resblocks:
            nn.init.normal_(block.attn.in_proj_weight, std=scale)
            nn.init.zeros_(block.attn.in_proj_bias)
            nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
            nn.init.zeros_(block.attn.out_proj.bias)
            nn.init.normal_(block.mlp.c_fc.weight, std=(2 * width) ** -0.5)
            nn.init.zeros_(block.mlp.c_fc.bias)
            nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)
            nn.init.zeros_(block.mlp.c_proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Encode images (batch, 3, image_size, image_size) to (batch, output_dim)."""
        if x.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(f"expected {self.image_size}x{self.image_size} input, got {tuple(x.shape[-2:])}")
        x = self.conv1(x)  # (B, width, grid, grid)
        x = x.flatten(2).transpose(1, 2)  # (B, grid*grid, width)
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
        x = self.ln_pre(x)
        x = self.transformer(x)
        x = self.ln_post(x[:, 0])
        return x @ self.proj.to(x.dtype)


def build_vit(name: str) -> VisionTransformer:
    """Build a named ViT image encoder (see VIT_CONFIGS)."""
    try:
        config = VIT_CONFIGS[name]
    except KeyError:
        raise ValueError(f"unknown ViT config {name!r}; known: {sorted(VIT_CONFIGS)}") from None
    return VisionTransformer(config)
