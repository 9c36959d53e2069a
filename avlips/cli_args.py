"""Command-line arguments shared by the `avlips` subcommands and `python -m avlips.model.train`.

Every subcommand takes `--params FILE` and repeatable `-S key=value` overrides of dotted params keys.
A flag that names a stage input (`compose --clips`) is sugar for its key (`-S compose.clips=...`):
`key_flag` records which key each flag sets, and `params_from_args` applies the overrides, then
the flags, with the same checks (an unknown key or a value of the wrong type is a ParamsError).
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any, Callable

from avlips.params import ParamsError, load_params, param, require

# The train block's keys that are the stage's paths, not training settings (TrainConfig).
TRAIN_PATH_KEYS = ("train_shards", "val_shards", "model", "metrics", "exclude_videos")


def add_params_arguments(parser: argparse.ArgumentParser, subcommand: bool = True) -> None:
    """--params and -S on `parser`; on a subcommand, --params defaults to the one given before it."""
    default = argparse.SUPPRESS if subcommand else None
    parser.add_argument("--params", default=default,
                        help="params file (default: $AVLIPS_PARAMS or ./params.yaml; keys it lacks take the "
                             "package's defaults)")
    parser.add_argument("-S", "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a params value, e.g. -S train.steps=100 (repeatable; the value is YAML)")


def key_flag(parser: argparse.ArgumentParser, flag: str, key: str, help_text: str,
             type: Callable[[str], Any] = str) -> None:
    """A flag that sets the params key `key` (`--clips X` is `-S compose.clips=X`, the value taken as given)."""
    dest = flag.lstrip("-").replace("-", "_")
    parser.add_argument(flag, dest=dest, type=type, help=f"{help_text} (sets {key})")
    flags = dict(parser.get_default("key_flags") or {})
    flags[dest] = key
    parser.set_defaults(key_flags=flags)


def flag_overrides(args: argparse.Namespace) -> list[tuple[str, Any]]:
    """(key, value) of every key flag given on the line."""
    flags = getattr(args, "key_flags", None) or {}
    return [(key, getattr(args, dest)) for dest, key in flags.items() if getattr(args, dest, None) is not None]


def params_from_args(args: argparse.Namespace) -> dict:
    """The params for a command: the file (over the package defaults), then -S overrides, then key flags."""
    overrides: list[Any] = list(getattr(args, "overrides", None) or [])
    return load_params(getattr(args, "params", None), overrides + flag_overrides(args))


# ------------------------------------------------------------------------------------------ train


def add_train_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The arguments of training, the same for `avlips train` and `python -m avlips.model.train`."""
    key_flag(parser, "--train-shards", "train.train_shards", "train shards: globs, brace notation, URLs or pipe:")
    key_flag(parser, "--val-shards", "train.val_shards", "validation shards ('' for none)")
    key_flag(parser, "--model", "train.model", "where to write the model")
    key_flag(parser, "--metrics", "train.metrics", "where to write the metrics JSON")
    parser.add_argument("--checkpoint-dir", default=None,
                        help="where resumable checkpoints go (default: checkpoints/ beside the model)")
    parser.add_argument("--resume", default=None, help="a checkpoint to resume from, or 'auto' for the latest")
    return parser


def train_parser(prog: str = "avlips.model.train") -> argparse.ArgumentParser:
    """The standalone parser of `python -m avlips.model.train` (and torchrun): params arguments plus training's."""
    parser = argparse.ArgumentParser(
        prog=prog, description="Train LipFD from the params file's `train` block (torchrun -m avlips.model.train "
                               "for several GPUs).")
    add_params_arguments(parser, subcommand=False)
    return add_train_arguments(parser)


@dataclass(frozen=True)
class TrainInputs:
    """What a training run is given: its settings block and its paths."""

    settings: dict  # the train block without its paths, with the top-level seed where it has none
    train_shards: str | list[str]
    val_shards: str | list[str] | None
    model: str
    metrics: str | None
    checkpoint_dir: str | None
    resume: str | None
    exclude_videos: str = ""  # a drop list (pipelines/dropped_videos.py): those videos' windows are left out


def train_inputs(args: argparse.Namespace, params: dict) -> TrainInputs:
    """The training run's settings and paths from the params (flags already applied by params_from_args)."""
    block = dict(param(params, "train", {}) or {})
    for key in TRAIN_PATH_KEYS:
        block.pop(key, None)
    if "seed" not in block and "seed" in params:
        block["seed"] = params["seed"]
    return TrainInputs(settings=block, train_shards=require(params, "train.train_shards", "--train-shards"),
                       val_shards=param(params, "train.val_shards") or None,
                       model=require(params, "train.model", "--model"),
                       metrics=param(params, "train.metrics") or None,
                       checkpoint_dir=args.checkpoint_dir, resume=args.resume,
                       exclude_videos=param(params, "train.exclude_videos") or "")


__all__ = ["ParamsError", "TRAIN_PATH_KEYS", "TrainInputs", "add_params_arguments", "add_train_arguments",
           "flag_overrides", "key_flag", "params_from_args", "train_inputs", "train_parser"]
