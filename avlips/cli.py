"""The `avlips` command: one subcommand per stage, knobs from params.yaml, overrides on the line."""
from __future__ import annotations

import argparse
import logging
import os
import sys

from avlips import __version__
from avlips.params import ParamsError, load_params, param


def _beam_stage(sub, name: str, help_text: str, handler) -> argparse.ArgumentParser:
    """A subcommand for a Beam stage: runner and worker flags; unknown --options go to Beam."""
    parser = sub.add_parser(name, help=help_text,
                            description="Unknown --options are passed to Beam (e.g. --dask_client_address).")
    parser.add_argument("--runner", help="Beam runner (default from params.yaml beam.runner)")
    parser.add_argument("--workers", type=int, help="DirectRunner processes (default beam.workers)")
    parser.set_defaults(handler=handler)
    return parser


def _beam_settings(args: argparse.Namespace, params: dict, passthrough: list[str]) -> dict:
    """Runner, worker count and pass-through Beam options, command line over params.yaml."""
    return {
        "runner": args.runner or param(params, "beam.runner", "DirectRunner"),
        "workers": args.workers or int(param(params, "beam.workers", 1)),
        "beam_args": tuple(param(params, "beam.options", []) or []) + tuple(passthrough),
    }


def cmd_corpus(args: argparse.Namespace, params: dict, passthrough: list[str]) -> int:
    """List and probe a source; write clips.parquet and failures.parquet."""
    from avlips.pipelines.corpus import run_corpus

    source = args.source or param(params, "corpus.source", "demo")
    out = args.out or param(params, "corpus.out", "data/corpus")
    stats = run_corpus(source, out, params, **_beam_settings(args, params, passthrough))
    print(f"corpus: inputs={stats['inputs']} clips={stats['clips']} failures={stats['failures']} -> {out}")
    return 0


def cmd_denoise(args: argparse.Namespace, params: dict, passthrough: list[str]) -> int:
    """Denoise every clip's audio into 16 kHz mono wavs; write audio.parquet and failures.parquet."""
    from avlips.pipelines.denoise import run_denoise

    clips = args.clips or os.path.join(param(params, "corpus.out", "data/corpus"), "clips.parquet")
    out = args.out or param(params, "denoise.out", "data/audio")
    stats = run_denoise(clips, out, params, **_beam_settings(args, params, passthrough))
    print(f"denoise: inputs={stats['inputs']} outputs={stats['outputs']} failures={stats['failures']} "
          f"reused={stats['reused']} -> {out}")
    return 0


def cmd_synthesize(args: argparse.Namespace, params: dict, passthrough: list[str]) -> int:
    """Make lip-sync fakes of the real clips with every enabled generator; write fakes.parquet."""
    from avlips.pipelines.synthesize import run_synthesize

    out = args.out or param(params, "synthesize.out", "data/fakes")
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

    out = args.out or param(params, "compose.out", "data/shards/clean")
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
                             levels=param(params, "perturb.levels") or (1, 2, 3, 4, 5),
                             frame_size=int(param(params, "compose.frame_size", 500)),
                             cell=int(param(params, "perturb.preview_cell", 256)), key=args.key,
                             salt=int(param(params, "perturb.seed", 0)))
        print(f"perturb preview: {args.preview} -> {out} ({shape[1]}x{shape[0]})")
        return 0
    from avlips.pipelines.perturb import run_perturb

    clean = args.clean or param(params, "perturb.clean") or param(params, "compose.out", "data/shards/clean")
    out = args.out or param(params, "perturb.out", "data/shards/perturbed")
    totals = run_perturb(clean, out, params, **_beam_settings(args, params, passthrough))
    print(f"perturb: {totals['cells']} (type, level) cells, inputs={totals['inputs']} samples={totals['samples']} "
          f"failures={totals['failures']} -> {out}")
    return 0


def cmd_train(args: argparse.Namespace, params: dict, passthrough: list[str]) -> int:
    """Train LipFD on the clean shards; write the model and metrics/train.json."""
    from avlips.model.config import TrainConfig
    from avlips.model.train import expand_shard_pattern, train

    block = dict(params.get("train", {}))
    paths = {k: block.pop(k) for k in ("train_shards", "val_shards", "model", "metrics") if k in block}
    block.setdefault("seed", params.get("seed", 1234))
    metrics = train(TrainConfig.from_dict(block), expand_shard_pattern(args.train_shards or paths["train_shards"]),
                    expand_shard_pattern(args.val_shards or paths.get("val_shards")), args.model or paths.get("model", "models/lipfd.pt"),
                    paths.get("metrics", "metrics/train.json"), resume=args.resume)
    print(f"train: steps={metrics['steps']} val_auc={metrics['val_auc']} "
          f"{metrics['samples_per_s']:.2f} samples/s in {metrics['seconds']:.0f}s")
    return 0


def cmd_evaluate(args: argparse.Namespace, params: dict, passthrough: list[str]) -> int:
    """Score clean and perturbed test shards; write reports/robustness.{json,md} and plots; print the table."""
    from avlips.model.evaluate import print_table, run_evaluate

    settings = params.get("evaluate", {})
    report = run_evaluate(args.model or settings.get("model", "models/lipfd.pt"),
                          args.clean or settings.get("clean", "data/shards/clean"),
                          args.perturbed or settings.get("perturbed", "data/shards/perturbed"),
                          args.out or settings.get("out", "reports"), params)
    print(print_table(report))
    return 0


