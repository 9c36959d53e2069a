"""The corpus stage: list a source, probe every input, write clips.parquet and failures.parquet.

A Beam pipeline: candidates are probed in parallel, then one step assigns identity splits and
writes the manifests (sorted, so the bytes do not depend on the runner or worker count).
"""
from __future__ import annotations

import logging
import time

import apache_beam as beam
import pyarrow as pa

from avlips.media.ffmpeg_binary import configure_ffmpeg
from avlips.pipelines import storage
from avlips.pipelines.beam_options import pipeline_options
from avlips.pipelines.failures import Failure, check_threshold, write_manifest_and_failures
from avlips.pipelines.sources import Candidate, SourceError, resolve_source
from avlips.pipelines.splits import assign_splits

STAGE = "corpus"
log = logging.getLogger("avlips.corpus")

CLIP_SCHEMA = pa.schema([
    ("clip_id", pa.string()), ("identity", pa.string()), ("path", pa.string()), ("label", pa.int8()),
    ("split", pa.string()), ("source", pa.string()), ("generator", pa.string()), ("centred", pa.bool_()),
    ("fps", pa.float64()), ("nominal_fps", pa.float64()), ("frames", pa.int64()), ("duration", pa.float64()),
    ("width", pa.int32()), ("height", pa.int32()), ("rotation", pa.int16()), ("codec", pa.string()),
    ("variable_frame_rate", pa.bool_()), ("audio_path", pa.string()), ("audio_source", pa.string()),
    ("audio_rate", pa.int32()), ("audio_channels", pa.int16()), ("audio_duration", pa.float64()),
    ("origin", pa.string()), ("licence", pa.string()),  # what the source states (sources.py); '' when nothing
])


def probe_candidate(candidate: dict, min_frames: int, require_audio: bool) -> dict:
    """A clip row for a usable candidate, or a failure row: {'clip': row} or {'failure': row}."""
    from avlips.media.errors import MediaError, NoAudio, TooShort
    from avlips.media.frames import read_frames
    from avlips.media.probe import probe, probe_audio

    path = candidate["path"]
    try:
        info = probe(path)
        if info.frames < min_frames:
            raise TooShort(path, f"{info.frames} frames, fewer than {min_frames} (one window)")
        # The index can list packets whose data is cut off: decode the first and last frame to be sure.
        read_frames(path, [0, info.frames - 1], size=(32, 32))
        audio_path, audio_source = candidate.get("audio_path") or "", "none"
        rate = channels = 0
        audio_duration = 0.0
        if audio_path:
            audio = probe_audio(audio_path)
            rate, channels, audio_duration, audio_source = audio.rate, audio.channels, audio.duration, "sidecar"
        elif info.has_audio:
            audio = probe_audio(path)
            rate, channels, audio_duration, audio_source = audio.rate, audio.channels, audio.duration, "track"
        elif require_audio:
            raise NoAudio(path, "no audio track and no sidecar audio file")
        row = {
            "clip_id": candidate["clip_id"], "identity": candidate["identity"], "path": path,
            "label": int(candidate["label"]), "split": "", "source": candidate["source"],
            "generator": candidate["generator"], "centred": bool(candidate["centred"]),
            "fps": info.fps, "nominal_fps": info.nominal_fps, "frames": info.frames, "duration": info.duration,
            "width": info.width, "height": info.height, "rotation": info.rotation, "codec": info.codec,
            "variable_frame_rate": info.variable_frame_rate, "audio_path": audio_path,
            "audio_source": audio_source, "audio_rate": rate, "audio_channels": channels,
            "audio_duration": audio_duration, "origin": candidate.get("origin", ""),
            "licence": candidate.get("licence", ""),
        }
        return {"clip": row}
    except MediaError as exc:
        return {"failure": Failure.from_exception(path, STAGE, exc).to_row()}
    except Exception as exc:  # an unforeseen decoder error must not stop the stage
        return {"failure": Failure(path, STAGE, type(exc).__name__, f"{path}: {exc}").to_row()}


