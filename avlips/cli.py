"""The `avlips` command: one subcommand per stage, knobs from params.yaml, overrides on the line."""
from __future__ import annotations

import argparse
import logging
import os
import sys

from avlips import __version__
from avlips.cli_args import add_params_arguments, add_train_arguments, key_flag, params_from_args
from avlips.errors import AvlipsInputError
from avlips.params import param, require


class CommandParser(argparse.ArgumentParser):
    """The parser of a subcommand: every one takes --params and -S key=value (see avlips/cli_args.py)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        add_params_arguments(self)


def _beam_stage(sub, name: str, help_text: str, handler) -> argparse.ArgumentParser:
    """A subcommand for a Beam stage: runner and worker flags; unknown --options go to Beam."""
    parser = sub.add_parser(name, help=help_text,
                            description="Unknown --options are passed to Beam (e.g. --dask_client_address).")
    key_flag(parser, "--runner", "beam.runner", "Beam runner")
    key_flag(parser, "--workers", "beam.workers", "DirectRunner processes", type=int)
    parser.set_defaults(handler=handler)
    return parser


def _beam_settings(args: argparse.Namespace, params: dict, passthrough: list[str]) -> dict:
    """Runner, worker count and pass-through Beam options (the flags are already in `params`)."""
    return {
        "runner": require(params, "beam.runner", "--runner"),
        "workers": int(require(params, "beam.workers", "--workers")),
        "beam_args": tuple(param(params, "beam.options") or ()) + tuple(passthrough),
    }


def cmd_corpus(args: argparse.Namespace, params: dict, passthrough: list[str]) -> int:
    """List and probe a source; write clips.parquet and failures.parquet."""
    from avlips.pipelines.corpus import run_corpus

    source = require(params, "corpus.source", "--source")
    out = require(params, "corpus.out", "--out")
    stats = run_corpus(source, out, params, **_beam_settings(args, params, passthrough))
    print(f"corpus: inputs={stats['inputs']} clips={stats['clips']} failures={stats['failures']} -> {out}")
    return 0


def cmd_denoise(args: argparse.Namespace, params: dict, passthrough: list[str]) -> int:
    """Denoise every clip's audio into 16 kHz mono wavs; write audio.parquet and failures.parquet."""
    from avlips.pipelines.denoise import run_denoise

    clips = require(params, "denoise.clips", "--clips")
    out = require(params, "denoise.out", "--out")
    stats = run_denoise(clips, out, params, **_beam_settings(args, params, passthrough))
    print(f"denoise: inputs={stats['inputs']} outputs={stats['outputs']} failures={stats['failures']} "
          f"reused={stats['reused']} -> {out}")
    return 0


def cmd_synthesize(args: argparse.Namespace, params: dict, passthrough: list[str]) -> int:
    """Make lip-sync fakes of the real clips with every enabled generator; write fakes.parquet."""
    from avlips.pipelines.synthesize import run_synthesize

    out = require(params, "synthesize.out", "--out")
    stats = run_synthesize(out, params, **_beam_settings(args, params, passthrough))
    print(f"synthesize: inputs={stats['inputs']} fakes={stats['fakes']} failures={stats['failures']} "
          f"made={stats['made']} reused={stats['reused']} -> {out}")
    return 0


def cmd_generators_list(args: argparse.Namespace, params: dict, passthrough: list[str]) -> int:
    """List the installed generators: name, version, input kind, ready or not and why."""
    from avlips.generators.base import list_generators
    from avlips.generators.registry_cli import format_generator_table, settings_from_params

    print(format_generator_table(list_generators(settings_from_params(params))))
    return 0


def cmd_compose(args: argparse.Namespace, params: dict, passthrough: list[str]) -> int:
    """Compose LipFD windows from clips and fakes into WebDataset shards."""
    from avlips.pipelines.compose import run_compose

    out = require(params, "compose.out", "--out")
    totals = run_compose(out, params, **_beam_settings(args, params, passthrough))
    print(f"compose: inputs={totals['inputs']} composed={totals['videos_composed']} "
          f"video_failures={totals['video_failures']} window_failures={totals['window_failures']} "
          f"samples={totals['samples']} -> {out}")
    return 0


def cmd_perturb(args: argparse.Namespace, params: dict, passthrough: list[str]) -> int:
    """Perturb clean shards into the type x level grid of shard sets, or write a preview grid PNG."""
    if args.preview:
        from avlips.pipelines.preview import make_preview

        out = args.out or "perturb_preview.png"
        shape = make_preview(args.preview, out, types=param(params, "perturb.types") or None,
                             levels=require(params, "perturb.levels"),
                             frame_size=int(require(params, "compose.frame_size")),
                             cell=int(require(params, "perturb.preview_cell")), key=args.key,
                             salt=int(require(params, "perturb.seed")))
        print(f"perturb preview: {args.preview} -> {out} ({shape[1]}x{shape[0]})")
        return 0
    from avlips.pipelines.perturb import run_perturb

    clean = require(params, "perturb.clean", "--clean")
    out = require(params, "perturb.out", "--out")
    totals = run_perturb(clean, out, params, **_beam_settings(args, params, passthrough))
    print(f"perturb: {totals['cells']} (type, level) cells, inputs={totals['inputs']} samples={totals['samples']} "
          f"failures={totals['failures']} -> {out}")
    return 0


