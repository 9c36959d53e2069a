"""The robustness report: metrics per detector, per generator and per perturbation type and level, as
JSON, Markdown tables and plots, from each detector's table of window scores (abstentions included)."""
from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from typing import Iterable

import numpy as np

from avlips.model.metrics import compute_metrics, video_scores

CLEAN = "none"


@dataclass(frozen=True)
class ScoredWindow:
    """One window as a detector saw it: what it is, and the probability that it is fake (None: abstained)."""

    key: str
    clip: str
    label: int
    generator: str  # "" for real clips
    perturbation: str  # "none" for clean
    level: int  # 0 for clean
    score: float | None
    abstain_reason: str = ""
    details: dict | None = None  # detector-specific numbers (a sync detector's offsets available, ...)


# How abstentions enter the metrics (the report says it next to the counts).
ABSTENTION_RULE = (
    "A window a detector abstained on (for example the sync detector on a window without speech) is left out of "
    "that detector's window metrics and counted; a video's score is the mean over its windows that were scored, "
    "and a video whose every window abstained has no score: it is left out of the video metrics and counted. "
    "Detectors that never abstain are scored on every window, so their numbers are as before.")


def _both_levels(rows: list[ScoredWindow], rounds: int, seed: int) -> dict:
    labels = [r.label for r in rows]
    scores = [r.score for r in rows]
    clips = [r.clip for r in rows]
    window = compute_metrics(labels, scores, rounds, seed, groups=np.asarray(clips))
    _, video_labels, video_values = video_scores(clips, labels, scores)
    video = compute_metrics(video_labels, video_values, rounds, seed)
    return {"window": window.to_dict(), "video": video.to_dict()}


def _reason_kind(reason: str) -> str:
    """An abstention reason without its numbers in parentheses, so that reasons can be counted."""
    return reason.split(" (", 1)[0].strip() or "unspecified"


def _abstentions(rows: list[ScoredWindow]) -> dict:
    """Abstained windows per clean class and generator, per perturbation, by reason; videos left without a score."""
    abstained = [r for r in rows if r.score is None]
    clean = [r for r in rows if r.perturbation == CLEAN]
    per_generator: dict[str, int] = {}
    for r in clean:
        if r.label == 1:
            per_generator.setdefault(r.generator or "unknown", 0)
            per_generator[r.generator or "unknown"] += r.score is None
    scored_clips = {r.clip for r in clean if r.score is not None}
    videos_without: dict[str, int] = {}
    for clip, label, generator in sorted({(r.clip, r.label, r.generator) for r in clean}):
        if clip not in scored_clips:
            name = "real" if label == 0 else (generator or "unknown")
            videos_without[name] = videos_without.get(name, 0) + 1
    perturbed: dict[str, dict[str, int]] = {}
    for r in rows:
        if r.perturbation != CLEAN:
            cell = perturbed.setdefault(r.perturbation, {})
            cell[str(r.level)] = cell.get(str(r.level), 0) + (r.score is None)
    reasons: dict[str, int] = {}
    for r in abstained:
        kind = _reason_kind(r.abstain_reason)
        reasons[kind] = reasons.get(kind, 0) + 1
    # Scored on fewer offsets than a full search (audio context cut by the clip's start or end): fewer than the
    # detector wanted (`offsets_wanted`), or where it does not say, fewer than the most any window had.
    searched = [(d.get("offsets_available"), d.get("offsets_wanted"))
                for d in (r.details or {} for r in rows if r.score is not None)
                if isinstance(d.get("offsets_available"), (int, float))]
    most = max((available for available, _ in searched), default=0)
    return {
        "windows": len(abstained),
        "scored_on_fewer_offsets": sum(1 for available, wanted in searched
                                       if available < (wanted if isinstance(wanted, (int, float)) else most)),
        "clean": {"real": sum(1 for r in clean if r.label == 0 and r.score is None),
                  "per_generator": dict(sorted(per_generator.items())),
                  "videos_without_score": dict(sorted(videos_without.items()))},
        "perturbations": {k: dict(sorted(v.items(), key=lambda item: int(item[0]))) for k, v in sorted(perturbed.items())},
        "reasons": dict(sorted(reasons.items(), key=lambda item: (-item[1], item[0]))),
    }


