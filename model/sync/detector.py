"""The `sync` detector: slide the window's audio against its lips under the lip-sync expert, score the curve.

For each window: the expert's distance (1 - cosine) between the five lower-face frames and the audio at
every offset of -offsets..+offsets frames that the window's audio context holds (curve.py), the LSE-style
numbers of that curve (best offset, confidence = median - minimum, distance at offset 0), and a
probability of fake from the sync margin (distance at 0 minus the median), calibrated on real validation
windows when the expert was trained here. A window whose own audio is quieter than `min_speech_dbfs`
abstains with "no speech": with nothing said there is no sync to measure (UPSTREAM.md section 6).

Weights: our expert at `model` (trained by `avlips train-sync`, real windows only) or, when that file does
not exist, a released `lipsync_expert.pth` at `expert_weights` (face crops of 96, uncalibrated map:
probability 0.5 where offset 0 is no closer than the median offset).
"""
from __future__ import annotations

import os
from typing import Any, Iterable, Iterator, NamedTuple

import numpy as np
import torch

from avlips.media.sample import WindowSample
from avlips.model.detectors import AUDIO, FRAMES, Detector, DetectorError, Readiness, WindowScore
from avlips.model.feature_cache import FeatureCache, cache_from_setting, content_key
from avlips.model.sync.curve import Calibration, curves_from_embeddings, embed_chunks
from avlips.model.sync.frontend import WindowInputs, window_inputs
from avlips.model.sync.weights import LoadedExpert, load_expert
from avlips.params import default_param

__all__ = ["SyncDetector", "NO_SPEECH", "NO_ALIGNED_AUDIO"]

NO_SPEECH = "no speech"
NO_ALIGNED_AUDIO = "no audio at offset 0"
DEFAULT_OFFSETS = 15             # +-0.6 s at 25 fps, as LSE searches
DEFAULT_MIN_SPEECH_DBFS = -45.0  # a window quieter than this has no speech to sync with


def _audio_key(sample: WindowSample, offsets: int) -> tuple:
    """What a window's audio embeddings depend on: its samples, their placement, the fps and the offsets."""
    placement = (sample.meta or {}).get("audio") or {}
    return content_key(np.asarray(sample.audio), context=(
        int(placement.get("window_start", 0)), float((sample.meta or {}).get("fps") or 25.0), offsets))


def _face_key(sample: WindowSample, face_size: int) -> tuple:
    """What a window's lip embedding depends on: its frames, how they were cropped and the expert's face size."""
    meta = sample.meta or {}
    return content_key(np.asarray(sample.frames), context=(str(meta.get("crop", "full")),
                                                           float(meta.get("crop_scale") or 0.0), face_size))


class _Pending(NamedTuple):
    """A window waiting for its batch: its expert inputs and, when cached, the embeddings they would give."""

    key: str
    inputs: WindowInputs
    audio_key: tuple
    audio: torch.Tensor | None  # (K, D) at each offset, or None: to embed from inputs.chunks
    face_key: tuple
    face: torch.Tensor | None   # (D,), or None: to embed from inputs.faces


def _completed(cache: FeatureCache, entries: list[tuple], embed) -> list[torch.Tensor]:
    """Each entry's (found or None, key, inputs) embedding: the found ones as they are, the others embedded in
    one call and kept in the cache."""
    values = [found for found, _, _ in entries]
    missing = [n for n, value in enumerate(values) if value is None]
    if missing:
        for n, embedded in zip(missing, embed([entries[n][2] for n in missing])):
            values[n] = embedded.clone()  # its own memory: the batch's tensor is not kept alive by the cache
            cache.put(entries[n][1], values[n])
    return values


