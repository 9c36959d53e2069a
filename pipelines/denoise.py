"""The denoise stage: every clip's audio at 16 kHz mono, denoised, as `<out>/<clip_id>.wav` + audio.parquet.

Real and fake clips alike go through the same settings (`media.denoise`), so a detector cannot
learn "denoised means fake". The audio comes from the clip's sidecar (`audio_path`) when
clips.parquet names one, else from the video's own track (`path`).

A Beam pipeline: clips are denoised in parallel, each to `<clip_id>.wav` and then a
`<clip_id>.json` sidecar holding its audio.parquet row (with the settings hash and the source
it was made from); one final step writes audio.parquet, failures.parquet and denoise_stats.json,
sorted, so the bytes do not depend on the runner or worker count.

Rerun: a clip is skipped (its sidecar row reused, its wav untouched) when its wav and sidecar
both exist and the sidecar's settings hash, source path and source size match this run. The
sidecar is written after the wav, so an interrupted clip has no sidecar and is redone. Failures
are not remembered: a failed clip is tried again on every run.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import apache_beam as beam
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from avlips.config import config_from_dict
from avlips.errors import AvlipsInputError
from avlips.media.denoise import DenoiseSettings
from avlips.pipelines import storage
from avlips.pipelines.progress import WorkerProgress
from avlips.pipelines.beam_options import counter_value, pipeline_options
from avlips.pipelines.failures import Failure, check_threshold, write_manifest_and_failures

STAGE = "denoise"
log = logging.getLogger("avlips.denoise")

AUDIO_SCHEMA = pa.schema([
    ("clip_id", pa.string()), ("path", pa.string()), ("source_path", pa.string()),
    ("audio_source", pa.string()), ("sample_rate", pa.int32()), ("samples", pa.int64()),
    ("duration", pa.float64()), ("rms", pa.float64()), ("peak", pa.float64()),
    ("snr_before_db", pa.float64()), ("snr_after_db", pa.float64()),
    ("params_hash", pa.string()), ("params", pa.string()),
])

_progress = WorkerProgress("denoise", "clips", every=25)  # per worker process


class DenoiseInputError(AvlipsInputError, ValueError):
    """The stage cannot run at all: clips.parquet missing or lacking columns (bad settings are a ParamsError)."""


@dataclass(frozen=True)
class DenoiseConfig:
    """params.yaml `denoise`: the stage's own keys, and the denoiser's settings (every other key of the block)."""

    clips: str | None = None  # the command's input (avlips denoise --clips)
    out: str | None = None  # the command's output directory
    min_duration_s: float = 0.2  # shorter audio is a TooShort failure
    min_rms: float = 1e-4  # quieter audio is a SilentAudio failure
    max_failure_fraction: float = 0.5
    denoiser: DenoiseSettings = field(default_factory=DenoiseSettings)

    @classmethod
    def from_params(cls, params: dict) -> "DenoiseConfig":
        """The config of params.yaml's `denoise` block; an unknown key or a mistyped value is a ParamsError."""
        section = dict(params.get("denoise") or {})
        own = [name for name in cls.__dataclass_fields__ if name != "denoiser"]
        denoiser = config_from_dict(DenoiseSettings, section, "denoise", ignore=own)
        return config_from_dict(cls, {**{k: v for k, v in section.items() if k in own}, "denoiser": denoiser},
                                "denoise")


def _source_of(clip: dict) -> tuple[str, str]:
    """The file the clip's audio is read from, and which kind it is (sidecar or the video's track)."""
    if clip.get("audio_path"):
        return str(clip["audio_path"]), "sidecar"
    return str(clip["path"]), "track"


def _size(path: str) -> int:
    """Size in bytes of a file on any Beam filesystem, -1 when it cannot be read."""
    try:
        # The filesystem's own metadata call, not match(): a name may hold glob characters.
        return int(FileSystems.get_filesystem(path).metadata(path).size_in_bytes)
    except Exception:  # a missing or unreadable source: the clip is redone and fails there
        return -1


