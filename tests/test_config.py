"""config_from_dict: the one builder of frozen configs from params blocks (unknown keys, value types)."""
from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from avlips.config import config_from_dict
from avlips.errors import AvlipsInputError, ParamsError


@dataclass(frozen=True)
class Inner:
    size: int = 4


@dataclass(frozen=True)
class Knobs:
    steps: int = 10
    rate: float = 0.5
    name: str = "a"
    flag: bool = False
    limit: float | None = None
    levels: tuple[int, ...] = (1, 2)
    betas: tuple[float, float] = (0.9, 0.99)
    inner: Inner = field(default_factory=Inner)
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError("steps must be positive")


def test_absent_keys_keep_defaults_and_values_are_converted_without_loss():
    knobs = config_from_dict(Knobs, {"steps": 3.0, "rate": 1, "limit": "1e-3", "levels": [3, 4],
                                     "betas": [0, 1], "inner": {"size": 8}, "extra": {"x": 1}}, "block")
    assert knobs == Knobs(steps=3, rate=1.0, limit=0.001, levels=(3, 4), betas=(0.0, 1.0), inner=Inner(8),
                          extra={"x": 1})
    assert isinstance(knobs.rate, float) and isinstance(knobs.steps, int)
    assert config_from_dict(Knobs, None, "block") == Knobs()
    assert config_from_dict(Knobs, {"limit": None}, "block").limit is None


def test_an_unknown_key_names_the_closest_known_one():
    with pytest.raises(ParamsError, match=r"block: unknown key 'stpes' \(did you mean 'steps'\?\)"):
        config_from_dict(Knobs, {"stpes": 3}, "block")
    # Keys that belong to the block but not to this config are skipped when named.
    assert config_from_dict(Knobs, {"out": "x", "steps": 2}, "block", ignore=("out",)).steps == 2


@pytest.mark.parametrize("data, words", [
    ({"steps": "ten"}, ["block.steps", "expected int", "'ten'"]),
    ({"steps": 2.5}, ["block.steps", "expected int", "2.5"]),
    ({"steps": True}, ["block.steps", "expected int"]),
    ({"flag": "yes"}, ["block.flag", "expected bool"]),
    ({"name": 3}, ["block.name", "expected str"]),
    ({"rate": "fast"}, ["block.rate", "expected float"]),
    ({"levels": 3}, ["block.levels", "expected list"]),
    ({"levels": [1, "x"]}, ["block.levels[1]", "expected int"]),
    ({"betas": [0.9]}, ["block.betas", "expected 2 values"]),
    ({"inner": {"sise": 3}}, ["block.inner: unknown key 'sise'", "did you mean 'size'"]),
    ({"steps": 0}, ["block: steps must be positive"]),
])
def test_a_wrong_value_is_an_input_error_naming_the_key(data, words):
    with pytest.raises(ParamsError) as caught:
        config_from_dict(Knobs, data, "block")
    for word in words:
        assert word in str(caught.value)
    assert isinstance(caught.value, (AvlipsInputError, ValueError))  # older callers catch ValueError
