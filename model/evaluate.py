"""The evaluate stage: score clean and perturbed test windows, write the robustness report.

The perturbed windows come from the perturb stage's shards, or, with `perturb.materialize: false`, are
made on the fly in the same pass over the clean shards: each clean window is decoded once and perturbed
into every (type, level) cell by the perturb stage's own code (the bytes its shards would hold, decoded
as their reader would), so the scores are those of the materialised shards.
"""
from __future__ import annotations

import glob
import json
import logging
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterator

import torch

from avlips.errors import AvlipsInputError
from avlips.model.checkpoints import CheckpointError
from avlips.model.loader import LoaderConfig, batch_inputs, make_loader
from avlips.model.report import CLEAN, ScoredWindow, markdown, write_report

if TYPE_CHECKING:  # imported where used: the perturb stage's module brings Beam
    from avlips.model.shard_samples import ReadStats
    from avlips.pipelines.perturb import PerturbConfig

log = logging.getLogger("avlips.evaluate")


class EvaluateInputError(AvlipsInputError, ValueError):
    """The evaluation cannot run: no model, no test shards."""


class CheckpointUnusable(EvaluateInputError, CheckpointError):
    """The model file is not a checkpoint LipFD can load (an EvaluateInputError, so commands report it)."""


@dataclass
class Detector:
    """A loaded model with the input settings it was trained with."""

    model: torch.nn.Module
    input_mode: str
    crop_size: int
    device: torch.device
    source: str  # "avlips" or "reference"
    extra: dict = field(default_factory=dict)  # what our checkpoints record besides weights (settings, provenance)

    def loader_config(self, batch_size: int = 16) -> LoaderConfig:
        """A one-pass, unshuffled loader config that feeds this model what it was trained on."""
        return LoaderConfig(batch_size=batch_size, input_mode=self.input_mode, crop_size=self.crop_size,
                            shuffle=False, repeat=False, drop_last=False, num_workers=0)


def pick_device(name: str = "auto") -> torch.device:
    """cuda when asked for or available under 'auto', else cpu."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def load_detector(path: str, device: str = "auto") -> Detector:
    """Our checkpoint (trained by `avlips train`) or the released LipFD file (reference-compatible mode)."""
    from avlips.model.checkpoints import (CheckpointFormatError, load_checkpoint, load_reference_checkpoint,
                                   read_checkpoint_file)

    if os.path.isdir(path):
        raise EvaluateInputError(f"{path}: is a directory, not a model checkpoint file")
    if not os.path.isfile(path):
        raise EvaluateInputError(f"{path}: no such model checkpoint (train one with `avlips train`)")
    target = pick_device(device)
    try:
        contents = read_checkpoint_file(path)  # once: the released file is 1.7 GB
        try:
            loaded = load_checkpoint(contents, restore_rng=False, device="cpu")
            train = (loaded.extra or {}).get("train", {}) if isinstance(loaded.extra, dict) else {}
            config = loaded.config
            input_mode = train.get("input_mode", getattr(config, "input_mode", "reference_compatible"))
            crop_size = int(train.get("crop_size", 224))
            model, source = loaded.model, "avlips"
            extra = dict(loaded.extra) if isinstance(loaded.extra, dict) else {}
        except CheckpointFormatError:
            # Not our format: the released checkpoint was trained on BGR 0..255 at the reference sizes.
            model, _ = load_reference_checkpoint(contents)
            input_mode, crop_size, source, extra = "reference_compatible", 224, "reference", {}
    except CheckpointError as exc:
        message = str(exc) if str(exc).startswith(str(path)) else f"{path}: {exc}"
        raise CheckpointUnusable(message) from exc
    model.eval().to(target)
    return Detector(model, input_mode, crop_size, target, source, extra)


def score_shards(detector: Detector, shards: str | list[str], batch_size: int = 16
                 ) -> Iterator[tuple[str, str, int, float]]:
    """(key, clip, label, probability of fake) for every readable sample of the shards."""
    from avlips.model.scoring import score_windows  # the loop of training's validation too

    return score_windows(detector.model, shards, detector.loader_config(batch_size), detector.device)


def _generators_by_clip(clean_dir: str) -> dict[str, str]:
    import pyarrow.parquet as pq

    manifest = os.path.join(clean_dir, "samples.parquet")
    if not os.path.exists(manifest):
        return {}
    table = pq.read_table(manifest, columns=["clip", "generator"]).to_pylist()
    return {row["clip"]: row["generator"] for row in table}


def _test_shards(directory: str, split: str) -> list[str]:
    return sorted(glob.glob(os.path.join(directory, f"{split}-[0-9]*.tar")))


def _shard_sets(clean_dir: str, perturbed_dir: str, split: str) -> list[tuple[str, int, list[str]]]:
    """(perturbation type, level, shards): the clean set first, then every perturbed type and level."""
    sets = [(CLEAN, 0, _test_shards(clean_dir, split))]
    if perturbed_dir and os.path.isdir(perturbed_dir):
        for kind in sorted(os.listdir(perturbed_dir)):
            kind_dir = os.path.join(perturbed_dir, kind)
            if not os.path.isdir(kind_dir):
                continue
            for level in sorted((d for d in os.listdir(kind_dir) if d.isdigit()), key=int):
                sets.append((kind, int(level), _test_shards(os.path.join(kind_dir, level), split)))
    return sets


def _ready_detectors(names: list[str], params: dict, model_path: str) -> dict:
    """The detectors to evaluate (and the members of combining ones), each ready or an input error saying why."""
    from avlips.model.detector_set import build_detectors

    overrides = {"lipfd": {"model": model_path}} if model_path else {}
    built = build_detectors(names, params, overrides)
    for name, detector in built.items():
        readiness = detector.readiness()
        if not readiness.ready:
            raise EvaluateInputError(f"detector {name!r} is not ready: {readiness.reason}")
    return built


def _chunk_size(detectors) -> int:
    """Samples decoded per step: a multiple of every batch size, so that each detector batches as on its own."""
    import math

    sizes = [int(getattr(d, "batch_size", 1) or 1) for d in detectors]
    step = math.lcm(*sizes) if sizes else 1
    return step * max(1, 32 // step)


def _score_chunk(chunk, built: dict, names: list[str]) -> dict[str, list]:
    """Each detector's WindowScores of a chunk of samples: members scored once, combining detectors combine them."""
    samples = [item.sample for item in chunk]
    results: dict[str, list] = {}
    for name, detector in built.items():
        if hasattr(detector, "combine"):
            continue
        for item in chunk:
            detector.check_fields(item.sample, item.shard)  # names the shard and the field a detector lacks
        results[name] = list(detector.score(samples))
    for name, detector in built.items():
        if hasattr(detector, "combine"):
            results[name] = [detector.combine(sample.key, {m: results[m][i] for m in detector.members})
                             for i, sample in enumerate(samples)]
    return {name: results[name] for name in names}


