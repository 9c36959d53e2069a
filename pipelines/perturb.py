"""The perturb stage: every clean test window under each perturbation type and level, as shards.

`<out>/<type>/<level>/<split>-NNNNNN.tar` holds the clean shard `<split>-NNNNNN.tar` perturbed:
same shard count and the same placement (a perturbed sample stays in its clean sample's shard,
which compose chose by a hash of the clean key). One unit of work is (clean shard, type): the
shard is read and each sample decoded once, then perturbed at every unfinished level. Each output
shard's `_stats.json` is written last and marks it finished, as soon as its unit is done (no
shuffle before the writes): a run killed part-way leaves its finished units' shards, and a rerun
skips them and rebuilds the manifests (per (type, level) `samples.parquet` + `failures.parquet`,
and the top-level `perturb_stats.json`) from the shard files.

Frames are stored as the clean ones are (JPEG at compose's quality), except for `noise_types`
(gaussian_noise): 4:4:4 JPEG quantised in proportion to the noise (avlips.media.noise_jpeg), which
keeps the noise's variance within 5% where 4:2:0 JPEG would lose about half of it. With
`perturb.materialize: false` the stage writes no shards, only `perturb_stats.json` saying so.

The windows' stored frames (face crops at the dataset's frame size) are what gets perturbed, not the
source video before cropping as DeeperForensics-1.0 did: blur, pixelation and block-wise act at the
crop's scale. Audio types (opus, amr_nb, mp3, packet_loss, background_noise) perturb the window's
stored audio context (audio.npy) and recompute its mel from it; the call perturbs frames and audio
together. A sample without audio.npy (shards composed before it existed) is a failure record for
those types, naming the sample and the missing field.

A shard counts as finished only if it was made by the same version of its perturbation type and
the same storage settings (`made_with` in its stats).
"""
from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import apache_beam as beam
import pyarrow as pa

from avlips.errors import AvlipsInputError
from avlips.pipelines import storage
from avlips.pipelines.beam_options import pipeline_options
from avlips.pipelines.failures import SCHEMA as FAILURE_SCHEMA
from avlips.pipelines.failures import Failure, check_threshold, failure_rows
from avlips.pipelines.progress import WorkerProgress
from avlips.pipelines.shards import iter_tar_samples, shard_name, tar_bytes

if TYPE_CHECKING:
    from avlips.media.sample import WindowSample

STAGE = "perturb"
log = logging.getLogger("avlips.perturb")

SAMPLE_SCHEMA = pa.schema([
    ("key", pa.string()), ("clean_key", pa.string()), ("shard", pa.string()), ("split", pa.string()),
    ("label", pa.int8()), ("clip", pa.string()), ("identity", pa.string()), ("generator", pa.string()),
    ("window", pa.int16()), ("type", pa.string()), ("level", pa.int8()), ("seed", pa.int64()),
    ("bytes", pa.int64()),
])


_progress = WorkerProgress("perturb", "units", every=10)  # per worker process: (shard, type) units


class PerturbInputError(AvlipsInputError, ValueError):
    """The stage cannot run: no clean shards for a split, a gap in their numbering, or a bad setting."""


