"""decode_image decodes straight to RGB where OpenCV can: the pixels must be those of BGR decoding and a flip."""
import cv2
import numpy as np
import pytest

from avlips.media.sample import SampleError, decode_image


def _bgr_then_flip(data: bytes) -> np.ndarray:
    return cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


@pytest.mark.parametrize("kind", ["jpg_colour", "jpg_grey", "png_colour", "png_grey", "png_alpha", "png_16bit"])
def test_decoded_pixels_equal_bgr_decoding_flipped(kind: str) -> None:
    rng = np.random.default_rng(7)
    image = {"jpg_colour": rng.integers(0, 256, (48, 64, 3), np.uint8),
             "jpg_grey": rng.integers(0, 256, (48, 64), np.uint8),
             "png_colour": rng.integers(0, 256, (48, 64, 3), np.uint8),
             "png_grey": rng.integers(0, 256, (48, 64), np.uint8),
             "png_alpha": rng.integers(0, 256, (48, 64, 4), np.uint8),
             "png_16bit": rng.integers(0, 65536, (48, 64, 3), np.uint16)}[kind]
    ok, encoded = cv2.imencode(".jpg" if kind.startswith("jpg") else ".png", image)
    assert ok
    got = decode_image(encoded.tobytes())
    assert got.dtype == np.uint8 and got.shape == (48, 64, 3)
    assert np.array_equal(got, _bgr_then_flip(encoded.tobytes()))
    if kind == "png_colour":  # a lossless round trip: the channels really are flipped to RGB
        assert np.array_equal(got, image[..., ::-1])


def test_bytes_that_are_no_image_say_so() -> None:
    with pytest.raises(SampleError, match="do not decode"):
        decode_image(b"not an image")
