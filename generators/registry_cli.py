"""Text for `avlips generators list`: one line per installed generator and whether it can run here."""
from __future__ import annotations

from typing import Iterable, Mapping

_COLUMNS = ("name", "version", "input", "status", "reason")
# Keys of a `synthesize.generators.<name>` block that the stage reads; the rest go to the generator.
STAGE_KEYS = ("enabled", "fakes_per_clip", "splits")


def settings_from_params(params: Mapping) -> dict[str, dict]:
    """Each configured generator's settings from params.yaml (`synthesize.generators`), stage keys removed."""
    blocks = (params.get("synthesize") or {}).get("generators") or {}
    return {str(name): {k: v for k, v in dict(block or {}).items() if k not in STAGE_KEYS}
            for name, block in blocks.items()}


def _status(row: Mapping) -> str:
    return "ready" if row.get("ready") else "not ready"


def format_generator_table(rows: Iterable[Mapping]) -> str:
    """A plain-text table of list_generators() rows: name, version, input, ready or not, and why."""
    cells = [[str(row.get("name", "")), str(row.get("version", "")), str(row.get("input", "")), _status(row),
              # A reason can span lines (a traceback tail): one line keeps the table readable.
              " ".join(str(row.get("reason") or "").split())] for row in rows]
    if not cells:
        return "no generators installed (entry-point group avlips.generators is empty)"
    header = [c.upper() for c in _COLUMNS]
    widths = [max(len(line[i]) for line in [header, *cells]) for i in range(len(_COLUMNS))]
    lines = []
    for line in [header, *cells]:
        # The last column is left unpadded so lines carry no trailing spaces.
        lines.append("  ".join(v.ljust(w) for v, w in zip(line[:-1], widths[:-1])) + "  " + line[-1])
    ready = sum(1 for row in cells if row[3] == "ready")
    lines.append(f"{ready} of {len(cells)} ready")
    return "\n".join(line.rstrip() for line in lines)
