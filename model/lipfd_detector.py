"""LipFD behind the detector contract (`avlips.detectors` entry point `lipfd`).

The checkpoints, the released-checkpoint loading and the inputs are those of `model.evaluate`'s
`load_detector`; only the feeding differs: decoded window samples instead of shard paths. Each batch
is rendered and resized exactly as the loader's one-pass collate does (the same uint8 composite,
the numba kernels on the CPU, then moved to the model's device), and batches are formed from the
samples in the order given, so scores equal those of scoring the shards through the loader. As in the
loader, the network inputs are written into buffers kept from batch to batch: fresh ones (about 15 MB
a window) cost more in page faults than the resizes that fill them.

The crops' backbone features depend only on the composite's frame part, which an audio perturbation
leaves as it was: they are kept by that part's content (model/feature_cache.py), so the audio cells of an
evaluation run only the global view (the mel strip changed) and the head. The forward pass is the
model's own, in its two halves.
"""
from __future__ import annotations

import os
from typing import Iterable, Iterator

import numpy as np
import torch

from avlips.media.render import STRIP_HEIGHT
from avlips.media.sample import WindowSample
from avlips.model.detectors import FRAMES, MEL, Detector, DetectorError, Readiness, WindowScore
from avlips.model.feature_cache import cache_from_setting, content_key
from avlips.params import default_param

LIPFD_FRAMES = 5  # the composite holds five frames
FRAME_PART = np.s_[STRIP_HEIGHT:]  # the composite's rows the crops are cut from (the mel strip is above)


class LipFDDetector(Detector):
    """The reference detector: a window's composite (mel strip over five frames) -> P(fake)."""

    name = "lipfd"
    version = "1"
    reads = (FRAMES, MEL)
    trainable = True  # `avlips train`

    def __init__(self, model: str = default_param("detectors.lipfd.model"), device: str = "auto",
                 batch_size: int = 16, feature_cache_mb: int = 256) -> None:
        if int(batch_size) < 1:
            raise DetectorError(f"detectors.lipfd.batch_size must be >= 1, got {batch_size}")
        self.weights_path = str(model)
        self.device = str(device)
        self.batch_size = int(batch_size)
        self._loaded = None
        self._inputs: tuple[np.ndarray, np.ndarray] | None = None  # (global, crops) buffers, reused per batch
        self.crop_features = cache_from_setting(feature_cache_mb, "detectors.lipfd.feature_cache_mb")

    def loaded(self):
        """The loaded model (model.evaluate.Detector), loaded on first use."""
        if self._loaded is None:
            from avlips.model.evaluate import load_detector

            self._loaded = load_detector(self.weights_path, self.device)
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
                    pending.append((sample.key, render_sample(sample)))
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
            context = (config.crop_size, config.input_mode)
            keys = [content_key(c[FRAME_PART], context=context) for c in composites]
            known = [self.crop_features.get(key) for key in keys]
            need = [feats is None for feats in known]
            # Resized on the CPU as the loader's collate does, whatever the model's device.
            if fast_path_suits(composites, None):
                global_input, crops = self._fill_inputs(composites, config, need)
            else:
                global_input, crops = composite_inputs(torch.from_numpy(np.stack(composites)), config, device=None)
                crops = crops[torch.tensor(need)]
            model = loaded.model
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

    def _fill_inputs(self, composites: list[np.ndarray], config,
                     need_crops: list[bool]) -> tuple[torch.Tensor, torch.Tensor]:
        """The numba kernels' inputs of the composites, in this detector's buffers (valid until the next batch):
        the global view of each, the crops of those in `need_crops`."""
        from avlips.model.composite_inputs import fill_fast
        from avlips.model.inputs import GLOBAL_SIZE, NUM_FRAMES, SCALE_BOXES

        b, crops_shape = len(composites), (NUM_FRAMES * len(SCALE_BOXES), 3, config.crop_size, config.crop_size)
        if self._inputs is None or len(self._inputs[0]) < b or self._inputs[1].shape[1:] != crops_shape:
            rows = max(b, self.batch_size)
            # The global view in channels-last memory, as the training loader hands it over: conv1 runs
            # about 40% faster on it (model/loader.py).
            self._inputs = (np.empty((rows, GLOBAL_SIZE, GLOBAL_SIZE, 3), np.float32).transpose(0, 3, 1, 2),
                            np.empty((rows, *crops_shape), np.float32))
        global_input, crops = self._inputs[0][:b], self._inputs[1][:sum(need_crops)]
        fill_fast(composites, config, global_input, crops, need_crops)
        return torch.from_numpy(global_input), torch.from_numpy(crops)