def _chunks(stream, size: int, group=lambda item: item.shard):
    """The stream in lists of at most `size` items of one group (a shard): a batch never mixes two shards, so a
    materialised evaluation and one perturbing on the fly batch the same windows together."""
    chunk: list = []
    for item in stream:
        if chunk and (len(chunk) == size or group(item) != group(chunk[-1])):
            yield chunk
            chunk = []
        chunk.append(item)
    if chunk:
        yield chunk


class _ScoreTable:
    """Every detector's scored windows per (type, level) cell, in the order a materialised evaluation lists them.

    A cell's rows are kept with a sort key: the stream position for shards read as stored, or (shard file
    name, key) for windows perturbed on the fly, which is how the perturb stage orders a cell's shards and
    the samples within each. So the report (whose bootstrap draws by position) is the same either way.
    """

    def __init__(self, names: list[str], generators: dict[str, str]) -> None:
        self.names = names
        self.generators = generators
        self.cells: dict[tuple[str, int], list[tuple[tuple, dict[str, ScoredWindow]]]] = {}

    def score(self, kind: str, level: int, chunk: list, built: dict, sort_keys: list[tuple]) -> None:
        rows = self.cells.setdefault((kind, level), [])
        if not chunk:
            return
        by_detector = _score_chunk(chunk, built, self.names)
        for i, entry in enumerate(chunk):
            sample = entry.sample
            clip = str(sample.meta.get("clip", ""))
            generator = (self.generators.get(clip) or sample.meta.get("generator", "")) if sample.label else ""
            rows.append((sort_keys[i], {
                name: ScoredWindow(sample.key, clip, int(sample.label), generator, kind, level, score.probability,
                                   score.abstain_reason, score.details)
                for name, score in ((name, by_detector[name][i]) for name in self.names)}))

    def windows(self, kind: str, level: int) -> int:
        return len(self.cells.get((kind, level), []))

    def rows(self) -> dict[str, list[ScoredWindow]]:
        """Per detector: the clean cell first, then the cells by type name and level, each in its order."""
        ordered = sorted(self.cells, key=lambda cell: (cell[0] != CLEAN, cell[0], cell[1]))
        out: dict[str, list[ScoredWindow]] = {name: [] for name in self.names}
        for cell in ordered:
            for _, row in sorted(self.cells[cell], key=lambda item: item[0]):
                for name in self.names:
                    out[name].append(row[name])
        return out


