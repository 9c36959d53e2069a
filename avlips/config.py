"""Frozen dataclass configs from params.yaml blocks: one check of keys and value types for every stage.

Every stage reads its block of params.yaml into a frozen dataclass with `config_from_dict`: an
unknown key is an error naming the closest known one, a value is checked (and where lossless,
converted) against the field's annotation, and absent keys keep the dataclass's defaults. A leaf
module (it imports only the standard library and avlips.errors), so media, model, pipelines and
generators can all use it.
"""
from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import Any, Iterable, Mapping, TypeVar

from avlips.errors import ParamsError

__all__ = ["config_from_dict", "did_you_mean"]

C = TypeVar("C")


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the known name closest to `name`, or '' when none is close."""
    known = sorted(known)
    # A key given without its block (`steps` for `train.steps`) is matched by its last part first.
    same_leaf = [k for k in known if k.rsplit(".", 1)[-1] == name.rsplit(".", 1)[-1]]
    close = same_leaf[:1] or difflib.get_close_matches(name, known, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def config_from_dict(cls: type[C], data: Mapping[str, Any] | None, where: str,
                     ignore: Iterable[str] = ()) -> C:
    """An instance of the dataclass `cls` from `data`, a params.yaml block named `where` (e.g. 'train').

    Keys in `ignore` belong to the block but not to this config (a stage's paths) and are skipped.
    Raises ParamsError naming `where.key` for an unknown key or a value of the wrong type, and for
    a value the dataclass itself rejects.
    """
    data = dict(data or {})
    skipped = set(ignore)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(k for k in data if k not in fields and k not in skipped)
    if unknown:
        raise ParamsError(f"{where}: unknown key {unknown[0]!r}{did_you_mean(str(unknown[0]), fields)}")
    hints = typing.get_type_hints(cls)
    values = {name: _coerce(value, hints.get(name, Any), f"{where}.{name}")
              for name, value in data.items() if name in fields}
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ParamsError):
            raise
        raise ParamsError(f"{where}: {exc}") from exc


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """`value` checked against the annotation `hint`, converted where nothing is lost (1 -> 1.0, list -> tuple)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any or hint is object:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, option, key)
            except ParamsError as exc:
                errors.append(exc)
        raise errors[0] if errors else _wrong(key, hint, value)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise _wrong(key, "bool", value)
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise _wrong(key, "int", value)
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            # PyYAML reads YAML 1.1, where `1e-3` (no dot) is a string, not a number.
            try:
                return float(value)
            except ValueError:
                pass
        raise _wrong(key, "float", value)
    if hint is str:
        if isinstance(value, str):
            return value
        raise _wrong(key, "str", value)
    if origin is tuple or hint is tuple:
        if not isinstance(value, (list, tuple)):
            raise _wrong(key, "list", value)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
        if args and len(args) != len(value):
            raise ParamsError(f"{key}: expected {len(args)} values, got {len(value)} ({value!r})")
        return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args))) if args \
            else tuple(value)
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        if isinstance(value, hint):
            return value
        if isinstance(value, Mapping):
            return config_from_dict(hint, value, key)
        raise _wrong(key, "mapping", value)
    return value  # dict, Mapping and other annotations: taken as given


def _wrong(key: str, expected: Any, value: Any) -> ParamsError:
    name = expected if isinstance(expected, str) else getattr(expected, "__name__", str(expected))
    return ParamsError(f"{key}: expected {name}, got {type(value).__name__} {value!r}")