@dataclass(frozen=True)
class PerturbConfig:
    """The knobs of perturb, from params.yaml `perturb`."""

    types: tuple[str, ...] = ()  # empty: the six AVLIPS_TYPES; any name of the video, audio and call families
    levels: tuple[int, ...] = (1, 2, 3, 4, 5)
    splits: tuple[str, ...] = ("test",)
    frame_format: str = "same"  # same (as the clean sample's frames), jpg or png
    # Frames carrying added noise: 4:4:4 JPEG with flat tables, step noise_step x the noise's standard
    # deviation (avlips.media.noise_jpeg). The clean frames' 4:2:0 JPEG keeps about half the noise's
    # variance; this keeps it within 5% at every level at about half PNG's bytes (benchmarks/perturb_storage.py).
    noise_types: tuple[str, ...] = ("gaussian_noise",)
    noise_step: float = 0.5
    lossless_types: tuple[str, ...] = ()  # written as PNG (exact frames) whatever else says
    jpeg_quality: int = 92
    seed: int = 0  # salt of the per-key seeds: change it for another draw of noise and block positions
    max_failure_fraction: float = 0.5
    # false: no shards are written (perturb_stats.json only, saying so); evaluate perturbs the clean
    # test windows on the fly with the same types, levels and seed.
    materialize: bool = True

    @classmethod
    def from_params(cls, params: dict) -> "PerturbConfig":
        """The config from the `perturb` block of params.yaml, checked against the catalogue."""
        from avlips.perturbations import AVLIPS_TYPES, LEVELS, all_names

        block = dict(params.get("perturb", {}) or {})
        known = {k: v for k, v in block.items() if k in cls.__dataclass_fields__}
        for name in ("types", "levels", "splits", "lossless_types", "noise_types"):
            if name in known:
                value = known[name]
                known[name] = tuple(value or ()) if isinstance(value, (list, tuple, type(None))) else (value,)
        config = cls(**known)
        if not config.types:
            config = cls(**{**known, "types": AVLIPS_TYPES})
        for name in ("types", "noise_types", "lossless_types"):
            unknown = [t for t in getattr(config, name) if t not in all_names()]
            if unknown:
                raise PerturbInputError(f"perturb.{name}: unknown {unknown}; known: {all_names()}")
        if isinstance(config.noise_step, bool) or not isinstance(config.noise_step, (int, float)) \
                or not 0 < config.noise_step <= 4:
            raise PerturbInputError(f"perturb.noise_step: a fraction of the noise's deviation in (0, 4], "
                                    f"got {config.noise_step!r}")
        if not isinstance(config.materialize, bool):
            raise PerturbInputError(f"perturb.materialize: true or false, got {config.materialize!r}")
        bad = [lv for lv in config.levels if isinstance(lv, bool) or lv not in LEVELS]
        if bad or not config.levels:
            raise PerturbInputError(f"perturb.levels: must be ints in 1..5, got {list(config.levels)}")
        if config.frame_format not in ("same", "jpg", "png"):
            raise PerturbInputError(f"perturb.frame_format: same, jpg or png, got {config.frame_format!r}")
        if len(set(config.types)) != len(config.types) or len(set(config.levels)) != len(config.levels):
            raise PerturbInputError("perturb.types and perturb.levels must not repeat a value")
        return config


def perturbed_key(clean_key: str, name: str, level: int) -> str:
    """The key of a clean sample's perturbed copy: `<clean_key>_<type><level>`."""
    return f"{clean_key}_{name}{level}"


def cell_dir(out_dir: str, name: str, level: int) -> str:
    """The directory of one (type, level) cell of the grid."""
    return storage.join(out_dir, name, str(level))


def clean_shards(clean_dir: str, split: str) -> int:
    """How many clean shards a split has; `PerturbInputError` when none, or when numbering has gaps."""
    from apache_beam.io.filesystems import FileSystems

    # storage has no listing; match through Beam's filesystems so a bucket works too.
    pattern = re.compile(rf"^{re.escape(split)}-(\d{{6}})\.tar$")
    matched = FileSystems.match([storage.join(clean_dir, f"{split}-*.tar")])[0].metadata_list
    indices = sorted(int(m.group(1)) for m in (pattern.match(x.path.replace("\\", "/").rsplit("/", 1)[-1])
                                                for x in matched) if m)
    if not indices:
        raise PerturbInputError(f"{clean_dir}: no clean shards {split}-NNNNNN.tar")
    if indices != list(range(len(indices))):
        missing = sorted(set(range(indices[-1] + 1)) - set(indices))
        raise PerturbInputError(f"{clean_dir}: clean {split} shards are incomplete, missing "
                                f"{[shard_name(split, i) for i in missing[:5]]}")
    return len(indices)


def _frame_format(members: dict[str, bytes], wanted: str) -> str:
    """The frame format to write: the clean frames' own unless the config names one."""
    if wanted != "same":
        return wanted
    first = next((n for n in sorted(members) if re.fullmatch(r"f\d+\.\w+", n)), "f0.jpg")
    return "png" if first.endswith(".png") else "jpg"


def frame_storage(config: PerturbConfig, name: str) -> str:
    """How a type's frames are stored: `png` (lossless_types), `noise_jpg` (noise_types, where frames are JPEG)
    or `clean` (as frame_format says)."""
    if name in config.lossless_types:
        return "png"
    return "noise_jpg" if name in config.noise_types else "clean"


