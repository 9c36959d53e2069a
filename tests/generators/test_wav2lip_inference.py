"""Wav2LipRunner: cropping, the 6-channel input, batching, looping, pasting back, colour order."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from avlips.generators.wav2lip.inference import Wav2LipRunner, pad_boxes
from avlips.generators.wav2lip.network import Wav2Lip

torch.set_num_threads(2)

H = W = 128


class _Recorder(nn.Module):
    """Stands in for Wav2Lip: returns a fixed BGR colour and records what it was given."""

    def __init__(self, bgr: tuple[float, float, float] = (0.2, 0.4, 0.6)) -> None:
        super().__init__()
        self.bgr = torch.tensor(bgr).view(1, 3, 1, 1)
        self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, audio: torch.Tensor, face: torch.Tensor) -> torch.Tensor:
        self.calls.append((audio.clone(), face.clone()))
        return self.bgr.expand(face.shape[0], 3, face.shape[2], face.shape[3]).clone()


def _video(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, (n, H, W, 3), dtype=np.uint8)
    x1 = rng.integers(0, 40, n)
    y1 = rng.integers(0, 40, n)
    boxes = np.stack([x1, y1, x1 + rng.integers(40, 80, n), y1 + rng.integers(40, 80, n)], axis=1)
    boxes[0] = [30, 90, 90, 124]  # bottom padding must be clipped to the image here
    return frames, boxes


def _mels(n: int, seed: int = 1) -> np.ndarray:
    # Each chunk carries its index, so the order the model sees can be checked.
    rng = np.random.default_rng(seed)
    m = rng.uniform(-4, 4, (n, 1, 80, 16)).astype(np.float32)
    m[:, 0, 0, 0] = np.arange(n)
    return m


def _outside(box: np.ndarray) -> np.ndarray:
    mask = np.ones((H, W), bool)
    x1, y1, x2, y2 = box
    mask[y1:y2, x1:x2] = False
    return mask


def test_pad_boxes() -> None:
    boxes = np.array([[10, 20, 50, 60], [10, 100, 50, 125], [-5, -3, 200, 40], [np.nan, 0, 5, 5], [60, 60, 60, 90]])
    got = pad_boxes(boxes, H, W)
    assert got.tolist() == [
        [10, 20, 50, 70],  # bottom + 10
        [10, 100, 50, 128],  # clipped to the image height
        [0, 0, 128, 50],  # clipped on the other sides
        [-1, -1, -1, -1],  # no face
        [-1, -1, -1, -1],  # empty
    ]
    assert pad_boxes(np.array([[10, 20, 50, 60]]), H, W, pads=(5, 0, 3, 4)).tolist() == [[7, 15, 54, 60]]


def test_random_weights_output_size_and_untouched_background() -> None:
    torch.manual_seed(0)
    frames, boxes = _video(6)
    out = Wav2LipRunner(Wav2Lip(), "cpu", batch_size=4).run(frames, boxes, _mels(6))
    assert out.shape == frames.shape and out.dtype == np.uint8
    padded = pad_boxes(boxes, H, W)
    for i in range(6):
        keep = _outside(padded[i])
        assert np.array_equal(out[i][keep], frames[i][keep])
        assert not np.array_equal(out[i][~keep], frames[i][~keep])  # the face was replaced


def test_model_input_layout_and_paste() -> None:
    import cv2

    frames, boxes = _video(10)
    model = _Recorder()
    mels = _mels(10)
    out = Wav2LipRunner(model, "cpu", batch_size=3).run(frames, boxes, mels)
    assert [a.shape[0] for a, _ in model.calls] == [3, 3, 3, 1]
    audio = torch.cat([a for a, _ in model.calls]).numpy()
    face = torch.cat([f for _, f in model.calls]).numpy()
    np.testing.assert_array_equal(audio, mels)
    assert face.shape == (10, 6, 96, 96) and face.dtype == np.float32
    padded = pad_boxes(boxes, H, W)
    for i in range(10):
        x1, y1, x2, y2 = padded[i]
        ref = cv2.resize(frames[i][y1:y2, x1:x2], (96, 96)).astype(np.float32).transpose(2, 0, 1) / 255
        np.testing.assert_allclose(face[i, 3:], ref, atol=1e-6)  # reference = the same frame, BGR/255
        np.testing.assert_allclose(face[i, :3, :48], ref[:, :48], atol=1e-6)  # upper half kept
        assert np.all(face[i, :3, 48:] == 0)  # lower half masked
        assert np.all(out[i, y1:y2, x1:x2] == [51, 102, 153])  # model colour, truncated like the reference
        assert np.array_equal(out[i][_outside(padded[i])], frames[i][_outside(padded[i])])


def test_rgb_frames_are_fed_as_bgr_and_returned_as_rgb() -> None:
    frames, boxes = _video(3)
    model = _Recorder()
    out = Wav2LipRunner(model, "cpu").run(frames, boxes, _mels(3), channels="rgb")
    x1, y1, x2, y2 = pad_boxes(boxes, H, W)[1]
    face = model.calls[0][1][1].numpy()
    # Channel 3 (blue for the model) must come from the RGB frame's last channel.
    crop = frames[1][y1:y2, x1:x2]
    assert abs(face[3].mean() - crop[..., 2].mean() / 255) < 0.02
    assert abs(face[5].mean() - crop[..., 0].mean() / 255) < 0.02
    assert np.all(out[1, y1:y2, x1:x2] == [153, 102, 51])


def test_audio_longer_than_video_loops_frames() -> None:
    frames, boxes = _video(4)
    out = Wav2LipRunner(_Recorder(), "cpu", batch_size=5).run(frames, boxes, _mels(11))
    assert out.shape == (11, H, W, 3)
    padded = pad_boxes(boxes, H, W)
    for j in range(11):
        keep = _outside(padded[j % 4])
        assert np.array_equal(out[j][keep], frames[j % 4][keep])


def test_audio_shorter_than_video_truncates_and_static_image_works() -> None:
    frames, boxes = _video(6)
    assert Wav2LipRunner(_Recorder(), "cpu").run(frames, boxes, _mels(2)).shape == (2, H, W, 3)
    out = Wav2LipRunner(_Recorder(), "cpu").run(frames[:1], boxes[:1], _mels(5)[:, 0])  # (N, 80, 16) accepted
    assert out.shape == (5, H, W, 3)
    assert all(np.array_equal(out[0], o) for o in out)


def test_frames_without_face_pass_through() -> None:
    frames, boxes = _video(3)
    boxes = boxes.astype(float)
    boxes[1] = np.nan
    model = _Recorder()
    out = Wav2LipRunner(model, "cpu").run(frames, boxes, _mels(3))
    assert np.array_equal(out[1], frames[1])
    assert not np.array_equal(out[0], frames[0])
    assert sum(f.shape[0] for _, f in model.calls) == 2
    np.testing.assert_array_equal(torch.cat([a for a, _ in model.calls])[:, 0, 0, 0].numpy(), [0, 2])


def test_input_is_not_modified_and_bad_input_is_rejected() -> None:
    frames, boxes = _video(3)
    before = frames.copy()
    runner = Wav2LipRunner(_Recorder(), "cpu")
    runner.run(frames, boxes, _mels(3))
    assert np.array_equal(frames, before)
    with pytest.raises(ValueError, match="face boxes"):
        runner.run(frames, boxes[:2], _mels(3))
    with pytest.raises(ValueError, match="mel chunks"):
        runner.run(frames, boxes, np.zeros((3, 1, 80, 8), np.float32))
    with pytest.raises(ValueError, match="uint8"):
        runner.run(frames.astype(np.float32), boxes, _mels(3))
    with pytest.raises(ValueError):
        Wav2LipRunner(_Recorder(), "cpu", batch_size=0)
