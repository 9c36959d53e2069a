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
from dataclasses import dataclass, field
from typing import Iterable, Iterator

import numpy as np
import torch

from avlips.media.render import STRIP_HEIGHT
from avlips.media.sample import WindowSample
from avlips.model.detectors import FRAMES, MEL, Detector, DetectorError, Readiness, WindowScore
from avlips.model.feature_cache import cache_from_setting, content_key
from avlips.model.global_bands import BandedConv1, Bands, Known, bands_of
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
        from avlips.media.render import render_sample
        from avlips.media.render_fast import fast_renderable, mel_colours

        pending: list[_Pending] = []  # in order; the composites are rendered per batch, as much as is needed
        scorable = 0
        for sample in samples:
            self.check_fields(sample)
            window = _Pending(sample.key, sample)
            if len(sample.frames) != LIPFD_FRAMES:
                window.reason = f"LipFD needs {LIPFD_FRAMES} frames, the window has {len(sample.frames)}"
            else:
                try:
                    if fast_renderable(sample):
                        window.mel_rgb = mel_colours(sample)
                    else:
                        window.composite = render_sample(sample)
                    scorable += 1
                except Exception as exc:  # the loader skipped such samples; here they are counted
                    window.reason = f"cannot render the composite ({exc})"
            pending.append(window)
            if scorable == self.batch_size:
                yield from self._flush(pending)
                pending, scorable = [], 0
        if pending:
            yield from self._flush(pending)

    @torch.no_grad()
    def _flush(self, pending: list["_Pending"]) -> Iterator[WindowScore]:
        from avlips.model.composite_inputs import composite_inputs, fast_path_available, fast_path_suits
        from avlips.model.scoring import probabilities_of

        loaded = self.loaded()
        model = loaded.model
        config = loaded.loader_config(self.batch_size)
        # conv1 by row bands, the known ones reused (model/global_bands.py), where the CPU kernels resize:
        # every composite reference-sized uint8 (the fast render's always are; render_sample's are checked).
        made_whole = [w.composite for w in pending if w.reason is None and w.composite is not None]
        suits = fast_path_suits(made_whole, None) if made_whole else fast_path_available()
        bands = bands_of(model.conv1) if suits else None
        self._render(pending, config, bands)
        windows = [w for w in pending if w.reason is None]
        probabilities: list[float] = []
        if windows:
            composites = [w.composite for w in windows]
            need = [w.crop_features is None for w in windows]
            if bands is not None:
                crops = self._fill_crops(composites, config, need)
                conv_out = self.global_conv1(model.conv1, bands, composites, [w.known for w in windows],
                                             [w.strip_key for w in windows], [w.frames_key for w in windows],
                                             config.input_mode, loaded.device)
                global_feat = model.encoder(conv_out)
            else:  # torch's resizes, on the CPU as the loader's collate does, whatever the model's device
                global_input, crops = composite_inputs(torch.from_numpy(np.stack(composites)), config, device=None)
                crops = crops[torch.tensor(need)]
                global_feat = model.encode_global(global_input.to(loaded.device))
            made = iter(model.crop_features(crops.to(loaded.device)) if any(need) else ())
            feats = []
            for window in windows:
                if window.crop_features is None:
                    window.crop_features = next(made).clone()  # its own memory: the batch's is not kept alive
                    if window.frames_key is not None:
                        self.crop_features.put((*window.frames_key, config.crop_size, config.input_mode),
                                               window.crop_features)
                feats.append(window.crop_features)
            probabilities = probabilities_of(model.head(torch.stack(feats), global_feat))
        scores = iter(probabilities)
        for window in pending:
            if window.reason is not None:
                yield WindowScore(window.key, None, window.reason)
            else:
                yield WindowScore(window.key, float(next(scores)))

    def _render(self, pending: list["_Pending"], config, bands: Bands | None) -> None:
        """Each scorable window's composite, in this detector's reused memory, with only the parts its scoring
        reads: the strip unless conv1's top band and the strip's edge rows are kept, the frames unless the
        crop features, the bottom band and the frames' edge rows are (the kept edge rows are copied in)."""
        from avlips.media.render_fast import render_frames, render_strip

        edge_first, edge_stop = bands.edge_rows if bands is not None else (0, 0)
        slot = 0
        for window in pending:
            if window.reason is not None or window.composite is not None:
                continue  # an abstention, or a window render_sample made whole (nothing kept for it)
            sample = window.sample
            window.strip_key = content_key(window.mel_rgb, context=("strip",))
            window.frames_key = content_key(sample.frames)
            window.crop_features = self.crop_features.get((*window.frames_key, config.crop_size, config.input_mode))
            if bands is not None:
                window.known = self.global_conv1.known(window.strip_key, window.frames_key, config.input_mode)
            composite = self._composite_buffer(slot)
            slot += 1
            try:
                if bands is None or window.known.needs_strip:
                    render_strip(window.mel_rgb, composite)
                else:
                    composite[edge_first:STRIP_HEIGHT] = window.known.strip_edge.numpy()
                if bands is None or window.crop_features is None or window.known.needs_frames_for_bands:
                    render_frames(sample, composite)
                else:
                    composite[STRIP_HEIGHT:edge_stop] = window.known.frame_edge.numpy()
            except Exception as exc:  # frames OpenCV cannot resize: this window abstains, the batch goes on
                window.reason = f"cannot render the composite ({exc})"
                continue
            window.composite = composite

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


@dataclass
class _Pending:
    """A window of a batch on its way to a score: what is known of it, or why it is not scored."""

    key: str
    sample: WindowSample
    reason: str | None = None  # set: an abstention
    mel_rgb: np.ndarray | None = None  # the mel's colours (the fast path renders from them)
    composite: np.ndarray | None = None  # rendered (in the detector's memory, or whole by render_sample)
    strip_key: tuple | None = None  # content keys of what the strip and the frames part are made from
    frames_key: tuple | None = None
    crop_features: torch.Tensor | None = None  # kept from an earlier window with the same frames
    known: Known = field(default_factory=Known)
