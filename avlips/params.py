"""params.yaml: loading it over the package's defaults, `-S key=value` overrides, and reading dotted keys.

The package ships the repository's params.yaml as `default_params.yaml` (a link in the checkout, a
copy in a wheel). A user's params file need only hold what it changes: a key it lacks takes the
package's value, and the package's keys are the ones the file and an override may name (an unknown
key is an error naming the closest known one, so a misspelt setting never silently keeps its default;
the mappings in OPEN_KEYS are the user's to fill). Merging goes two
levels deep (a block, then its keys); a key's value is taken whole from the user's file, so a
user's `synthesize.generators` or `corpus.splits` replaces the default mapping instead of being
mixed with it.
"""
from __future__ import annotations

import copy
import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from avlips.config import did_you_mean
from avlips.errors import ParamsError

__all__ = ["DEFAULT_PATH", "DEFAULTS_FILE", "ParamsError", "load_params", "package_defaults", "param",
           "default_param", "require", "not_set", "parse_override", "apply_overrides", "known_keys", "check_key",
           "check_file_keys"]

DEFAULT_PATH = "params.yaml"
DEFAULTS_FILE = Path(__file__).with_name("default_params.yaml")
# Mappings whose keys the user names: generator and detector plugins with their settings (each plugin
# checks its own), and the corpus's split names. Any key below them may be set.
OPEN_KEYS = ("synthesize.generators", "detectors", "corpus.splits")


@lru_cache(maxsize=1)
def _defaults() -> dict:
    data = _read_yaml(DEFAULTS_FILE)
    if data is None:
        raise ParamsError(f"{DEFAULTS_FILE}: the package's default params are missing (a broken install)")
    return data


def package_defaults() -> dict:
    """A copy of the package's default params (the repository's params.yaml)."""
    return copy.deepcopy(_defaults())


def _read_yaml(path: Path) -> dict | None:
    """The mapping in a YAML file, None when it does not exist."""
    if not path.exists():
        return None
    try:
        # libyaml's parser when installed: the same mapping, a tenth of the pure-Python parser's time
        # (params files are read by every stage run, twice: the package's defaults and the user's file).
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) or {}
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from exc
    if not isinstance(data, dict):
        raise ParamsError(f"{path}: top level must be a mapping")
    return data


def load_params(path: str | os.PathLike | None = None, overrides: Iterable[str | tuple[str, Any]] = ()) -> dict:
    """The params: the package's defaults, under the file `path`, $AVLIPS_PARAMS or ./params.yaml, under `overrides`.

    A file named (by `path` or $AVLIPS_PARAMS) must exist; ./params.yaml may be absent.
    `overrides` are `key=value` texts (values parsed as YAML) or (key, value) pairs.
    """
    named = path or os.environ.get("AVLIPS_PARAMS")
    candidate = Path(named or DEFAULT_PATH)
    user = _read_yaml(candidate)
    if user is None and named:
        raise ParamsError(f"{candidate}: no such params file")
    if user:
        check_file_keys(user, candidate)
    merged = merge_params(package_defaults(), user or {})
    return apply_overrides(merged, overrides)


def merge_params(defaults: Mapping, user: Mapping) -> dict:
    """`user` over `defaults`, block by block; within a block, each key's value whole from `user`."""
    merged = copy.deepcopy(dict(defaults))
    for block, value in user.items():
        if isinstance(value, Mapping) and isinstance(merged.get(block), Mapping):
            merged[block] = {**merged[block], **copy.deepcopy(dict(value))}
        else:
            merged[block] = copy.deepcopy(value)
    return merged


def param(params: Mapping, dotted: str, default: Any = None) -> Any:
    """The value at a dotted key such as 'corpus.splits', or `default` when absent."""
    node: Any = params
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return default
        node = node[part]
    return node


def default_param(dotted: str) -> Any:
    """The package defaults' value at a dotted key: a plugin's default setting, written once in params.yaml."""
    value = param(_defaults(), dotted)
    if value is None:
        raise ParamsError(f"{DEFAULTS_FILE}: {dotted} is missing (a broken install)")
    return value


