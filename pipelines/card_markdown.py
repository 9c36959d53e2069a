"""CARD.md: the dataset card's facts (pipelines/card.py) as Markdown tables a person reads."""
from __future__ import annotations

from collections import defaultdict
from typing import Any, Iterable, Mapping

import yaml

NAMES_SHOWN = 40  # identities listed per split in the Markdown; card.json lists all


def _cell(value: Any) -> str:
    """A table cell: empty as an em dash, pipes escaped, newlines flattened."""
    if value is None or value == "" or value == []:
        return "—"
    if isinstance(value, (list, tuple)):
        value = ", ".join(str(v) for v in value)
    return str(value).replace("|", "\\|").replace("\n", " ")


def _table(header: Iterable[str], rows: Iterable[Iterable[Any]]) -> list[str]:
    header = list(header)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return lines


def _counted(counts: Mapping[str, int], empty: str) -> str:
    """`value (n)` per distinct value; the empty value shown as `empty`."""
    return "; ".join(f"{value or empty} ({n})" for value, n in counts.items())


def _violations(card: Mapping) -> list[str]:
    if not card["violations"]:
        return []
    lines = ["## VIOLATIONS", "", f"**This build fails its checks ({len(card['violations'])}):**", ""]
    return lines + [f"- **{v}**" for v in card["violations"]] + [""]


def _summary(card: Mapping) -> list[str]:
    s = card["summary"]
    rows = [("source (corpus.source)", f"`{s['source']}`"), ("identities", s["identities"]),
            ("corpus clips", s["clips"]), ("synthesized fakes", s["fakes"]), ("clean windows", s["windows"]),
            ("perturbed windows", s["perturbed_windows"]), ("shards", s["shards"]),
            ("sha256 of the shard list", f"`{s['shards_digest']}`" if s["shards_digest"] else "")]
    if s["fakes_without_target"]:
        rows.append(("fakes whose target clip is not in the corpus (left out)", s["fakes_without_target"]))
    return ["## Summary", "", *_table(("", ""), rows), ""]


def _counts(card: Mapping) -> list[str]:
    rows = [(r["split"], r["label"], r["generator"], r["clips"], r["fakes"], r["windows"]) for r in card["counts"]]
    totals = [sum(r["clips"] for r in card["counts"]), sum(r["fakes"] for r in card["counts"]),
              sum(r["windows"] for r in card["counts"])]
    return ["## Contents by split, label and generator", "",
            "Corpus clips (clips.parquet), fakes made by `avlips synthesize` (fakes.parquet, in the split of the "
            "person shown) and windows in the clean shards (samples.parquet).", "",
            *_table(("split", "label", "generator", "clips", "fakes", "windows"), rows + [("**all**", "", "", *totals)]),
            ""]


def _perturbed(card: Mapping) -> list[str]:
    """A types x levels grid of window counts, then what each cell holds by split, label and generator."""
    counts = card["perturbed"]["counts"]
    if not card["perturbed"]["cells"]:
        return ["## Perturbed windows", "", "No perturbed shards (the perturb stage's output is absent).", ""]
    failed = card["failures"]["perturb"].get("by_cell", {})
    contents: dict[str, dict[tuple, int]] = defaultdict(dict)
    for r in counts:
        contents[f"{r['type']}/{r['level']}"][(r["split"], r["label"], r["generator"])] = r["windows"]
    types = list(dict.fromkeys(cell.rpartition("/")[0] for cell in card["perturbed"]["cells"]))
    levels = list(dict.fromkeys(cell.rpartition("/")[2] for cell in card["perturbed"]["cells"]))

    def cell_text(cell: str) -> str:
        if cell not in card["perturbed"]["cells"]:
            return ""
        lost = sum(failed.get(cell, {}).values())
        return str(sum(contents[cell].values())) + (f" ({lost} failed)" if lost else "")

    lines = ["## Perturbed windows by type and level", "",
             *_table(["type"] + [f"level {lv}" for lv in levels],
                     [[name] + [cell_text(f"{name}/{lv}") for lv in levels] for name in types]), ""]
    kinds = sorted({key for held in contents.values() for key in held}, key=lambda k: (k[0], k[1] != "real", k[2]))
    rows = [[cell] + [contents[cell].get(k, 0) for k in kinds] for cell in card["perturbed"]["cells"]]
    if len({tuple(row[1:]) for row in rows}) == 1:  # every cell holds the same windows: say it once
        lines += ["Every cell holds " + ", ".join(f"{n} {s} {lab}" + (f" {g}" if g else "") + " windows"
                                                  for (s, lab, g), n in zip(kinds, rows[0][1:])) + ".", ""]
    else:
        lines += _table(["cell"] + [f"{s} {lab}" + (f" {g}" if g else "") for s, lab, g in kinds], rows) + [""]
    return lines