def build_report(rows: Iterable[ScoredWindow], bootstrap_rounds: int = 1000, seed: int = 0) -> dict:
    """One detector's metrics: clean, per generator (its fakes against all reals), per type and level.

    Abstained windows are counted (`abstentions`) and left out of the metrics (ABSTENTION_RULE).
    """
    rows = list(rows)
    scored = [r for r in rows if r.score is not None]
    clean = [r for r in scored if r.perturbation == CLEAN]
    report: dict = {"windows": len(scored), "clean": {}, "per_generator": {}, "perturbations": {},
                    "average_auc_per_type": {}, "abstentions": _abstentions(rows)}
    if clean:
        report["clean"] = _both_levels(clean, bootstrap_rounds, seed)
        reals = [r for r in clean if r.label == 0]
        for generator in sorted({r.generator for r in rows if r.label == 1 and r.perturbation == CLEAN}):
            fakes = [r for r in clean if r.label == 1 and r.generator == generator]
            report["per_generator"][generator or "unknown"] = _both_levels(reals + fakes, bootstrap_rounds, seed)
    for kind in sorted({r.perturbation for r in scored} - {CLEAN}):
        levels = {}
        for level in sorted({r.level for r in scored if r.perturbation == kind}):
            subset = [r for r in scored if r.perturbation == kind and r.level == level]
            levels[str(level)] = _both_levels(subset, bootstrap_rounds, seed)
        report["perturbations"][kind] = levels
        aucs = [v["window"]["auc"] for v in levels.values() if v["window"]["auc"] is not None]
        report["average_auc_per_type"][kind] = float(np.mean(aucs)) if aucs else None
    return report


def build_detectors_report(rows_by_detector: dict[str, list[ScoredWindow]], bootstrap_rounds: int = 1000,
                           seed: int = 0) -> dict:
    """One block per detector under `detectors`; the first detector's block also at the top level.

    The top-level copy keeps the keys the report had when it held one detector (DVC's metrics
    history and scripts read them); `primary_detector` names whose they are.
    """
    blocks = {name: build_report(rows, bootstrap_rounds, seed) for name, rows in rows_by_detector.items()}
    if not blocks:
        raise ValueError("no detector to report")
    primary = next(iter(blocks))
    return {**blocks[primary], "primary_detector": primary, "detectors": blocks, "abstention_rule": ABSTENTION_RULE}