def perturb_sample(key: str, members: dict[str, bytes], name: str, levels: tuple[int, ...],
                   config: PerturbConfig, source: str, decoded: WindowSample | None = None) -> dict[int, dict]:
    """The record per level for one clean sample: {'kind': 'sample'|'failure', ...}; never raises.

    Video types re-encode the perturbed frames and keep the audio and mel; audio types keep the
    clean frames' bytes and store the perturbed audio context and the mel recomputed from it; the
    call changes all three (avlips.perturbations.window). A sample record's `members` are the bytes
    the shard stores: decoding them gives what a reader of the materialised shards sees, so scoring
    on the fly can use this without writing anything. `decoded`: the clean sample already decoded
    from `members`, to skip decoding it again.
    """
    from avlips.media.noise_jpeg import encode_noisy_frame
    from avlips.media.sample import WindowSample
    from avlips.perturbations import family, lookup
    from avlips.perturbations.random_mode import key_seed
    from avlips.perturbations.window import perturb_window

    def failed(exc: BaseException) -> dict:
        # The input names the clean shard and key; the message keeps the exception's own words.
        return {"kind": "failure", "failure": Failure(f"{source}#{key}", STAGE, type(exc).__name__,
                                                      f"{source}#{key}: {exc}").to_row()}

    try:
        sample = decoded if decoded is not None else WindowSample.decode(key, members)
        frames = sample.frames
        if frames.dtype.name != "uint8" or frames.ndim != 4 or frames.shape[-1] != 3:
            raise TypeError(f"frames must be uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
        already = (sample.meta.get("perturbation") or {}).get("type", "none")
        if already not in ("none", None, ""):
            raise ValueError(f"already perturbed ({already}); perturb reads clean shards only")
        fmt = "png" if frame_storage(config, name) == "png" else _frame_format(members, config.frame_format)
        # Where frames are stored exactly (PNG) anyway, noisy ones are too; the noise JPEG replaces JPEG only.
        noise_jpeg = frame_storage(config, name) == "noise_jpg" and fmt == "jpg"
        seed = key_seed(key, config.seed)
        perturbation = lookup(name)
        # An audio type leaves the picture alone: the clean frames' bytes go through, not re-encoded.
        keep_frames = family(name) == "audio"
    except Exception as exc:  # a bad sample is a record in every level, never a crash of the unit
        return {level: failed(exc) for level in levels}
    out: dict[int, dict] = {}
    meta = sample.meta
    for level in levels:
        try:
            new_key = perturbed_key(key, name, level)
            # The key seeds every draw: the same clean window gets the same noise field / block
            # positions / lost packets at every level, so levels differ only by the table value.
            perturbed = perturb_window(sample, name, level, seed)
            info = {"type": name, "level": level, "params": perturbation.params(level), "seed": seed}
            new_meta = {**meta, "key": new_key, "clean_key": key, "perturbation": info}
            own_frames = keep_frames or noise_jpeg  # frame members added below, not by encode
            shown = perturbed.frames[:0] if own_frames else perturbed.frames
            encoded = WindowSample(new_key, shown, perturbed.mel_db, sample.label, new_meta,
                                   audio=perturbed.audio).encode(fmt, config.jpeg_quality)
            if keep_frames:
                encoded.update({n: b for n, b in members.items() if re.fullmatch(r"f\d+\.\w+", n)})
            elif noise_jpeg:
                encoded.update({f"f{i}.jpg": encode_noisy_frame(noisy, clean, config.noise_step)
                                for i, (noisy, clean) in enumerate(zip(perturbed.frames, frames))})
            row = {"key": new_key, "clean_key": key, "split": meta.get("split", ""), "label": int(sample.label),
                   "clip": meta.get("clip", ""), "identity": meta.get("identity", ""),
                   "generator": meta.get("generator", ""), "window": meta.get("window"), "type": name,
                   "level": level, "seed": seed, "bytes": sum(len(b) for b in encoded.values())}
            out[level] = {"kind": "sample", "key": new_key, "members": encoded, "row": row}
        except Exception as exc:
            out[level] = failed(exc)
    return out


def perturb_unit(unit: tuple[str, int, str, tuple[int, ...]], clean_dir: str, out_dir: str,
                 config: PerturbConfig) -> dict:
    """Perturb one clean shard with one type at the given levels and write those output shards."""
    started = time.time()
    split, index, name, levels = unit
    shard = shard_name(split, index)
    source = storage.join(clean_dir, f"{shard}.tar")
    records: dict[int, list[dict]] = {level: [] for level in levels}
    seen: list[str] = []
    try:
        for key, members in iter_tar_samples(storage.read_bytes(source)):
            seen.append(key)
            for level, record in perturb_sample(key, members, name, levels, config, source).items():
                records[level].append(record)
    except Exception as exc:  # unreadable or truncated tar: the samples read so far still count
        failure = Failure(source, STAGE, type(exc).__name__,
                          f"{source}: clean shard unreadable after {len(seen)} sample(s) ({exc})").to_row()
        for level in levels:
            records[level].append({"kind": "failure", "failure": failure})
    # A tar cut at a block boundary reads as a shorter, valid tar: the clean manifest, when there
    # is one, names the samples it should hold, so each lost one is still a record.
    for key in _listed_keys(clean_dir, shard, set(seen)):
        failure = Failure(f"{source}#{key}", STAGE, "MissingSample",
                          f"{source}#{key}: listed in the clean shard's manifest but not in its tar").to_row()
        for level in levels:
            records[level].append({"kind": "failure", "failure": failure})
    read = len(seen)
    for level in levels:
        write_cell_shard(cell_dir(out_dir, name, level), shard, source, name, level, records[level],
                         made_with(config, name))
    # A unit fails when any of its records does (an unreadable shard, a sample the perturbation refused).
    _progress.tick(failed=any(r.get("kind") == "failure" for r in records[levels[0]]),
                   note=f"perturb: {shard} {name} levels {list(levels)}: {read} samples in "
                        f"{time.time() - started:.1f}s")
    return {"shard": shard, "type": name, "levels": list(levels), "samples": read}


def _listed_keys(clean_dir: str, shard: str, seen: set[str]) -> list[str]:
    """Keys the clean shard's parquet lists that its tar did not yield (none when it has no parquet)."""
    path = storage.join(clean_dir, f"{shard}.parquet")
    if not storage.exists(path):
        return []
    try:
        listed = storage.read_parquet(path).column("key").to_pylist()
    except Exception:  # an unreadable manifest only loses this cross-check, not the samples
        return []
    return sorted(set(listed) - seen)


def made_with(config: PerturbConfig, name: str) -> dict:
    """What an output shard of type `name` depends on besides its clean shard: a rerun redoes it when this changes."""
    from avlips.perturbations import lookup

    kind = frame_storage(config, name)
    return {"version": lookup(name).version, "frame_format": config.frame_format, "frames": kind,
            "noise_step": config.noise_step if kind == "noise_jpg" else None,
            "jpeg_quality": config.jpeg_quality, "seed": config.seed}


def write_cell_shard(directory: str, shard: str, source: str, name: str, level: int, records: list[dict],
                     settings: dict | None = None) -> None:
    """Write one output shard's tar and sample manifest, then its stats (last: it marks completion)."""
    samples = sorted((r for r in records if r["kind"] == "sample"), key=lambda r: r["key"])
    failures = [Failure(**r["failure"]) for r in records if r["kind"] == "failure"]
    rows = [{**r["row"], "shard": shard} for r in samples]
    storage.write_bytes(storage.join(directory, f"{shard}.tar"), tar_bytes((r["key"], r["members"]) for r in samples))
    storage.write_parquet(storage.join(directory, f"{shard}.parquet"), rows, SAMPLE_SCHEMA)
    by_error: dict[str, int] = {}
    for failure in failures:
        by_error[failure.error] = by_error.get(failure.error, 0) + 1
    # No timings: the stats are part of the output and must not differ between identical runs.
    stats = {
        "shard": shard, "source": source, "type": name, "level": level, "samples": len(samples),
        "failures": len(failures), "failures_by_error": dict(sorted(by_error.items())),
        "failure_rows": failure_rows(failures), "bytes": sum(r["bytes"] for r in rows),
        "made_with": settings or {},
    }
    storage.write_json(storage.join(directory, f"{shard}_stats.json"), stats)


def _finished(directory: str, shard: str, settings: dict) -> bool:
    """Whether the shard was written to the end with these settings and this version of the perturbation."""
    stats_path = storage.join(directory, f"{shard}_stats.json")
    if not (storage.exists(stats_path) and storage.exists(storage.join(directory, f"{shard}.tar"))):
        return False
    try:
        return storage.read_json(stats_path).get("made_with") == settings
    except Exception:  # an unreadable stats file: the shard is redone
        return False


def run_perturb(clean_dir: str, out_dir: str, params: dict, runner: str = "DirectRunner", workers: int = 1,
                beam_args: tuple[str, ...] = ()) -> dict:
    """Run the perturb stage; returns its totals, raises StageFailed above the failure threshold."""
    started = time.time()
    config = PerturbConfig.from_params(params)
    shards_by_split = {split: clean_shards(clean_dir, split) for split in config.splits}
    shards = [shard_name(split, i) for split in config.splits for i in range(shards_by_split[split])]
    storage.makedirs(out_dir)
    if not config.materialize:
        return _write_on_the_fly_stats(out_dir, config, shards_by_split)
    units = []
    for split in config.splits:
        for index in range(shards_by_split[split]):
            for name in config.types:
                todo = tuple(lv for lv in config.levels
                             if not _finished(cell_dir(out_dir, name, lv), shard_name(split, index),
                                              made_with(config, name)))
                if todo:
                    units.append((split, index, name, todo))
    cells = len(config.types) * len(config.levels)
    log.info("perturb: %d clean shards x %d (type, level) cells, %d units of (shard, type) to run",
             len(shards), cells, len(units))
    if units:
        options = pipeline_options(runner, workers, beam_args)
        with _progress.running(len(units)), beam.Pipeline(options=options) as pipeline:
            _ = (
                pipeline
                | "Units" >> beam.Create(units, reshuffle=len(units) > 1)
                | "Perturb" >> beam.Map(perturb_unit, clean_dir, out_dir, config)
            )
    return _write_manifests(out_dir, shards, config, shards_by_split, started)


def _write_on_the_fly_stats(out_dir: str, config: PerturbConfig, shards_by_split: dict[str, int]) -> dict:
    """perturb.materialize false: no shards, only perturb_stats.json saying what evaluate perturbs on the fly."""
    # Shards left by an earlier materialised run are not deleted (they are the user's); the stats say they
    # are not this run's, and evaluate goes by perturb.materialize.
    totals = {
        "stage": STAGE, "materialize": False, "types": list(config.types), "levels": list(config.levels),
        "splits": list(config.splits), "seed": config.seed,
        "shards_by_split": dict(sorted(shards_by_split.items())), "cells": len(config.types) * len(config.levels),
        "inputs": 0, "samples": 0, "failures": 0, "grid": {},
    }
    storage.write_json(storage.join(out_dir, "perturb_stats.json"), totals)
    log.info("perturb: materialize is false, no shards written; evaluate perturbs %d cells on the fly",
             totals["cells"])
    return totals


def _write_manifests(out_dir: str, shards: list[str], config: PerturbConfig, shards_by_split: dict[str, int],
                     started: float) -> dict:
    """Per cell samples.parquet and failures.parquet, and perturb_stats.json, from the finished shards."""
    grid: dict[str, dict[str, dict]] = {}
    inputs = failed = total_samples = 0
    for name in config.types:
        for level in config.levels:
            directory = cell_dir(out_dir, name, level)
            tables, failures = [], []
            for shard in shards:
                tables.append(storage.read_parquet(storage.join(directory, f"{shard}.parquet")))
                failures += [Failure(**row) for row in
                             storage.read_json(storage.join(directory, f"{shard}_stats.json"))["failure_rows"]]
            samples = pa.concat_tables(tables).sort_by("key") if tables else SAMPLE_SCHEMA.empty_table()
            storage.write_parquet(storage.join(directory, "samples.parquet"), samples.to_pylist(), SAMPLE_SCHEMA)
            storage.write_parquet(storage.join(directory, "failures.parquet"), failure_rows(failures), FAILURE_SCHEMA)
            by_error: dict[str, int] = {}
            for failure in failures:
                by_error[failure.error] = by_error.get(failure.error, 0) + 1
            grid.setdefault(name, {})[str(level)] = {
                "samples": samples.num_rows, "failures": len(failures),
                "failures_by_error": dict(sorted(by_error.items())),
            }
            inputs += samples.num_rows + len(failures)
            failed += len(failures)
            total_samples += samples.num_rows
    totals = {
        "stage": STAGE, "materialize": True, "types": list(config.types), "levels": list(config.levels),
        "splits": list(config.splits),
        "shards_by_split": dict(sorted(shards_by_split.items())), "cells": len(config.types) * len(config.levels),
        "inputs": inputs, "samples": total_samples, "failures": failed, "grid": grid,
    }
    storage.write_json(storage.join(out_dir, "perturb_stats.json"), totals)
    log.info("perturb done: %d cells, samples=%d failures=%d in %.1fs", totals["cells"], total_samples, failed,
             time.time() - started)
    check_threshold(STAGE, inputs, failed, config.max_failure_fraction)
    return totals
