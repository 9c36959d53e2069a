"""The compose stage: LipFD windows from real clips and fakes, into deterministic WebDataset shards.

Per video: evenly spaced window starts, five consecutive frames each (face-centred crops, or full
frames for already-centred sources), the mel columns of the same time span, encoded as one sample.
Samples go to `<split>-NNNNNN.tar` by a hash of their key. Every record (sample or failure) belongs
to one shard, whose `_stats.json` is written last and marks it finished: a rerun skips finished
shards and the videos that only feed them, and rebuilds the stage manifests from the shard files.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import apache_beam as beam
import numpy as np
import pyarrow as pa

from avlips.media.audio import MelConfig
from avlips.media.errors import MediaError
from avlips.media.windows import WindowConfig, WindowFailure, iter_windows
from avlips.pipelines import storage
from avlips.pipelines.beam_options import pipeline_options
from avlips.pipelines.failures import SCHEMA as FAILURE_SCHEMA
from avlips.pipelines.failures import Failure, check_threshold, failure_rows
from avlips.pipelines.progress import WorkerProgress
from avlips.pipelines.shards import shard_count, shard_name, shard_of, tar_bytes

STAGE = "compose"
log = logging.getLogger("avlips.compose")

_progress = WorkerProgress("compose", "videos", every=10)  # per worker process

SAMPLE_SCHEMA = pa.schema([
    ("key", pa.string()), ("shard", pa.string()), ("split", pa.string()), ("label", pa.int8()),
    ("clip", pa.string()), ("identity", pa.string()), ("generator", pa.string()),
    ("window", pa.int16()), ("frame_indices", pa.list_(pa.int64())), ("start_time", pa.float64()),
    ("end_time", pa.float64()), ("bytes", pa.int64()),
])


@dataclass(frozen=True)
class ComposeConfig:
    """The knobs of compose, from params.yaml `compose`."""

    windows: WindowConfig = WindowConfig()
    frame_format: str = "jpg"
    jpeg_quality: int = 92
    samples_per_shard: int = 200
    max_failure_fraction: float = 0.5

    @property
    def n_windows(self) -> int:
        """Windows per video."""
        return self.windows.n_windows

    @classmethod
    def from_params(cls, params: dict) -> "ComposeConfig":
        """The config from the `compose` block of params.yaml."""
        block = dict(params.get("compose", {}))
        mel = MelConfig.from_params(block.pop("mel", None))
        window_fields = {k: block.pop(k) for k in list(block) if k in WindowConfig.__dataclass_fields__}
        own = {k: v for k, v in block.items() if k in cls.__dataclass_fields__}
        return cls(windows=WindowConfig(**window_fields, mel=mel), **own)


def planned_keys(video_id: str, n_windows: int) -> list[str]:
    """The keys a video's windows get: `<video_id>_wNN`."""
    return [f"{video_id}_w{index:02d}" for index in range(n_windows)]


def compose_video(video: dict, config: ComposeConfig, shards_by_split: dict[str, int]) -> list[dict]:
    """The records of one video: {'shard', 'kind': 'sample'|'failure', ...}; never raises."""
    records = _video_records(video, config, shards_by_split)
    _progress.tick(failed=bool(records) and records[0].get("scope") == "video")
    return records


def _video_records(video: dict, config: ComposeConfig, shards_by_split: dict[str, int]) -> list[dict]:
    split = video["split"]
    shards = shards_by_split[split]
    keys = planned_keys(video["video_id"], config.n_windows)
    try:
        records = list(_compose_windows(video, config, keys, shards))
        if any(r["kind"] == "sample" for r in records):
            return records
        # Not one window survived: the video itself failed, said once with the windows' reasons.
        errors = sorted({r["failure"]["error"] for r in records})
        reasons = "; ".join(sorted({r["failure"]["message"] for r in records}))[:500]
        failure = Failure(video["path"], STAGE, errors[0] if len(errors) == 1 else "NoUsableWindow",
                          f"{video['path']}: no usable window ({reasons})")
    except MediaError as exc:
        failure = Failure.from_exception(video["path"], STAGE, exc)
    except Exception as exc:  # an unforeseen error in one video must not stop the stage
        failure = Failure(video["path"], STAGE, type(exc).__name__, f"{video['path']}: {exc}")
    return [{"shard": shard_name(split, shard_of(keys[0], shards)), "kind": "failure", "scope": "video",
             "video": video["video_id"], "failure": failure.to_row()}]


