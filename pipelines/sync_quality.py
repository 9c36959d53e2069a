"""The sync_quality stage: how in sync every video of the build is under the lip-sync expert.

Every real clip (train, val and test) and every fake is scored LSE-style with the expert
(model/sync/quality.py): LSE-C (the offset curve's median minus its minimum; higher is more clearly
in sync), LSE-D (its minimum) and the best offset, on the expert's own scale. The real clips are the
baseline a fake is compared with. One row per video goes to `sync_quality.out` (a parquet file):
a video that cannot be scored (missing, broken, no face, too short) is a row whose `error` and
`reason` say why, never a stopped run.

Each video is paired with the audio compose pairs it with in the shards, so the numbers describe
what a detector is trained and tested on: a real clip with its denoised speech (a clip whose
denoising failed is left out by compose and recorded here as such), a fake with its driving speech.
Face-centred sources (the demo) use whole frames, as compose does; a fake takes its target's.

A row is reused while its inputs hash (the video's and audio's bytes, the expert's bytes, the
offsets, centred) is unchanged, and the file is saved every `checkpoint_every` videos: a rerun
scores only what changed and an interrupted run keeps what it scored.

`synthesize.min_sync_confidence` (off by default) is applied here, where the expert exists: the
expert is trained on the shards compose makes from the fakes, so synthesize and compose run before
it. A fake scored below it, or not scored at all, gets `kept = false` and a reason; the card
reports those per generator, and the fakes not kept are listed in `sync_quality.dropped`
(pipelines/dropped_videos.py), which training and evaluation read to leave their windows out.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from typing import Any, Mapping

import pyarrow.parquet as pq

from avlips.config import config_from_dict
from avlips.errors import AvlipsInputError
from avlips.params import param
from avlips.pipelines.dropped_videos import write_dropped
from avlips.pipelines.sync_quality_table import LEFT_OUT, SCORE_COLUMNS, write_rows

STAGE = "sync_quality"
# Bump when the scoring changes in a way that changes the numbers: every row is scored again.
SCORING_VERSION = 1
log = logging.getLogger("avlips.sync_quality")


class SyncQualityInputError(AvlipsInputError, ValueError):
    """The stage cannot run: no expert, or a manifest missing or lacking columns; the message names it."""


@dataclass(frozen=True)
class SyncQualityConfig:
    """params.yaml `sync_quality`."""

    clips: str = "data/corpus/clips.parquet"
    audio: str = "data/audio/audio.parquet"    # denoised speech per clip; "" pairs each video with its own track
    fakes: str = "data/fakes/fakes.parquet"    # "" or absent: real clips only
    out: str = "data/sync_quality.parquet"
    dropped: str = "data/sync_dropped.json"    # the fakes min_sync_confidence does not keep (train and evaluate skip them)
    expert: str = ""                           # "": sync.model when it exists, else sync.expert_weights
    offsets: int = 15                          # searched either side of 0, in frames
    threads: int = 1                           # torch threads (0: torch's default)
    checkpoint_every: int = 20                 # videos scored between saves of `out`
    max_failure_fraction: float = 0.5

    def __post_init__(self) -> None:
        if self.offsets < 0:
            raise ValueError(f"offsets must be >= 0 (got {self.offsets})")
        if self.checkpoint_every < 1:
            raise ValueError(f"checkpoint_every must be >= 1 (got {self.checkpoint_every})")

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> "SyncQualityConfig":
        """The config of params.yaml's `sync_quality` block (an unknown key or a mistyped value is a ParamsError)."""
        return config_from_dict(cls, params.get(STAGE), STAGE)


@dataclass(frozen=True)
class _Threshold:
    min_sync_confidence: float | None = None


def min_sync_confidence(params: Mapping[str, Any]) -> float | None:
    """synthesize.min_sync_confidence: None (off) or the LSE-C below which a fake is not kept."""
    value = param(params, "synthesize.min_sync_confidence")
    return config_from_dict(_Threshold, {"min_sync_confidence": value}, "synthesize").min_sync_confidence


def expert_path(config: SyncQualityConfig, params: Mapping[str, Any]) -> str:
    """The expert to score with: sync_quality.expert, else train_sync's sync.model, else sync.expert_weights."""
    if config.expert:
        chosen = config.expert
    else:
        trained = str(param(params, "sync.model") or "")
        released = str(param(params, "sync.expert_weights") or "")
        chosen = trained if trained and os.path.isfile(trained) else released or trained
    if not chosen:
        raise SyncQualityInputError("no lip-sync expert: sync.model, sync.expert_weights and sync_quality.expert "
                                    "are all empty")
    if not os.path.isfile(chosen):
        raise SyncQualityInputError(f"{chosen}: lip-sync expert not found (run `avlips train-sync`, or set "
                                    f"sync.expert_weights to a released lipsync_expert.pth)")
    return chosen


