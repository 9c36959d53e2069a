"""conv1 of the global view by row bands: the bands read what they say, and reuse gives the whole view's values."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from avlips.media.render import STRIP_HEIGHT
from avlips.model.composite_inputs import fast_path_available, torch_inputs
from avlips.model.feature_cache import FeatureCache, content_key
from avlips.model.global_bands import BandedConv1, bands_of
from avlips.model.inputs import COMPOSITE_SHAPE
from avlips.model.loader import LoaderConfig

pytestmark = pytest.mark.skipif(not fast_path_available(), reason="the numba kernels are not usable here")

MODE = "normalized"


def _conv1() -> nn.Conv2d:
    torch.manual_seed(3)
    return nn.Conv2d(3, 3, kernel_size=5, stride=5)  # LipFD's conv1


def _run(banded: BandedConv1, conv: nn.Conv2d, bands, batch: list[np.ndarray]) -> torch.Tensor:
    """The banded conv1 of whole composites, keyed by their strip's and frames' contents."""
    strips = [content_key(c[:STRIP_HEIGHT]) for c in batch]
    frames = [content_key(c[STRIP_HEIGHT:]) for c in batch]
    known = [banded.known(s, f, MODE) for s, f in zip(strips, frames)]
    return banded(conv, bands, batch, known, strips, frames, MODE, torch.device("cpu"))


def _composite(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*COMPOSITE_SHAPE, 3), dtype=np.uint8)


@torch.no_grad()
def _whole(conv: nn.Conv2d, composites: list[np.ndarray]) -> torch.Tensor:
    """conv1 of the whole global view, made by torch's own resize (the reference of these values)."""
    config = LoaderConfig(batch_size=len(composites), crop_size=32, input_mode=MODE)
    global_input, _ = torch_inputs(torch.from_numpy(np.stack(composites)), config)
    return conv(global_input)


def test_top_rows_read_only_the_mel_strip_and_bottom_rows_only_the_frames():
    conv = _conv1()
    bands = bands_of(conv)
    assert (bands.top_end, bands.bottom_start, bands.rows) == (111, 113, 224)
    assert bands.edge_rows == (495, 505)
    clean = _composite(1)
    new_strip, new_frames = clean.copy(), clean.copy()
    new_strip[:STRIP_HEIGHT] = _composite(2)[:STRIP_HEIGHT]
    new_frames[STRIP_HEIGHT:] = _composite(3)[STRIP_HEIGHT:]
    base, strip_changed, frames_changed = _whole(conv, [clean, new_strip, new_frames])
    assert torch.equal(strip_changed[:, bands.bottom_start:], base[:, bands.bottom_start:])
    assert torch.equal(frames_changed[:, :bands.top_end], base[:, :bands.top_end])
    # and the rows between really read both parts: neither change leaves them all alone
    middle = slice(bands.top_end, bands.bottom_start)
    assert not torch.equal(strip_changed[:, middle], base[:, middle])
    assert not torch.equal(frames_changed[:, middle], base[:, middle])


def test_a_padded_convolution_has_no_bands():
    assert bands_of(nn.Conv2d(3, 3, kernel_size=5, stride=5, padding=1)) is None


@torch.no_grad()
def test_reused_bands_give_the_whole_views_values_and_only_whole_windows_are_kept():
    conv = _conv1()
    bands = bands_of(conv)
    clean, other = _composite(1), _composite(4)
    audio_copy, video_copy = clean.copy(), clean.copy()
    audio_copy[:STRIP_HEIGHT] = _composite(5)[:STRIP_HEIGHT]  # another mel strip, the same frames
    video_copy[STRIP_HEIGHT:] = _composite(6)[STRIP_HEIGHT:]  # the same strip, other frames
    banded = BandedConv1(FeatureCache(64 << 20))
    batches = [[clean, other], [audio_copy, video_copy]]
    got = [_run(banded, conv, bands, batch) for batch in batches]
    expected = [_whole(conv, batch) for batch in batches]
    for g, e in zip(got, expected):
        assert torch.allclose(g, e, atol=1e-5, rtol=0)  # the kernels are within 1e-4 (0..255) of torch's resize
    # the second batch made only its changed band and the middle rows of each window
    assert banded.rows_computed == 2 * bands.rows + (bands.bottom_start + bands.rows - bands.top_end)
    assert banded.rows_total == 4 * bands.rows
    assert len(banded.cache) == 8  # two bands and two edges of each window seen whole, none of the copies'
    # the same batch once more, its rows outside the edges scrambled: both bands known, only the middle rows
    # made (from the edge rows alone), and the same values
    first, stop = bands.edge_rows
    scrambled = [c.copy() for c in batches[0]]
    for c in scrambled:
        c[:first] = 0
        c[stop:] = 255
    strips = [content_key(c[:STRIP_HEIGHT]) for c in batches[0]]
    frames = [content_key(c[STRIP_HEIGHT:]) for c in batches[0]]
    known = [banded.known(s, f, MODE) for s, f in zip(strips, frames)]
    assert not any(k.needs_strip or k.needs_frames_for_bands for k in known)
    assert all(np.array_equal(k.strip_edge.numpy(), c[first:STRIP_HEIGHT]) for k, c in zip(known, batches[0]))
    again = banded(conv, bands, scrambled, known, strips, frames, MODE, torch.device("cpu"))
    assert torch.equal(again, got[0])


@torch.no_grad()
def test_nothing_kept_without_a_cache_and_the_values_stay():
    conv = _conv1()
    bands = bands_of(conv)
    batch = [_composite(7)]
    banded = BandedConv1(FeatureCache(0))
    first = _run(banded, conv, bands, batch)
    second = _run(banded, conv, bands, batch)
    assert torch.equal(first, second) and len(banded.cache) == 0
    assert banded.rows_computed == 2 * bands.rows