class SyncDetector(Detector):
    """Lip-audio sync under a lip-sync expert trained on real video only."""

    name = "sync"
    version = "1"
    reads = (FRAMES, AUDIO)
    trainable = True

    def __init__(self, model: str = default_param("detectors.sync.model"), expert_weights: str = "",
                 offsets: int | None = None,
                 min_speech_dbfs: float | None = None, batch_size: int = 32, device: str = "cpu",
                 feature_cache_mb: int = 64, **training: Any) -> None:
        # offsets / min_speech_dbfs left out: those the expert was trained and calibrated with (else 15, -45).
        # Other keys (params.yaml `sync:` training settings: steps, lr, ...) are kept for train().
        self.model_path = model or ""
        self.expert_weights = expert_weights or ""
        self._offsets = offsets
        self._min_speech_dbfs = min_speech_dbfs
        self.batch_size = max(1, int(batch_size))
        self.device = "cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device)
        self.training = training
        self._expert: LoadedExpert | None = None
        # A window's perturbed copies share its audio (video types) or its frames (audio types): the
        # untouched half's embeddings are looked up by content (model/feature_cache.py), not made again.
        whole = cache_from_setting(feature_cache_mb, "detectors.sync.feature_cache_mb")
        self._audio_cache = FeatureCache(whole.max_bytes // 2)  # audio key -> (K, D) embeddings at each offset
        self._face_cache = FeatureCache(whole.max_bytes // 2)   # face key -> (D,) lip embedding

    # ------------------------------------------------------------------ weights

    def weights_path(self) -> str:
        """The file the detector scores with: our trained expert if it exists, else the released one."""
        if self.model_path and os.path.isfile(self.model_path):
            return self.model_path
        if self.expert_weights:
            return self.expert_weights
        return self.model_path

    def expert(self) -> LoadedExpert:
        """The loaded expert (once); a missing or unusable file is a DetectorError naming it."""
        if self._expert is None:
            path = self.weights_path()
            if not path:
                raise DetectorError("sync: no expert weights configured (sync.model or sync.expert_weights)")
            if not os.path.isfile(path):
                raise DetectorError(f"{path}: lip-sync expert not found (run `avlips train-sync`, or set "
                                    f"sync.expert_weights to a released lipsync_expert.pth)")
            self._expert = load_expert(path)
            self._expert.model.to(self.device).eval()
            self._audio_cache.clear()
            self._face_cache.clear()
        return self._expert

    def _trained_with(self, key: str, given: Any, default: Any) -> Any:
        if given is not None:
            return given
        stored = (self.expert().extra.get("config") or {}).get(key)
        return default if stored is None else stored

    @property
    def offsets(self) -> int:
        """Offsets searched either side of 0, in frames."""
        return int(self._trained_with("offsets", self._offsets, DEFAULT_OFFSETS))

    @property
    def min_speech_dbfs(self) -> float:
        """Windows whose own audio is quieter than this (dBFS) abstain."""
        return float(self._trained_with("min_speech_dbfs", self._min_speech_dbfs, DEFAULT_MIN_SPEECH_DBFS))

    def calibration(self) -> Calibration:
        """The probability map stored with the expert (the uncalibrated default for a released file)."""
        return Calibration.from_dict(self.expert().extra.get("calibration"))

    def readiness(self) -> Readiness:
        try:
            expert = self.expert()
        except DetectorError as exc:
            return Readiness(False, str(exc))
        how = "calibrated on real val windows" if self.calibration().fitted_on else "uncalibrated"
        trained_on = (expert.extra.get("provenance") or {}).get("trained_on", "")
        kind = "released expert" if expert.released else \
            ("trained here, real windows only" if trained_on == "real only" else "released weights")
        return Readiness(True, f"{expert.path} ({kind}, {how})")

    def provenance(self) -> dict:
        expert = self.expert()
        if expert.released:
            # We cannot check what a user-supplied file was trained on; its publisher says (Wav2Lip's: LRS2).
            return {"weights": expert.path, "released": True, "synthetic": None,
                    "trained_on": "a released lip-sync expert, not trained here",
                    "corpus": {"sources": [], "note": f"{expert.path} is a released expert: its training data is "
                                                      f"what its publisher says (Wav2Lip's lipsync_expert.pth: LRS2)"}}
        return {"weights": expert.path, **dict(expert.extra.get("provenance") or {})}

    # ------------------------------------------------------------------ scoring

    def score(self, samples: Iterable[WindowSample]) -> Iterator[WindowScore]:
        expert = self.expert()
        face_size, offsets = expert.model.config.face_size, self.offsets
        calibration = self.calibration()
        pending: list[_Pending] = []
        for sample in samples:
            self.check_fields(sample)
            audio_key, face_key = _audio_key(sample, offsets), _face_key(sample, face_size)
            # Held from here on: evicting them later in the batch cannot leave a window without its inputs.
            audio, face = self._audio_cache.get(audio_key), self._face_cache.get(face_key)
            inputs = window_inputs(sample, offsets, face_size, with_chunks=audio is None, with_faces=face is None)
            pending.append(_Pending(sample.key, inputs, audio_key, audio, face_key, face))
            if len(pending) >= self.batch_size:
                yield from self._score_batch(pending, expert, calibration)
                pending = []
        if pending:
            yield from self._score_batch(pending, expert, calibration)

    def _score_batch(self, batch: list[_Pending], expert: LoadedExpert,
                     calibration: Calibration) -> Iterator[WindowScore]:
        """Scores in input order: abstentions for silent windows or those without aligned audio."""
        threshold = self.min_speech_dbfs
        scorable = [i for i, item in enumerate(batch)
                    if item.inputs.speech_dbfs >= threshold and (item.inputs.offsets == 0).any()]
        curves = []
        if scorable:
            model = expert.model.eval()
            items = [batch[i] for i in scorable]

            @torch.no_grad()
            def embed_faces(faces: list[np.ndarray]) -> torch.Tensor:
                return model.embed_faces(torch.from_numpy(np.stack(faces)).to(self.device))

            audio = _completed(self._audio_cache, [(it.audio, it.audio_key, it.inputs.chunks) for it in items],
                               lambda chunks: embed_chunks(model, chunks, self.device))
            faces = _completed(self._face_cache, [(it.face, it.face_key, it.inputs.faces) for it in items], embed_faces)
            curves = curves_from_embeddings(torch.stack(faces), audio, [it.inputs.offsets for it in items])
        by_index = dict(zip(scorable, curves))
        for index, (key, inputs, *_) in enumerate(batch):
            details = {"offsets_available": int(len(inputs.offsets)), "offsets_wanted": inputs.offsets_wanted,
                       "speech_dbfs": round(float(inputs.speech_dbfs), 2)}
            curve = by_index.get(index)
            if curve is None:
                reason = NO_SPEECH if inputs.speech_dbfs < threshold else NO_ALIGNED_AUDIO
                yield WindowScore(key, None, reason, details)
                continue
            details.update(best_offset=curve.best_offset, confidence=round(curve.confidence, 6),
                           dist_at_0=round(curve.dist_at_0, 6), min_distance=round(curve.min_distance, 6),
                           sync_margin=round(curve.sync_margin, 6))
            yield WindowScore(key, calibration.probability(curve.sync_margin), "", details)

    # ------------------------------------------------------------------ training

    def train(self, train_shards: str | list[str], val_shards: str | list[str], seed: int = 1234) -> dict:
        """Train the expert on the real windows of the shards (train.py) into `model`; its summary."""
        from avlips.model.sync.train import SyncTrainConfig, train_sync

        given = {"offsets": self._offsets, "min_speech_dbfs": self._min_speech_dbfs}
        block = {**self.training, **{k: v for k, v in given.items() if v is not None},
                 "expert_weights": self.expert_weights}
        summary = train_sync(train_shards, val_shards, self.model_path, SyncTrainConfig.from_params(block, seed=seed))
        self._expert = None
        self._audio_cache.clear()
        self._face_cache.clear()
        return summary
