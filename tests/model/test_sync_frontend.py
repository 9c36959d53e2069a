"""The sync expert's view of a window: lower-face crops, and Wav2Lip mel chunks at every offset it holds."""
from __future__ import annotations

import numpy as np
import pytest

from avlips.generators.wav2lip.audio import melspectrogram
from avlips.model.detectors import DetectorError
from avlips.model.sync.frontend import (face_region, lower_faces, offset_chunks, speech_dbfs, window_inputs)
from tests.model.sync_samples import RATE, window


def test_face_region_is_the_centre_of_a_face_crop_and_the_whole_of_a_centred_frame():
    frame = np.zeros((90, 90, 3), np.uint8)
    assert face_region(frame, "face", 1.8).shape == (50, 50, 3)
    assert face_region(frame, "full", 1.8).shape == (90, 90, 3)
    frame[20:70, 20:70] = 255  # the face square of a 1.8 crop... 50 px at the centre
    assert face_region(frame, "face", 1.8).min() == 255


def test_lower_faces_are_the_bgr_lower_halves_stacked_frame_major():
    frames = np.zeros((5, 96, 96, 3), np.uint8)  # the expert's size: no resize blurs the halves' border
    frames[:, 48:, :, 0] = 200          # red in the lower half
    frames[:, :48, :, 2] = 255          # blue in the upper half only: cut off
    frames[3, 48:, :, 1] = 100          # frame 3 has some green below
    faces = lower_faces(frames, "full", face_size=96)
    assert faces.shape == (15, 48, 96) and faces.dtype == np.float32
    # Channel 3*i + c is frame i's B, G, R.
    assert np.allclose(faces[0::3], 0.0)                     # no blue below the middle
    assert np.allclose(faces[2::3], 200 / 255, atol=1e-6)    # red everywhere in the lower half
    assert np.allclose(faces[10], 100 / 255, atol=1e-6) and np.allclose(faces[[1, 4, 7, 13]], 0.0)
    assert lower_faces(frames, "full", face_size=48).shape == (15, 24, 48)


def test_offset_chunks_start_where_wav2lip_starts_the_chunk_of_each_frame():
    rng = np.random.default_rng(0)
    clip = rng.normal(0, 0.1, RATE * 3).astype(np.float32)
    whole = melspectrogram(clip)
    frame = 20  # 20 * 640 - 9600 = 3200 samples: the context starts on a hop boundary (16 columns)
    context = clip[frame * 640 - 9600: frame * 640 + 3200 + 9600]
    chunks, offsets = offset_chunks(melspectrogram(context), 9600, 25.0, 15)
    assert list(offsets) == list(range(-15, 16))
    for offset in (-15, -4, 0, 1, 7, 15):
        start = int(80 * (frame + offset) / 25)  # Wav2Lip: the chunk of frame i starts at int(80 * i / fps)
        got = chunks[list(offsets).index(offset), 0]
        # Interior columns are the whole clip's; the outermost ones differ by the STFT's edge padding.
        assert np.allclose(got[:, 2:-2], whole[:, start + 2:start + 14], atol=1e-4)


def test_offsets_past_the_clip_start_or_end_are_left_out():
    mel = np.zeros((80, 1 + 3200 // 200 + 20), np.float32)   # window at the clip start, 0.25 s after it
    _, offsets = offset_chunks(mel, 0, 25.0, 15)
    assert offsets.min() == 0 and offsets.max() == 6
    _, none = offset_chunks(np.zeros((80, 10), np.float32), 0, 25.0, 15)
    assert none.size == 0


def test_speech_level():
    tone = (0.5 * 32767 * np.sin(np.arange(16000) * 0.05)).astype(np.int16)
    assert speech_dbfs(tone) == pytest.approx(20 * np.log10(0.5 / np.sqrt(2)), abs=0.05)
    assert speech_dbfs(np.zeros(100, np.int16)) == -200.0


def _clip(seconds=1.6):
    rng = np.random.default_rng(3)
    frames = rng.integers(0, 255, (int(seconds * 25), 32, 32, 3), dtype=np.uint8)
    audio = (rng.normal(0, 0.1, int(seconds * RATE))).astype(np.float32)
    return frames, audio


def test_window_inputs_of_a_sample_count_the_offsets_it_has():
    frames, audio = _clip()
    inner = window_inputs(window("c", frames, audio, 16), max_offset=15, face_size=48)
    assert inner.faces.shape == (15, 24, 48) and inner.chunks.shape[1:] == (1, 80, 16)
    assert inner.offsets_wanted == 31 and len(inner.offsets) == len(inner.chunks)
    at_start = window_inputs(window("c", frames, audio, 0), max_offset=15, face_size=48)
    assert at_start.offsets.min() == 0 and len(at_start.offsets) < 31
    assert at_start.speech_dbfs == pytest.approx(-20.0 - 10 * np.log10(32768 ** 2 / 32767 ** 2), abs=1.0)


def test_a_window_without_audio_or_frames_is_an_error_naming_it():
    frames, audio = _clip()
    with pytest.raises(DetectorError, match="c_w00 has no audio field"):
        window_inputs(window("c", frames, audio, 10, with_audio=False))
    short = window("c", frames, audio, 10)
    short.frames = short.frames[:3]
    with pytest.raises(DetectorError, match="needs 5 frames, the window has 3"):
        window_inputs(short)
