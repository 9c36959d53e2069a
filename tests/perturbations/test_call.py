"""The call channel: picture size, frame schedule, the VP8 stream, and the Opus sound with its losses."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from avlips.media.synthetic import make_persona, render_talking_clip, speech_like_audio
from avlips.perturbations import CALL, BadFrames, BadLevel, apply_call
from avlips.perturbations.audio_codecs import opus_encode
from avlips.perturbations.call import (FACE_CROP_FRACTION, LINKS, call_size, capture_positions, crop_kbps,
                                       lead_in_frame)
from avlips.perturbations.packet_loss import lost_packets
from tests.builders import SPEECH_RATE as RATE, as_float, speech

LEVELS = [1, 2, 3, 4, 5]


@pytest.fixture(scope="module")
def window() -> np.ndarray:
    """Five 200x200 frames of a synthetic talking face at 25 fps."""
    persona = make_persona("call", 4)
    audio = speech_like_audio(persona, 1.0, RATE, 4)
    frames = np.stack(list(render_talking_clip(persona, audio, RATE, 25, 200, 4)))
    return np.ascontiguousarray(frames[10:15])


def test_links_go_from_good_wifi_to_a_bad_mobile_link():
    assert [link.link for link in LINKS] == ["good Wi-Fi", "busy Wi-Fi", "fair mobile", "poor mobile", "bad mobile"]
    for field in ("height", "fps", "video_kbps", "audio_kbps"):
        values = [getattr(link, field) for link in LINKS]
        assert values == sorted(values, reverse=True), field
    assert [link.loss_rate for link in LINKS] == sorted(link.loss_rate for link in LINKS)
    assert CALL.levels == (2500, 900, 500, 150, 30) and CALL.parameter == "video_kbps"
    assert CALL.params(3) == {"link": "fair mobile", "width": 640, "height": 360, "fps": 15, "video_kbps": 500,
                              "audio_kbps": 16, "loss_rate": 0.03}


def test_crop_size_and_its_share_of_the_bitrate():
    link = LINKS[2]  # 640x360
    assert call_size(500, 500, link) == (216, 216)  # 0.6 * 360
    assert call_size(100, 100, link) == (100, 100)  # never enlarged
    assert call_size(500, 300, link) == (216, 130)
    assert crop_kbps((216, 216), link) == pytest.approx(500 * 216 * 216 / (640 * 360))
    assert FACE_CROP_FRACTION == 0.6


def test_capture_schedule():
    assert capture_positions(0, 5, 1.0, 0.3) == [0, 1, 2, 3, 4]  # the source's rate: every frame
    assert capture_positions(0, 10, 2.5, 0.0) == [0, 2, 5, 7]  # 10 fps from 25
    assert capture_positions(0, 10, 2.5, 0.5) == [1, 3, 6, 8]
    assert [lead_in_frame(i, 5) for i in range(-1, -10, -1)] == [1, 2, 3, 4, 3, 2, 1, 0, 1]
    assert lead_in_frame(-3, 1) == 0


@pytest.mark.parametrize("level", LEVELS)
def test_call_video_holds_frames_and_shows_the_decoded_stream(window, level):
    link = LINKS[level - 1]
    result = CALL.video(window, 25.0, link, seed=7)
    assert result.frames.shape == window.shape and result.frames.dtype == np.uint8
    assert result.video.size == call_size(200, 200, link)
    # Frames are captured at most at the link's rate, and never more than the window has.
    assert len(result.sent) <= int(np.ceil(5 * link.fps / 25)) + 1
    assert set(result.coded) <= set(result.sent) and set(result.lost) <= set(result.coded) and 0 not in result.lost
    arrived = set(result.coded) - set(result.lost)
    for i, shown in enumerate(result.shown):
        # The newest picture that arrived by then (a lead-in picture before the first arrival).
        newer = [j for j in arrived if j <= i]
        assert shown == max(newer) if newer else shown < 0
        picture = cv2.resize(result.video.decoded[shown], (200, 200), interpolation=cv2.INTER_LINEAR)
        assert np.array_equal(result.frames[i], picture)
    # The stream is VP8 at the crop's share of the link's rate: never far above it.
    assert 0 < result.video.bitrate_kbps() < 1.35 * crop_kbps(result.video.size, link)


def test_call_picture_worsens_with_level(window):
    psnr = [np.mean([cv2.PSNR(a, b) for a, b in zip(CALL.video(window, 25.0, link, seed=1).frames, window)])
            for link in LINKS]
    assert psnr[0] > 30 and psnr[-1] < psnr[0] - 5


@pytest.mark.parametrize("level", LEVELS)
def test_call_audio_is_opus_at_the_links_rate_through_its_losses(level):
    link = LINKS[level - 1]
    x = speech()
    stream = opus_encode(as_float(x), RATE, link.audio_kbps)
    assert abs(stream.bitrate_kbps() / link.audio_kbps - 1) < 0.10
    out = CALL.audio(x, RATE, link, seed=2)
    assert out.shape == x.shape and out.dtype == np.int16
    from avlips.perturbations.packet_loss import opus_through_loss

    expected, received = opus_through_loss(as_float(x), RATE, link.audio_kbps, link.loss_rate, 2)
    assert received.delivered == [not lost for lost in lost_packets(len(received.packets), link.loss_rate, 2)]
    assert np.array_equal(out, np.clip(np.round(expected * 32768), -32768, 32767).astype(np.int16))


def test_same_seed_same_call_and_input_untouched(window):
    x = speech()
    frames_copy, audio_copy = window.copy(), x.copy()
    first = apply_call(window, 25.0, x, RATE, 4, seed=3)
    second = apply_call(window, 25.0, x, RATE, 4, seed=3)
    assert np.array_equal(first[0], second[0]) and np.array_equal(first[1], second[1])
    assert np.array_equal(window, frames_copy) and np.array_equal(x, audio_copy)


def test_bad_call_input_is_named(window):
    x = speech()
    with pytest.raises(BadFrames, match="c0_w00: call: a call needs a window"):
        apply_call(window[0], 25.0, x, RATE, 1, 0, sample="c0_w00")
    with pytest.raises(BadFrames, match="c0_w00: call: fps"):
        apply_call(window, 0, x, RATE, 1, 0, sample="c0_w00")
    with pytest.raises(BadLevel, match="c0_w00: call: level must be in 1..5, got 6"):
        apply_call(window, 25.0, x, RATE, 6, 0, sample="c0_w00")
