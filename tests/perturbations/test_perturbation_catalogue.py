"""The catalogue: level tables, purity and determinism, graded damage, the random mode, errors."""
from __future__ import annotations

import math
import pickle
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

import avlips.perturbations as P

# DeeperForensics-1.0's table (docs: UPSTREAM.md section 3), copied by hand, not from the package.
UPSTREAM_TABLE = {
    "saturation": (0.4, 0.3, 0.2, 0.1, 0.0),
    "contrast": (0.85, 0.725, 0.6, 0.475, 0.35),
    "block_wise": (16, 32, 48, 64, 80),
    "gaussian_noise": (0.001, 0.002, 0.005, 0.01, 0.05),
    "gaussian_blur": (7, 9, 13, 17, 21),
    "pixelation": (2, 3, 4, 5, 6),
    "compression": (30, 32, 35, 38, 40),
}
SEEDED = {"gaussian_noise", "block_wise"}


def textured_image(h: int = 192, w: int = 256) -> np.ndarray:
    """A natural-ish RGB image: smooth colour gradients, several frequencies of texture, hard edges."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    base = np.stack([0.6 * xx / w, 0.5 + 0.3 * np.sin(yy / h * 3), 0.3 + 0.4 * yy / h], axis=-1)
    texture = 0.08 * np.sin(xx / 3.0 + yy / 5.0) + 0.05 * np.sin(xx / 1.3) * np.cos(yy / 1.7)
    img = base + texture[..., None]
    img[40:120, 60:140] = [0.9, 0.2, 0.2]  # a hard-edged patch
    img[((yy - 140) ** 2 + (xx - 200) ** 2) < 30**2] = [0.1, 0.1, 0.6]  # a disc
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


def as_window(img: np.ndarray, frames: int = 3) -> np.ndarray:
    """A window of frames panning slowly across an image."""
    return np.stack([np.roll(img, 2 * i, axis=1) for i in range(frames)])


def photo(shared_media: Path) -> np.ndarray:
    """A real face photo from ../shared/media, RGB."""
    path = shared_media / "image" / "sadtalker_people_0.png"
    if not path.exists():
        pytest.skip(f"{path} is absent")
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


@pytest.fixture(scope="module")
def window() -> np.ndarray:
    return as_window(textured_image(96, 128))


def test_level_tables_are_upstream():
    assert {name: P.CATALOGUE[name].levels for name in P.names()} == UPSTREAM_TABLE
    for name, values in UPSTREAM_TABLE.items():
        assert [P.get(name).value(level) for level in P.LEVELS] == list(values)


def test_avlips_set_is_the_six_without_block_wise():
    assert set(P.AVLIPS_TYPES) == set(UPSTREAM_TABLE) - {"block_wise"}
    assert len(P.AVLIPS_TYPES) == 6 and "block_wise" in P.names()


def test_params_are_named_for_what_they_mean():
    assert P.get("gaussian_blur").params(4) == {"kernel_size": 17, "sigma": 17 / 6}
    assert P.get("compression").params(1) == {"crf": 30}
    assert P.get("gaussian_noise").params(5) == {"variance": 0.05}
    assert P.tag("gaussian_blur", 4) == "gaussian_blur:4"


@pytest.mark.parametrize("name", sorted(UPSTREAM_TABLE))
def test_same_seed_same_output_and_input_untouched(name, window):
    before = window.copy()
    a = P.apply(name, window, 3, seed=42)
    b = P.apply(name, window, 3, seed=42)
    assert np.array_equal(a, b)
    assert np.array_equal(window, before)
    assert a.shape == window.shape and a.dtype == np.uint8
    assert not np.array_equal(a, window)


@pytest.mark.parametrize("name", sorted(UPSTREAM_TABLE))
def test_seed_matters_only_for_random_types(name, window):
    a = P.apply(name, window, 2, seed=1)
    b = P.apply(name, window, 2, seed=2)
    assert np.array_equal(a, b) == (name not in SEEDED)
    assert P.get(name).seeded == (name in SEEDED)


@pytest.mark.parametrize("name", sorted(set(UPSTREAM_TABLE) - SEEDED - {"compression"}))
def test_per_frame_types_treat_frames_alone(name, window):
    together = P.apply(name, window, 4, seed=0)
    for i, frame in enumerate(window):
        assert np.array_equal(P.apply(name, frame, 4, seed=0), together[i])


@pytest.mark.parametrize("name", sorted(SEEDED))
def test_random_types_draw_frame_after_frame(name):
    flat = np.full((2, 64, 64, 3), 100, dtype=np.uint8)
    out = P.apply(name, flat, 3, seed=9)
    assert not np.array_equal(out[0], out[1])  # each frame its own draws
    assert np.array_equal(P.apply(name, flat[0], 3, seed=9), out[0])  # a lone frame: the first frame's


def assert_damage_grows(frames: np.ndarray) -> None:
    for name in UPSTREAM_TABLE:
        scores = [psnr(P.apply(name, frames, level, seed=123), frames) for level in P.LEVELS]
        assert all(a > b for a, b in zip(scores, scores[1:])), f"{name}: PSNR by level {scores}"


def test_damage_grows_with_level_on_a_textured_image():
    assert_damage_grows(as_window(textured_image()))


@pytest.mark.shared_media
def test_damage_grows_with_level_on_a_photo(shared_media):
    assert_damage_grows(as_window(photo(shared_media)))


def test_random_choice_is_deterministic_and_uniform():
    assert P.random_choice(1234) == P.random_choice(1234)
    draws = [P.random_choice(seed) for seed in range(3000)]
    types = Counter(t for t, _ in draws)
    levels = Counter(level for _, level in draws)
    assert set(types) == set(P.AVLIPS_TYPES)  # never block_wise
    assert set(levels) == set(P.LEVELS)
    assert len(set(draws)) == 30
    assert all(400 < c < 600 for c in types.values()), types  # 500 expected each, sd ~20
    assert all(500 < c < 700 for c in levels.values()), levels  # 600 expected each, sd ~22


def test_random_choice_then_apply():
    name, level = P.random_choice(77)
    frames = as_window(textured_image(64, 64), 2)
    assert P.apply(name, frames, level, seed=77).shape == frames.shape


GOOD = np.zeros((2, 16, 16, 3), dtype=np.uint8)


@pytest.mark.parametrize(
    ("frames", "error", "words"),
    [
        (GOOD.astype(np.float32), P.BadFrames, "uint8"),
        (GOOD.astype(np.uint16), P.BadFrames, "uint8"),
        (GOOD[..., 0], P.BadFrames, "shape"),
        (np.zeros((16, 16, 4), np.uint8), P.BadFrames, "shape"),
        (np.zeros((1, 2, 16, 16, 3), np.uint8), P.BadFrames, "shape"),
        (GOOD[:0], P.BadFrames, "empty"),
        (GOOD[:, :0], P.BadFrames, "empty"),
        (GOOD[:, :4, :4], P.BadFrames, "minimum"),
        (GOOD.tolist(), P.BadFrames, "numpy"),
    ],
)
def test_bad_frames_are_named(frames, error, words):
    with pytest.raises(error) as info:
        P.apply("gaussian_blur", frames, 1, seed=0, sample="clip-7/w3")
    assert isinstance(info.value, ValueError)
    assert "clip-7/w3" in str(info.value) and words in str(info.value) and "gaussian_blur" in str(info.value)


@pytest.mark.parametrize("level", [0, 6, -1, 2.0, 2.5, "3", None, True, np.float64(3)])
def test_bad_levels_are_named(level):
    with pytest.raises(P.BadLevel) as info:
        P.apply("contrast", GOOD, level, seed=0, sample="s1")
    message = str(info.value)
    assert message.startswith("s1: contrast: level") and "1..5" in message


def test_numpy_int_level_is_accepted():
    assert P.apply("contrast", GOOD, np.int64(2), seed=np.int32(0)).shape == GOOD.shape


@pytest.mark.parametrize("seed", [-1, 1.5, None, "0"])
def test_bad_seeds_are_named(seed):
    with pytest.raises(P.BadSeed, match="seed"):
        P.apply("gaussian_noise", GOOD, 1, seed=seed)


@pytest.mark.parametrize("name", ["jpeg", "Saturation", "", None])
def test_unknown_type_is_named(name):
    with pytest.raises(P.UnknownPerturbation) as info:
        P.apply(name, GOOD, 1, seed=0, sample="key-9")
    assert "key-9" in str(info.value) and repr(name) in str(info.value) and "gaussian_noise" in str(info.value)


def test_error_without_sample_and_pickled():
    with pytest.raises(P.PerturbationError) as info:
        P.apply("pixelation", GOOD, 9, seed=0)
    assert str(info.value).startswith("pixelation: level")
    err = P.BadLevel("pixelation: level must be in 1..5, got 9", "clip/3")
    copy = pickle.loads(pickle.dumps(err))
    assert type(copy) is P.BadLevel and str(copy) == str(err) and copy.sample == "clip/3"