def cmd_card(args: argparse.Namespace, params: dict, passthrough: list[str]) -> int:
    """Write the dataset card (CARD.md, card.json) of the build; exit 1 when it finds a violation."""
    from avlips.pipelines.card import write_card

    markdown = require(params, "card.markdown", "--markdown")
    card = write_card(params, markdown, require(params, "card.json", "--json"))
    summary = card["summary"]
    print(f"card: identities={summary['identities']} clips={summary['clips']} fakes={summary['fakes']} "
          f"windows={summary['windows']} shards={summary['shards']} violations={len(card['violations'])} "
          f"-> {markdown}")
    if card["violations"]:
        more = f" (and {len(card['violations']) - 1} more)" if len(card["violations"]) > 1 else ""
        print(f"avlips card: {card['violations'][0]}{more}; see {markdown}", file=sys.stderr)
        return 1
    return 0


def cmd_train(args: argparse.Namespace, params: dict, passthrough: list[str]) -> int:
    """Train LipFD on the clean shards; write the model and metrics/train.json."""
    from avlips.cli_args import train_inputs
    from avlips.model.train import train_from_inputs

    metrics = train_from_inputs(train_inputs(args, params))
    print(f"train: steps={metrics['steps']} val_auc={metrics['val_auc']} "
          f"{metrics['samples_per_s']:.2f} samples/s in {metrics['seconds']:.0f}s")
    return 0


def cmd_train_sync(args: argparse.Namespace, params: dict, passthrough: list[str]) -> int:
    """Train the lip-sync expert on the real windows of the clean shards (never a fake); write it and its calibration."""
    from avlips.model.sync.train import SyncTrainConfig, train_sync

    block = dict(param(params, "sync", {}) or {})
    config = SyncTrainConfig.from_params(block, seed=int(param(params, "seed", 1234)))
    out = require(params, "sync.model")
    summary = train_sync(require(params, "sync.train_shards"), require(params, "sync.val_shards"), out, config)
    val = summary["val"]
    print(f"train-sync: {val['windows']} real val windows: aligned vs shifted AUC {val['auc']:.3f}, "
          f"off-sync accuracy {val['offsync_accuracy']:.3f}, swapped-speech AUC {val['swap_auc']:.3f} "
          f"(step {val['extra']['best_step']}, {val['extra']['seconds']:.0f}s) -> {out}")
    return 0


def cmd_sync_quality(args: argparse.Namespace, params: dict, passthrough: list[str]) -> int:
    """Score every real clip and every fake with the lip-sync expert (LSE-C, LSE-D, best offset); write the parquet."""
    from avlips.pipelines.sync_quality import run_sync_quality

    stats = run_sync_quality(params)
    print(f"sync-quality: videos={stats['videos']} scored={stats['scored']} failures={stats['failures']} "
          f"(left out by compose {stats['left_out']}) reused={stats['reused']} "
          f"below min_sync_confidence={stats['dropped']} in {stats['seconds']:.0f}s -> {stats['out']}")
    return 0


def cmd_evaluate(args: argparse.Namespace, params: dict, passthrough: list[str]) -> int:
    """Score clean and perturbed test shards; write reports/robustness.{json,md} and plots; print the table."""
    # A reading thread decodes beside torch's threads: idle OpenMP workers that spin between operators take
    # its core (measured on 2 cores: about 10% less CPU time for the stage). Read when torch loads, so set here.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from avlips.model.evaluate import print_table, run_evaluate

    # Each detector's weights come from params (`detectors.<name>`; --model sets LipFD's).
    report = run_evaluate("", require(params, "evaluate.clean", "--clean"),
                          param(params, "evaluate.perturbed") or "", require(params, "evaluate.out", "--out"),
                          params)
    print(print_table(report))
    return 0


