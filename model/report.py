"""The robustness report: metrics per generator and per perturbation type and level, as JSON,
Markdown tables and plots, from one table of window scores."""
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
    """One scored window: what it is and the model's probability that it is fake."""

    key: str
    clip: str
    label: int
    generator: str  # "" for real clips
    perturbation: str  # "none" for clean
    level: int  # 0 for clean
    score: float


def _both_levels(rows: list[ScoredWindow], rounds: int, seed: int) -> dict:
    labels = [r.label for r in rows]
    scores = [r.score for r in rows]
    clips = [r.clip for r in rows]
    window = compute_metrics(labels, scores, rounds, seed, groups=np.asarray(clips))
    _, video_labels, video_values = video_scores(clips, labels, scores)
    video = compute_metrics(video_labels, video_values, rounds, seed)
    return {"window": window.to_dict(), "video": video.to_dict()}


def build_report(rows: Iterable[ScoredWindow], bootstrap_rounds: int = 1000, seed: int = 0) -> dict:
    """Metrics for clean data, per generator (its fakes against all reals) and per type and level."""
    rows = list(rows)
    clean = [r for r in rows if r.perturbation == CLEAN]
    report: dict = {"windows": len(rows), "clean": {}, "per_generator": {}, "perturbations": {},
                    "average_auc_per_type": {}}
    if clean:
        report["clean"] = _both_levels(clean, bootstrap_rounds, seed)
        reals = [r for r in clean if r.label == 0]
        for generator in sorted({r.generator for r in clean if r.label == 1}):
            fakes = [r for r in clean if r.label == 1 and r.generator == generator]
            report["per_generator"][generator or "unknown"] = _both_levels(reals + fakes, bootstrap_rounds, seed)
    for kind in sorted({r.perturbation for r in rows} - {CLEAN}):
        levels = {}
        for level in sorted({r.level for r in rows if r.perturbation == kind}):
            subset = [r for r in rows if r.perturbation == kind and r.level == level]
            levels[str(level)] = _both_levels(subset, bootstrap_rounds, seed)
        report["perturbations"][kind] = levels
        aucs = [v["window"]["auc"] for v in levels.values() if v["window"]["auc"] is not None]
        report["average_auc_per_type"][kind] = float(np.mean(aucs)) if aucs else None
    return report


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def markdown(report: dict) -> str:
    """The report as Markdown tables: clean, per generator, types x levels (window AUC and accuracy)."""
    lines = ["# Robustness report", "", f"{report['windows']} scored windows. Fake is the positive class.", ""]
    if report["clean"]:
        lines += ["## Clean test set", "", "| level | n | AUC (95% CI) | AP | acc@0.5 | bal. acc | FPR | FNR | EER |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for level in ("window", "video"):
            m = report["clean"][level]
            lines.append(f"| {level} | {m['n']} | {_fmt(m['auc'])} ({_fmt(m['auc_low'])}-{_fmt(m['auc_high'])}) | "
                         f"{_fmt(m['ap'])} | {_fmt(m['accuracy'])} | {_fmt(m['balanced_accuracy'])} | "
                         f"{_fmt(m['fpr'])} | {_fmt(m['fnr'])} | {_fmt(m['eer'])} |")
        lines += ["", "## Per generator (its fakes against all real windows)", "",
                  "| generator | windows | window AUC | video AUC | acc@0.5 | FNR |", "|---|---|---|---|---|---|"]
        for name, value in report["per_generator"].items():
            w, v = value["window"], value["video"]
            lines.append(f"| {name} | {w['n']} | {_fmt(w['auc'])} | {_fmt(v['auc'])} | {_fmt(w['accuracy'])} | "
                         f"{_fmt(w['fnr'])} |")
    if report["perturbations"]:
        levels = sorted({int(level) for per_type in report["perturbations"].values() for level in per_type})
        header = "| type | clean | " + " | ".join(f"L{level}" for level in levels) + " | mean |"
        clean_auc = report["clean"]["window"]["auc"] if report["clean"] else None
        lines += ["", "## Window AUC by perturbation type and level", "", header,
                  "|" + "---|" * (len(levels) + 3)]
        for kind, per_level in report["perturbations"].items():
            cells = [_fmt(per_level.get(str(level), {}).get("window", {}).get("auc")) for level in levels]
            lines.append(f"| {kind} | {_fmt(clean_auc)} | " + " | ".join(cells) +
                         f" | {_fmt(report['average_auc_per_type'][kind])} |")
        lines += ["", "## Window accuracy at 0.5 by perturbation type and level", "", header.replace(" mean |", ""),
                  "|" + "---|" * (len(levels) + 2)]
        clean_acc = report["clean"]["window"]["accuracy"] if report["clean"] else None
        for kind, per_level in report["perturbations"].items():
            cells = [_fmt(per_level.get(str(level), {}).get("window", {}).get("accuracy")) for level in levels]
            lines.append(f"| {kind} | {_fmt(clean_acc)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def level_rows(report: dict) -> list[dict]:
    """Flat rows (type, level, auc, accuracy) with level 0 = clean, for DVC's plots."""
    rows = []
    clean = report["clean"]["window"] if report["clean"] else None
    for kind, per_level in report["perturbations"].items():
        if clean:
            rows.append({"type": kind, "level": 0, "auc": clean["auc"], "accuracy": clean["accuracy"]})
        for level, value in sorted(per_level.items(), key=lambda item: int(item[0])):
            rows.append({"type": kind, "level": int(level), "auc": value["window"]["auc"],
                         "accuracy": value["window"]["accuracy"]})
    return rows


def plot(report: dict, out_dir: str) -> list[str]:
    """PNG plots: AUC against level, one line per type; per-generator AUC bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(out_dir, exist_ok=True)
    written = []
    rows = level_rows(report)
    if rows:
        figure, axis = plt.subplots(figsize=(7, 4.5), dpi=100)
        for kind in sorted({r["type"] for r in rows}):
            points = [(r["level"], r["auc"]) for r in rows if r["type"] == kind and r["auc"] is not None]
            if points:
                axis.plot(*zip(*points), marker="o", label=kind)
        axis.set_xlabel("perturbation level (0 = clean)")
        axis.set_ylabel("window AUC")
        axis.set_ylim(0, 1.02)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
        axis.set_title("Robustness: AUC against perturbation level")
        path = os.path.join(out_dir, "auc_by_level.png")
        figure.tight_layout()
        figure.savefig(path, metadata={"Software": None})
        plt.close(figure)
        written.append(path)
    if report["per_generator"]:
        names = list(report["per_generator"])
        window = [report["per_generator"][n]["window"]["auc"] or 0 for n in names]
        video = [report["per_generator"][n]["video"]["auc"] or 0 for n in names]
        figure, axis = plt.subplots(figsize=(7, 4), dpi=100)
        positions = np.arange(len(names))
        axis.bar(positions - 0.2, window, 0.4, label="window")
        axis.bar(positions + 0.2, video, 0.4, label="video")
        axis.set_xticks(positions, names)
        axis.set_ylim(0, 1.02)
        axis.set_ylabel("AUC")
        axis.legend()
        axis.set_title("AUC per generator (clean)")
        path = os.path.join(out_dir, "auc_by_generator.png")
        figure.tight_layout()
        figure.savefig(path, metadata={"Software": None})
        plt.close(figure)
        written.append(path)
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
        writer = csv.DictWriter(handle, fieldnames=["type", "level", "auc", "accuracy"])
        writer.writeheader()
        writer.writerows(level_rows(report))
    for path in plot(report, os.path.join(out_dir, "plots")):
        paths[os.path.basename(path)] = path
    return paths