def _identities(card: Mapping) -> list[str]:
    ids = card["identities"]
    rows = []
    for split, names in ids["by_split"].items():
        shown = ", ".join(names[:NAMES_SHOWN]) + (f", … ({len(names) - NAMES_SHOWN} more)"
                                                   if len(names) > NAMES_SHOWN else "")
        rows.append((split, len(names), shown))
    verdict = ("**No identity is in two splits.**" if ids["ok"]
               else f"**{len(ids['leaks'])} identities are in more than one split** (see Violations).")
    pairs = [(pair, ", ".join(shared) if shared else "none (empty)") for pair, shared in ids["intersections"].items()]
    return ["## Identities", "", *_table(("split", "identities", "names"), rows), "",
            verdict, "", f"How it was checked: {ids['how_checked']}", "",
            *_table(("splits", "identities in both"), pairs), ""]


def _durations(card: Mapping) -> list[str]:
    rows = [(split, label, d["videos"], d["total_s"], d["mean_s"], d["min_s"], d["max_s"])
            for split, labels in card["durations"]["by_split"].items() for label, d in labels.items()]
    a = card["durations"]["all"]
    rows.append(("**all**", "", a["videos"], a["total_s"], a["mean_s"], a["min_s"], a["max_s"]))
    return ["## Durations", "", "Seconds of video: corpus clips as probed, fakes as frames / fps.", "",
            *_table(("split", "label", "videos", "total s", "mean s", "min s", "max s"), rows), ""]


def _sources(card: Mapping) -> list[str]:
    lines = ["## Sources", ""]
    if not card["provenance_recorded"]:
        lines += ["clips.parquet has no origin / licence columns (a corpus built before they existed): "
                  "rerun `avlips corpus` to record what the sources state.", ""]
        rows = [(s["source"], s.get("spec", ""), s["clips"], s["identities"]) for s in card["sources"]]
        return lines + _table(("source", "spec", "clips", "identities"), rows) + [""]
    rows = [(s["source"], f"`{s['spec']}`" if s.get("spec") else "", s["clips"], s["identities"],
             _counted(s["origin"], "not stated"), _counted(s["licence"], "not stated")) for s in card["sources"]]
    return lines + ["Origin and licence as each source states them (a manifest's columns, a folder's "
                    "README / LICENSE), with the number of clips.", "",
                    *_table(("source", "spec", "clips", "identities", "origin", "licence"), rows), ""]


def _generators(card: Mapping) -> list[str]:
    if not card["generators"]:
        return ["## Generators", "", "No fakes: no generator ran and the corpus holds no fake clips.", ""]
    rows = [(name, g["fakes"], g.get("corpus_clips", 0), g.get("planned", ""), g.get("failed", ""),
             g["versions"], g["params_hashes"],
             "" if g.get("ready") is None else ("yes" if g["ready"] else f"no: {g.get('reason', '')}"))
            for name, g in card["generators"].items()]
    return ["## Generators", "",
            *_table(("generator", "fakes", "corpus fakes", "planned", "failed", "version", "params hash", "ready"),
                    rows), ""]


