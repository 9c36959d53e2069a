"""LipFD behind the detector contract (`avlips.detectors` entry point `lipfd`).

The checkpoints, the released-checkpoint loading and the inputs are those of `model.evaluate`'s
`load_detector`; only the feeding differs: decoded window samples instead of shard paths. Each batch
is rendered and resized exactly as the loader's one-pass collate does (the same uint8 composite,
the numba kernels on the CPU, then moved to the model's device), and batches are formed from the
samples in the order given, so scores equal those of scoring the shards through the loader (to float
rounding: on the CPU the crops' backbone runs on channels-last weights, about 20% faster). The
composites and the crops are written into buffers kept from batch to batch: fresh ones cost more in page
faults than the work that fills them.

A perturbation leaves half of a window alone: an audio one the frames, a video one the mel strip. The
crops' backbone features depend only on the frames, and conv1's top rows of the global view only on the
strip, its bottom rows only on the frames: each is kept by the content it reads (model/feature_cache.py,
model/global_bands.py), so a perturbed copy computes only the half it changed (and conv1's middle rows),
then the encoder and the head. The forward pass is the model's own, in its parts.
"""
from __future__ import annotations

import os
from typing import Iterable, Iterator

import numpy as np
import torch

from avlips.media.sample import WindowSample
from avlips.model.detectors import FRAMES, MEL, Detector, DetectorError, Readiness, WindowScore
from avlips.model.feature_cache import cache_from_setting, content_key
from avlips.model.global_bands import FRAME_PART, BandedConv1, bands_of
from avlips.params import default_param

LIPFD_FRAMES = 5  # the composite holds five frames