def _compose_windows(video: dict, config: ComposeConfig, keys: list[str], shards: int):
    """Shard records for each window of one video."""
    split = video["split"]
    meta = {"clip": video["video_id"], "identity": video["identity"], "split": split,
            "generator": video.get("generator", ""), "target_clip": video.get("target_clip", "")}
    for item in iter_windows(video["path"], video.get("audio_path") or "", keys, config.windows,
                             bool(video.get("centred")), int(video["label"]), meta):
        shard = shard_name(split, shard_of(item.key, shards))
        if isinstance(item, WindowFailure):
            failure = Failure(f"{video['path']}#{item.key}", STAGE, type(item.error).__name__, str(item.error))
            yield {"shard": shard, "kind": "failure", "scope": "window", "video": video["video_id"],
                   "failure": failure.to_row()}
            continue
        members = item.encode(config.frame_format, config.jpeg_quality)
        meta_out = item.meta
        yield {"shard": shard, "kind": "sample", "video": video["video_id"], "key": item.key, "members": members,
               "row": {"key": item.key, "shard": shard, "split": split, "label": int(video["label"]),
                       "clip": video["video_id"], "identity": video["identity"],
                       "generator": video.get("generator", ""), "window": meta_out["window"],
                       "frame_indices": meta_out["frame_indices"], "start_time": meta_out["start_time"],
                       "end_time": meta_out["end_time"], "bytes": sum(len(b) for b in members.values())}}


def write_shard(shard: str, records: list, out_dir: str, seconds_started: float) -> dict:
    """Write one shard's tar, sample manifest and stats (the stats file last: it marks completion)."""
    records = [r for r in records if r is not None]
    samples = sorted((r for r in records if r["kind"] == "sample"), key=lambda r: r["key"])
    failures = [r for r in records if r["kind"] == "failure"]
    storage.write_bytes(storage.join(out_dir, f"{shard}.tar"), tar_bytes((r["key"], r["members"]) for r in samples))
    storage.write_parquet(storage.join(out_dir, f"{shard}.parquet"), [r["row"] for r in samples], SAMPLE_SCHEMA)
    by_error: dict[str, int] = {}
    for record in failures:
        by_error[record["failure"]["error"]] = by_error.get(record["failure"]["error"], 0) + 1
    stats = {
        "shard": shard, "samples": len(samples), "failures": len(failures),
        "failures_by_error": dict(sorted(by_error.items())),
        "video_failures": failure_rows([Failure(**r["failure"]) for r in failures if r["scope"] == "video"]),
        "window_failures": failure_rows([Failure(**r["failure"]) for r in failures if r["scope"] == "window"]),
        "videos": sorted({r["video"] for r in records}),
        "bytes": sum(r["row"]["bytes"] for r in samples),
        "seconds": round(time.time() - seconds_started, 3),
    }
    storage.write_json(storage.join(out_dir, f"{shard}_stats.json"), stats)
    return {"shard": shard, "samples": len(samples), "failures": len(failures)}


def _finished_shards(out_dir: str, names: list[str]) -> set[str]:
    return {name for name in names if storage.exists(storage.join(out_dir, f"{name}_stats.json"))
            and storage.exists(storage.join(out_dir, f"{name}.tar"))}


def compose_inputs(params: dict) -> list[dict]:
    """The videos to compose: real clips with their denoised audio, and the fakes made from them."""
    import pandas as pd

    from avlips.params import require

    settings = params.get("compose", {})
    # Paths come from params (params.yaml, the package's defaults under it): none is written here.
    clips_manifest = require(params, "compose.clips", "--clips")
    clips = storage.read_parquet(clips_manifest).to_pandas()
    audio_manifest = settings.get("audio")
    denoised: dict | None = None  # None: the denoise stage has not run, every clip keeps its own audio
    if audio_manifest and storage.exists(audio_manifest):
        table = storage.read_parquet(audio_manifest).to_pandas()
        denoised = dict(zip(table["clip_id"], table["path"]))
    videos = []
    for row in clips.to_dict("records"):
        if denoised is not None and row["clip_id"] not in denoised:
            # Its audio failed denoising (recorded there), even when every clip's did: never mix
            # processed and raw audio.
            continue
        videos.append({
            "video_id": row["clip_id"], "path": row["path"], "label": int(row["label"]),
            "identity": row["identity"], "split": row["split"], "generator": row.get("generator") or "",
            "centred": bool(row["centred"]),
            "audio_path": denoised[row["clip_id"]] if denoised is not None else row.get("audio_path") or "",
            "target_clip": "", "source": row.get("source") or "",
        })
    fakes_manifest = settings.get("fakes")
    if fakes_manifest and storage.exists(fakes_manifest):
        fakes = storage.read_parquet(fakes_manifest).to_pandas()
        by_clip = clips.set_index("clip_id")
        for row in fakes.to_dict("records"):
            if row["target_clip"] not in by_clip.index:
                # A fakes.parquet older than clips.parquet: without its target the fake has no identity or split.
                log.warning("compose: skipping fake %s: its target clip %s is not in %s (rerun synthesize)",
                            row["path"], row["target_clip"], clips_manifest)
                continue
            target = by_clip.loc[row["target_clip"]]
            videos.append({
                "video_id": row["fake_id"], "path": row["path"], "label": 1, "identity": target["identity"],
                "split": target["split"], "generator": row["generator"], "centred": bool(target["centred"]),
                # The driving speech as denoised, the same processing as the real clips' audio.
                "audio_path": row["driving_audio"], "target_clip": row["target_clip"],
                "source": target.get("source") or "",
            })
    del pd
    return sorted(videos, key=lambda v: v["video_id"])


