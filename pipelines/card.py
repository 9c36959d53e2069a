"""The dataset card: what a build holds, where it came from and how it was checked.

Everything is read from what the stages wrote (clips, audio, fakes and samples manifests, each
stage's failures.parquet and stats file) and from the shards themselves, which are hashed. The
card is `card.json` (sorted keys, no timestamps: the same data and software give the same bytes)
and `CARD.md`, the same facts as tables (pipelines/card_markdown.py). A plain function over local
folders: no Beam.

What the card checks rather than only counts is listed in `violations`: an identity found in two
splits (a speaker seen in training and tested on), and a shard that a manifest lists but that is
not on disk. The command writes the card either way and exits 1 when there is one.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
from collections import Counter, defaultdict
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Mapping

import pyarrow.parquet as pq

from avlips.errors import AvlipsInputError
from avlips.media.checksums import file_sha256
from avlips.params import param

CARD_FORMAT = 1
LABELS = {0: "real", 1: "fake"}
SPLIT_ORDER = ("train", "val", "test")
# The params blocks that decide a build's bytes, as dvc.yaml's stages use them (beam only schedules).
BUILD_PARAMS = ("seed", "media", "corpus", "demo", "denoise", "synthesize", "compose", "perturb")
# Stage -> params key of its output folder; failures.parquet and <stage>_stats.json live there.
STAGE_OUTS = {"corpus": "corpus.out", "denoise": "denoise.out", "synthesize": "synthesize.out",
              "compose": "compose.out", "perturb": "perturb.out"}
EXAMPLE_CHARS = 300
IDENTITY_CHECK = (
    "Every (identity, split) pair was collected from clips.parquet, from fakes.parquet (the target's identity "
    "and the driving clip's identity, both in the target's split, where the fake goes) and from the "
    "samples.parquet of the clean and perturbed shards; the identity sets of each pair of splits were then "
    "intersected. Every intersection must be empty."
)


class CardInputError(AvlipsInputError, ValueError):
    """A stage output the card needs is missing or unreadable; the message names the file."""


# ----------------------------------------------------------------------------------------------
# Reading the stage outputs


def _rows(path: str, columns: Iterable[str], optional: Iterable[str] = ()) -> list[dict] | None:
    """The rows of a parquet manifest with `columns` (and the `optional` ones it has); None when absent."""
    if not os.path.isfile(path):
        return None
    try:
        schema = pq.read_schema(path)
    except Exception as exc:  # pyarrow raises several kinds for a file that is not parquet
        raise CardInputError(f"{path}: cannot read it as parquet ({exc})") from exc
    columns = list(columns)
    missing = [c for c in columns if c not in schema.names]
    if missing:
        raise CardInputError(f"{path}: lacks the column(s) {', '.join(missing)} (has {', '.join(schema.names)})")
    wanted = columns + [c for c in optional if c in schema.names and c not in columns]
    return pq.read_table(path, columns=wanted).to_pylist()


def _json(path: str) -> dict | None:
    """A stats file, None when absent."""
    if not os.path.isfile(path):
        return None
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except ValueError as exc:
        raise CardInputError(f"{path}: not valid JSON ({exc})") from exc


def _local(params: Mapping, key: str) -> str:
    """A stage folder from params; the card reads local folders only."""
    value = str(param(params, key) or "")
    if "://" in value:
        raise CardInputError(f"{key}={value}: the card reads local folders only (copy the build here first)")
    return value



# ----------------------------------------------------------------------------------------------
# Small helpers for deterministic tables


def _split_key(split: str) -> tuple:
    return (SPLIT_ORDER.index(split), "") if split in SPLIT_ORDER else (len(SPLIT_ORDER), split)


def _label(value: Any) -> str:
    return LABELS.get(int(value), str(value))


def _summary(values: list[float]) -> dict:
    """Count, total, mean, min, max, rounded to the millisecond."""
    if not values:
        return {"videos": 0, "total_s": 0.0, "mean_s": None, "min_s": None, "max_s": None}
    return {"videos": len(values), "total_s": round(sum(values), 3), "mean_s": round(sum(values) / len(values), 3),
            "min_s": round(min(values), 3), "max_s": round(max(values), 3)}


def _stats(values: list[float]) -> dict:
    """Count, mean, median, min, max of a numeric column (None values dropped)."""
    kept = sorted(float(v) for v in values if v is not None and v == v)
    if not kept:
        return {"count": 0}
    middle = len(kept) // 2
    median = kept[middle] if len(kept) % 2 else (kept[middle - 1] + kept[middle]) / 2
    return {"count": len(kept), "mean": round(sum(kept) / len(kept), 4), "median": round(median, 4),
            "min": round(kept[0], 4), "max": round(kept[-1], 4)}


# ----------------------------------------------------------------------------------------------
# The sections


def count_table(clips: list[dict], fakes: list[dict], windows: list[dict]) -> list[dict]:
    """Clips, synthesized fakes and clean windows by split x label x generator, one row per combination."""
    counts: dict[tuple, Counter] = defaultdict(Counter)
    for row in clips:
        counts[(row["split"], _label(row["label"]), row["generator"] or "")]["clips"] += 1
    for row in fakes:
        counts[(row["split"], "fake", row["generator"] or "")]["fakes"] += 1
    for row in windows:
        counts[(row["split"], _label(row["label"]), row["generator"] or "")]["windows"] += 1
    keys = sorted(counts, key=lambda k: (_split_key(k[0]), k[1] != "real", k[2]))
    return [{"split": s, "label": lab, "generator": g, "clips": counts[(s, lab, g)]["clips"],
             "fakes": counts[(s, lab, g)]["fakes"], "windows": counts[(s, lab, g)]["windows"]}
            for s, lab, g in keys]


def identity_section(clips: list[dict], fakes: list[dict], windows: list[dict],
                     perturbed: list[dict]) -> dict:
    """Identities per split, every pairwise intersection, and the identities in two splits (leaks)."""
    seen: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))  # identity -> split -> where
    for row in clips:
        seen[row["identity"]][row["split"]].add("clips.parquet")
    for row in fakes:
        seen[row["identity"]][row["split"]].add("fakes.parquet (target)")
        if row.get("driving_identity"):
            seen[row["driving_identity"]][row["split"]].add("fakes.parquet (driving speech)")
    for where, rows in (("clean samples.parquet", windows), ("perturbed samples.parquet", perturbed)):
        for row in rows:
            seen[row["identity"]][row["split"]].add(where)
    by_split: dict[str, list[str]] = defaultdict(list)
    for identity, splits in seen.items():
        for split in splits:
            by_split[split].append(identity)
    splits = sorted(by_split, key=_split_key)
    overlaps = {}
    for i, first in enumerate(splits):
        for second in splits[i + 1:]:
            overlaps[f"{first} & {second}"] = sorted(set(by_split[first]) & set(by_split[second]))
    leaks = [{"identity": identity, "splits": sorted(where, key=_split_key),
              "seen_in": {split: sorted(places) for split, places in where.items()}}
             for identity, where in sorted(seen.items()) if len(where) > 1]
    return {"by_split": {split: sorted(by_split[split]) for split in splits},
            "counts": {split: len(by_split[split]) for split in splits},
            "total": len(seen), "intersections": overlaps, "leaks": leaks, "ok": not leaks,
            "how_checked": IDENTITY_CHECK}


def duration_section(clips: list[dict], fakes: list[dict]) -> dict:
    """Seconds of video per split and label: corpus clips (their probed duration) and fakes (frames / fps)."""
    values: dict[tuple[str, str], list[float]] = defaultdict(list)
    for row in clips:
        values[(row["split"], _label(row["label"]))].append(float(row["duration"]))
    for row in fakes:
        values[(row["split"], "fake")].append(float(row["seconds"]))
    out: dict[str, dict] = {}
    for split, label in sorted(values, key=lambda k: (_split_key(k[0]), k[1] != "real")):
        out.setdefault(split, {})[label] = _summary(values[(split, label)])
    every = [v for vs in values.values() for v in vs]
    return {"by_split": out, "all": _summary(every)}


def source_section(clips: list[dict], spec: str, has_provenance: bool) -> list[dict]:
    """Per source kind: its clips, and what the source states of their origin and licence."""
    grouped: dict[str, list[dict]] = defaultdict(list)
    for row in clips:
        grouped[row.get("source") or "unknown"].append(row)
    out = []
    for source, rows in sorted(grouped.items()):
        entry = {"source": source, "clips": len(rows), "identities": len({r["identity"] for r in rows})}
        if has_provenance:
            entry["origin"] = dict(sorted(Counter(r.get("origin") or "" for r in rows).items()))
            entry["licence"] = dict(sorted(Counter(r.get("licence") or "" for r in rows).items()))
        out.append(entry)
    return out if not spec else [{**entry, "spec": spec} for entry in out]


def generator_section(fakes: list[dict], clips: list[dict], stats: dict | None) -> dict:
    """Per generator: fakes made, versions and parameter hashes seen, and what synthesize planned."""
    out: dict[str, dict] = {}
    grouped: dict[str, list[dict]] = defaultdict(list)
    for row in fakes:
        grouped[row["generator"]].append(row)
    for name, rows in grouped.items():
        out[name] = {"fakes": len(rows), "versions": sorted({r["generator_version"] for r in rows}),
                     "params_hashes": sorted({r["params_hash"] for r in rows})}
    for name, spec in ((stats or {}).get("generators") or {}).items():
        entry = out.setdefault(name, {"fakes": 0, "versions": [], "params_hashes": []})
        entry.update({"planned": spec.get("planned", 0), "failed": spec.get("failures", 0),
                      "ready": spec.get("ready"), "reason": spec.get("reason", ""), "input": spec.get("input", "")})
        if spec.get("version") and not entry["versions"]:
            entry["versions"] = [spec["version"]]
    # Fakes that came with the corpus (a source's 1_fake folder or a manifest's label): no parameters known.
    for name, count in Counter(r["generator"] or "unknown" for r in clips if int(r["label"]) == 1).items():
        out.setdefault(name, {"fakes": 0, "versions": [], "params_hashes": []})["corpus_clips"] = count
    return dict(sorted(out.items()))


def _offset_counts(offsets: list[int]) -> dict[str, int]:
    """How many videos have each best offset, by offset (keys as signed text: JSON keys are strings)."""
    return {f"{o:+d}" if o else "0": n for o, n in sorted(Counter(offsets).items())}


def _sync_group(rows: list[dict]) -> dict:
    """One group's sync quality: videos, scored, failures by class, LSE-C / LSE-D / best-offset stats, kept."""
    scored = [r for r in rows if not r["error"]]
    offsets = [int(r["best_offset"]) for r in scored]
    return {"videos": len(rows), "scored": len(scored),
            "failures": dict(sorted(Counter(r["error"] for r in rows if r["error"]).items())),
            "lse_c": _stats([r["lse_c"] for r in scored]), "lse_d": _stats([r["lse_d"] for r in scored]),
            "best_offset": {**_stats(offsets), "counts": _offset_counts(offsets),
                            "at_zero": round(sum(o == 0 for o in offsets) / len(offsets), 4) if offsets else None},
            "not_kept": sum(1 for r in rows if not r["kept"])}


