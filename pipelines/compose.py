"""The compose stage: LipFD windows from real clips and fakes, into deterministic WebDataset shards.

Per video: evenly spaced window starts, five consecutive frames each (face-centred crops, or full
frames for already-centred sources), the mel columns of the same time span, encoded as one sample.
Whole videos go to `<split>-NNNNNN.tar`: a split's videos, ordered by a hash of their id, are cut
into equal runs, one per shard (the loader's shuffle mixes them). Each shard is composed and
written where its videos are, so composed windows never travel: only the video records are grouped
by shard. A shard's `_stats.json` is written last and marks it finished, so shards finish one by one
as the run goes; a rerun skips the finished ones and rebuilds the stage manifests from the shard files.
"""
from __future__ import annotations

import gc
import hashlib
import logging
import multiprocessing
import os
import signal
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import pyarrow as pa

from avlips.media.audio import MelConfig
from avlips.media.errors import MediaError
from avlips.media.windows import WindowConfig, WindowFailure, iter_windows
from avlips.pipelines import storage
from avlips.pipelines.failures import SCHEMA as FAILURE_SCHEMA
from avlips.pipelines.failures import Failure, check_threshold, failure_rows
from avlips.pipelines.progress import WorkerProgress
from avlips.pipelines.shards import shard_count, shard_name, tar_bytes

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


def _video_rank(video_id: str) -> bytes:
    """A video's place in its split's hash order: spread evenly, whatever the ids look like."""
    return hashlib.sha256(video_id.encode("utf-8")).digest()


