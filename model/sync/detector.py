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

import hashlib
import os
from collections import OrderedDict
from typing import Any, Iterable, Iterator

import numpy as np
import torch

from avlips.media.sample import WindowSample
from avlips.model.detectors import AUDIO, FRAMES, Detector, DetectorError, Readiness, WindowScore
from avlips.model.sync.curve import Calibration, curves_from_embeddings, embed_chunks
from avlips.model.sync.frontend import WindowInputs, window_inputs
from avlips.model.sync.weights import LoadedExpert, load_expert
from avlips.params import default_param

__all__ = ["SyncDetector", "NO_SPEECH", "NO_ALIGNED_AUDIO"]

NO_SPEECH = "no speech"
NO_ALIGNED_AUDIO = "no audio at offset 0"
DEFAULT_OFFSETS = 15             # +-0.6 s at 25 fps, as LSE searches
DEFAULT_MIN_SPEECH_DBFS = -45.0  # a window quieter than this has no speech to sync with
AUDIO_CACHE_WINDOWS = 4096       # windows whose audio embeddings are kept (about 2 MB per 1000 at 128-d)


def _audio_key(sample: WindowSample, offsets: int) -> tuple:
    """What a window's audio embeddings depend on: its samples, their placement, the fps and the offsets."""
    placement = (sample.meta or {}).get("audio") or {}
    digest = hashlib.blake2b(np.ascontiguousarray(sample.audio).tobytes(), digest_size=16).hexdigest()
    return (digest, int(placement.get("window_start", 0)), float((sample.meta or {}).get("fps") or 25.0), offsets)


class SyncDetector(Detector):
    """Lip-audio sync under a lip-sync expert trained on real video only."""

    name = "sync"
    version = "1"
    reads = (FRAMES, AUDIO)
    trainable = True

    def __init__(self, model: str = default_param("detectors.sync.model"), expert_weights: str = "",
                 offsets: int | None = None,
                 min_speech_dbfs: float | None = None, batch_size: int = 32, device: str = "cpu",
                 **training: Any) -> None:
        # offsets / min_speech_dbfs left out: those the expert was trained and calibrated with (else 15, -45).
        # Other keys (params.yaml `sync:` training settings: steps, lr, ...) are kept for train().
        self.model_path = model or ""
        self.expert_weights = expert_weights or ""
        self._offsets = offsets
        self._min_speech_dbfs = min_speech_dbfs
        self.batch_size = max(1, min(int(batch_size), AUDIO_CACHE_WINDOWS // 2))
        self.device = "cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device)
        self.training = training
        self._expert: LoadedExpert | None = None
        self._audio_cache: OrderedDict[tuple, torch.Tensor] = OrderedDict()  # audio key -> (K, D) embeddings

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
        pending: list[tuple[str, WindowInputs, tuple]] = []
        for sample in samples:
            self.check_fields(sample)
            key = _audio_key(sample, offsets)
            # A window's perturbed copies share its audio: their chunks are embedded once.
            inputs = window_inputs(sample, offsets, face_size, with_chunks=key not in self._audio_cache)
            pending.append((sample.key, inputs, key))
            if len(pending) >= self.batch_size:
                yield from self._score_batch(pending, expert, calibration)
                pending = []
        if pending:
            yield from self._score_batch(pending, expert, calibration)

    def _score_batch(self, batch: list[tuple[str, WindowInputs, tuple]], expert: LoadedExpert,
                     calibration: Calibration) -> Iterator[WindowScore]:
        """Scores in input order: abstentions for silent windows or those without aligned audio."""
        threshold = self.min_speech_dbfs
        scorable = [i for i, (_, inputs, _) in enumerate(batch)
                    if inputs.speech_dbfs >= threshold and (inputs.offsets == 0).any()]
        for i in scorable:  # most recent first: inserting this batch's new keys never evicts its cached ones
            if batch[i][2] in self._audio_cache:
                self._audio_cache.move_to_end(batch[i][2])
        missing = [i for i in scorable if batch[i][2] not in self._audio_cache]
        for i, embedded in zip(missing, embed_chunks(expert.model, [batch[i][1].chunks for i in missing], self.device)):
            self._remember(batch[i][2], embedded)
        audio = [self._audio_cache[batch[i][2]] for i in scorable]
        curves = []
        if scorable:
            with torch.no_grad():
                faces = expert.model.eval().embed_faces(
                    torch.from_numpy(np.stack([batch[i][1].faces for i in scorable])).to(self.device))
            curves = curves_from_embeddings(faces, audio, [batch[i][1].offsets for i in scorable])
        by_index = dict(zip(scorable, curves))
        for index, (key, inputs, _) in enumerate(batch):
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

    def _remember(self, key: tuple, embedded: torch.Tensor) -> None:
        self._audio_cache[key] = embedded
        self._audio_cache.move_to_end(key)
        while len(self._audio_cache) > AUDIO_CACHE_WINDOWS:
            self._audio_cache.popitem(last=False)

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
        return summary