def _interleaved(sets: list, read: ReadStats, exclude: frozenset[str], frames_cache=None):
    """(set index, ShardSample) of every set, shard by shard: each clean shard, then the same shard of every
    perturbed cell. A window's perturbed copies are then read while its clean features are still in the
    detectors' caches, whatever the size of the test split; within a set the order is the stored one.
    frames_cache (shard_samples.DecodedFrames): the clean shard's decoded frames, which the copies an audio
    perturbation made store byte for byte, are decoded once; emptied at each clean shard."""
    from avlips.model.shard_samples import iter_shard_samples

    names = sorted({os.path.basename(path) for _, _, shards in sets for path in shards})
    by_name = [{os.path.basename(path): path for path in shards} for _, _, shards in sets]
    for name in names:
        if frames_cache is not None:
            frames_cache.clear()
        for index, paths in enumerate(by_name):
            if name in paths:
                for item in iter_shard_samples([paths[name]], read, exclude_clips=exclude, frames_cache=frames_cache,
                                               remember_frames=sets[index][0] == CLEAN):
                    yield index, item


def _score_shards_as_stored(table: _ScoreTable, sets: list, split: str, built: dict, chunk_size: int,
                            read: ReadStats, exclude: frozenset[str] = frozenset(), decoded_frames_mb: int = 0) -> None:
    """Score each shard set (clean, then each materialised cell) as its shards store it."""
    from avlips.model.prefetch import prefetch
    from avlips.model.shard_samples import DecodedFrames

    for kind, level, shards in sets:
        if not shards:
            log.warning("evaluate: no %s shards for %s level %d, skipped", split, kind, level)
    positions = [0] * len(sets)  # each set's stream position: the order its cell's rows are reported in
    stream = prefetch(_interleaved(sets, read, exclude, DecodedFrames(decoded_frames_mb << 20)), chunk_size)
    for chunk in _chunks(stream, chunk_size, group=lambda entry: (entry[0], entry[1].shard)):
        index = chunk[0][0]
        kind, level, _ = sets[index]
        table.score(kind, level, [item for _, item in chunk], built,
                    [(positions[index] + i,) for i in range(len(chunk))])
        positions[index] += len(chunk)
    for kind, level, shards in sets:
        if shards:
            log.info("evaluate: %s level %d: %d windows", kind, level, table.windows(kind, level))


def _decoded_frames_mb(settings: dict) -> int:
    """evaluate.decoded_frames_mb: an integer >= 0 (0 decodes every copy's frames), else an EvaluateInputError."""
    value = settings.get("decoded_frames_mb", 768)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise EvaluateInputError(f"evaluate.decoded_frames_mb must be an integer >= 0, got {value!r}")
    return value


def _perturb_stats(perturbed_dir: str) -> dict:
    """The perturb stage's perturb_stats.json in the directory ({} when there is none)."""
    path = os.path.join(perturbed_dir, "perturb_stats.json") if perturbed_dir else ""
    if not path or not os.path.isfile(path):
        return {}
    try:
        with open(path, encoding="utf-8") as handle:
            stats = json.load(handle)
    except (OSError, ValueError) as exc:
        raise EvaluateInputError(f"{path}: unreadable ({type(exc).__name__}: {exc})") from exc
    if not isinstance(stats, dict):
        raise EvaluateInputError(f"{path}: expected a JSON object, got {type(stats).__name__}")
    return stats


@dataclass(frozen=True)
class OnTheFly:
    """perturb.materialize false: the cells evaluate makes from the clean windows, with the perturb stage's code."""

    config: PerturbConfig
    cells: tuple[tuple[str, int], ...]  # (type, level), in the report's order


