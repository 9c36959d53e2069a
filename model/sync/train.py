"""Train the lip-sync expert on real windows only, self-supervised as Wav2Lip's expert was.

Each step takes a batch of real windows; the lips with their aligned audio chunk (offset 0) are a
positive, and two kinds of negative come from the same clip: the window's audio at `negatives_per_window`
other offsets (|offset| >= min_negative_offset, within its context), and `face_negatives` other windows'
lips of the clip with this window's aligned audio (Wav2Lip's own negative: another time of the same
video, where identity cues cannot help). No fake is ever read. The loss is binary cross-entropy on the
cosine of the unit embeddings, as the expert's (positives weighted to balance the negatives). With only
a few hundred demo windows the expert memorises them within ~100 steps unless each window is shown
differently every time: `augment` zooms, shifts, mirrors and recolours the crops and moves the audio's
level and mel bands (another voice).

Validation on the real val windows: how well the cosine tells aligned from shifted audio (AUC, off-sync
accuracy at 0.5), how often the best offset is within a frame of 0, and the sync margin of each window's
own audio against another val clip's speech (real audio only). The best validation step is kept, and the
probability map of the detector (curve.Calibration) is fit on the same real val windows.

    avlips train-sync            # params.yaml `sync:`
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Sequence

import cv2
import numpy as np
import torch
from torch.nn import functional as F

from avlips.model.detectors import DetectorError
from avlips.model.provenance import training_provenance
from avlips.model.sync.curve import Calibration, offset_curves
from avlips.model.sync.data import WindowSet, expand_shards, read_real_windows
from avlips.model.sync.network import SyncNet, SyncNetConfig, cosine_sync
from avlips.model.sync.weights import load_expert, save_expert

__all__ = ["SyncTrainConfig", "train_sync", "validate"]

log = logging.getLogger("avlips.sync")


@dataclass(frozen=True)
class SyncTrainConfig:
    """How the expert is trained (params.yaml `sync:`)."""

    stage_channels: tuple[int, ...] = (8, 16, 32, 64, 128)
    face_size: int = 48
    steps: int = 300
    batch_size: int = 32               # windows per step, each with one positive and its negatives
    negatives_per_window: int = 3      # the window's lips with its audio at other offsets
    face_negatives: int = 1            # another window's lips of the same clip with this window's aligned audio
    lr: float = 1.0e-3
    weight_decay: float = 0.0
    offsets: int = 15                  # offsets searched either side, frames
    min_negative_offset: int = 3       # nearer offsets are too like the aligned audio to call off-sync
    min_speech_dbfs: float = -45.0     # quieter windows are left out of training and abstained on
    val_every: int = 25
    augment: bool = True               # per-window zoom, shift, mirror, colour; audio level and mel-band shift
    expert_weights: str = ""           # start from these weights (a released lipsync_expert.pth); steps 0: calibrate only
    seed: int = 1234
    threads: int = 0                   # torch threads; 0: torch's default

    def __post_init__(self) -> None:
        object.__setattr__(self, "stage_channels", tuple(int(c) for c in self.stage_channels))

    @classmethod
    def from_params(cls, block: dict, seed: int = 1234) -> "SyncTrainConfig":
        """The config of a params.yaml `sync:` block (keys that are not training settings are ignored)."""
        known = {f for f in cls.__dataclass_fields__}
        values = {k: v for k, v in (block or {}).items() if k in known}
        values.setdefault("seed", seed)
        return cls(**values)


@dataclass
class ValSummary:
    """The expert on real validation windows: aligned against shifted audio."""

    windows: int = 0
    pairs_aligned: int = 0
    pairs_shifted: int = 0
    auc: float = float("nan")                 # cosine, aligned (positive) vs |offset| >= min_negative_offset
    offsync_accuracy: float = float("nan")    # balanced accuracy of cosine >= 0.5
    offset_within_1: float = float("nan")     # share of windows whose best offset is -1..1
    median_confidence: float = float("nan")
    swap_auc: float = float("nan")            # sync margin: own audio vs another val clip's (real audio only)
    extra: dict = field(default_factory=dict)


def validate(model: SyncNet, windows: WindowSet, config: SyncTrainConfig) -> tuple[ValSummary, list[float]]:
    """The validation summary, and each window's sync margin (for the calibration)."""
    from sklearn.metrics import roc_auc_score

    summary = ValSummary(windows=len(windows.windows))
    aligned, shifted, near_zero, confidences, margins = [], [], [], [], []
    for start in range(0, len(windows.windows), 64):
        batch = windows.windows[start:start + 64]
        curves = offset_curves(model, [w.faces for w in batch], [w.chunks for w in batch], [w.offsets for w in batch])
        for curve in curves:
            cosine = 1.0 - curve.distances
            aligned.extend(cosine[curve.offsets == 0])
            shifted.extend(cosine[np.abs(curve.offsets) >= config.min_negative_offset])
            near_zero.append(abs(curve.best_offset) <= 1)
            confidences.append(curve.confidence)
            margins.append(curve.sync_margin)
    summary.pairs_aligned, summary.pairs_shifted = len(aligned), len(shifted)
    summary.swap_auc = _swap_auc(model, windows, margins)
    if aligned and shifted:
        labels = [1] * len(aligned) + [0] * len(shifted)
        summary.auc = float(roc_auc_score(labels, aligned + shifted))
        summary.offsync_accuracy = float((np.mean(np.asarray(aligned) >= 0.5) + np.mean(np.asarray(shifted) < 0.5)) / 2)
    if near_zero:
        summary.offset_within_1 = float(np.mean(near_zero))
        summary.median_confidence = float(np.median(confidences))
    return summary, margins


