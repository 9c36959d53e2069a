"""The evaluate stage: score clean and perturbed test shards, write the robustness report."""
from __future__ import annotations

import glob
import logging
import os
import time
from dataclasses import dataclass
from typing import Iterator

import torch

from avlips.errors import AvlipsInputError
from avlips.model.checkpoints import CheckpointError
from avlips.model.loader import LoaderConfig, batch_inputs, make_loader
from avlips.model.report import CLEAN, ScoredWindow, build_report, markdown, write_report

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
        except CheckpointFormatError:
            # Not our format: the released checkpoint was trained on BGR 0..255 at the reference sizes.
            model, _ = load_reference_checkpoint(contents)
            input_mode, crop_size, source = "reference_compatible", 224, "reference"
    except CheckpointError as exc:
        message = str(exc) if str(exc).startswith(str(path)) else f"{path}: {exc}"
        raise CheckpointUnusable(message) from exc
    model.eval().to(target)
    return Detector(model, input_mode, crop_size, target, source)


@torch.no_grad()
def score_shards(detector: Detector, shards: str | list[str], batch_size: int = 16
                 ) -> Iterator[tuple[str, str, int, float]]:
    """(key, clip, label, probability of fake) for every readable sample of the shards."""
    config = detector.loader_config(batch_size)
    for batch in make_loader(shards, config, rank=0, world_size=1):
        global_input, crops = batch_inputs(batch, config, detector.device)
        logits = detector.model(global_input, crops).logit.float()
        for key, clip, label, score in zip(batch.keys, batch.clips, batch.labels.tolist(),
                                           torch.sigmoid(logits).cpu().tolist()):
            yield key, clip, int(label), float(score)


def _generators_by_clip(clean_dir: str) -> dict[str, str]:
    import pyarrow.parquet as pq

    manifest = os.path.join(clean_dir, "samples.parquet")
    if not os.path.exists(manifest):
        return {}
    table = pq.read_table(manifest, columns=["clip", "generator"]).to_pylist()
    return {row["clip"]: row["generator"] for row in table}


def _test_shards(directory: str, split: str) -> list[str]:
    return sorted(glob.glob(os.path.join(directory, f"{split}-[0-9]*.tar")))


def run_evaluate(model_path: str, clean_dir: str, perturbed_dir: str, reports_dir: str, params: dict) -> dict:
    """Score the clean and every perturbed test shard set; write reports/robustness.{json,md} and plots."""
    settings = params.get("evaluate", {})
    split = settings.get("split", "test")
    batch_size = int(settings.get("batch_size", 16))
    started = time.time()
    detector = load_detector(model_path, settings.get("device", "auto"))
    generators = _generators_by_clip(clean_dir)
    sets = [(CLEAN, 0, _test_shards(clean_dir, split))]
    if perturbed_dir and os.path.isdir(perturbed_dir):
        for kind in sorted(os.listdir(perturbed_dir)):
            kind_dir = os.path.join(perturbed_dir, kind)
            if not os.path.isdir(kind_dir):
                continue
            for level in sorted((d for d in os.listdir(kind_dir) if d.isdigit()), key=int):
                sets.append((kind, int(level), _test_shards(os.path.join(kind_dir, level), split)))
    if not sets[0][2]:
        raise EvaluateInputError(f"{clean_dir}: no {split}-NNNNNN.tar shards to evaluate")
    rows: list[ScoredWindow] = []
    for kind, level, shards in sets:
        if not shards:
            log.warning("evaluate: no %s shards for %s level %d, skipped", split, kind, level)
            continue
        count = 0
        for key, clip, label, score in score_shards(detector, shards, batch_size):
            rows.append(ScoredWindow(key, clip, label, generators.get(clip, "") if label else "", kind, level, score))
            count += 1
        log.info("evaluate: %s level %d: %d windows", kind, level, count)
    report = build_report(rows, int(settings.get("bootstrap_rounds", 1000)), int(params.get("seed", 0)))
    report["model"] = {"path": model_path, "format": detector.source, "input_mode": detector.input_mode,
                       "crop_size": detector.crop_size}
    write_report(report, reports_dir)
    log.info("evaluate done: %d windows in %.1fs", len(rows), time.time() - started)
    return report


def print_table(report: dict) -> str:
    """The Markdown report, for the end of the stage's output."""
    return markdown(report)
