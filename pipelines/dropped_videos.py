"""The videos `synthesize.min_sync_confidence` drops, as one small file that training and evaluation read.

The expert that scores a fake's sync is trained on the shards compose makes, so a fake cannot be kept out
of the shards themselves: the sync_quality stage lists the fakes it does not keep, and `avlips train` and
`avlips evaluate` leave their windows out (`train.exclude_videos`, `evaluate.exclude_videos`). The shards
stay the full record of what was built. With the threshold off the file is always the same few bytes,
so DVC does not retrain LipFD when only the expert changed.
"""
from __future__ import annotations

import json
import logging
import os

from avlips.errors import AvlipsInputError

__all__ = ["DroppedVideosError", "write_dropped", "read_dropped"]

log = logging.getLogger("avlips.dropped_videos")


class DroppedVideosError(AvlipsInputError, ValueError):
    """A drop list that cannot be read; the message names the file."""


def write_dropped(path: str, rows: list[dict], threshold: float | None) -> list[dict]:
    """Write the fakes of `rows` (sync_quality rows) that are not kept; returns the listed entries."""
    dropped = sorted(({"video_id": r["video_id"], "generator": r.get("generator") or "", "reason": r.get("reason") or ""}
                      for r in rows if r.get("kind") == "fake" and not r.get("kept", True)),
                     key=lambda entry: entry["video_id"])
    body = {"min_sync_confidence": threshold, "dropped": dropped}
    folder = os.path.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    partial = f"{path}.partial"
    with open(partial, "w", encoding="utf-8") as handle:
        json.dump(body, handle, indent=1, sort_keys=True)
        handle.write("\n")
    os.replace(partial, path)
    return dropped


def read_dropped(path: str, setting: str) -> tuple[str, ...]:
    """The video ids a drop list names ("" or a missing file: none, said in the log)."""
    if not path:
        return ()
    if not os.path.isfile(path):
        log.info("%s: no drop list at %s (the sync_quality stage writes it): no video left out", setting, path)
        return ()
    try:
        with open(path, encoding="utf-8") as handle:
            body = json.load(handle)
        ids = tuple(sorted(str(entry["video_id"]) for entry in body["dropped"]))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DroppedVideosError(f"{path} ({setting}): not a drop list written by `avlips sync-quality` "
                                 f"({type(exc).__name__}: {exc})") from exc
    if ids:
        log.info("%s: %d video(s) left out as listed in %s", setting, len(ids), path)
    return ids