def _swap_auc(model: SyncNet, windows: WindowSet, margins: list[float]) -> float:
    """AUC of the sync margin, each real val window with its own audio against the same lips with the audio
    of the window at the same position in another clip (a real speaker's real speech: no fake involved)."""
    from sklearn.metrics import roc_auc_score

    items = windows.windows
    clips = sorted({w.clip for w in items})
    if len(clips) < 2:
        return float("nan")
    by_clip = {clip: [w for w in items if w.clip == clip] for clip in clips}
    position = {id(w): n for clip in clips for n, w in enumerate(by_clip[clip])}  # the window's place in its clip
    faces, chunks, offsets = [], [], []
    for window in items:
        others = by_clip[clips[(clips.index(window.clip) + 1) % len(clips)]]
        donor = others[min(len(others) - 1, position[id(window)])]
        faces.append(window.faces)
        chunks.append(donor.chunks)
        offsets.append(donor.offsets)
    swapped = [c.sync_margin for c in offset_curves(model, faces, chunks, offsets)]
    values = [(m, 0) for m in margins if np.isfinite(m)] + [(m, 1) for m in swapped if np.isfinite(m)]
    return float(roc_auc_score([y for _, y in values], [m for m, _ in values]))


def _positive_and_negatives(window, rng: np.random.Generator, count: int, min_offset: int) -> np.ndarray | None:
    """Indices into the window's chunks: the aligned one, then `count` shifted ones (None if it has none)."""
    zero = np.flatnonzero(window.offsets == 0)
    far = np.flatnonzero(np.abs(window.offsets) >= min_offset)
    if not zero.size or not far.size:
        return None
    return np.concatenate([zero[:1], rng.choice(far, size=count, replace=far.size < count)])