def _finished_row(out_dir: str, clip_id: str, source: str, params_hash: str) -> dict | None:
    """The row of an earlier run's output for this clip, when it is complete and made the same way."""
    wav, sidecar = storage.join(out_dir, f"{clip_id}.wav"), storage.join(out_dir, f"{clip_id}.json")
    record = storage.read_finished_record(sidecar, wav)
    if record is None:
        return None
    row = record.get("row") or {}
    if (row.get("params_hash") != params_hash or row.get("source_path") != source
            or record.get("source_size") != _size(source) or row.get("path") != wav):
        return None
    return row


def denoise_clip(clip: dict, out_dir: str, config: DenoiseConfig) -> dict:
    """Denoise one clip's audio into `<out_dir>/<clip_id>.wav`: {'audio': row} or {'failure': row}."""
    from avlips.media.denoise import (check_speech_audio, denoise, rms, settings_hash, settings_json,
                               snr_estimate_db, wav_bytes)
    from avlips.media.errors import MediaError
    from avlips.media.audio_decode import read_audio

    _progress.start()
    source, kind = _source_of(clip)
    clip_id = str(clip["clip_id"])
    settings = config.denoiser
    params_hash = settings_hash(settings)
    try:
        reused = _finished_row(out_dir, clip_id, source, params_hash)
        if reused is not None:
            Metrics.counter(STAGE, "reused").inc()
            return _progress.count({"audio": reused})
        rate = settings.sample_rate
        audio = read_audio(source, rate, mono=True)
        check_speech_audio(audio, rate, source, config.min_duration_s, config.min_rms)
        clean = denoise(audio, rate, settings)
        wav = storage.join(out_dir, f"{clip_id}.wav")
        storage.write_bytes(wav, wav_bytes(clean, rate))
        frame_ms = settings.noise_frame_ms
        row = {
            "clip_id": clip_id, "path": wav, "source_path": source, "audio_source": kind,
            "sample_rate": rate, "samples": int(len(clean)), "duration": len(clean) / rate,
            "rms": rms(clean), "peak": float(abs(clean).max()),
            "snr_before_db": snr_estimate_db(audio, rate, frame_ms),
            "snr_after_db": snr_estimate_db(clean, rate, frame_ms),
            "params_hash": params_hash, "params": settings_json(settings),
        }
        # Written after the wav: its presence says the wav is complete.
        storage.write_json(storage.join(out_dir, f"{clip_id}.json"), {"row": row, "source_size": _size(source)})
        Metrics.counter(STAGE, "denoised").inc()
        result = {"audio": row}
    except MediaError as exc:
        result = {"failure": Failure.from_exception(source, STAGE, exc).to_row()}
    except Exception as exc:  # an unforeseen decoder or filter error must not stop the stage
        result = {"failure": Failure(source, STAGE, type(exc).__name__, f"{source}: {exc}").to_row()}
    if "failure" in result:
        Metrics.counter(STAGE, "failed").inc()
    return _progress.count(result)


def write_manifests(results: list[dict], out_dir: str, params_hash: str, extra_failures: list[dict]) -> dict:
    """Write audio.parquet, failures.parquet and denoise_stats.json, sorted; return the stats."""
    rows = sorted((r["audio"] for r in results if "audio" in r), key=lambda row: row["clip_id"])
    failures = [Failure(**r["failure"]) for r in results if "failure" in r]
    failures += [Failure(**row) for row in extra_failures]
    by_error = write_manifest_and_failures(out_dir, "audio.parquet", rows, AUDIO_SCHEMA, failures)
    by_source: dict[str, int] = {}
    for row in rows:
        by_source[row["audio_source"]] = by_source.get(row["audio_source"], 0) + 1

    def mean(key: str) -> float | None:
        return round(sum(row[key] for row in rows) / len(rows), 4) if rows else None

    # Only facts of the outputs: the stats bytes are the same for a fresh run and a rerun.
    stats = {"stage": STAGE, "inputs": len(results) + len(extra_failures), "outputs": len(rows),
             "failures": len(failures), "failures_by_error": by_error,
             "outputs_by_audio_source": dict(sorted(by_source.items())), "params_hash": params_hash,
             "seconds_of_audio": round(sum(row["duration"] for row in rows), 3),
             "mean_snr_before_db": mean("snr_before_db"), "mean_snr_after_db": mean("snr_after_db")}
    storage.write_json(storage.join(out_dir, "denoise_stats.json"), stats)
    return stats