class LipFDDetector(Detector):
    """The reference detector: a window's composite (mel strip over five frames) -> P(fake)."""

    name = "lipfd"
    version = "1"
    reads = (FRAMES, MEL)
    trainable = True  # `avlips train`

    def __init__(self, model: str = default_param("detectors.lipfd.model"), device: str = "auto",
                 batch_size: int = 16, feature_cache_mb: int = 256, global_cache_mb: int = 256) -> None:
        if int(batch_size) < 1:
            raise DetectorError(f"detectors.lipfd.batch_size must be >= 1, got {batch_size}")
        self.weights_path = str(model)
        self.device = str(device)
        self.batch_size = int(batch_size)
        self._loaded = None
        self._crops: np.ndarray | None = None  # the crops buffer, reused batch to batch
        self._composites: np.ndarray | None = None  # the batch's composites, rendered into the same memory
        self.crop_features = cache_from_setting(feature_cache_mb, "detectors.lipfd.feature_cache_mb")
        self.global_conv1 = BandedConv1(cache_from_setting(global_cache_mb, "detectors.lipfd.global_cache_mb"))

    def loaded(self):
        """The loaded model (model.evaluate.Detector), loaded on first use."""
        if self._loaded is None:
            from avlips.model.evaluate import load_detector

            self._loaded = load_detector(self.weights_path, self.device)
            if self._loaded.device.type == "cpu":
                # oneDNN's CPU convolutions of the small crops run about 20% faster on channels-last
                # weights (the same network; the values move by float rounding only).
                self._loaded.model.backbone.to(memory_format=torch.channels_last)
        return self._loaded

    def readiness(self) -> Readiness:
        if not os.path.isfile(self.weights_path):
            return Readiness(False, f"{self.weights_path}: no such model checkpoint (train one with `avlips train`)")
        try:
            loaded = self.loaded()
        except Exception as exc:  # a foreign or cut file: why, in one line
            return Readiness(False, str(exc))
        return Readiness(True, f"{self.weights_path} ({loaded.source} format, {loaded.input_mode}, "
                               f"crops {loaded.crop_size})")

    def provenance(self) -> dict:
        loaded = self.loaded()
        if loaded.source == "reference":
            return {"source": "the released LipFD checkpoint", "synthetic": False}
        return dict((getattr(loaded, "extra", None) or {}).get("provenance") or {})

    def score(self, samples: Iterable[WindowSample]) -> Iterator[WindowScore]:
        """P(fake) per window; a window LipFD cannot render is an abstention with the reason, not a crash."""
        from avlips.media.render_fast import render_sample_fast as render_sample  # the same values, fewer copies

        pending: list[tuple[str, np.ndarray | str]] = []  # (key, composite or why not), in order
        scorable = 0
        for sample in samples:
            self.check_fields(sample)
            if len(sample.frames) != LIPFD_FRAMES:
                pending.append((sample.key, f"LipFD needs {LIPFD_FRAMES} frames, the window has {len(sample.frames)}"))
            else:
                try:
                    pending.append((sample.key, render_sample(sample, out=self._composite_buffer(scorable))))
                    scorable += 1
                except Exception as exc:  # the loader skipped such samples; here they are counted
                    pending.append((sample.key, f"cannot render the composite ({exc})"))
            if scorable == self.batch_size:
                yield from self._flush(pending)
                pending, scorable = [], 0
        if pending:
            yield from self._flush(pending)

    @torch.no_grad()
    def _flush(self, pending: list[tuple[str, np.ndarray | str]]) -> Iterator[WindowScore]:
        from avlips.model.composite_inputs import composite_inputs, fast_path_suits
        from avlips.model.scoring import probabilities_of

        loaded = self.loaded()
        composites = [item for _, item in pending if not isinstance(item, str)]
        probabilities: list[float] = []
        if composites:
            config = loaded.loader_config(self.batch_size)
            frame_keys = [content_key(c[FRAME_PART]) for c in composites]
            keys = [(*key, config.crop_size, config.input_mode) for key in frame_keys]
            known = [self.crop_features.get(key) for key in keys]
            need = [feats is None for feats in known]
            model = loaded.model
            # Resized on the CPU as the loader's collate does, whatever the model's device.
            bands = bands_of(model.conv1) if fast_path_suits(composites, None) else None
            if bands is not None:  # conv1 by row bands, the known ones reused (model/global_bands.py)
                crops = self._fill_crops(composites, config, need)
                conv_out = self.global_conv1(model.conv1, bands, composites, frame_keys, config.input_mode,
                                             loaded.device)
                global_feat = model.encoder(conv_out)
            else:
                global_input, crops = composite_inputs(torch.from_numpy(np.stack(composites)), config, device=None)
                crops = crops[torch.tensor(need)]
                global_feat = model.encode_global(global_input.to(loaded.device))
            made = iter(model.crop_features(crops.to(loaded.device)) if any(need) else ())
            feats = []
            for key, cached in zip(keys, known):
                if cached is None:
                    cached = next(made).clone()  # its own memory: the batch's features are not kept alive
                    self.crop_features.put(key, cached)
                feats.append(cached)
            probabilities = probabilities_of(model.head(torch.stack(feats), global_feat))
        scores = iter(probabilities)
        for key, item in pending:
            if isinstance(item, str):
                yield WindowScore(key, None, item)
            else:
                yield WindowScore(key, float(next(scores)))

    def _composite_buffer(self, slot: int) -> np.ndarray:
        """The reused memory of a batch's slot-th composite (rendered anew each batch; nothing keeps it)."""
        from avlips.media.render import FRAME_SIDE, STRIP_HEIGHT

        if self._composites is None:
            self._composites = np.empty((self.batch_size, STRIP_HEIGHT + FRAME_SIDE, FRAME_SIDE * LIPFD_FRAMES, 3),
                                        np.uint8)
        return self._composites[slot]

    def _fill_crops(self, composites: list[np.ndarray], config, need_crops: list[bool]) -> torch.Tensor:
        """The numba kernels' crops of the composites in `need_crops`, in this detector's buffer (valid until
        the next batch)."""
        from avlips.model.composite_inputs import fill_fast
        from avlips.model.inputs import NUM_FRAMES, SCALE_BOXES

        crops_shape = (NUM_FRAMES * len(SCALE_BOXES), 3, config.crop_size, config.crop_size)
        b = sum(need_crops)
        if self._crops is None or len(self._crops) < b or self._crops.shape[1:] != crops_shape:
            self._crops = np.empty((max(b, self.batch_size), *crops_shape), np.float32)
        crops = self._crops[:b]
        fill_fast(composites, config, None, crops, need_crops)
        return torch.from_numpy(crops)