def place_videos(videos: list[dict], config: ComposeConfig) -> dict[str, list[dict]]:
    """Every shard of every split with the videos that go into it (sorted by id; empty shards included).

    A split gets as many shards as its planned windows fill at samples_per_shard; its videos, in
    the order of a hash of their id, are cut into runs of equal length (within one), one per shard.
    Placement depends only on the set of videos, never on workers or arrival order.
    """
    placed: dict[str, list[dict]] = {}
    for split in sorted({v["split"] for v in videos}):
        members = sorted((v for v in videos if v["split"] == split), key=lambda v: _video_rank(v["video_id"]))
        shards = shard_count(len(members) * config.n_windows, config.samples_per_shard)
        for index in range(shards):
            placed[shard_name(split, index)] = []
        for rank, video in enumerate(members):
            placed[shard_name(split, rank * shards // len(members))].append(video)
    return {name: sorted(group, key=lambda v: v["video_id"]) for name, group in placed.items()}


def compose_video(video: dict, config: ComposeConfig, shard: str) -> list[dict]:
    """The records of one video in `shard`: {'shard', 'kind': 'sample'|'failure', ...}; never raises."""
    records = _video_records(video, config, shard)
    if _counted_here:
        _progress.tick(failed=bool(records) and records[0].get("scope") == "video")
    return records


# Whether this process counts its own videos: the local worker processes leave it to the stage's process.
_counted_here = True


def _video_records(video: dict, config: ComposeConfig, shard: str) -> list[dict]:
    keys = planned_keys(video["video_id"], config.n_windows)
    try:
        records = list(_compose_windows(video, config, keys, shard))
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
    return [{"shard": shard, "kind": "failure", "scope": "video", "video": video["video_id"],
             "failure": failure.to_row()}]


def _compose_windows(video: dict, config: ComposeConfig, keys: list[str], shard: str):
    """Shard records for each window of one video."""
    split = video["split"]
    meta = {"clip": video["video_id"], "identity": video["identity"], "split": split,
            "generator": video.get("generator", ""), "target_clip": video.get("target_clip", "")}
    for item in iter_windows(video["path"], video.get("audio_path") or "", keys, config.windows,
                             bool(video.get("centred")), int(video["label"]), meta):
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
    return {"shard": shard, "samples": len(samples), "failures": len(failures), "videos": len(stats["videos"]),
            "failed_videos": len(stats["video_failures"])}


def compose_shard(shard: str, videos: list, config: ComposeConfig, out_dir: str, seconds_started: float) -> dict:
    """Compose a shard's videos and write the shard, here: its windows never leave this worker."""
    records = []
    for video in sorted((v for v in videos if v is not None), key=lambda v: v["video_id"]):
        records += compose_video(video, config, shard)
    return write_shard(shard, records, out_dir, seconds_started)


def _finished_shards(out_dir: str, placed: dict[str, list[dict]]) -> set[str]:
    """Shards an earlier run finished: the tar and the stats, which name exactly the videos placed there now."""
    finished = set()
    for name, videos in placed.items():
        stats = storage.read_finished_record(storage.join(out_dir, f"{name}_stats.json"),
                                             storage.join(out_dir, f"{name}.tar"))
        # Other videos there: made by another version or from other inputs; composed again.
        if stats is not None and stats.get("videos") == [v["video_id"] for v in videos]:
            finished.add(name)
    return finished


def compose_inputs(params: dict) -> list[dict]:
    """The videos to compose: real clips with their denoised audio, and the fakes made from them."""
    from avlips.params import require

    settings = params.get("compose", {})
    # Paths come from params (params.yaml, the package's defaults under it): none is written here.
    clips_manifest = require(params, "compose.clips", "--clips")
    # Rows as plain dicts (pyarrow): pandas would add its import to every run for a few hundred rows.
    clips = storage.read_parquet(clips_manifest).to_pylist()
    audio_manifest = settings.get("audio")
    denoised: dict | None = None  # None: the denoise stage has not run, every clip keeps its own audio
    if audio_manifest and storage.exists(audio_manifest):
        table = storage.read_parquet(audio_manifest)
        denoised = dict(zip(table.column("clip_id").to_pylist(), table.column("path").to_pylist()))
    videos = []
    for row in clips:
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
        fakes = storage.read_parquet(fakes_manifest).to_pylist()
        by_clip = {row["clip_id"]: row for row in clips}
        for row in fakes:
            if row["target_clip"] not in by_clip:
                # A fakes.parquet older than clips.parquet: without its target the fake has no identity or split.
                log.warning("compose: skipping fake %s: its target clip %s is not in %s (rerun synthesize)",
                            row["path"], row["target_clip"], clips_manifest)
                continue
            target = by_clip[row["target_clip"]]
            videos.append({
                "video_id": row["fake_id"], "path": row["path"], "label": 1, "identity": target["identity"],
                "split": target["split"], "generator": row["generator"], "centred": bool(target["centred"]),
                # The driving speech as denoised, the same processing as the real clips' audio.
                "audio_path": row["driving_audio"], "target_clip": row["target_clip"],
                "source": target.get("source") or "",
            })
    return sorted(videos, key=lambda v: v["video_id"])


def run_compose(out_dir: str, params: dict, runner: str = "DirectRunner", workers: int = 1,
                beam_args: tuple[str, ...] = ()) -> dict:
    """Run the compose stage; returns its totals, raises StageFailed above the failure threshold."""
    started = time.time()
    config = ComposeConfig.from_params(params)
    videos = compose_inputs(params)
    placed = place_videos(videos, config)
    storage.makedirs(out_dir)
    finished = _finished_shards(out_dir, placed)
    # The smallest shards first: with one shard a worker at a time, more of them finish early.
    todo = sorted((name for name in placed if name not in finished), key=lambda name: (len(placed[name]), name))
    todo_videos = sum(len(placed[name]) for name in todo)
    log.info("compose: %d videos, %d shards (%d finished, %d videos to compose)", len(videos), len(placed),
             len(finished), todo_videos)
    if todo:
        with _progress.running(todo_videos):
            local = runner == "DirectRunner"
            if local and (workers <= 1 or len(todo) == 1):
                # One local worker: the shards in this process, in order, without starting a runner.
                with _one_thread_each():
                    for name in todo:
                        compose_shard(name, placed[name], config, out_dir, started)
            elif local and "fork" in multiprocessing.get_all_start_methods() and sys.platform.startswith("linux"):
                _run_local_processes(todo, placed, config, out_dir, started, workers)
            else:
                _run_pipeline(todo, placed, config, out_dir, started, runner, workers, beam_args)
    return _write_manifests(out_dir, list(placed), videos, config, started)


def _run_local_processes(todo: list[str], placed: dict[str, list[dict]], config: ComposeConfig, out_dir: str,
                         started: float, workers: int) -> None:
    """The unfinished shards on `workers` forked processes, each taking the next shard when it is free.

    Beam's local multi-process runner starts fresh interpreters that import everything again (a
    few CPU-seconds each) and sends every record through its data plane; forked workers inherit
    this process's modules, warmed once here, and write their shards where they compose them.
    """
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    # The workers inherit the one-thread limits and the warmed modules.
    with _one_thread_each():
        _warm_up(config, any(not v.get("centred") for name in todo for v in placed[name]))
        # Garbage freed here, where the threads of its decoders still run: a worker that collected
        # an inherited PyAV container would wait forever for decoder threads it does not have.
        # What is left is frozen, so no worker's collector ever visits this process's objects.
        gc.collect()
        gc.freeze()
        pool = ProcessPoolExecutor(min(workers, len(todo)), mp_context=multiprocessing.get_context("fork"),
                                   initializer=_local_worker_started, initargs=(os.getpid(),))
        finished = False
        try:
            # Submitted in order, taken in order: the smallest shards first, each by the next free worker.
            running = {pool.submit(compose_shard, name, placed[name], config, out_dir, started): name
                       for name in todo}
            gc.unfreeze()  # the workers exist now
            for done in as_completed(running):
                try:
                    result = done.result()
                except BrokenProcessPool:
                    raise RuntimeError(f"compose: a worker process died (killed, or crashed in a decoder) while "
                                       f"{running[done]} was being composed; finished shards are kept, "
                                       f"a rerun goes on from them") from None
                for index in range(result["videos"]):
                    _progress.tick(failed=index < result["failed_videos"])
            finished = True
        finally:
            gc.unfreeze()
            # Done: the workers are waited for (their CPU time is then this process's children's).
            # On an error or Ctrl-C the queued shards are dropped; running ones end with this process.
            pool.shutdown(wait=finished, cancel_futures=not finished)


@contextmanager
def _one_thread_each() -> Iterator[None]:
    """BLAS, OpenCV and the video decoders on one thread while composing: a worker is one core (--workers counts cores).

    Their thread pools would spread one worker's small matrix products, resizes and frames over
    every core, spinning and synchronising for little gain: measured on 2 cores, BLAS and OpenCV
    threads cost about a quarter more CPU time per sample, FFmpeg's frame threads a sixth more.
    """
    import cv2
    from threadpoolctl import threadpool_limits

    from avlips.media.frames import set_decoder_threads

    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    decoders = set_decoder_threads("NONE")
    try:
        with threadpool_limits(limits=1, user_api="blas"):
            yield
    finally:
        cv2.setNumThreads(threads)
        set_decoder_threads(decoders)


def _warm_up(config: ComposeConfig, faces: bool) -> None:
    """Make here, once, what composing a video and writing its shard make on first use.

    The mel filter bank, the shard manifest's writer and the face tracker's imports: forked workers
    inherit them. (Manifests are built without pa.array, whose first call imports pandas.)
    """
    from avlips.media.audio import stream_mel
    from avlips.pipelines import arrow_rows  # noqa: F401

    stream_mel(iter([np.zeros(config.windows.mel.n_fft * 2, np.float32)]), config.windows.mel, [0])
    if faces:
        import avlips.media.faces  # noqa: F401  (scipy.ndimage; the cascades load per process)


def _local_worker_started(stage_pid: int) -> None:
    """A forked worker: dies with the stage's process, leaves Ctrl-C and the counting to it."""
    global _counted_here
    _counted_here = False
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        import ctypes

        # PR_SET_PDEATHSIG: a worker whose stage process was killed stops too, instead of waiting for work.
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)
    except (OSError, AttributeError):
        pass
    if os.getppid() != stage_pid:  # the stage process died before the line above
        os._exit(1)


def _run_pipeline(todo: list[str], placed: dict[str, list[dict]], config: ComposeConfig, out_dir: str,
                  started: float, runner: str, workers: int, beam_args: tuple[str, ...]) -> None:
    """The unfinished shards through a Beam runner: video records grouped by shard, each shard composed and written by one worker."""
    import apache_beam as beam

    from avlips.pipelines.beam_options import pipeline_options

    # (shard, video) pairs, shard after shard; an empty shard's None still makes its group, so it is
    # written and marked. The local runner hands the groups out in this order.
    work = [(name, video) for name in todo for video in (placed[name] or [None])]
    with beam.Pipeline(options=pipeline_options(runner, workers, beam_args)) as pipeline:
        _ = (
            pipeline
            | "Videos" >> beam.Create(work, reshuffle=False)
            | "ByShard" >> beam.GroupByKey()
            | "ComposeAndWrite" >> beam.MapTuple(
                lambda shard, videos: compose_shard(shard, list(videos), config, out_dir, started))
        )


def _corpus_record(videos: list[dict]) -> dict:
    """The corpus sources (corpus.source kinds: demo, folder, ...) of the composed videos; a fake counts as its target's."""
    return {"sources": sorted({v.get("source") or "unknown" for v in videos})}


def _write_manifests(out_dir: str, shards: list[str], videos: list[dict], config: ComposeConfig,
                     started: float) -> dict:
    """samples.parquet, failures.parquet and compose_stats.json from the finished shards."""
    samples, video_failures, window_failures = [], [], []
    by_error: dict[str, int] = {}
    for name in shards:
        samples += storage.read_parquet(storage.join(out_dir, f"{name}.parquet")).to_pylist()
        stats = storage.read_json(storage.join(out_dir, f"{name}_stats.json"))
        video_failures += [Failure(**row) for row in stats["video_failures"]]
        window_failures += [Failure(**row) for row in stats["window_failures"]]
    # Sorted here, not by Table.sort_by: pyarrow.compute is a sixteenth of a CPU-second to import.
    samples.sort(key=lambda row: row["key"])
    composed = {row["clip"] for row in samples}
    failures = video_failures + window_failures
    for failure in failures:
        by_error[failure.error] = by_error.get(failure.error, 0) + 1
    storage.write_parquet(storage.join(out_dir, "samples.parquet"), samples, SAMPLE_SCHEMA)
    storage.write_parquet(storage.join(out_dir, "failures.parquet"), failure_rows(failures), FAILURE_SCHEMA)
    per_split: dict[str, int] = {}
    for row in samples:
        per_split[row["split"]] = per_split.get(row["split"], 0) + 1
    totals = {
        "stage": STAGE, "inputs": len(videos), "videos_composed": len(composed),
        "video_failures": len(video_failures), "window_failures": len(window_failures),
        "samples": len(samples), "samples_by_split": dict(sorted(per_split.items())),
        "failures_by_error": dict(sorted(by_error.items())), "shards": len(shards),
        "bytes_per_sample": round(sum(row["bytes"] for row in samples) / max(1, len(samples))),
        # What the shards were made from, for the provenance a model trained on them records.
        "corpus": _corpus_record(videos),
    }
    storage.write_json(storage.join(out_dir, "compose_stats.json"), totals)
    log.info("compose done: inputs=%d composed=%d video_failures=%d window_failures=%d samples=%d in %.1fs",
             totals["inputs"], totals["videos_composed"], totals["video_failures"], totals["window_failures"],
             totals["samples"], time.time() - started)
    check_threshold(STAGE, len(videos), len(video_failures), config.max_failure_fraction)
    return totals