def cmd_detect(args: argparse.Namespace, params: dict, passthrough: list[str]) -> int:
    """Score one video with a detector: per-window scores (sync: best offset, confidence), the verdict."""
    import json

    from avlips.model.detect import detect, format_detection
    from avlips.model.detector_set import default_detector
    from avlips.pipelines.compose import ComposeConfig
    from avlips.pipelines.denoise import DenoiseConfig

    window = ComposeConfig.from_params(params).windows
    name = args.detector or default_detector(params)  # fused when LipFD's and sync's weights both exist
    # The dataset's audio was denoised before compose: the track is cleaned the same way unless told.
    denoiser = None if args.raw_audio else DenoiseConfig.from_params(params).denoiser
    result = detect(args.video, args.audio, None, window, centred=True if args.centred else None,
                    threshold=args.threshold, detector=name, params=params, denoise=denoiser)
    for warning in result.warnings:  # what the scores do not mean, said where a user sees it
        print(f"avlips detect: WARNING: {warning}", file=sys.stderr)
    print(json.dumps(result.to_dict(), indent=2) if args.json else format_detection(result))
    return 0


def cmd_detectors_list(args: argparse.Namespace, params: dict, passthrough: list[str]) -> int:
    """List the installed detectors: name, version, what they read, ready or not and why."""
    from avlips.model.detector_set import format_detector_table, list_detectors

    print(format_detector_table(list_detectors(params)))
    return 0


