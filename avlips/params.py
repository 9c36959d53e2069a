"""params.yaml: loading it and reading dotted keys from it."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

DEFAULT_PATH = "params.yaml"


class ParamsError(ValueError):
    """params.yaml is missing, malformed, or lacks a key a stage needs."""


def load_params(path: str | os.PathLike | None = None) -> dict:
    """The parameters from `path`, $AVLIPS_PARAMS or ./params.yaml; {} when none exists and none was named."""
    named = path or os.environ.get("AVLIPS_PARAMS")
    candidate = Path(named or DEFAULT_PATH)
    if not candidate.exists():
        if named:
            raise ParamsError(f"{candidate}: no such params file")
        return {}
    try:
        data = yaml.safe_load(candidate.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ParamsError(f"{candidate}: not valid YAML ({exc})") from exc
    if not isinstance(data, dict):
        raise ParamsError(f"{candidate}: top level must be a mapping")
    return data


def param(params: dict, dotted: str, default: Any = None) -> Any:
    """The value at a dotted key such as 'corpus.splits', or `default` when absent."""
    node: Any = params
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node