def on_the_fly_cells(params: dict, perturbed_dir: str, split: str) -> OnTheFly | None:
    """The cells to perturb on the fly when `perturb.materialize` is false, else None (read the shards).

    A perturb_stats.json saying the perturb stage wrote no shards, under params that say it did, is an
    error: the shards there (if any) are an older run's.
    """
    if not perturbed_dir:
        return None
    materialize = (params.get("perturb") or {}).get("materialize", True)
    if materialize is True:
        if _perturb_stats(perturbed_dir).get("materialize") is False:
            raise EvaluateInputError(f"{os.path.join(perturbed_dir, 'perturb_stats.json')}: the perturb stage wrote "
                                     f"no shards (perturb.materialize was false); set perturb.materialize: false to "
                                     f"perturb on the fly, or rerun `avlips perturb`")
        return None
    from avlips.pipelines.perturb import PerturbConfig

    config = PerturbConfig.from_params(params)  # a bad setting is a PerturbInputError naming it
    if split not in config.splits:
        log.warning("evaluate: perturb.splits %s lacks %r: no perturbed cells", list(config.splits), split)
        return OnTheFly(config, ())
    return OnTheFly(config, tuple((kind, level) for kind in sorted(config.types) for level in sorted(config.levels)))


def _score_perturbing_on_the_fly(table: _ScoreTable, shards: list[str], plan: OnTheFly, built: dict,
                                 chunk_size: int, read: ReadStats, exclude: frozenset[str] = frozenset()) -> int:
    """One pass over the clean shards: each chunk of decoded windows is scored, then perturbed into every cell
    (perturb.perturb_sample: the bytes a materialised shard would hold, decoded as its reader would) and
    scored again. Returns how many perturbed windows failed to be made (each warned about)."""
    from avlips.model.prefetch import prefetch
    from avlips.model.shard_samples import ShardSample, decode_window, iter_shard_samples
    from avlips.pipelines.perturb import perturb_sample

    levels_of: dict[str, list[int]] = {}
    for kind, level in plan.cells:
        levels_of.setdefault(kind, []).append(level)
    failures = position = 0
    windows = iter_shard_samples(shards, read, keep_members=True, exclude_clips=exclude)
    for chunk in _chunks(prefetch(windows, chunk_size), chunk_size):
        table.score(CLEAN, 0, chunk, built, [(position + i,) for i in range(len(chunk))])
        position += len(chunk)
        for kind, levels in levels_of.items():
            made: dict[int, list[tuple[str, str, dict]]] = {level: [] for level in levels}
            for item in chunk:
                records = perturb_sample(item.sample.key, item.members, kind, tuple(levels), plan.config, item.shard,
                                         decoded=item.sample)
                for level, record in records.items():
                    if record["kind"] == "sample":
                        made[level].append((item.shard, record["key"], record["members"]))
                    else:
                        failures += 1
                        log.warning("evaluate: not perturbed: %s", record["failure"]["message"])
            for level in levels:  # decoded one level at a time: memory stays at a chunk of windows
                decoded, sort_keys = [], []
                for shard, key, members in made.pop(level):
                    try:
                        sample = decode_window(key, members)
                    except Exception as exc:  # as a reader of the materialised shard would skip it
                        log.warning("skipped sample %r perturbed from shard %s: %s: %s", key, shard,
                                    type(exc).__name__, exc)
                        read.skipped_samples += 1
                        continue
                    read.samples += 1
                    decoded.append(ShardSample(shard, sample))
                    sort_keys.append((os.path.basename(shard), key))
                table.score(kind, level, decoded, built, sort_keys)
    for kind, level in [(CLEAN, 0), *plan.cells]:
        log.info("evaluate: %s level %d: %d windows%s", kind, level, table.windows(kind, level),
                 " (perturbed on the fly)" if kind != CLEAN else "")
    return failures


def _calibrate(built: dict, names: list[str], sets: list) -> dict[str, dict]:
    """Fit every combining detector on its validation shards (never a shard that is being tested)."""
    tested = {os.path.realpath(path) for _, _, shards in sets for path in shards}
    calibrations = {}
    for name in names:
        detector = built[name]
        if not hasattr(detector, "calibrate"):
            continue
        overlap = sorted(tested & {os.path.realpath(path) for path in detector.val_shards()})
        if overlap:
            raise EvaluateInputError(f"detector {name!r} would calibrate on tested shards ({overlap[0]}): set "
                                     f"detectors.{name}.val_shards to the validation split")
        calibrations[name] = detector.calibrate(recompute=True).to_dict()
        log.info("evaluate: %s calibrated on %d real validation windows -> %s", name,
                 calibrations[name]["real_windows"], detector.calibration_path)
    return calibrations


