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

The middle rows read a few strip rows and a few frame rows (`Bands.edge_rows`): those are kept beside the
bands, so a window whose bands are both known needs neither part rendered, and one whose strip (or frames)
is known needs only its other part (model/lipfd_detector.py renders what `Known.needs_strip` and
`Known.needs_frames_for_bands` say).

Only windows seen whole are kept: the changed band of a perturbed copy belongs to that copy alone, and
keeping it would push out the clean bands its sibling copies need.
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
from avlips.model.feature_cache import FeatureCache
from avlips.model.inputs import COMPOSITE_SHAPE, GLOBAL_SIZE

__all__ = ["Bands", "bands_of", "Known", "BandedConv1"]


@dataclass(frozen=True)
class Bands:
    """conv1's output rows: [0, top_end) read only the mel strip, [bottom_start, rows) only the frames."""

    top_end: int
    bottom_start: int
    rows: int
    kernel: int
    stride: int
    edge_rows: tuple[int, int]  # the composite rows the middle rows read: [first, STRIP_HEIGHT) of the strip,
    #                             [STRIP_HEIGHT, stop) of the frames

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
    middle = slice(top_end * stride, (bottom_start - 1) * stride + kernel)  # global rows of the middle conv rows
    edge_rows = (int(min(ys0[middle].min(), ys1[middle].min())), int(max(ys0[middle].max(), ys1[middle].max())) + 1)
    assert edge_rows[0] <= STRIP_HEIGHT <= edge_rows[1]
    return Bands(top_end, bottom_start, rows, kernel, stride, edge_rows)


@dataclass(frozen=True)
class Known:
    """What is kept of a window's parts: conv1's top band and the strip's edge rows (by the strip's content),
    the bottom band and the frames' edge rows (by the frames' content); None where nothing is."""

    top: torch.Tensor | None = None
    strip_edge: torch.Tensor | None = None
    bottom: torch.Tensor | None = None
    frame_edge: torch.Tensor | None = None

    @property
    def needs_strip(self) -> bool:
        """Whether the strip must be rendered (else its edge rows are copied in)."""
        return self.top is None or self.strip_edge is None

    @property
    def needs_frames_for_bands(self) -> bool:
        """Whether conv1 needs the frames rendered (else their edge rows are copied in)."""
        return self.bottom is None or self.frame_edge is None


class BandedConv1:
    """conv1's output (B, C, rows, cols) of composites, reusing the bands of windows seen before.

    Keys are content keys (model/feature_cache.py) of what a part is made from: the strip's of the mel's
    colour image, the frames' of the frame arrays; None keeps and finds nothing."""

    def __init__(self, cache: FeatureCache) -> None:
        self.cache = cache
        self._buffer = np.empty(0, np.float32)  # the resized rows of one group, reused batch to batch
        self.rows_computed = self.rows_total = 0  # conv1 output rows: made here, and asked for

    def known(self, strip_key: tuple | None, frames_key: tuple | None, input_mode: str) -> Known:
        if strip_key is None or frames_key is None:
            return Known()
        return Known(self.cache.get((*strip_key, "conv1 top", input_mode)), self.cache.get((*strip_key, "strip edge")),
                     self.cache.get((*frames_key, "conv1 bottom", input_mode)),
                     self.cache.get((*frames_key, "frame edge")))

    def __call__(self, conv: nn.Conv2d, bands: Bands, composites: Sequence[np.ndarray], known: Sequence[Known],
                 strip_keys: Sequence[tuple | None], frames_keys: Sequence[tuple | None], input_mode: str,
                 device: torch.device) -> torch.Tensor:
        """known: each window's `known` (its composite holds at least the rows that the bands not known read)."""
        # The output rows each window needs made: always the middle ones, and a band unless it is known.
        spans = [(0 if k.top is None else bands.top_end, bands.rows if k.bottom is None else bands.bottom_start)
                 for k in known]
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
        edge_first, edge_stop = bands.edge_rows
        for k, found in enumerate(known):
            if found.top is not None:
                out[k, :, :bands.top_end] = found.top
            if found.bottom is not None:
                out[k, :, bands.bottom_start:] = found.bottom
            if found.top is None and found.bottom is None and strip_keys[k] is not None and frames_keys[k] is not None:
                # a window seen whole: its parts may come again
                self.cache.put((*strip_keys[k], "conv1 top", input_mode), out[k, :, :bands.top_end].clone())
                self.cache.put((*frames_keys[k], "conv1 bottom", input_mode), out[k, :, bands.bottom_start:].clone())
                self.cache.put((*strip_keys[k], "strip edge"),
                               torch.from_numpy(composites[k][edge_first:STRIP_HEIGHT].copy()))
                self.cache.put((*frames_keys[k], "frame edge"),
                               torch.from_numpy(composites[k][STRIP_HEIGHT:edge_stop].copy()))
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
