"""The Wav2Lip generator network, laid out so its state dict matches the released checkpoints key for key."""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["ConvUnit", "TransposeConvUnit", "Wav2Lip", "FACE_SIZE", "MEL_STEPS", "NUM_MELS"]

FACE_SIZE = 96  # side of the square face crop the network was trained on
NUM_MELS = 80  # mel bands of one audio chunk
MEL_STEPS = 16  # mel columns of one audio chunk (0.2 s at 80 columns per second)


class ConvUnit(nn.Module):
    """Conv2d + BatchNorm2d + ReLU, optionally adding the input back before the ReLU."""

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel_size: int,
        stride: int | tuple[int, int] = 1,
        padding: int = 0,
        residual: bool = False,
    ) -> None:
        super().__init__()
        # Attribute names (conv_block.0 / conv_block.1) are fixed by the released checkpoint keys.
        self.conv_block = nn.Sequential(
            nn.Conv2d(cin, cout, kernel_size, stride, padding), nn.BatchNorm2d(cout)
        )
        self.act = nn.ReLU()
        self.residual = residual

    def forward(self, x: Tensor) -> Tensor:
        """Apply the unit."""
        out = self.conv_block(x)
        if self.residual:
            out = out + x
        return self.act(out)


class TransposeConvUnit(nn.Module):
    """ConvTranspose2d + BatchNorm2d + ReLU (the decoder's upsampling step)."""

    def __init__(
        self, cin: int, cout: int, kernel_size: int, stride: int, padding: int, output_padding: int = 0
    ) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ConvTranspose2d(cin, cout, kernel_size, stride, padding, output_padding),
            nn.BatchNorm2d(cout),
        )
        self.act = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        """Apply the unit."""
        return self.act(self.conv_block(x))


def _res(ch: int, n: int) -> list[nn.Module]:
    """n residual 3x3 units that keep channels and size."""
    return [ConvUnit(ch, ch, 3, 1, 1, residual=True) for _ in range(n)]


def _up(cin: int, cout: int, n_res: int) -> nn.Sequential:
    """A decoder block: x2 transposed-conv upsampling followed by n_res residual units."""
    return nn.Sequential(TransposeConvUnit(cin, cout, 3, 2, 1, output_padding=1), *_res(cout, n_res))


class Wav2Lip(nn.Module):
    """Wav2Lip generator: (mel chunk, masked+reference face) -> lower-face-synced face in 0..1.

    Spatial sizes of the face path (96x96 input):
    encoder 96 -> 48 -> 24 -> 12 -> 6 -> 3 -> 1; the audio path maps 80x16 -> 27x16 -> 9x6 -> 3x3 -> 1x1;
    the decoder starts from the 1x1 audio embedding and climbs back 1 -> 3 -> 6 -> ... -> 96, concatenating
    the encoder feature of the same size after every block (U-Net skips).
    """

    def __init__(self) -> None:
        super().__init__()
        self.face_encoder_blocks = nn.ModuleList(
            [
                nn.Sequential(ConvUnit(6, 16, 7, 1, 3)),  # 96
                nn.Sequential(ConvUnit(16, 32, 3, 2, 1), *_res(32, 2)),  # 48
                nn.Sequential(ConvUnit(32, 64, 3, 2, 1), *_res(64, 3)),  # 24
                nn.Sequential(ConvUnit(64, 128, 3, 2, 1), *_res(128, 2)),  # 12
                nn.Sequential(ConvUnit(128, 256, 3, 2, 1), *_res(256, 2)),  # 6
                nn.Sequential(ConvUnit(256, 512, 3, 2, 1), *_res(512, 1)),  # 3
                nn.Sequential(ConvUnit(512, 512, 3, 1, 0), ConvUnit(512, 512, 1, 1, 0)),  # 1
            ]
        )
        self.audio_encoder = nn.Sequential(
            ConvUnit(1, 32, 3, 1, 1),  # 80x16
            *_res(32, 2),
            ConvUnit(32, 64, 3, (3, 1), 1),  # 27x16
            *_res(64, 2),
            ConvUnit(64, 128, 3, 3, 1),  # 9x6
            *_res(128, 2),
            ConvUnit(128, 256, 3, (3, 2), 1),  # 3x3
            *_res(256, 1),
            ConvUnit(256, 512, 3, 1, 0),  # 1x1
            ConvUnit(512, 512, 1, 1, 0),
        )
        self.face_decoder_blocks = nn.ModuleList(
            [
                nn.Sequential(ConvUnit(512, 512, 1, 1, 0)),  # 1 (+512 skip)
                nn.Sequential(TransposeConvUnit(1024, 512, 3, 1, 0), *_res(512, 1)),  # 3 (+512)
                _up(1024, 512, 2),  # 6 (+256)
                _up(768, 384, 2),  # 12 (+128)
                _up(512, 256, 2),  # 24 (+64)
                _up(320, 128, 2),  # 48 (+32)
                _up(160, 64, 2),  # 96 (+16)
            ]
        )
        self.output_block = nn.Sequential(
            ConvUnit(80, 32, 3, 1, 1), nn.Conv2d(32, 3, kernel_size=1, stride=1, padding=0), nn.Sigmoid()
        )

    def forward(self, audio_sequences: Tensor, face_sequences: Tensor) -> Tensor:
        """Generate faces from mel chunks (B,1,80,16) and faces (B,6,96,96); returns (B,3,96,96) in 0..1.

        The argument order (audio first) is the released model's, so ported call sites keep working.
        Time-stacked inputs as used in training, audio (B,T,1,80,16) with faces (B,6,T,96,96), give (B,3,T,96,96).
        """
        batch = audio_sequences.size(0)
        stacked = face_sequences.dim() > 4
        if stacked:
            # Fold time into the batch, time-major, and unfold it the same way at the end.
            audio_sequences = torch.cat(audio_sequences.unbind(1), dim=0)
            face_sequences = torch.cat(face_sequences.unbind(2), dim=0)

        x = self.audio_encoder(audio_sequences)  # (N, 512, 1, 1)

        feats: list[Tensor] = []
        f = face_sequences
        for block in self.face_encoder_blocks:
            f = block(f)
            feats.append(f)

        for block in self.face_decoder_blocks:
            x = block(x)
            skip = feats.pop()
            if x.shape[2:] != skip.shape[2:]:
                raise ValueError(
                    f"decoder output {tuple(x.shape)} does not line up with encoder skip {tuple(skip.shape)}; "
                    f"face input must be {FACE_SIZE}x{FACE_SIZE} and mel chunks {NUM_MELS}x{MEL_STEPS}"
                )
            x = torch.cat((x, skip), dim=1)

        out = self.output_block(x)
        if stacked:
            out = torch.stack(torch.split(out, batch, dim=0), dim=2)
        return out