def cmd_render(args: argparse.Namespace, params: dict, passthrough: list[str]) -> int:
    """Render one stored sample as the reference 1000x2500 composite PNG."""
    from avlips.pipelines.render_sample import render_to_png

    size = render_to_png(args.shards, args.key, args.out)
    print(f"render: {args.key} -> {args.out} ({size[1]}x{size[0]})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="avlips", description=__doc__)
    parser.add_argument("--version", action="version", version=f"avlips {__version__}")
    parser.add_argument("--params", help="params file (default: $AVLIPS_PARAMS or ./params.yaml)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=CommandParser)

    corpus = _beam_stage(sub, "corpus", "list and probe source videos into clips.parquet", cmd_corpus)
    key_flag(corpus, "--source", "corpus.source", "demo | folder:<dir> | avlips:<dir> | manifest:<csv|parquet>")
    key_flag(corpus, "--out", "corpus.out", "output directory")

    denoise = _beam_stage(sub, "denoise", "denoise every clip's audio (16 kHz mono wavs + audio.parquet)",
                          cmd_denoise)
    key_flag(denoise, "--clips", "denoise.clips", "clips manifest (the corpus stage's clips.parquet)")
    key_flag(denoise, "--out", "denoise.out", "output directory")

    synthesize = _beam_stage(sub, "synthesize", "make lip-sync fakes of the real clips with the enabled generators",
                             cmd_synthesize)
    key_flag(synthesize, "--clips", "synthesize.clips", "clips manifest (the corpus stage's clips.parquet)")
    key_flag(synthesize, "--audio", "synthesize.audio", "denoised audio manifest (the denoise stage's audio.parquet)")
    key_flag(synthesize, "--out", "synthesize.out", "fakes directory")

    generators = sub.add_parser("generators", help="the installed lip generators (plugins included)")
    generators_sub = generators.add_subparsers(dest="generators_command", required=True)
    listing = generators_sub.add_parser("list", help="name, version, input kind and readiness of each generator")
    listing.set_defaults(handler=cmd_generators_list)

    compose = _beam_stage(sub, "compose", "compose LipFD windows into WebDataset shards", cmd_compose)
    key_flag(compose, "--clips", "compose.clips", "clips manifest (the corpus stage's clips.parquet)")
    key_flag(compose, "--audio", "compose.audio", "denoised audio manifest ('' to keep each clip's own audio)")
    key_flag(compose, "--fakes", "compose.fakes", "fakes manifest ('' for real clips only)")
    key_flag(compose, "--out", "compose.out", "shard directory")

    perturb = _beam_stage(sub, "perturb", "perturb clean test shards into <type>/<level> shard sets", cmd_perturb)
    key_flag(perturb, "--clean", "perturb.clean", "clean shard directory")
    key_flag(perturb, "--out", "perturb.out", "output directory; with --preview, the PNG to write")
    perturb.add_argument("--preview", metavar="SOURCE",
                         help="shards (brace notation) or a video: write a types x levels grid PNG instead")
    perturb.add_argument("--key", help="with --preview on shards: the sample to show (default: the first)")

    card = sub.add_parser("card", help="write the dataset card of the build (CARD.md and card.json)")
    key_flag(card, "--markdown", "card.markdown", "the Markdown card to write")
    key_flag(card, "--json", "card.json", "the JSON card to write")
    card.set_defaults(handler=cmd_card)

    train = sub.add_parser("train", help="train LipFD on the shards (multi-GPU: torchrun -m avlips.model.train)")
    add_train_arguments(train)  # the same arguments as python -m avlips.model.train
    train.set_defaults(handler=cmd_train)

    train_sync = sub.add_parser("train-sync", help="train the lip-sync expert of the sync detector on real windows only")
    key_flag(train_sync, "--train-shards", "sync.train_shards", "training shards (only their real windows are read)")
    key_flag(train_sync, "--val-shards", "sync.val_shards", "validation shards (real windows: validation, calibration)")
    key_flag(train_sync, "--out", "sync.model", "where to write the expert")
    key_flag(train_sync, "--steps", "sync.steps", "training steps (0 with --expert-weights: calibrate only)", type=int)
    key_flag(train_sync, "--expert-weights", "sync.expert_weights", "start from a released lipsync_expert.pth")
    train_sync.set_defaults(handler=cmd_train_sync)

    quality = sub.add_parser("sync-quality", help="LSE-C / LSE-D / best offset of every real clip and every fake "
                                                  "under the lip-sync expert")
    key_flag(quality, "--clips", "sync_quality.clips", "clips manifest (the corpus stage's clips.parquet)")
    key_flag(quality, "--audio", "sync_quality.audio", "denoised audio manifest ('' to keep each clip's own audio)")
    key_flag(quality, "--fakes", "sync_quality.fakes", "fakes manifest ('' for real clips only)")
    key_flag(quality, "--out", "sync_quality.out", "the parquet file to write")
    key_flag(quality, "--dropped", "sync_quality.dropped", "the drop list to write (fakes below synthesize.min_sync_confidence)")
    key_flag(quality, "--expert", "sync_quality.expert", "expert weights (default: sync.model, else sync.expert_weights)")
    quality.set_defaults(handler=cmd_sync_quality)

    evaluate = sub.add_parser("evaluate", help="robustness report on the clean and perturbed test shards")
    key_flag(evaluate, "--model", "detectors.lipfd.model", "LipFD checkpoint (ours or the released LipFD file)")
    key_flag(evaluate, "--clean", "evaluate.clean", "clean shard directory")
    key_flag(evaluate, "--perturbed", "evaluate.perturbed", "perturbed shard directory ('' for clean only)")
    key_flag(evaluate, "--out", "evaluate.out", "report directory")
    evaluate.set_defaults(handler=cmd_evaluate)

    detect = sub.add_parser("detect", help="score one video")
    detect.add_argument("video")
    detect.add_argument("--audio", help="audio to pair with the video (default: its own track)")
    key_flag(detect, "--checkpoint", "detectors.lipfd.model", "LipFD checkpoint (ours or the released LipFD file)")
    detect.add_argument("--detector", help="lipfd, sync, fused or another installed detector (default: fused when "
                                           "LipFD's and sync's weights exist, else lipfd)")
    detect.add_argument("--centred", action="store_true", help="the video is already a face crop: use whole frames")
    detect.add_argument("--threshold", type=float, default=0.5, help="probability above which the verdict is fake")
    detect.add_argument("--raw-audio", action="store_true",
                        help="score the audio as it is (default: denoised with params' denoise settings first, "
                             "as the dataset's audio was)")
    detect.add_argument("--json", action="store_true", help="print JSON")
    detect.set_defaults(handler=cmd_detect)

    detectors = sub.add_parser("detectors", help="the installed lip-sync deepfake detectors (plugins included)")
    detectors_sub = detectors.add_subparsers(dest="detectors_command", required=True)
    detectors_list = detectors_sub.add_parser("list", help="name, version, fields read and readiness of each detector")
    detectors_list.set_defaults(handler=cmd_detectors_list)

    render = sub.add_parser("render", help="render a stored sample in the reference layout")
    render.add_argument("--shards", required=True, help="shard paths, brace notation allowed")
    render.add_argument("--key", required=True, help="the sample's __key__")
    render.add_argument("--out", required=True, help="PNG to write")
    render.set_defaults(handler=cmd_render)
    return parser


def _configure_logging(verbose: bool) -> None:
    """Our progress lines at INFO; Beam's worker chatter only when verbose."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    # Beam warns at import about optional GCP clients that a local run never uses.
    handler.addFilter(lambda record: "apitools not found" not in record.getMessage())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.WARNING)
    logging.getLogger("avlips").setLevel(logging.DEBUG if verbose else logging.INFO)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `avlips` console script."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    parser = build_parser()
    args, passthrough = parser.parse_known_args(argv)
    unknown = [a for a in passthrough if not a.startswith("--")]
    if unknown:
        parser.error(f"unexpected arguments: {' '.join(unknown)}")
    _configure_logging(args.verbose)
    try:
        # Overrides and flags are checked before any work: a bad one exits 2 with nothing written.
        params = params_from_args(args)
        return int(args.handler(args, params, passthrough) or 0)
    except (AvlipsInputError, FileNotFoundError, IsADirectoryError, PermissionError) as exc:
        # The user's input is wrong (a setting, a broken file, a missing path, a foreign checkpoint): one
        # line naming it, not a traceback (-v shows that too).
        logging.getLogger("avlips").debug("%s failed", args.command, exc_info=True)
        print(f"avlips {args.command}: {exc}", file=sys.stderr)
        return exc.exit_status if isinstance(exc, AvlipsInputError) else 1