def _read_clips(clips_parquet: str) -> list[dict]:
    """The clip rows the stage needs, checked for the columns it reads."""
    if not storage.exists(clips_parquet):
        raise DenoiseInputError(f"{clips_parquet}: no such clips manifest (run the corpus stage first)")
    table = storage.read_parquet(clips_parquet)
    missing = [c for c in ("clip_id", "path") if c not in table.column_names]
    if missing:
        raise DenoiseInputError(f"{clips_parquet}: missing column(s) {', '.join(missing)}")
    columns = [c for c in ("clip_id", "path", "audio_path") if c in table.column_names]
    return table.select(columns).to_pylist()


def run_denoise(clips_parquet: str, out_dir: str, params: dict, runner: str = "DirectRunner", workers: int = 1,
                beam_args: tuple[str, ...] = ()) -> dict:
    """Run the denoise stage and return its stats (plus this run's `reused` and `denoised` counts).

    Raises ParamsError for a bad setting, DenoiseInputError when the clips cannot be read and StageFailed above
    the failure threshold. `params['seed']` is not used: the denoiser has no randomness.
    """
    from avlips.media.denoise import settings_hash

    started = time.time()
    config = DenoiseConfig.from_params(params)
    params_hash = settings_hash(config.denoiser)
    clips = _read_clips(clips_parquet)
    # Two rows with one clip id would write the same wav: keep the first, record the others.
    unique, duplicates, seen = [], [], set()
    for clip in sorted(clips, key=lambda c: (str(c["clip_id"]), str(c["path"]))):
        if clip["clip_id"] in seen:
            duplicates.append(Failure(_source_of(clip)[0], STAGE, "DuplicateKey",
                                      f"clip id {clip['clip_id']} listed twice").to_row())
            continue
        seen.add(clip["clip_id"])
        unique.append(clip)
    log.info("denoise: %d clips from %s, settings %s", len(clips), clips_parquet, params_hash)
    storage.makedirs(out_dir)
    pipeline = beam.Pipeline(options=pipeline_options(runner, workers, beam_args))
    with _progress.running(len(unique)), pipeline:
        _ = (
            pipeline
            | "List" >> beam.Create(unique, reshuffle=len(unique) > 1)
            | "Denoise" >> beam.Map(denoise_clip, out_dir, config)
            | "Gather" >> beam.combiners.ToList()
            | "Write" >> beam.Map(write_manifests, out_dir, params_hash, duplicates)
        )
    stats = storage.read_json(storage.join(out_dir, "denoise_stats.json"))
    reused = counter_value(pipeline.result, STAGE, "reused")
    denoised = counter_value(pipeline.result, STAGE, "denoised")
    log.info("denoise done: inputs=%d outputs=%d (denoised=%d reused=%d) failures=%d (%s) in %.1fs",
             stats["inputs"], stats["outputs"], denoised, reused, stats["failures"],
             ", ".join(f"{k}={v}" for k, v in stats["failures_by_error"].items()) or "none", time.time() - started)
    check_threshold(STAGE, stats["inputs"], stats["failures"], config.max_failure_fraction)
    return {**stats, "reused": reused, "denoised": denoised}