def _augment_faces(faces: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One random look for the window's five frames: zoom and shift, mirror, colour gain and offset.

    Demo personas differ in face size, colours and background; varying those makes them weak cues for
    telling which audio belongs to which lips, and the mouth's motion the strong one.
    """
    channels, height, width = faces.shape
    zoom = rng.uniform(0.9, 1.1)
    shift = rng.uniform(-0.04, 0.04, size=2) * (width, height)
    matrix = np.array([[zoom, 0.0, (1 - zoom) * width / 2 + shift[0]],
                       [0.0, zoom, (1 - zoom) * height / 2 + shift[1]]], dtype=np.float64)
    planes = np.ascontiguousarray(faces.transpose(1, 2, 0))  # (h, w, 15): one warp for all frames
    out = np.stack([cv2.warpAffine(planes[:, :, i:i + 3], matrix, (width, height), flags=cv2.INTER_LINEAR,
                                   borderMode=cv2.BORDER_REPLICATE) for i in range(0, channels, 3)])
    out = out.transpose(0, 3, 1, 2)  # (5, 3, h, w)
    if rng.random() < 0.5:
        out = out[:, :, :, ::-1]
    gain = rng.uniform(0.8, 1.2) * rng.uniform(0.9, 1.1, size=(1, 3, 1, 1))  # overall and per colour
    out = out * gain + rng.uniform(-0.08, 0.08)
    return np.clip(out.reshape(channels, height, width), 0.0, 1.0).astype(np.float32)


def _augment_chunks(chunks: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One random voice for the window's chunks: a level change of +-6 dB (the normalised mel moves 0.08 per
    dB), a shift of up to 3 mel bands (another voice's pitch and formants), and faint noise."""
    bands = int(rng.integers(-3, 4))
    if bands:
        chunks = np.roll(chunks, bands, axis=2)
        edge = slice(0, bands) if bands > 0 else slice(bands, None)
        chunks[:, :, edge] = chunks[:, :, bands:bands + 1] if bands > 0 else chunks[:, :, bands - 1:bands]
    shifted = chunks + 0.08 * rng.uniform(-6.0, 6.0) + rng.normal(0.0, 0.05, size=chunks.shape)
    return np.clip(shifted, -4.0, 4.0).astype(np.float32)


def train_sync(train_shards: str | Sequence[str], val_shards: str | Sequence[str], out_path: str,
               config: SyncTrainConfig) -> dict:
    """Train (or, with steps 0 and expert_weights, only calibrate) the expert; write it to out_path; its summary."""
    started = time.time()
    if config.threads:
        torch.set_num_threads(int(config.threads))
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    if config.expert_weights:
        model = load_expert(config.expert_weights).model
    else:
        model = SyncNet(SyncNetConfig(tuple(config.stage_channels), config.face_size))
    face_size = model.config.face_size
    train_list, val_list = expand_shards(train_shards), expand_shards(val_shards)
    train = read_real_windows(train_list, config.offsets, face_size, config.min_speech_dbfs)
    val = read_real_windows(val_list, config.offsets, face_size, config.min_speech_dbfs)
    log.info("sync expert: %d real train windows (%d fakes skipped, %d silent), %d real val windows",
             len(train.windows), train.fakes_skipped, train.silent_skipped, len(val.windows))
    usable = [w for w in train.windows
              if (w.offsets == 0).any() and (np.abs(w.offsets) >= config.min_negative_offset).any()]
    if config.steps > 0 and not usable:
        raise DetectorError(f"no real train window with speech and shifted audio in {train_list[:3]}...: "
                            "nothing to train the sync expert on")
    if not val.windows:
        raise DetectorError(f"no real val window with speech in {val_list[:3]}: cannot validate or calibrate")

    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * min(step, config.steps) / max(config.steps, 1))))
    best_state = {k: v.clone() for k, v in model.state_dict().items()}
    best, _ = validate(model, val, config)
    best_step, history = 0, [{"step": 0, "auc": best.auc}]
    negatives = config.negatives_per_window
    # Windows of the same clip far enough apart in time (the audio there is another time's).
    same_clip = [[j for j, other in enumerate(usable) if other.clip == window.clip and j != i
                  and abs(other.start - window.start) >= config.min_negative_offset] for i, window in enumerate(usable)]
    for step in range(1, config.steps + 1):
        model.train()
        picks = rng.choice(len(usable), size=min(config.batch_size, len(usable)), replace=False)
        faces, chunks, labels = [], [], []
        pair_faces = []  # per chunk: the index into `faces` of the lips it is paired with
        for index in picks:
            window = usable[index]
            picked = window.chunks[_positive_and_negatives(window, rng, negatives, config.min_negative_offset)]
            own = len(faces)
            faces.append(_augment_faces(window.faces, rng) if config.augment else window.faces)
            chunks.append(_augment_chunks(picked, rng) if config.augment else picked)
            pair_faces += [own] * len(picked)
            labels += [1.0] + [0.0] * (len(picked) - 1)
            # The same clip's other lips against this window's aligned audio: Wav2Lip's own negatives
            # (another time of the same video), which no identity cue can tell apart.
            others = same_clip[index]
            for other in (rng.choice(others, size=config.face_negatives) if others else []):
                faces.append(_augment_faces(usable[other].faces, rng) if config.augment else usable[other].faces)
                chunks.append(chunks[-1][:1])
                pair_faces.append(len(faces) - 1)
                labels.append(0.0)
        face_embedding = model.embed_faces(torch.from_numpy(np.stack(faces)))
        audio_embedding = model.embed_audio(torch.from_numpy(np.concatenate(chunks)))
        probability = cosine_sync(audio_embedding, face_embedding[torch.as_tensor(pair_faces)])
        labels = torch.as_tensor(labels, dtype=probability.dtype)
        # As much weight on the positives as on the negatives.
        weights = torch.where(labels > 0, (labels == 0).sum() / labels.sum().clamp(min=1), torch.ones_like(labels))
        loss = F.binary_cross_entropy(probability, labels, weight=weights)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % config.val_every == 0 or step == config.steps:
            summary, _ = validate(model, val, config)
            history.append({"step": step, "loss": round(loss.item(), 4), "auc": summary.auc, "swap_auc": summary.swap_auc})
            log.info("sync expert step %d/%d loss %.4f val AUC %.4f off-sync acc %.3f best offset within 1: %.2f "
                     "swap AUC %.3f", step, config.steps, loss.item(), summary.auc, summary.offsync_accuracy,
                     summary.offset_within_1, summary.swap_auc)
            if summary.auc > best.auc:
                best, best_step = summary, step
                best_state = {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    best, margins = validate(model, val, config)
    calibration = Calibration.fit(margins)
    best.extra = {"best_step": best_step, "history": history, "seconds": round(time.time() - started, 1)}
    # As LipFD's checkpoints record it (corpus and its synthetic nature from compose, shard hashes), but
    # the generators of the shards' fakes are not what the expert learnt from: it never read them.
    trained_on = "real only" if config.steps > 0 else \
        "not trained here: released weights, calibrated on the real val windows"
    provenance = {**training_provenance(train_list, val_list), "generators": [], "trained_on": trained_on,
                  "init": config.expert_weights or "random", "train_windows": train.counts(),
                  "val_windows": val.counts()}
    settings = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(config).items()}
    save_expert(out_path, model, best_step, {"config": settings, "provenance": provenance,
                                             "val": asdict(best), "calibration": calibration.to_dict()})
    log.info("sync expert: best val AUC %.4f at step %d, calibration %s -> %s (%.0fs)",
             best.auc, best_step, calibration.to_dict(), out_path, time.time() - started)
    return {"val": asdict(best), "calibration": calibration.to_dict(), "provenance": provenance, "out": out_path}