def cmd_detect(args: argparse.Namespace, params: dict, passthrough: list[str]) -> int:
    """Score one video: per-window scores, the clip's fake probability and a verdict."""
    import json

    from avlips.media.errors import MediaError
    from avlips.media.windows import WindowConfig
    from avlips.model.detect import detect, format_detection
    from avlips.model.evaluate import EvaluateInputError
    from avlips.pipelines.compose import ComposeConfig

    window = ComposeConfig.from_params(params).windows if params else WindowConfig()
    checkpoint = args.checkpoint or param(params, "evaluate.model", "models/lipfd.pt")
    try:
        result = detect(args.video, args.audio, checkpoint, window, centred=True if args.centred else None,
                        threshold=args.threshold)
    except (MediaError, EvaluateInputError) as exc:
        print(f"avlips detect: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result.to_dict(), indent=2) if args.json else format_detection(result))
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
    sub = parser.add_subparsers(dest="command", required=True)

    corpus = _beam_stage(sub, "corpus", "list and probe source videos into clips.parquet", cmd_corpus)
    corpus.add_argument("--source", help="demo | folder:<dir> | avlips:<dir> | manifest:<csv|parquet>")
    corpus.add_argument("--out", help="output directory (default corpus.out)")

    denoise = _beam_stage(sub, "denoise", "denoise every clip's audio (16 kHz mono wavs + audio.parquet)",
                          cmd_denoise)
    denoise.add_argument("--clips", help="clips manifest (default <corpus.out>/clips.parquet)")
    denoise.add_argument("--out", help="output directory (default denoise.out)")

    synthesize = _beam_stage(sub, "synthesize", "make lip-sync fakes of the real clips with the enabled generators",
                             cmd_synthesize)
    synthesize.add_argument("--out", help="fakes directory (default synthesize.out)")

    generators = sub.add_parser("generators", help="the installed lip generators (plugins included)")
    generators_sub = generators.add_subparsers(dest="generators_command", required=True)
    listing = generators_sub.add_parser("list", help="name, version, input kind and readiness of each generator")
    listing.set_defaults(handler=cmd_generators_list)

    compose = _beam_stage(sub, "compose", "compose LipFD windows into WebDataset shards", cmd_compose)
    compose.add_argument("--out", help="shard directory (default compose.out)")

    perturb = _beam_stage(sub, "perturb", "perturb clean test shards into <type>/<level> shard sets", cmd_perturb)
    perturb.add_argument("--clean", help="clean shard directory (default perturb.clean, else compose.out)")
    perturb.add_argument("--out", help="output directory (default perturb.out); with --preview, the PNG to write")
    perturb.add_argument("--preview", metavar="SOURCE",
                         help="shards (brace notation) or a video: write a types x levels grid PNG instead")
    perturb.add_argument("--key", help="with --preview on shards: the sample to show (default: the first)")

    train = sub.add_parser("train", help="train LipFD on the shards (multi-GPU: torchrun -m avlips.model.train)")
    train.add_argument("--train-shards", help="train shards, brace notation (default train.train_shards)")
    train.add_argument("--val-shards", help="validation shards (default train.val_shards)")
    train.add_argument("--model", help="where to write the model (default train.model)")
    train.add_argument("--resume", help="a checkpoint to resume from, or 'auto' for the latest")
    train.set_defaults(handler=cmd_train)

    evaluate = sub.add_parser("evaluate", help="robustness report on the clean and perturbed test shards")
    evaluate.add_argument("--model", help="checkpoint (ours or the released LipFD file; default evaluate.model)")
    evaluate.add_argument("--clean", help="clean shard directory (default evaluate.clean)")
    evaluate.add_argument("--perturbed", help="perturbed shard directory (default evaluate.perturbed)")
    evaluate.add_argument("--out", help="report directory (default evaluate.out)")
    evaluate.set_defaults(handler=cmd_evaluate)

    detect = sub.add_parser("detect", help="score one video")
    detect.add_argument("video")
    detect.add_argument("--audio", help="audio to pair with the video (default: its own track)")
    detect.add_argument("--checkpoint", help="model (ours or the released LipFD file; default evaluate.model)")
    detect.add_argument("--centred", action="store_true", help="the video is already a face crop: use whole frames")
    detect.add_argument("--threshold", type=float, default=0.5, help="probability above which the verdict is fake")
    detect.add_argument("--json", action="store_true", help="print JSON")
    detect.set_defaults(handler=cmd_detect)

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
        params = load_params(args.params)
        return int(args.handler(args, params, passthrough) or 0)
    except ParamsError as exc:
        print(f"avlips: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        from avlips.media.errors import MediaError
        from avlips.media.sample import SampleError
        from avlips.model.checkpoints import CheckpointError
        from avlips.model.evaluate import EvaluateInputError
        from avlips.pipelines.denoise import DenoiseInputError
        from avlips.pipelines.failures import StageFailed
        from avlips.pipelines.perturb import PerturbInputError
        from avlips.pipelines.render_sample import SampleNotFound
        from avlips.pipelines.sources import SourceError
        from avlips.pipelines.synthesize import SynthesizeInputError

        # The user's input is wrong (a broken file, a missing path, a foreign checkpoint): one line naming
        # it, not a traceback (-v shows that too).
        user_errors = (StageFailed, SourceError, DenoiseInputError, PerturbInputError, SynthesizeInputError,
                       EvaluateInputError, MediaError, SampleError, SampleNotFound, CheckpointError,
                       FileNotFoundError, IsADirectoryError, PermissionError)
        if isinstance(exc, user_errors):
            logging.getLogger("avlips").debug("%s failed", args.command, exc_info=True)
            print(f"avlips {args.command}: {exc}", file=sys.stderr)
            return 1
        raise