def write_manifests(results: list[dict], out_dir: str, seed: int, fractions: dict, method: str,
                    seconds_started: float, ffmpeg: dict | None = None) -> dict:
    """Assign splits, write clips.parquet, failures.parquet and corpus_stats.json; return the stats."""
    clips = sorted((r["clip"] for r in results if "clip" in r), key=lambda row: row["clip_id"])
    failures = [Failure(**r["failure"]) for r in results if "failure" in r]
    unique, seen = [], set()
    for row in clips:
        if row["clip_id"] in seen:
            failures.append(Failure(row["path"], STAGE, "DuplicateKey", f"clip id {row['clip_id']} listed twice"))
            continue
        seen.add(row["clip_id"])
        unique.append(row)
    splits = assign_splits([row["identity"] for row in unique], fractions, seed, method) if unique else {}
    for row in unique:
        row["split"] = splits[row["identity"]]
    by_error = write_manifest_and_failures(out_dir, "clips.parquet", unique, CLIP_SCHEMA, failures)
    by_split: dict[str, int] = {}
    for row in unique:
        by_split[row["split"]] = by_split.get(row["split"], 0) + 1
    stats = {"stage": STAGE, "inputs": len(results), "clips": len(unique), "failures": len(failures),
             "failures_by_error": by_error, "clips_by_split": dict(sorted(by_split.items())),
             "identities": len(splits)}
    if ffmpeg is not None:
        stats["ffmpeg"] = ffmpeg  # the binary (path, version) that encoded the demo clips: their bytes depend on it
    # Seconds are kept out of the stats file so that its bytes depend only on the inputs.
    log.info("corpus written in %.1fs", time.time() - seconds_started)
    storage.write_json(storage.join(out_dir, "corpus_stats.json"), stats)
    return stats


def run_corpus(source: str, out_dir: str, params: dict, runner: str = "DirectRunner", workers: int = 1,
               beam_args: tuple[str, ...] = ()) -> dict:
    """Run the corpus stage and return its stats; raises StageFailed above the failure threshold."""
    started = time.time()
    settings = params.get("corpus", {})
    # Only the demo source encodes (its synthetic clips); a bad media.ffmpeg stops it before it writes.
    ffmpeg = configure_ffmpeg(params) if source.partition(":")[0] == "demo" else None
    candidates: list[Candidate] = resolve_source(source, out_dir, params)
    log.info("corpus: %d inputs from %s", len(candidates), source)
    if not candidates:
        # An empty corpus would only surface stages later, as "no shards" in training.
        raise SourceError(f"{source}: no input files found (hidden files and sidecar audio do not count)")
    seed = int(params.get("seed", 0))
    fractions = dict(settings.get("splits", {"train": 0.7, "val": 0.15, "test": 0.15}))
    method = settings.get("split_method", "balanced")
    min_frames = int(settings.get("min_frames", 5))
    require_audio = bool(settings.get("require_audio", True))
    storage.makedirs(out_dir)
    with beam.Pipeline(options=pipeline_options(runner, workers, beam_args)) as pipeline:
        _ = (
            pipeline
            | "List" >> beam.Create([c.to_dict() for c in candidates], reshuffle=len(candidates) > 1)
            | "Probe" >> beam.Map(probe_candidate, min_frames, require_audio)
            | "Gather" >> beam.combiners.ToList()
            | "Write" >> beam.Map(write_manifests, out_dir, seed, fractions, method, started,
                                  ffmpeg.to_dict() if ffmpeg is not None else None)
        )
    stats = storage.read_json(storage.join(out_dir, "corpus_stats.json"))
    log.info("corpus done: inputs=%d clips=%d failures=%d (%s) in %.1fs", stats["inputs"], stats["clips"],
             stats["failures"], ", ".join(f"{k}={v}" for k, v in stats["failures_by_error"].items()) or "none",
             time.time() - started)
    check_threshold(STAGE, stats["inputs"], stats["failures"], float(settings.get("max_failure_fraction", 0.5)))
    return stats