def sync_section(path: str) -> dict:
    """The sync quality of fakes per generator against the real clips' baseline, from the sync_quality stage."""
    from avlips.pipelines.sync_quality_table import SCHEMA, read_metadata

    if not path:
        return {"available": False, "reason": "sync_quality.out is not set: no sync expert scored these videos"}
    rows = _rows(path, SCHEMA.names)
    if rows is None:
        return {"available": False,
                "reason": f"{path} not found: no sync expert scored these videos (run `avlips sync-quality` after "
                          f"`avlips train-sync`)"}
    try:
        meta = read_metadata(path)
    except ValueError as exc:
        raise CardInputError(f"{path}: its sync_quality metadata is not valid JSON ({exc})") from exc
    fakes: dict[str, list[dict]] = defaultdict(list)
    real: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        if row["kind"] == "real":
            real[row["split"]].append(row)
        else:
            fakes[row["generator"] or "unknown"].append(row)
    here = not meta.get("released_expert")  # an expert trained here learned from train and was picked on val
    examples = {}
    for row in sorted(rows, key=lambda r: (r["error"], r["video_id"])):
        if row["error"]:
            examples.setdefault(row["error"], str(row["reason"])[:EXAMPLE_CHARS])
    return {"available": True, "source": path,
            "expert": meta.get("expert", ""), "expert_sha256": meta.get("expert_sha256", ""),
            "released_expert": meta.get("released_expert"), "offsets": meta.get("offsets"),
            "min_sync_confidence": meta.get("min_sync_confidence"),
            "by_generator": {name: _sync_group(group) for name, group in sorted(fakes.items())},
            "real": _sync_group([r for group in real.values() for r in group]),
            "real_by_split": {split: _sync_group(real[split]) for split in sorted(real, key=_split_key)},
            # The real clips an expert trained here learned from (train) and was chosen on (val): their numbers
            # may flatter it; the test clips are the fair baseline.
            "real_trained_on": "train" if here else "", "real_validated_on": "val" if here else "",
            "failure_examples": examples}