def run_compose(out_dir: str, params: dict, runner: str = "DirectRunner", workers: int = 1,
                beam_args: tuple[str, ...] = ()) -> dict:
    """Run the compose stage; returns its totals, raises StageFailed above the failure threshold."""
    started = time.time()
    config = ComposeConfig.from_params(params)
    videos = compose_inputs(params)
    splits = sorted({v["split"] for v in videos})
    shards_by_split = {
        split: shard_count(sum(v["split"] == split for v in videos) * config.n_windows, config.samples_per_shard)
        for split in splits
    }
    all_shards = [shard_name(split, i) for split in splits for i in range(shards_by_split[split])]
    storage.makedirs(out_dir)
    finished = _finished_shards(out_dir, all_shards)
    todo_shards = [name for name in all_shards if name not in finished]
    # A video is composed again only if one of its windows belongs to an unfinished shard.
    todo_videos = [
        v for v in videos
        if any(shard_name(v["split"], shard_of(k, shards_by_split[v["split"]])) in todo_shards
               for k in planned_keys(v["video_id"], config.n_windows))
    ]
    log.info("compose: %d videos, %d shards (%d finished, %d videos to compose)", len(videos), len(all_shards),
             len(finished), len(todo_videos))
    if todo_shards:
        options = pipeline_options(runner, workers, beam_args)
        with _progress.running(len(todo_videos)), beam.Pipeline(options=options) as pipeline:
            records = (
                pipeline
                | "Videos" >> beam.Create(todo_videos, reshuffle=len(todo_videos) > 1)
                | "Compose" >> beam.FlatMap(compose_video, config, shards_by_split)
                | "KeepUnfinished" >> beam.Filter(lambda r, todo: r["shard"] in todo, set(todo_shards))
                | "ByShard" >> beam.Map(lambda r: (r["shard"], r))
            )
            # Every unfinished shard gets a group, so even an empty one is written and marked.
            empty = pipeline | "Shards" >> beam.Create([(name, None) for name in todo_shards])
            _ = (
                (records, empty)
                | beam.Flatten()
                | "Group" >> beam.GroupByKey()
                | "Write" >> beam.MapTuple(lambda shard, recs: write_shard(shard, list(recs), out_dir, started))
            )
    return _write_manifests(out_dir, all_shards, videos, config, started)


def _corpus_record(videos: list[dict]) -> dict:
    """The corpus sources (corpus.source kinds: demo, folder, ...) of the composed videos; a fake counts as its target's."""
    return {"sources": sorted({v.get("source") or "unknown" for v in videos})}


def _write_manifests(out_dir: str, shards: list[str], videos: list[dict], config: ComposeConfig,
                     started: float) -> dict:
    """samples.parquet, failures.parquet and compose_stats.json from the finished shards."""
    tables, video_failures, window_failures = [], [], []
    by_error: dict[str, int] = {}
    for name in shards:
        tables.append(storage.read_parquet(storage.join(out_dir, f"{name}.parquet")))
        stats = storage.read_json(storage.join(out_dir, f"{name}_stats.json"))
        video_failures += [Failure(**row) for row in stats["video_failures"]]
        window_failures += [Failure(**row) for row in stats["window_failures"]]
    samples = pa.concat_tables(tables).sort_by("key") if tables else SAMPLE_SCHEMA.empty_table()
    composed = set(samples.column("clip").to_pylist())
    failures = video_failures + window_failures
    for failure in failures:
        by_error[failure.error] = by_error.get(failure.error, 0) + 1
    storage.write_parquet(storage.join(out_dir, "samples.parquet"), samples.to_pylist(), SAMPLE_SCHEMA)
    storage.write_parquet(storage.join(out_dir, "failures.parquet"), failure_rows(failures), FAILURE_SCHEMA)
    per_split: dict[str, int] = {}
    for split in samples.column("split").to_pylist():
        per_split[split] = per_split.get(split, 0) + 1
    totals = {
        "stage": STAGE, "inputs": len(videos), "videos_composed": len(composed),
        "video_failures": len(video_failures), "window_failures": len(window_failures),
        "samples": samples.num_rows, "samples_by_split": dict(sorted(per_split.items())),
        "failures_by_error": dict(sorted(by_error.items())), "shards": len(shards),
        "bytes_per_sample": round(sum(samples.column("bytes").to_pylist()) / max(1, samples.num_rows)),
        # What the shards were made from, for the provenance a model trained on them records.
        "corpus": _corpus_record(videos),
    }
    storage.write_json(storage.join(out_dir, "compose_stats.json"), totals)
    log.info("compose done: inputs=%d composed=%d video_failures=%d window_failures=%d samples=%d in %.1fs",
             totals["inputs"], totals["videos_composed"], totals["video_failures"], totals["window_failures"],
             totals["samples"], time.time() - started)
    check_threshold(STAGE, len(videos), len(video_failures), config.max_failure_fraction)
    return totals
