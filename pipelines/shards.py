"""WebDataset shards: deterministic tar bytes, stable placement by key, shard names.

Members are sorted by key then field, with fixed metadata (mtime 0, root owner, mode 0644), so
the same samples always give the same tar bytes whatever order they arrived in.
"""
from __future__ import annotations

import hashlib
import io
import math
import tarfile
from typing import Iterable, Iterator


def shard_name(split: str, index: int) -> str:
    """`<split>-NNNNNN`, zero-padded so brace notation lists shards."""
    return f"{split}-{index:06d}"


def shard_count(expected_samples: int, samples_per_shard: int) -> int:
    """How many shards a split gets: fixed by the expected sample count, not by arrival."""
    return max(1, math.ceil(expected_samples / max(1, samples_per_shard)))


def shard_of(key: str, shards: int) -> int:
    """The shard a key goes to: a hash of the key, so placement is independent of workers and order."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % shards


def tar_bytes(samples: Iterable[tuple[str, dict[str, bytes]]]) -> bytes:
    """A tar holding each (key, members) sample as `<key>.<field>` entries, sorted, fixed metadata.

    The bytes tarfile writes for these members (USTAR, mode 0644, mtime 0, root, no names), put
    together here: tarfile's addfile copies each member through a file object, a quarter of a
    shard's writing time for a few thousand small members.
    """
    ordered = sorted(samples, key=lambda item: item[0])
    keys = [key for key, _ in ordered]
    if len(keys) != len(set(keys)):
        duplicated = sorted({k for k in keys if keys.count(k) > 1})
        raise ValueError(f"duplicate sample keys in one shard: {duplicated[:5]}")
    chunks: list[bytes] = []
    offset = 0
    for key, members in ordered:
        for name in sorted(members):
            data = members[name]
            header = _member_header(f"{key}.{name}", len(data))
            padding = -len(data) % tarfile.BLOCKSIZE
            chunks += (header, data, tarfile.NUL * padding)
            offset += len(header) + len(data) + padding
    # The end: two zero blocks, then zeros to a whole record (tarfile's close).
    offset += 2 * tarfile.BLOCKSIZE
    chunks.append(tarfile.NUL * (2 * tarfile.BLOCKSIZE + -offset % tarfile.RECORDSIZE))
    return b"".join(chunks)


def _tar_info(name: str, size: int) -> tarfile.TarInfo:
    """A shard member's header fields: fixed metadata, so the same content gives the same bytes."""
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, 0, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


_ENCODING, _ERRORS = tarfile.ENCODING, "surrogateescape"  # what tarfile.open uses for names
# tarfile's header of an empty name and size: the fields every member shares (mode, ids, mtime, type, magic, ...).
_TEMPLATE = _tar_info("", 0).tobuf(tarfile.USTAR_FORMAT, _ENCODING, _ERRORS)
_MODE_IDS, _MTIME, _TAIL = _TEMPLATE[100:124], _TEMPLATE[136:148], _TEMPLATE[156:]
_SHARED_SUM = 8 * ord(" ") + sum(_MODE_IDS) + sum(_MTIME) + sum(_TAIL)  # the checksum counts its own field as spaces


def _member_header(name: str, size: int) -> bytes:
    """tarfile's USTAR header block for a member `name` of `size` bytes (see _tar_info)."""
    encoded = name.encode(_ENCODING, _ERRORS)
    if len(encoded) > 100 or size >= 8**11:
        # A name split into prefix and name, or a size past USTAR's digits (tarfile raises): tarfile's own.
        return _tar_info(name, size).tobuf(tarfile.USTAR_FORMAT, _ENCODING, _ERRORS)
    size_field = b"%011o\0" % size
    checksum = _SHARED_SUM + sum(encoded) + sum(size_field)
    return b"".join((encoded.ljust(100, b"\0"), _MODE_IDS, size_field, _MTIME, b"%06o\0 " % checksum, _TAIL))


def iter_tar_samples(data: bytes | io.BufferedIOBase) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, members) for each sample of a tar, members grouped while their key repeats."""
    fileobj = io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data
    current_key, members = None, {}
    with tarfile.open(fileobj=fileobj, mode="r|*") as tar:
        for info in tar:
            if not info.isfile():
                continue
            base = info.name.rsplit("/", 1)[-1]
            key, _, field = base.partition(".")
            if key != current_key and current_key is not None:
                yield current_key, members
                members = {}
            current_key = key
            members[field] = tar.extractfile(info).read()
    if current_key is not None:
        yield current_key, members
