"""LipFD's conv1 output of a batch of composites by row bands, each band kept by the content it reads.

LipFD's global branch resizes the whole composite (mel strip over five frames, 1000x2500) to 1120x1120
and convolves it with conv1 (5x5, stride 5) before the encoder. Bilinear resizing reads two source rows
per output row, so conv1's top output rows read the mel strip alone, its bottom rows the frames alone,
and a row or two between read both. An audio perturbation changes only the strip and a video one only
the frames: evaluate's perturbed copy of a window shares one band with its clean window. That band's
conv1 output is kept by the content key of the part it reads (model/feature_cache.py), and only the
other band and the middle rows are resized and convolved: about half the global view.

The values are those of resizing and convolving the whole view: each resized row is computed alone from
its source rows (model/resize_kernels.resize_global_rows), and torch's convolution of a band of rows
gives those rows of the whole convolution (tests/model/test_global_bands.py checks both).

Only bands of windows seen whole are kept: the changed band of a perturbed copy belongs to that copy
alone, and keeping it would push out the clean bands its sibling copies need.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import nn

from avlips.media.render import STRIP_HEIGHT
from avlips.model import resize_kernels
from avlips.model.composite_inputs import run_threaded
from avlips.model.feature_cache import FeatureCache, content_key
from avlips.model.inputs import COMPOSITE_SHAPE, GLOBAL_SIZE

__all__ = ["Bands", "bands_of", "BandedConv1"]

MEL_PART = np.s_[:STRIP_HEIGHT]
FRAME_PART = np.s_[STRIP_HEIGHT:]


@dataclass(frozen=True)
class Bands:
    """conv1's output rows: [0, top_end) read only the mel strip, [bottom_start, rows) only the frames."""

    top_end: int
    bottom_start: int
    rows: int
    kernel: int
    stride: int

    def global_rows(self, start: int, stop: int) -> tuple[int, int]:
        """The global view's rows that conv1's output rows [start, stop) read."""
        return start * self.stride, (stop - 1) * self.stride + self.kernel


def bands_of(conv: nn.Conv2d) -> Bands | None:
    """conv1's bands over the global view of a reference-sized composite; None for a convolution with
    padding or dilation (its edge rows read zeros, not the view: no band reuse then)."""
    if tuple(conv.padding) != (0, 0) or tuple(conv.dilation) != (1, 1) or conv.kernel_size[0] != conv.kernel_size[1]:
        return None
    return _bands(conv.kernel_size[0], conv.stride[0])


@functools.lru_cache(maxsize=None)
def _bands(kernel: int, stride: int) -> Bands:
    ys0, ys1 = resize_kernels.resize_plan()["global"][:2]
    assert len(ys0) == GLOBAL_SIZE and COMPOSITE_SHAPE[0] > STRIP_HEIGHT
    reads_frames = np.maximum(ys0, ys1) >= STRIP_HEIGHT  # per global row (a zero weight still counts as read)
    reads_mel = np.minimum(ys0, ys1) < STRIP_HEIGHT
    rows = (GLOBAL_SIZE - kernel) // stride + 1
    window = [slice(y * stride, y * stride + kernel) for y in range(rows)]
    mel_only = [not reads_frames[w].any() for w in window]
    frames_only = [not reads_mel[w].any() for w in window]
    top_end = mel_only.index(False) if False in mel_only else rows
    bottom_start = rows - frames_only[::-1].index(False) if False in frames_only else 0
    return Bands(top_end, bottom_start, rows, kernel, stride)


class BandedConv1:
    """conv1's output (B, C, rows, cols) of composites, reusing the bands of windows seen before."""

    def __init__(self, cache: FeatureCache) -> None:
        self.cache = cache
        self._buffer = np.empty(0, np.float32)  # the resized rows of one group, reused batch to batch
        self.rows_computed = self.rows_total = 0  # conv1 output rows: made here, and asked for

    def __call__(self, conv: nn.Conv2d, bands: Bands, composites: Sequence[np.ndarray], frame_keys: Sequence[tuple],
                 input_mode: str, device: torch.device) -> torch.Tensor:
        """frame_keys: content_key of each composite's FRAME_PART (the caller has them for the crop features)."""
        mel_keys = [(*content_key(c[MEL_PART]), "conv1 top", input_mode) for c in composites]
        frame_keys = [(*key, "conv1 bottom", input_mode) for key in frame_keys]
        tops = [self.cache.get(key) for key in mel_keys]
        bottoms = [self.cache.get(key) for key in frame_keys]
        # The output rows each window needs made: always the middle ones, and a band unless it is known.
        spans = [(0 if top is None else bands.top_end, bands.rows if bottom is None else bands.bottom_start)
                 for top, bottom in zip(tops, bottoms)]
        groups = {span: [k for k, s in enumerate(spans) if s == span] for span in dict.fromkeys(spans)}
        made = {span: self._convolve(conv, bands, [composites[k] for k in members], span, input_mode, device)
                for span, members in groups.items()}
        for span, members in groups.items():
            self.rows_computed += len(members) * (span[1] - span[0])
        if len(groups) == 1 and spans[0] == (0, bands.rows):  # every window made whole: nothing to assemble
            out = made[spans[0]]
        else:
            first = next(iter(made.values()))
            out = torch.empty((len(composites), first.shape[1], bands.rows, first.shape[3]), device=first.device)
            for span, members in groups.items():
                for row, k in enumerate(members):
                    out[k, :, span[0]:span[1]] = made[span][row]
        self.rows_total += len(composites) * bands.rows
        for k, (top, bottom) in enumerate(zip(tops, bottoms)):
            if top is not None:
                out[k, :, :bands.top_end] = top
            if bottom is not None:
                out[k, :, bands.bottom_start:] = bottom
            if top is None and bottom is None:  # a window seen whole: its bands may come again
                self.cache.put(mel_keys[k], out[k, :, :bands.top_end].clone())
                self.cache.put(frame_keys[k], out[k, :, bands.bottom_start:].clone())
        return out

    def _convolve(self, conv: nn.Conv2d, bands: Bands, composites: list[np.ndarray], span: tuple[int, int],
                  input_mode: str, device: torch.device) -> torch.Tensor:
        """conv1's output rows span of the composites: their global rows resized, then convolved."""
        first, stop = bands.global_rows(*span)
        shape = (len(composites), stop - first, GLOBAL_SIZE, 3)  # channels-last: conv1 runs faster on it
        size = int(np.prod(shape))
        if self._buffer.size < size:
            self._buffer = np.empty(size, np.float32)
        rows = self._buffer[:size].reshape(shape).transpose(0, 3, 1, 2)
        kernels = resize_kernels.compiled_kernels()
        lut, chan = resize_kernels.channel_table(input_mode)

        def run(samples: range) -> None:
            scratch = resize_kernels.scratch_buffers()
            for k in samples:
                resize_kernels.resize_global_rows(np.ascontiguousarray(composites[k]), lut, chan, first, stop,
                                                  rows[k], kernels, scratch)

        run_threaded(run, len(composites))
        return conv(torch.from_numpy(rows).to(device))