def _sync(card: Mapping) -> list[str]:
    sync = card["sync_quality"]
    title = "## Sync quality (lip-sync expert)"
    if not sync["available"]:
        return [title, "", f"Absent: {sync['reason']}.", ""]

    def median(stats: Mapping) -> str:
        return f"{stats['median']} ({stats['min']}–{stats['max']})" if stats.get("count") else ""

    def offsets(stats: Mapping) -> str:
        if not stats.get("count"):
            return ""
        spread = ", ".join(f"{offset}: {n}" for offset, n in stats["counts"].items())
        return f"{stats['at_zero']:.0%} at 0 ({spread})"

    threshold = sync["min_sync_confidence"]

    def row(name: str, group: Mapping, fakes: bool = False) -> list:
        failed = "; ".join(f"{error} {n}" for error, n in group["failures"].items())
        cells = [name, group["videos"], group["scored"], failed, median(group["lse_c"]), median(group["lse_d"]),
                 offsets(group["best_offset"])]
        return cells + ([group["not_kept"] if fakes else ""] if threshold is not None else [])

    rows = [row(name, group, fakes=True) for name, group in sync["by_generator"].items()]
    for split, group in sync["real_by_split"].items():
        note = (" (the expert trained on these)" if split == sync["real_trained_on"] else
                " (the expert was chosen on these)" if split == sync["real_validated_on"] else "")
        rows.append(row(f"real, {split}{note}", group))
    rows.append(row("**real, all (baseline)**", sync["real"]))
    header = ["group", "videos", "scored", "not scored", "LSE-C median (min–max)", "LSE-D median (min–max)",
              "best offset (frames)"] + ([f"fakes not kept (LSE-C < {threshold:g})"] if threshold is not None else [])
    expert = f"`{sync['expert']}`" + (" (a released expert)" if sync["released_expert"] else " (trained here on real "
                                                                                              "clips only)")
    lines = [title, "",
             f"Every real clip and every fake scored by `avlips sync-quality` ({sync['source']}) with {expert}, "
             f"sha256 `{sync['expert_sha256'][:16]}…`, offsets ±{sync['offsets']} frames. LSE-C is the offset "
             "curve's median minus its minimum (higher: more clearly in sync), LSE-D its minimum (lower: closer), "
             "on this expert's scale: read a generator against the real clips, not against published LSE values. "
             "A fake in sync has LSE-C near the real clips' and its best offset at 0.", "",
             *_table(header, rows), ""]
    if threshold is None:
        lines += ["synthesize.min_sync_confidence is off: no fake is marked as not kept.", ""]
    else:
        lines += [f"Fakes below synthesize.min_sync_confidence {threshold:g} (or not scored) are marked `kept = false` "
                  "in the parquet; the shards still hold them.", ""]
    if sync["failure_examples"]:
        lines += _table(("not scored", "example"), sync["failure_examples"].items()) + [""]
    return lines


def _failures(card: Mapping) -> list[str]:
    rows, examples = [], []
    for stage, f in card["failures"].items():
        if not f["recorded"]:
            rows.append((stage, f["inputs"], "not run (no failures.parquet)", ""))
            continue
        rows.append((stage, f["inputs"], f["failures"], _counted(f["by_error"], "?")))
        examples += [(stage, error, message) for error, message in f["examples"].items()]
    lines = ["## Failures", "", "Every input a stage could not use, by error class (the stages' failures.parquet).",
             "", *_table(("stage", "inputs", "failures", "by error class"), rows), ""]
    if examples:
        lines += ["One example per stage and error class:", "", *_table(("stage", "error", "message"), examples), ""]
    return lines


def _params(card: Mapping) -> list[str]:
    text = yaml.safe_dump(card["params"], sort_keys=True, default_flow_style=False, allow_unicode=True)
    return ["## Params of the build", "", "The params.yaml blocks that decide the build's bytes.", "",
            "```yaml", text.rstrip(), "```", ""]


def _software(card: Mapping) -> list[str]:
    sw = card["software"]
    rows = [(k, sw[k]) for k in sorted(sw) if k != "ffmpeg_recorded_by_stage"]
    rows += [(f"ffmpeg recorded by {stage}", v) for stage, v in sw["ffmpeg_recorded_by_stage"].items()]
    return ["## Software", "", *_table(("software", "version"), rows), ""]


def _shards(card: Mapping) -> list[str]:
    every = card["shards"]["clean"] + card["shards"]["perturbed"]
    if not every:
        return ["## Shard hashes", "", "No shards.", ""]
    listing = [f"{s['sha256']}  {s['path']}" for s in every]
    size = sum(s["bytes"] for s in every)
    return ["## Shard hashes", "",
            f"{len(every)} shards, {size / 2**20:.1f} MiB. Check them with `sha256sum -c` from the folder the build "
            "ran in (card.json also gives each shard's bytes and windows).", "",
            "```", *listing, "```", ""]


def render_markdown(card: Mapping, json_name: str = "card.json") -> str:
    """The card as Markdown; `json_name` is the link to card.json from where CARD.md lies."""
    lines = ["# Dataset card", "",
             f"Written by `avlips card` from the build's stage outputs; the same facts, machine-readable, are in "
             f"[{json_name}]({json_name}).", ""]
    for section in (_violations, _summary, _counts, _perturbed, _identities, _durations, _sources, _generators,
                    _sync, _failures, _params, _software, _shards):
        lines += section(card)
    return "\n".join(lines).rstrip() + "\n"
