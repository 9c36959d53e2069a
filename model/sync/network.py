"""Wav2Lip's lip-sync expert (SyncNet_color), laid out so a released `lipsync_expert.pth` loads strictly.

Two towers of Wav2Lip's conv unit (conv + BatchNorm + ReLU, optional residual add) map five lower-half
face crops (B, 15, 48, 96) and one mel chunk (B, 1, 80, 16) to L2-normalised vectors; their cosine is the
sync probability. The layer table (kernels, strides, paddings, residual flags) is that of Wav2Lip's
models/syncnet.py (UPSTREAM.md section 6). Two knobs make the CPU demo's small variant of the same family:
`stage_channels` scales the widths (released: 32, 64, 128, 256, 512), and `face_size` 48 (crops of half
the side) runs the face tower's next-to-last stride-2 unit at stride 1 so it still ends at 1x1. The keys
and weight shapes never change with either knob.

Spatial sizes, face 96: 48x96 -> 46x47 -> 23x24 -> 12x12 -> 6x6 -> 3x3 -> 1x1;
face 48: 24x48 -> 22x23 -> 11x12 -> 6x6 -> 3x3 -> 3x3 -> 1x1; audio: 80x16 -> 27x16 -> 9x6 -> 3x3 -> 1x1.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from avlips.generators.wav2lip.network import ConvUnit

__all__ = ["SyncNetConfig", "SyncNet", "RELEASED_CHANNELS", "FACE_SIZE", "FACE_SIZES", "FRAMES", "MEL_STEPS", "NUM_MELS",
           "cosine_sync"]

RELEASED_CHANNELS = (32, 64, 128, 256, 512)
FACE_SIZE = 96   # side of the square face crop; the network sees its lower half (48 x 96)
FACE_SIZES = (96, 48)  # the released crop, and the small demo crop
FACE_STAGE_FIRST_UNITS = (0, 1, 4, 8, 11)  # face_encoder index of each stage's first (widening) unit
FRAMES = 5       # consecutive frames per face input (stacked on channels)
NUM_MELS = 80
MEL_STEPS = 16   # mel columns per audio input (0.2 s at 80 columns per second)


@dataclass(frozen=True)
class SyncNetConfig:
    """The widths of the five stages and the face crop's side (the released expert: 32..512, 96)."""

    stage_channels: tuple[int, int, int, int, int] = RELEASED_CHANNELS
    face_size: int = FACE_SIZE

    def __post_init__(self) -> None:
        channels = tuple(int(c) for c in self.stage_channels)
        if len(channels) != 5 or min(channels) < 1:
            raise ValueError(f"stage_channels needs five positive widths, got {self.stage_channels!r}")
        if int(self.face_size) not in FACE_SIZES:
            raise ValueError(f"face_size must be one of {FACE_SIZES}, got {self.face_size!r}")
        object.__setattr__(self, "stage_channels", channels)
        object.__setattr__(self, "face_size", int(self.face_size))

    @property
    def embedding_dim(self) -> int:
        """Length of both embeddings (the last stage's width)."""
        return self.stage_channels[-1]


def _residual(channels: int, count: int) -> list[nn.Module]:
    """`count` 3x3 units that keep width and size and add their input back."""
    return [ConvUnit(channels, channels, 3, 1, 1, residual=True) for _ in range(count)]


def face_encoder(channels: tuple[int, ...], face_size: int = FACE_SIZE) -> nn.Sequential:
    """The face tower: (B, 15, face_size/2, face_size) -> (B, c5, 1, 1)."""
    c1, c2, c3, c4, c5 = channels
    last_stride = 2 if face_size == FACE_SIZE else 1  # half-size crops are already 3x3 here
    return nn.Sequential(
        ConvUnit(3 * FRAMES, c1, 7, 1, 3),
        ConvUnit(c1, c2, 5, (1, 2), 1), *_residual(c2, 2),
        ConvUnit(c2, c3, 3, 2, 1), *_residual(c3, 3),
        ConvUnit(c3, c4, 3, 2, 1), *_residual(c4, 2),
        ConvUnit(c4, c5, 3, 2, 1), *_residual(c5, 2),
        ConvUnit(c5, c5, 3, last_stride, 1),
        ConvUnit(c5, c5, 3, 1, 0),
        ConvUnit(c5, c5, 1, 1, 0),
    )


def audio_encoder(channels: tuple[int, ...]) -> nn.Sequential:
    """The audio tower: (B, 1, 80, 16) -> (B, c5, 1, 1)."""
    c1, c2, c3, c4, c5 = channels
    return nn.Sequential(
        ConvUnit(1, c1, 3, 1, 1), *_residual(c1, 2),
        ConvUnit(c1, c2, 3, (3, 1), 1), *_residual(c2, 2),
        ConvUnit(c2, c3, 3, 3, 1), *_residual(c3, 2),
        ConvUnit(c3, c4, 3, (3, 2), 1), *_residual(c4, 2),
        ConvUnit(c4, c5, 3, 1, 0),
        ConvUnit(c5, c5, 1, 1, 0),
    )


class SyncNet(nn.Module):
    """Lip-sync expert: (mel chunks, lower-face stacks) -> (audio, face) unit embeddings."""

    def __init__(self, config: SyncNetConfig | None = None) -> None:
        super().__init__()
        self.config = config or SyncNetConfig()
        self.face_encoder = face_encoder(self.config.stage_channels, self.config.face_size)
        self.audio_encoder = audio_encoder(self.config.stage_channels)

    def embed_faces(self, faces: Tensor) -> Tensor:
        """(B, 15, face_size/2, face_size) lower-face stacks in 0..1 -> (B, D) unit vectors."""
        size = self.config.face_size
        if faces.dim() != 4 or tuple(faces.shape[1:]) != (3 * FRAMES, size // 2, size):
            raise ValueError(f"faces must be (B, {3 * FRAMES}, {size // 2}, {size}), got {tuple(faces.shape)}")
        return F.normalize(self.face_encoder(faces).flatten(1), p=2, dim=1)

    def embed_audio(self, mels: Tensor) -> Tensor:
        """(B, 1, 80, 16) mel chunks -> (B, D) unit vectors."""
        if mels.dim() != 4 or tuple(mels.shape[1:]) != (1, NUM_MELS, MEL_STEPS):
            raise ValueError(f"mel chunks must be (B, 1, {NUM_MELS}, {MEL_STEPS}), got {tuple(mels.shape)}")
        return F.normalize(self.audio_encoder(mels).flatten(1), p=2, dim=1)

    def forward(self, mels: Tensor, faces: Tensor) -> tuple[Tensor, Tensor]:
        """(audio embedding, face embedding); audio first, as the released model's call sites pass them."""
        return self.embed_audio(mels), self.embed_faces(faces)


def cosine_sync(audio_embedding: Tensor, face_embedding: Tensor) -> Tensor:
    """The expert's sync probability: the cosine of the two embeddings, clamped into (0, 1) for BCE.

    The embeddings come out of ReLUs, so the cosine is already >= 0; the clamp keeps log() finite.
    """
    return F.cosine_similarity(audio_embedding, face_embedding).clamp(1e-6, 1 - 1e-6)
