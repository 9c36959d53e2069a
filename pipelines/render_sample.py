"""Find a stored sample in shards and write it in the reference layout."""
from __future__ import annotations

import braceexpand
import cv2

from avlips.errors import AvlipsInputError
from avlips.media.render import render_sample
from avlips.media.sample import WindowSample
from avlips.pipelines import storage
from avlips.pipelines.shards import iter_tar_samples


class SampleNotFound(AvlipsInputError, LookupError):
    """No shard holds the requested key."""


def find_sample(shards: str, key: str) -> WindowSample:
    """The sample with `key` from shard paths given in brace notation."""
    paths = list(braceexpand.braceexpand(shards))
    for path in paths:
        if not storage.exists(path):
            raise FileNotFoundError(f"{path}: no such shard")
        for found, members in iter_tar_samples(storage.read_bytes(path)):
            if found == key:
                return WindowSample.decode(key, members)
    raise SampleNotFound(f"key {key!r} is in none of {len(paths)} shard(s) {shards}")


def render_to_png(shards: str, key: str, out: str) -> tuple[int, ...]:
    """Write the reference composite of a sample as PNG; return its shape."""
    image = render_sample(find_sample(shards, key))
    ok, data = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError(f"{out}: PNG encoding failed")
    storage.write_bytes(out, data.tobytes())
    return image.shape