def _blocks(report: dict) -> dict[str, dict]:
    """name -> block of a multi-detector report, or the one block of a build_report result."""
    return report.get("detectors") or {report.get("primary_detector", "detector"): report}


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def markdown(report: dict) -> str:
    """The report as Markdown: every detector in the same tables (clean, per generator, types x levels)."""
    blocks = _blocks(report)
    lines = ["# Robustness report", "",
             f"Detectors: {', '.join(blocks)}. Fake is the positive class; scored windows per detector: "
             + ", ".join(f"{name} {block['windows']}" for name, block in blocks.items()) + ".", ""]
    if any(block["clean"] for block in blocks.values()):
        lines += ["## Clean test set", "",
                  "| detector | level | n | AUC (95% CI) | AP | acc@0.5 | bal. acc | FPR | FNR | EER |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for name, block in blocks.items():
            for level in ("window", "video"):
                if not block["clean"]:
                    continue
                m = block["clean"][level]
                lines.append(f"| {name} | {level} | {m['n']} | {_fmt(m['auc'])} ({_fmt(m['auc_low'])}-"
                             f"{_fmt(m['auc_high'])}) | {_fmt(m['ap'])} | {_fmt(m['accuracy'])} | "
                             f"{_fmt(m['balanced_accuracy'])} | {_fmt(m['fpr'])} | {_fmt(m['fnr'])} | {_fmt(m['eer'])} |")
        lines += ["", "## Per generator (its fakes against all real windows)", "",
                  "| generator | detector | windows | abstained | window AUC | video AUC | acc@0.5 | FNR |",
                  "|---|---|---|---|---|---|---|---|"]
        generators = sorted({g for block in blocks.values() for g in block["per_generator"]})
        for generator in generators:
            for name, block in blocks.items():
                value = block["per_generator"].get(generator)
                if value is None:
                    continue
                w, v = value["window"], value["video"]
                skipped = block.get("abstentions", {}).get("clean", {}).get("per_generator", {}).get(generator, 0)
                lines.append(f"| {generator} | {name} | {w['n']} | {skipped} | {_fmt(w['auc'])} | {_fmt(v['auc'])} | "
                             f"{_fmt(w['accuracy'])} | {_fmt(w['fnr'])} |")
    kinds = sorted({kind for block in blocks.values() for kind in block["perturbations"]})
    if kinds:
        levels = sorted({int(level) for block in blocks.values() for per_type in block["perturbations"].values()
                         for level in per_type})
        header = "| type | detector | clean | " + " | ".join(f"L{level}" for level in levels) + " | mean |"
        for title, metric in (("Window AUC", "auc"), ("Window accuracy at 0.5", "accuracy")):
            with_mean = metric == "auc"
            lines += ["", f"## {title} by perturbation type and level", "",
                      header if with_mean else header.replace(" mean |", ""),
                      "|" + "---|" * (len(levels) + (4 if with_mean else 3))]
            for kind in kinds:
                for name, block in blocks.items():
                    per_level = block["perturbations"].get(kind)
                    if per_level is None:
                        continue
                    clean_value = block["clean"]["window"][metric] if block["clean"] else None
                    cells = [_fmt(per_level.get(str(level), {}).get("window", {}).get(metric)) for level in levels]
                    row = f"| {kind} | {name} | {_fmt(clean_value)} | " + " | ".join(cells) + " |"
                    if with_mean:
                        row += f" {_fmt(block['average_auc_per_type'].get(kind))} |"
                    lines.append(row)
    if any(block.get("abstentions", {}).get("windows") for block in blocks.values()):
        lines += ["", "## Abstentions", "", report.get("abstention_rule", ABSTENTION_RULE), "",
                  "| detector | abstained windows | real (clean) | fakes (clean) per generator | perturbed | "
                  "videos without a score | scored on fewer offsets | reasons |", "|---|---|---|---|---|---|---|---|"]
        for name, block in blocks.items():
            a = block.get("abstentions") or {}
            if not a:
                continue
            clean = a.get("clean", {})
            fakes = ", ".join(f"{g} {n}" for g, n in clean.get("per_generator", {}).items()) or "-"
            perturbed = sum(n for per_level in a.get("perturbations", {}).values() for n in per_level.values())
            videos = ", ".join(f"{g} {n}" for g, n in clean.get("videos_without_score", {}).items()) or "0"
            reasons = "; ".join(f"{r} {n}" for r, n in a.get("reasons", {}).items()) or "-"
            lines.append(f"| {name} | {a.get('windows', 0)} | {clean.get('real', 0)} | {fakes} | {perturbed} | "
                         f"{videos} | {a.get('scored_on_fewer_offsets', 0)} | {reasons} |")
    return "\n".join(lines) + "\n"


LEVEL_COLUMNS = ["type", "level", "auc", "accuracy", "detector"]


def level_rows(report: dict) -> list[dict]:
    """Flat rows (type, level, auc, accuracy, detector) with level 0 = clean, for DVC's plots."""
    rows = []
    for name, block in _blocks(report).items():
        clean = block["clean"]["window"] if block["clean"] else None
        for kind, per_level in block["perturbations"].items():
            if clean:
                rows.append({"type": kind, "level": 0, "auc": clean["auc"], "accuracy": clean["accuracy"],
                             "detector": name})
            for level, value in sorted(per_level.items(), key=lambda item: int(item[0])):
                rows.append({"type": kind, "level": int(level), "auc": value["window"]["auc"],
                             "accuracy": value["window"]["accuracy"], "detector": name})
    return rows


def _save(figure, path: str) -> str:
    import matplotlib.pyplot as plt

    figure.tight_layout()
    figure.savefig(path, metadata={"Software": None})
    plt.close(figure)
    return path


def plot(report: dict, out_dir: str) -> list[str]:
    """PNG plots: AUC against level (a panel per detector), AUC per generator, and detectors per perturbation type."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(out_dir, exist_ok=True)
    blocks = _blocks(report)
    names = list(blocks)
    written = []
    rows = level_rows(report)
    if rows:
        figure, axes = plt.subplots(1, len(names), figsize=(5.5 * len(names), 4.5), dpi=100, squeeze=False,
                                    sharey=True)
        for axis, name in zip(axes[0], names):
            mine = [r for r in rows if r["detector"] == name]
            for kind in sorted({r["type"] for r in mine}):
                points = [(r["level"], r["auc"]) for r in mine if r["type"] == kind and r["auc"] is not None]
                if points:
                    axis.plot(*zip(*points), marker="o", label=kind)
            axis.set_xlabel("perturbation level (0 = clean)")
            axis.set_ylim(0, 1.02)
            axis.grid(alpha=0.3)
            axis.set_title(name)
            if mine:
                axis.legend(fontsize=8)
        axes[0][0].set_ylabel("window AUC")
        figure.suptitle("Robustness: AUC against perturbation level")
        written.append(_save(figure, os.path.join(out_dir, "auc_by_level.png")))
    generators = sorted({g for block in blocks.values() for g in block["per_generator"]})
    if generators:
        figure, axes = plt.subplots(1, 2, figsize=(10, 4), dpi=100, sharey=True)
        positions = np.arange(len(generators))
        width = 0.8 / len(names)
        for axis, level in zip(axes, ("window", "video")):
            for index, name in enumerate(names):
                values = [(blocks[name]["per_generator"].get(g, {}).get(level, {}).get("auc") or 0) for g in generators]
                axis.bar(positions - 0.4 + width * (index + 0.5), values, width, label=name)
            axis.set_xticks(positions, generators)
            axis.set_ylim(0, 1.02)
            axis.set_title(f"{level} AUC per generator (clean)")
            axis.grid(alpha=0.3, axis="y")
        axes[0].set_ylabel("AUC")
        axes[0].legend()
        written.append(_save(figure, os.path.join(out_dir, "auc_by_generator.png")))
    kinds = sorted({kind for block in blocks.values() for kind in block["average_auc_per_type"]})
    if kinds:
        columns = ["clean"] + kinds
        figure, axis = plt.subplots(figsize=(max(7, 1.3 * len(columns)), 4.5), dpi=100)
        positions = np.arange(len(columns))
        width = 0.8 / len(names)
        for index, name in enumerate(names):
            block = blocks[name]
            values = [(block["clean"]["window"]["auc"] if block["clean"] else None) or 0]
            values += [block["average_auc_per_type"].get(kind) or 0 for kind in kinds]
            axis.bar(positions - 0.4 + width * (index + 0.5), values, width, label=name)
        axis.set_xticks(positions, columns, rotation=20)
        axis.set_ylim(0, 1.02)
        axis.set_ylabel("window AUC (mean over levels)")
        axis.grid(alpha=0.3, axis="y")
        axis.legend()
        axis.set_title("Detectors per perturbation type")
        written.append(_save(figure, os.path.join(out_dir, "detectors_by_type.png")))
    return written


def write_report(report: dict, out_dir: str) -> dict[str, str]:
    """robustness.json, robustness.md, robustness_levels.csv and the plots under out_dir."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {"json": os.path.join(out_dir, "robustness.json"), "md": os.path.join(out_dir, "robustness.md"),
             "csv": os.path.join(out_dir, "robustness_levels.csv")}
    with open(paths["json"], "w", encoding="utf-8") as handle:
        json.dump(report, handle, indent=2, sort_keys=True)
        handle.write("\n")
    with open(paths["md"], "w", encoding="utf-8") as handle:
        handle.write(markdown(report))
    with open(paths["csv"], "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=LEVEL_COLUMNS)
        writer.writeheader()
        writer.writerows(level_rows(report))
    for path in plot(report, os.path.join(out_dir, "plots")):
        paths[os.path.basename(path)] = path
    return paths