def failure_section(params: Mapping, perturb_cells: list[tuple[str, int, str]]) -> dict:
    """Each stage's failures by error class (with one example message per class), from its failures.parquet."""
    out: dict[str, dict] = {}
    for stage, key in STAGE_OUTS.items():
        folder = _local(params, key)
        if stage == "perturb":
            files = [(f"{name}/{level}", os.path.join(path, "failures.parquet")) for name, level, path in perturb_cells]
        else:
            files = [("", os.path.join(folder, "failures.parquet"))]
        stats = _json(os.path.join(folder, f"{stage}_stats.json")) if folder else None
        rows, found, by_cell = [], False, {}
        for cell, path in files:
            cell_rows = _rows(path, ("input", "error", "message"))
            if cell_rows is None:
                continue
            found = True
            rows += cell_rows
            if cell:
                by_cell[cell] = dict(sorted(Counter(r["error"] for r in cell_rows).items()))
        entry: dict[str, Any] = {"recorded": found, "failures": len(rows),
                                 "inputs": (stats or {}).get("inputs"),
                                 "by_error": dict(sorted(Counter(r["error"] for r in rows).items()))}
        examples = {}
        for row in sorted(rows, key=lambda r: (r["error"], r["input"])):
            examples.setdefault(row["error"], str(row["message"])[:EXAMPLE_CHARS])
        entry["examples"] = examples
        if stage == "perturb":
            entry["by_cell"] = {cell: counts for cell, counts in by_cell.items() if counts}
        out[stage] = entry
    return out