def _detector_info(name: str, detector, calibration: dict | None) -> dict:
    """What the report says about a detector: version, what it reads, its weights and their provenance."""
    info = {"name": name, "version": detector.version, "reads": list(detector.reads),
            "weights": detector.readiness().reason}
    try:
        info["provenance"] = detector.provenance()
    except Exception as exc:  # provenance is information, never a reason to fail an evaluation
        info["provenance"] = {"error": f"{type(exc).__name__}: {exc}"}
    if calibration is not None:
        info["calibration"] = calibration
    return info


def run_evaluate(model_path: str, clean_dir: str, perturbed_dir: str, reports_dir: str, params: dict) -> dict:
    """Score the clean and every perturbed test shard set with every detector in `evaluate.detectors`;
    write reports/robustness.{json,md} and plots (one block per detector).

    `model_path`, when given, is LipFD's checkpoint (over `detectors.lipfd.model`). Each sample is decoded
    once and handed to every detector; a combining detector (fused) is calibrated on its validation
    shards first and combines its members' scores of the same windows. With `perturb.materialize: false`
    the perturbed cells are made from the clean windows in the same pass (`on_the_fly_cells`).
    """
    from avlips.model.report import build_detectors_report
    from avlips.model.shard_samples import ReadStats
    from avlips.pipelines.dropped_videos import read_dropped
    from avlips.model.worker_memory import tune_allocator

    settings = params.get("evaluate", {}) or {}
    split = settings.get("split", "test")
    names = list(dict.fromkeys(settings.get("detectors") or ["lipfd"]))
    decoded_frames_mb = _decoded_frames_mb(settings)
    started = time.time()
    tune_allocator()  # freed composites and decoded frames reused, not faulted in again for every window
    plan = on_the_fly_cells(params, perturbed_dir, split)
    sets = [(CLEAN, 0, _test_shards(clean_dir, split))] if plan else _shard_sets(clean_dir, perturbed_dir, split)
    if not sets[0][2]:
        raise EvaluateInputError(f"{clean_dir}: no {split}-NNNNNN.tar shards to evaluate")
    built = _ready_detectors(names, params, model_path)
    calibrations = _calibrate(built, names, sets)
    table = _ScoreTable(names, _generators_by_clip(clean_dir))
    chunk_size = _chunk_size(d for d in built.values() if not hasattr(d, "combine"))
    read = ReadStats()
    exclude_file = str(settings.get("exclude_videos") or "")
    exclude = frozenset(read_dropped(exclude_file, "evaluate.exclude_videos"))
    if plan:
        perturb_failures = _score_perturbing_on_the_fly(table, sets[0][2], plan, built, chunk_size, read, exclude)
        perturbed = {"source": "perturbed on the fly from the clean shards (perturb.materialize false)",
                     "cells": len(plan.cells), "failures": perturb_failures}
    else:
        _score_shards_as_stored(table, sets, split, built, chunk_size, read, exclude, decoded_frames_mb)
        perturbed = {"source": "materialised shards" if perturbed_dir else "none",
                     "cells": sum(1 for kind, _, shards in sets if kind != CLEAN and shards),
                     "failures": int(_perturb_stats(perturbed_dir).get("failures") or 0)}
    rows = table.rows()
    report = build_detectors_report(rows, int(settings.get("bootstrap_rounds", 1000)), int(params.get("seed", 0)))
    for name in names:
        report["detectors"][name]["detector"] = _detector_info(name, built[name], calibrations.get(name))
    if "lipfd" in built:
        lipfd = built["lipfd"].loaded()
        model = {"path": built["lipfd"].weights_path, "format": lipfd.source, "input_mode": lipfd.input_mode,
                 "crop_size": lipfd.crop_size}
        if "lipfd" in report["detectors"]:
            report["detectors"]["lipfd"]["model"] = model
        if report["primary_detector"] == "lipfd":
            report["model"] = model
    report["read"] = {"samples": read.samples, "skipped_samples": read.skipped_samples, "bad_shards": read.bad_shards,
                      "perturbed": perturbed}
    if exclude:  # fakes synthesize.min_sync_confidence dropped: named, and their windows counted
        report["read"]["excluded"] = {"list": exclude_file, "videos": len(exclude), "windows": read.excluded_samples}
    write_report(report, reports_dir)
    log.info("evaluate done: %d windows x %d detector(s) in %.1fs", len(next(iter(rows.values()))), len(names),
             time.time() - started)
    return report


def print_table(report: dict) -> str:
    """The Markdown report, for the end of the stage's output."""
    return markdown(report)
