"""The offset curve of a window under the expert, the LSE-style numbers read from it, and its probability map.

For one window the expert embeds the lips once and the audio at every offset; the distance (1 - cosine
of the unit embeddings) per offset is the curve. As SyncNet's LSE scores (UPSTREAM.md section 6): the best
offset is the argmin, the confidence is the median distance minus the minimum, and we add the distance at
offset 0. A window is suspicious when offset 0 is no better than a typical offset: `sync_margin` =
distance at 0 minus the median distance (negative and large for real speech, near 0 when lips and audio are
unrelated). The probability of fake is a logistic of that margin, calibrated on real validation windows
only (never on fakes): 0.5 at their 95th percentile, so about 5% of real windows are called fake.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
import torch

from avlips.model.sync.network import SyncNet

__all__ = ["OffsetCurve", "Calibration", "offset_curves", "embed_chunks", "curves_from_embeddings", "REAL_QUANTILE"]

REAL_QUANTILE = 0.95  # the share of real validation windows scored below probability 0.5


@dataclass(frozen=True)
class OffsetCurve:
    """Distances (1 - cosine) of one window's lips to its audio at each available offset (frames)."""

    offsets: np.ndarray
    distances: np.ndarray

    @property
    def best_offset(self) -> int:
        return int(self.offsets[int(np.argmin(self.distances))])

    @property
    def min_distance(self) -> float:
        return float(self.distances.min())

    @property
    def confidence(self) -> float:
        """LSE-C style: median distance over offsets minus the minimum (higher: more clearly in sync)."""
        return float(np.median(self.distances) - self.distances.min())

    @property
    def dist_at_0(self) -> float:
        """The distance at offset 0, or NaN when the window's audio has no aligned chunk."""
        hit = np.flatnonzero(self.offsets == 0)
        return float(self.distances[hit[0]]) if hit.size else float("nan")

    @property
    def sync_margin(self) -> float:
        """Distance at offset 0 minus the median distance: the fake-ness the probability is read from."""
        return self.dist_at_0 - float(np.median(self.distances))


@dataclass(frozen=True)
class Calibration:
    """p(fake) = sigmoid((sync_margin - center) / scale), fixed from real validation windows."""

    center: float = 0.0
    scale: float = 0.05
    fitted_on: int = 0  # real windows it was fit on; 0: the uncalibrated default

    @classmethod
    def fit(cls, real_margins: Sequence[float]) -> "Calibration":
        """0.5 at the REAL_QUANTILE of real windows' margins; scale half their standard deviation."""
        values = np.asarray([v for v in real_margins if np.isfinite(v)], dtype=np.float64)
        if values.size < 2:
            raise ValueError(f"calibration needs at least two real windows with speech, got {values.size}")
        scale = max(float(values.std()) / 2.0, 1e-4)
        return cls(center=float(np.quantile(values, REAL_QUANTILE)), scale=scale, fitted_on=int(values.size))

    @classmethod
    def from_dict(cls, data: dict | None) -> "Calibration":
        return cls(**{k: data[k] for k in ("center", "scale", "fitted_on") if k in data}) if data else cls()

    def to_dict(self) -> dict:
        return asdict(self)

    def probability(self, margin: float) -> float:
        """Probability of fake for a window's sync margin."""
        return float(1.0 / (1.0 + np.exp(-np.clip((margin - self.center) / self.scale, -60, 60))))


@torch.no_grad()
def embed_chunks(model: SyncNet, chunks: Sequence[np.ndarray], device: str | torch.device = "cpu") -> list[torch.Tensor]:
    """Audio embeddings (K_i, D) of each window's mel chunks (K_i, 1, 80, 16), in one pass."""
    if not chunks:
        return []
    model.eval()
    embedded = model.embed_audio(torch.from_numpy(np.concatenate(chunks)).to(device))
    return list(torch.split(embedded, [len(c) for c in chunks]))


def curves_from_embeddings(face_embeddings: torch.Tensor, audio_embeddings: Sequence[torch.Tensor],
                           offsets: Sequence[np.ndarray]) -> list[OffsetCurve]:
    """Curves of windows whose lips (B, D) and audio at each offset (K_i, D) are already embedded."""
    curves = []
    for index, audio in enumerate(audio_embeddings):
        distance = 1.0 - (audio * face_embeddings[index:index + 1]).sum(dim=1)
        curves.append(OffsetCurve(np.asarray(offsets[index]), distance.double().cpu().numpy()))
    return curves


@torch.no_grad()
def offset_curves(model: SyncNet, faces: Sequence[np.ndarray], chunks: Sequence[np.ndarray],
                  offsets: Sequence[np.ndarray], device: str | torch.device = "cpu") -> list[OffsetCurve]:
    """Curves for a batch of windows: faces (15, h, w) each, chunks (K_i, 1, 80, 16) at offsets (K_i,)."""
    if not faces:
        return []
    model.eval()
    face_embeddings = model.embed_faces(torch.from_numpy(np.stack(faces)).to(device))
    return curves_from_embeddings(face_embeddings, embed_chunks(model, chunks, device), offsets)