def shard_section(folder: str, listed: Counter) -> tuple[list[dict], list[str]]:
    """sha256, bytes and windows of every shard in `folder`; and the listed shards missing on disk."""
    if not folder or not os.path.isdir(folder):
        return [], sorted(os.path.join(folder, f"{name}.tar") for name in listed)
    names = sorted(p.name for p in Path(folder).glob("*.tar"))
    entries = [{"path": os.path.join(folder, name), "bytes": os.path.getsize(os.path.join(folder, name)),
                "sha256": file_sha256(os.path.join(folder, name)), "windows": listed.get(name[:-4], 0)}
               for name in names]
    missing = sorted(os.path.join(folder, f"{name}.tar") for name in listed if f"{name}.tar" not in names)
    return entries, missing


def software_section(params: Mapping, stage_stats: Mapping[str, dict | None]) -> dict:
    """The versions that write and read the build: avlips, python, torch, ffmpeg (and the ffmpeg the stages recorded)."""
    from avlips import __version__
    from avlips.media.ffmpeg_binary import check, resolve

    def version(package: str) -> str:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return "not installed"

    ffmpeg = check(resolve(param(params, "media.ffmpeg", "") or ""))
    recorded = {stage: stats["ffmpeg"].get("version", "") for stage, stats in stage_stats.items()
                if stats and isinstance(stats.get("ffmpeg"), dict)}
    return {"avlips": __version__, "python": platform.python_version(), "torch": version("torch"),
            "ffmpeg": ffmpeg.version, "ffmpeg_recorded_by_stage": dict(sorted(recorded.items())),
            "imageio-ffmpeg": version("imageio-ffmpeg"), "apache-beam": version("apache-beam"),
            "numpy": version("numpy"), "pyarrow": version("pyarrow")}


# ----------------------------------------------------------------------------------------------
# The card


def _perturb_cells(folder: str) -> list[tuple[str, int, str]]:
    """(type, level, folder) of each perturbed cell: those perturb_stats.json names, else those on disk."""
    if not folder or not os.path.isdir(folder):
        return []
    stats = _json(os.path.join(folder, "perturb_stats.json"))
    if stats and stats.get("types") and stats.get("levels"):
        pairs = [(str(t), int(lv)) for t in stats["types"] for lv in stats["levels"]]
    else:
        pairs = sorted((p.parent.parent.name, int(p.parent.name)) for p in Path(folder).glob("*/*/samples.parquet")
                       if p.parent.name.isdigit())
    return [(name, level, os.path.join(folder, name, str(level))) for name, level in pairs]