def require(params: Mapping, dotted: str, flag: str | None = None) -> Any:
    """The value at a dotted key; a ParamsError saying how to set it when it is absent or null."""
    value = param(params, dotted)
    if value is None:
        raise not_set(dotted, flag)
    return value


def not_set(dotted: str, flag: str | None = None) -> ParamsError:
    """The error for a key a command needs and nobody set, saying how to set it."""
    how = f"pass {flag} or " if flag else "pass "
    return ParamsError(f"{dotted} is not set: {how}-S {dotted}=... or set it in the params file")


def known_keys(params: Mapping) -> dict[str, Any]:
    """Every dotted key of the package defaults and of `params`, with its value (defaults' first)."""
    keys: dict[str, Any] = {}
    _flatten(params, "", keys)
    _flatten(_defaults(), "", keys)  # the package's value decides the type where both have the key
    return keys


def check_key(key: str, known: Mapping[str, Any], where: str = "") -> None:
    """A ParamsError naming `key` and the closest known key when `key` is not in `known` nor under OPEN_KEYS.

    `where` (a file) prefixes the message; the -S overrides and the params file share this one check.
    """
    if key in known or any(key.startswith(prefix + ".") for prefix in OPEN_KEYS):
        return
    prefix = f"{where}: " if where else ""
    raise ParamsError(f"{prefix}unknown key {key!r}{did_you_mean(key, known)}")


def check_file_keys(user: Mapping, path: str | os.PathLike) -> None:
    """Every key of a user's params file, at every depth, must be one of the package defaults' keys."""
    keys: dict[str, Any] = {}
    _flatten(user, "", keys)
    defaults: dict[str, Any] = {}
    _flatten(_defaults(), "", defaults)
    for key in keys:
        check_key(key, defaults, str(path))


def _flatten(node: Mapping, prefix: str, out: dict[str, Any]) -> None:
    for key, value in node.items():
        dotted = f"{prefix}{key}"
        out[dotted] = value
        if isinstance(value, Mapping):
            _flatten(value, f"{dotted}.", out)


def parse_override(text: str) -> tuple[str, Any]:
    """('key', value) from 'key=value', the value parsed as YAML (`-S perturb.levels=[1,3]`)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ParamsError(f"-S {text}: expected KEY=VALUE, e.g. -S train.steps=100")
    try:
        return key, yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ParamsError(f"-S {text}: the value is not valid YAML ({' '.join(str(exc).split())})") from exc


# The type names of the check, as params.yaml spells its values.
_TYPES = ((bool, "bool"), (int, "int"), (float, "float"), (str, "str"), (list, "list"), (dict, "dict"))


def _type_name(value: Any) -> str | None:
    for kind, name in _TYPES:  # bool first: a bool is also an int
        if isinstance(value, kind):
            return name
    return None


def _checked(key: str, value: Any, current: Any) -> Any:
    """`value` for `key` when its type matches the key's current value.

    An int is a float; a key whose value is null takes any value; null unsets any key (a path
    such as compose.fakes: none; a stage that needs the key says it is not set).
    """
    expected = _type_name(current)
    given = _type_name(value)
    if current is None or value is None or expected is None or expected == given:
        return value
    if expected == "float" and given == "int":
        return float(value)
    if expected == "float" and isinstance(value, str):
        try:
            return float(value)  # YAML 1.1 reads 1e-3 (no dot) as a string
        except ValueError:
            pass
    raise ParamsError(f"{key}: expected {expected} (as in params), got {given or type(value).__name__} {value!r}")


def apply_overrides(params: Mapping, overrides: Iterable[str | tuple[str, Any]]) -> dict:
    """A copy of `params` with each override set; an unknown key or a value of the wrong type is a ParamsError."""
    result = copy.deepcopy(dict(params))
    for item in overrides:
        key, value = parse_override(item) if isinstance(item, str) else item
        known = known_keys(result)
        check_key(key, known)
        value = _checked(key, value, known.get(key))
        node = result
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                raise ParamsError(f"{key}: {part!r} holds a {type(child).__name__}, not a mapping of keys")
            node = child
        node[parts[-1]] = value
    return result