# ----------------------------------------------------------------------------------------------
# What to score


def _manifest(path: str, columns: tuple[str, ...], what: str, optional: tuple[str, ...] = ()) -> list[dict]:
    if not os.path.isfile(path):
        raise SyncQualityInputError(f"{path}: no such {what} manifest (run the {what} stage first)")
    try:
        names = pq.read_schema(path).names
    except Exception as exc:  # pyarrow raises several kinds for a file that is not parquet
        raise SyncQualityInputError(f"{path}: cannot read it as parquet ({exc})") from exc
    missing = [c for c in columns if c not in names]
    if missing:
        raise SyncQualityInputError(f"{path}: lacks the column(s) {', '.join(missing)}")
    return pq.read_table(path, columns=list(columns) + [c for c in optional if c in names]).to_pylist()


def videos_to_score(config: SyncQualityConfig) -> list[dict]:
    """Every clip of the corpus and every fake, with the audio and face handling compose gives it.

    A video compose leaves out (a clip whose denoising failed, a fake whose target is gone) carries
    `skip`: the reason it gets no score.
    """
    clips = _manifest(config.clips, ("clip_id", "path", "label", "split", "identity", "generator"), "corpus",
                      optional=("centred", "audio_path"))
    denoised = None  # None: no denoise stage; every clip keeps its own audio, as in compose
    if config.audio and os.path.isfile(config.audio):
        denoised = {r["clip_id"]: r["path"] for r in _manifest(config.audio, ("clip_id", "path"), "denoise")}
    videos = []
    for row in clips:
        video = {"video_id": row["clip_id"], "path": row["path"], "kind": "real" if int(row["label"]) == 0 else "fake",
                 "generator": row["generator"] or "", "split": row["split"], "identity": row["identity"],
                 "centred": bool(row.get("centred") or False), "audio": row.get("audio_path") or "", "skip": ""}
        if denoised is not None:
            if row["clip_id"] in denoised:
                video["audio"] = denoised[row["clip_id"]]
            else:
                video["skip"] = f"its audio failed denoising ({config.audio} lacks it): compose leaves it out"
        videos.append(video)
    if config.fakes and os.path.isfile(config.fakes):
        by_clip = {row["clip_id"]: row for row in clips}
        for row in _manifest(config.fakes, ("fake_id", "path", "target_clip", "driving_audio", "generator"), "synthesize"):
            target = by_clip.get(row["target_clip"])
            videos.append({
                "video_id": row["fake_id"], "path": row["path"], "kind": "fake", "generator": row["generator"],
                "split": target["split"] if target else "", "identity": target["identity"] if target else "",
                "centred": bool(target.get("centred") or False) if target else False,
                "audio": row["driving_audio"] or "",
                "skip": "" if target else f"its target clip {row['target_clip']} is not in {config.clips}: "
                                          "compose leaves it out"})
    return sorted(videos, key=lambda v: v["video_id"])


# ----------------------------------------------------------------------------------------------
# Scoring


def inputs_hash(video: Mapping[str, Any], expert_sha256: str, offsets: int) -> str:
    """The hash of everything a row's numbers depend on: a row is reused while it is unchanged."""
    from avlips.media.checksums import file_sha256

    facts = {"video": file_sha256(video["path"]), "audio": file_sha256(video["audio"]) if video["audio"] else "",
             "centred": bool(video["centred"]), "expert": expert_sha256, "offsets": int(offsets),
             "scoring": SCORING_VERSION}
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:16]


def score_video(video: Mapping[str, Any], model, expert_sha256: str, offsets: int) -> dict:
    """The row of one video: its scores, or the error class and reason it could not be scored."""
    from avlips.model.sync.quality import clip_sync_quality

    row = {key: video[key] for key in ("video_id", "path", "kind", "generator", "split", "identity", "centred",
                                       "audio")}
    row.update({column: None for column in SCORE_COLUMNS})
    row.update({"error": "", "reason": "", "kept": True, "inputs_hash": ""})
    if video.get("skip"):
        return {**row, "error": LEFT_OUT, "reason": video["skip"]}
    try:
        row["inputs_hash"] = inputs_hash(video, expert_sha256, offsets)
        row.update(clip_sync_quality(video["path"], video["audio"], model, centred=bool(video["centred"]),
                                     offsets=offsets))
    except Exception as exc:  # one video's problem (missing, undecodable, no face, too short) is its row
        message = " ".join(str(exc).split()) or type(exc).__name__
        return {**row, "error": type(exc).__name__, "reason": message if video["path"] in message
                else f"{video['path']}: {message}"}
    return row