def build_card(params: Mapping) -> dict:
    """The card of the build that params describe, as a JSON-ready dict."""
    corpus_dir = _local(params, "corpus.out")
    clips_path = os.path.join(corpus_dir, "clips.parquet")
    clips = _rows(clips_path, ("clip_id", "identity", "label", "split", "source", "generator", "duration"),
                  optional=("origin", "licence"))
    if clips is None:
        raise CardInputError(f"{clips_path}: not found; run `avlips corpus` first (corpus.out={corpus_dir})")
    has_provenance = bool(clips) and "licence" in clips[0]
    by_clip = {row["clip_id"]: row for row in clips}

    fakes_dir = _local(params, "synthesize.out")
    fakes_path = os.path.join(fakes_dir, "fakes.parquet")
    raw_fakes = _rows(fakes_path, ("fake_id", "target_clip", "driving_clip", "generator", "generator_version",
                                   "params_hash", "seconds")) or []
    fakes, orphans = [], []
    for row in raw_fakes:
        target = by_clip.get(row["target_clip"])
        if target is None:  # a fake of a clip the corpus no longer has: compose skips it, so does the card
            orphans.append(row["fake_id"])
            continue
        driving = by_clip.get(row["driving_clip"])
        fakes.append({**row, "split": target["split"], "identity": target["identity"],
                      "driving_identity": driving["identity"] if driving else ""})

    clean_dir = _local(params, "compose.out")
    window_columns = ("shard", "split", "label", "identity", "generator")
    windows = _rows(os.path.join(clean_dir, "samples.parquet"), window_columns) or []
    perturb_dir = _local(params, "perturb.out")
    cells = _perturb_cells(perturb_dir)
    perturbed_rows: list[dict] = []
    perturbed_counts: Counter = Counter()
    shards_perturbed, missing = [], []
    for name, level, folder in cells:
        rows = _rows(os.path.join(folder, "samples.parquet"), window_columns) or []
        perturbed_rows += rows
        for row in rows:
            perturbed_counts[(name, level, row["split"], _label(row["label"]), row["generator"] or "")] += 1
        entries, lost = shard_section(folder, Counter(r["shard"] for r in rows))
        shards_perturbed += entries
        missing += lost
    shards_clean, lost = shard_section(clean_dir, Counter(r["shard"] for r in windows))
    missing = lost + missing

    stage_stats = {stage: _json(os.path.join(_local(params, key), f"{stage}_stats.json"))
                   for stage, key in STAGE_OUTS.items() if _local(params, key)}
    identities = identity_section(clips, fakes, windows, perturbed_rows)
    violations = [f"identity {leak['identity']!r} is in splits {', '.join(leak['splits'])} "
                  f"({'; '.join(f'{s}: ' + ', '.join(w) for s, w in sorted(leak['seen_in'].items()))})"
                  for leak in identities["leaks"]]
    violations += [f"shard {path} is listed in samples.parquet but not on disk" for path in missing]
    all_shards = shards_clean + shards_perturbed
    return {
        "card_format": CARD_FORMAT,
        "summary": {
            "source": str(param(params, "corpus.source") or ""),
            "identities": identities["total"], "clips": len(clips), "fakes": len(fakes), "windows": len(windows),
            "perturbed_windows": len(perturbed_rows), "shards": len(all_shards),
            # One hash of the whole build: sha256 of the `sha256sum`-style listing of every shard.
            "shards_digest": hashlib.sha256("".join(f"{s['sha256']}  {s['path']}\n" for s in all_shards)
                                            .encode()).hexdigest() if all_shards else "",
            "fakes_without_target": len(orphans),
        },
        "counts": count_table(clips, fakes, windows),
        "perturbed": {
            "cells": [f"{name}/{level}" for name, level, _ in cells],
            "counts": [{"type": t, "level": lv, "split": s, "label": lab, "generator": g,
                        "windows": perturbed_counts[(t, lv, s, lab, g)]}
                       for t, lv, s, lab, g in sorted(perturbed_counts, key=lambda k: (
                           k[0], k[1], _split_key(k[2]), k[3] != "real", k[4]))],
        },
        "identities": identities,
        "durations": duration_section(clips, fakes),
        "sources": source_section(clips, str(param(params, "corpus.source") or ""), has_provenance),
        "provenance_recorded": has_provenance,
        "generators": generator_section(fakes, clips, stage_stats.get("synthesize")),
        "sync_quality": sync_section(_local(params, "sync_quality.out")),
        "failures": failure_section(params, cells),
        "params": {block: params[block] for block in BUILD_PARAMS if block in params},
        "software": software_section(params, stage_stats),
        "shards": {"clean": shards_clean, "perturbed": shards_perturbed},
        "violations": violations,
    }


def card_json(card: Mapping) -> str:
    """The card's JSON text: sorted keys, so the same card is the same bytes."""
    return json.dumps(card, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write_card(params: Mapping, markdown_path: str, json_path: str) -> dict:
    """Build the card and write it as JSON and Markdown; return it (its `violations` decide the exit status)."""
    from avlips.pipelines.card_markdown import render_markdown

    card = build_card(params)
    for path, text in ((json_path, card_json(card)),
                       (markdown_path, render_markdown(card, os.path.relpath(
                           os.path.abspath(json_path), os.path.dirname(os.path.abspath(markdown_path)))))):
        folder = os.path.dirname(path)
        if folder:
            os.makedirs(folder, exist_ok=True)
        tmp = f"{path}.tmp"
        Path(tmp).write_text(text, encoding="utf-8")
        os.replace(tmp, path)  # a reader never sees half a card
    return card
