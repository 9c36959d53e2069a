"""pipelines.shards.tar_bytes: the bytes tarfile writes for the same members, put together without it."""
from __future__ import annotations

import io
import tarfile

import numpy as np
import pytest

from avlips.pipelines.shards import iter_tar_samples, tar_bytes


def tarfile_bytes(samples: list[tuple[str, dict[str, bytes]]]) -> bytes:
    """The same members through tarfile (USTAR, mode 0644, mtime 0, root, no user names)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for key, members in sorted(samples, key=lambda item: item[0]):
            for name in sorted(members):
                info = tarfile.TarInfo(f"{key}.{name}")
                info.size, info.mtime, info.mode = len(members[name]), 0, 0o644
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                tar.addfile(info, io.BytesIO(members[name]))
    return buffer.getvalue()


def random_samples(seed: int) -> list[tuple[str, dict[str, bytes]]]:
    rng = np.random.default_rng(seed)
    # Names up to 100 bytes, and longer ones tarfile splits at a '/' into its prefix field.
    keys = ["a", "clip_w00", "vidéo_ü_w01", "x" * 90, "w" * 93, "é" * 46, "p/" + "z" * 90, "q" * 60 + "/" + "m" * 60]
    samples = []
    for key in keys:
        sizes = [0, 1, 511, 512, 513, int(rng.integers(0, 40000))]
        samples.append((key, {f"f{i}.jpg": rng.integers(0, 256, size, dtype=np.uint8).tobytes()
                              for i, size in enumerate(sizes)} | {"cls": b"1"}))
    return samples


@pytest.mark.parametrize("seed", [0, 1])
def test_same_bytes_as_tarfile(seed):
    samples = random_samples(seed)
    built = tar_bytes(reversed(samples))
    assert built == tarfile_bytes(samples)
    assert len(built) % tarfile.RECORDSIZE == 0
    read = dict(iter_tar_samples(built))
    assert read == {key.rsplit("/", 1)[-1]: members for key, members in samples}


@pytest.mark.parametrize("count", [0, 1, 19, 20])
def test_record_padding_at_every_length(count):
    """Archives ending anywhere in a record (10240 bytes) are padded as tarfile pads them."""
    samples = [(f"k{i:03d}", {"cls": b"0" * (i * 37)}) for i in range(count)]
    assert tar_bytes(samples) == tarfile_bytes(samples)


def test_names_tarfile_cannot_store_fail_as_there():
    with pytest.raises(ValueError, match="name is too long"):
        tar_bytes([("y" * 101, {"cls": b"0"})])


def test_duplicate_keys_are_refused():
    with pytest.raises(ValueError, match="duplicate sample keys"):
        tar_bytes([("a", {"cls": b"0"}), ("a", {"cls": b"1"})])