def apply_threshold(row: dict, threshold: float | None) -> dict:
    """`kept` and its reason under synthesize.min_sync_confidence (real clips are always kept)."""
    # A scored row's reason is only ever the threshold's: a reused row loses the one an earlier threshold gave.
    row = {**row, "kept": True} if row["error"] else {**row, "kept": True, "reason": ""}
    if row["kind"] != "fake" or threshold is None:
        return row
    if row["error"]:
        return {**row, "kept": False}  # the reason already says why it has no score
    if row["lse_c"] < threshold:
        return {**row, "kept": False,
                "reason": f"LSE-C {row['lse_c']:.4f} is below synthesize.min_sync_confidence {threshold:g}"}
    return row


def _previous(path: str) -> dict[str, dict]:
    """Rows of an earlier run that were scored, by video id (an unreadable file is scored again, with a warning)."""
    if not os.path.isfile(path):
        return {}
    try:
        rows = pq.read_table(path).to_pylist()
    except Exception as exc:  # a file cut by a crash: nothing to reuse
        log.warning("sync_quality: %s is unreadable (%s): every video is scored again", path, exc)
        return {}
    return {r["video_id"]: r for r in rows if not r.get("error") and r.get("inputs_hash")}


def run_sync_quality(params: Mapping[str, Any]) -> dict:
    """Score every video of the build; write `sync_quality.out`; return the run's counts.

    Raises SyncQualityInputError when it cannot start and StageFailed when more than
    max_failure_fraction of the videos could not be scored (the file is written first).
    """
    import torch

    from avlips.media.checksums import file_sha256
    from avlips.model.sync.weights import load_expert
    from avlips.pipelines.failures import check_threshold

    started = time.time()
    config = SyncQualityConfig.from_params(params)
    threshold = min_sync_confidence(params)
    weights = expert_path(config, params)
    expert = load_expert(weights)  # a foreign or cut file: one line naming it
    expert_sha256 = file_sha256(weights)
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    videos = videos_to_score(config)
    previous = _previous(config.out)
    metadata = {"expert": weights, "expert_sha256": expert_sha256, "released_expert": expert.released,
                "face_size": expert.model.config.face_size, "offsets": config.offsets,
                "min_sync_confidence": threshold, "scoring_version": SCORING_VERSION}
    log.info("sync_quality: %d videos, expert %s (%s), offsets +-%d", len(videos), weights,
             "released" if expert.released else "trained here", config.offsets)
    rows: dict[str, dict] = {}
    reused = scored_now = 0
    for n, video in enumerate(videos, 1):
        earlier = previous.get(video["video_id"])
        row = None
        if earlier is not None and not video["skip"]:
            try:
                unchanged = earlier["inputs_hash"] == inputs_hash(video, expert_sha256, config.offsets)
            except OSError:
                unchanged = False  # gone since: score_video records why
            if unchanged and earlier["path"] == video["path"] and earlier["audio"] == video["audio"]:
                row = {**earlier, **{k: video[k] for k in ("kind", "generator", "split", "identity")}}
                reused += 1
        if row is None:
            row = score_video(video, expert.model, expert_sha256, config.offsets)
            scored_now += 1
        rows[video["video_id"]] = apply_threshold(row, threshold)
        if scored_now and scored_now % config.checkpoint_every == 0:
            # What is scored so far, with the earlier rows not yet reached: an interruption loses nothing.
            pending = {k: v for k, v in previous.items() if k not in rows}
            write_rows(config.out, list(rows.values()) + list(pending.values()), metadata)
            log.info("sync_quality: %d/%d videos (%d scored, %d reused) in %.0fs", n, len(videos), scored_now,
                     reused, time.time() - started)
    final = list(rows.values())
    write_rows(config.out, final, metadata)
    write_dropped(config.dropped, final, threshold)
    failed = [r for r in final if r["error"]]
    left_out = sum(1 for r in failed if r["error"] == LEFT_OUT)  # failures of earlier stages, not ours
    stats = {"videos": len(final), "scored": len(final) - len(failed), "failures": len(failed), "left_out": left_out,
             "scored_now": scored_now, "reused": reused,
             "dropped": sum(1 for r in final if not r["kept"] and not r["error"]),
             "seconds": round(time.time() - started, 1), "out": config.out, "expert": weights}
    log.info("sync_quality done: %d videos, %d failures, %d dropped by min_sync_confidence, in %.1fs",
             stats["videos"], stats["failures"], stats["dropped"], stats["seconds"])
    check_threshold(STAGE, len(final) - left_out, len(failed) - left_out, config.max_failure_fraction)
    return stats
