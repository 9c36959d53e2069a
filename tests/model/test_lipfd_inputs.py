"""LipFD inputs: composite layout, global view, crop geometry and the two input modes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from avlips.model.inputs import (
    CLIP_MEAN,
    CLIP_STD,
    composite_to_tensor,
    global_view,
    prepare_inputs,
    reference_composite,
    region_crops,
    window_inputs,
)


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=False)


def _random_uint8(shape: tuple[int, ...], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def test_composite_layout_at_native_size() -> None:
    # Frames already 500x500 and mel already 500x2500: the resizes are identities, so the layout is exact.
    frames = _random_uint8((5, 500, 500, 3), 0)
    mel = _random_uint8((500, 2500, 3), 1)
    comp = reference_composite(frames, mel)
    assert comp.shape == (1000, 2500, 3) and comp.dtype == np.uint8
    assert np.array_equal(comp[:500], mel)
    for i in range(5):
        assert np.array_equal(comp[500:, 500 * i : 500 * (i + 1)], frames[i])


def test_composite_resizes_any_input_size() -> None:
    colours = np.array([[10, 20, 30], [40, 50, 60], [70, 80, 90], [100, 110, 120], [130, 140, 150]], dtype=np.uint8)
    frames = np.broadcast_to(colours[:, None, None, :], (5, 96, 128, 3)).copy()
    mel = np.full((128, 37, 3), (1, 2, 3), dtype=np.uint8)
    comp = reference_composite(frames, mel)
    assert comp.shape == (1000, 2500, 3)
    assert (comp[:500] == (1, 2, 3)).all()
    for i in range(5):
        assert (comp[500:, 500 * i : 500 * (i + 1)] == colours[i]).all()


def test_composite_rejects_bad_inputs() -> None:
    with pytest.raises(ValueError):
        reference_composite(np.zeros((4, 10, 10, 3), np.uint8), np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(ValueError):
        reference_composite(np.zeros((5, 10, 10, 3), np.uint8), np.zeros((10, 10, 4), np.uint8))
    with pytest.raises(TypeError):
        reference_composite(np.zeros((5, 10, 10, 3), np.float32), np.zeros((10, 10, 3), np.uint8))


def test_reference_compatible_is_bgr_0_255() -> None:
    comp = np.zeros((1000, 2500, 3), dtype=np.uint8)
    comp[..., 0], comp[..., 1], comp[..., 2] = 200, 100, 7  # R, G, B
    x = composite_to_tensor(comp, mode="reference_compatible")
    assert x.shape == (1, 3, 1000, 2500) and x.dtype == torch.float32
    assert x[0, 0].eq(7).all() and x[0, 1].eq(100).all() and x[0, 2].eq(200).all()  # B, G, R
    inputs = prepare_inputs(comp, mode="reference_compatible")
    # Constant images stay constant through bilinear resizes: still BGR, still 0..255, no normalisation.
    assert torch.allclose(inputs.global_input[0, :, 0, 0], torch.tensor([7.0, 100.0, 200.0]))
    assert torch.allclose(inputs.crops[0, 7, :, 100, 100], torch.tensor([7.0, 100.0, 200.0]))


def test_normalized_mode_is_rgb_clip_normalised() -> None:
    comp = np.zeros((2, 1000, 2500, 3), dtype=np.uint8)
    comp[..., 0], comp[..., 1], comp[..., 2] = 200, 100, 7
    x = composite_to_tensor(comp, mode="normalized")
    expected = [(v / 255 - m) / s for v, m, s in zip((200, 100, 7), CLIP_MEAN, CLIP_STD)]
    assert x.shape == (2, 3, 1000, 2500)
    for c in range(3):
        assert torch.allclose(x[:, c], torch.tensor(expected[c]), atol=1e-6)
    with pytest.raises(ValueError, match="unknown input mode"):
        composite_to_tensor(comp, mode="bgr")


def test_global_view_is_plain_bilinear_resize() -> None:
    x = composite_to_tensor(_random_uint8((1000, 2500, 3), 2))
    g = global_view(x)
    assert g.shape == (1, 3, 1120, 1120)
    assert torch.equal(g, _resize(x, 1120))
    # Rows/cols map with half-pixel centres: output row r samples input row (r + 0.5) * 1000 / 1120 - 0.5.
    r, c = 600, 700
    ys, xs = (r + 0.5) * 1000 / 1120 - 0.5, (c + 0.5) * 2500 / 1120 - 0.5
    y0, x0 = int(np.floor(ys)), int(np.floor(xs))
    wy, wx = ys - y0, xs - x0
    img = x[0]
    by_hand = (
        img[:, y0, x0] * (1 - wy) * (1 - wx)
        + img[:, y0, x0 + 1] * (1 - wy) * wx
        + img[:, y0 + 1, x0] * wy * (1 - wx)
        + img[:, y0 + 1, x0 + 1] * wy * wx
    )
    assert torch.allclose(g[0, :, r, c], by_hand, atol=1e-3)


def test_crops_match_direct_slicing() -> None:
    comp = np.stack([_random_uint8((1000, 2500, 3), 3), _random_uint8((1000, 2500, 3), 4)])
    x = composite_to_tensor(comp, mode="normalized")
    crops = region_crops(x)
    assert crops.shape == (2, 15, 3, 224, 224)
    for i in range(5):
        frame = x[:, :, 500:1000, 500 * i : 500 * i + 500]
        whole = _resize(frame, 224)
        expected = [whole, _resize(whole[:, :, 28:196, 28:196], 224), _resize(whole[:, :, 61:163, 61:163], 224)]
        for j in range(3):
            assert torch.allclose(crops[:, i * 3 + j], expected[j], atol=1e-5), (i, j)


def test_crops_are_five_distinct_frames_at_500_px_steps() -> None:
    # Each frame a different constant: the reference's 1-pixel stride would give frame 0's value everywhere.
    comp = np.zeros((1000, 2500, 3), dtype=np.uint8)
    for i in range(5):
        comp[500:, 500 * i : 500 * (i + 1)] = 20 * (i + 1)
    comp[:500] = 255  # the mel strip must never leak into a crop
    crops = prepare_inputs(comp).crops[0]
    for k in range(15):
        assert crops[k].eq(20 * (k // 3 + 1)).all(), k


def test_scale_crops_zoom_on_the_centre() -> None:
    # A frame with a bright 60x60 square at its centre: larger share of the crop at smaller scales.
    comp = np.zeros((1000, 2500, 3), dtype=np.uint8)
    comp[500 + 220 : 500 + 280, 220:280] = 255
    crops = prepare_inputs(comp).crops[0, :3, 0]
    shares = [float((c > 127).float().mean()) for c in crops]
    side = 60 / 500
    assert shares[0] == pytest.approx(side**2, rel=0.1)
    assert shares[1] == pytest.approx((side * 224 / 168) ** 2, rel=0.1)
    assert shares[2] == pytest.approx((side * 224 / 102) ** 2, rel=0.1)


def test_window_inputs_end_to_end() -> None:
    frames = _random_uint8((5, 120, 160, 3), 5)
    mel = _random_uint8((128, 40, 3), 6)
    inputs = window_inputs(frames, mel, mode="reference_compatible")
    assert inputs.global_input.shape == (1, 3, 1120, 1120)
    assert inputs.crops.shape == (1, 15, 3, 224, 224)
    assert float(inputs.crops.max()) <= 255 and float(inputs.crops.min()) >= 0
    with pytest.raises(ValueError):
        global_view(torch.zeros(1, 3, 1000, 2000))
