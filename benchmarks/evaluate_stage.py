"""The whole evaluate stage as a user runs it: against the code the speed-up issue started from, and reading
materialised perturbed shards against perturbing the clean test windows on the fly (`perturb.materialize: false`).

Inputs: a built project (`--root`, for example a fresh clone after `dvc repro`): its data/shards/clean, its
data/shards/perturbed (materialised) and its models/lipfd.pt and models/sync_expert.pt. Each run is
`python -m avlips evaluate` with those paths, writing its report and the fused calibration under `--out`
(nothing is written under --root). CPU-seconds are user + system time of the process
(resource.getrusage(RUSAGE_CHILDREN) around it), wall from process start to exit. Windows are those the
run read and scored (report read.samples: clean plus perturbed); each detector scores each once.

    python benchmarks/evaluate_stage.py --root /path/to/built/clone [--baseline CHECKOUT] [--out DIR]
                                        [--repeat 1] [--only materialised|on_the_fly] [-S KEY=VALUE ...]

--baseline: a checkout of the code before the speed-up (`git worktree add /tmp/base a9f6094`), whose
evaluate scored LipFD alone. It runs on the same shards and checkpoint beside ours with
`evaluate.detectors: [lipfd]` (the like-for-like ratio), and its clean-set numbers are checked equal to ours
(the baseline has no drop list: compare on a build whose data/sync_dropped.json names no video).

Runs alternate between the ways (--repeat N: N of each). Prints each run with the load average around it,
the median windows per wall second and per CPU-second of each way and their ratio, and whether the two
reports agree (every number of robustness.json but the line that says where the perturbed windows came
from). On a shared machine compare runs made at a similar load: a busy sibling hyperthread makes the same
work cost up to twice the CPU-seconds.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

from timing import run_timed  # benchmarks/timing.py: this script's folder is on sys.path

REPO = Path(__file__).resolve().parents[1]
WAYS = {"materialised": [], "on_the_fly": ["-S", "perturb.materialize=false"]}


def evaluate_command(root: Path, out: Path, params: Path, calibration: Path, extra: list[str]) -> list[str]:
    shards = root / "data" / "shards"
    return [sys.executable, "-m", "avlips", "evaluate", "--params", str(params),
            "--clean", str(shards / "clean"), "--perturbed", str(shards / "perturbed"), "--out", str(out),
            "--model", str(root / "models" / "lipfd.pt"),
            "-S", f"detectors.sync.model={root / 'models' / 'sync_expert.pt'}",
            "-S", f"detectors.fused.val_shards={shards / 'clean' / 'val-*.tar'}",
            "-S", f"detectors.fused.calibration={calibration}",
            "-S", f"evaluate.exclude_videos={root / 'data' / 'sync_dropped.json'}", *extra]


def baseline_command(checkout: Path, root: Path, out: Path) -> list[str]:
    """The baseline's evaluate (LipFD only, its own params.yaml) on the root's shards and checkpoint."""
    shards = root / "data" / "shards"
    return [sys.executable, "-m", "avlips", "evaluate", "--model", str(root / "models" / "lipfd.pt"),
            "--clean", str(shards / "clean"), "--perturbed", str(shards / "perturbed"), "--out", str(out)]


def timed(command: list[str], cwd: Path = REPO) -> tuple[float, float, float]:
    """Run a process to its end: (wall seconds, user CPU seconds, system CPU seconds)."""
    done, wall, user, system = run_timed(command, cwd)
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return wall, user, system


def comparable(report: dict) -> dict:
    """The report without the line that says where the perturbed windows came from."""
    report = json.loads(json.dumps(report))
    report.get("read", {}).pop("perturbed", None)
    return report


def largest_difference(a, b, path: str = "") -> tuple[float, str]:
    """The largest absolute difference between two reports' numbers, and where (inf: the structure differs)."""
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return float("inf"), f"{path} keys"
        return max((largest_difference(a[k], b[k], f"{path}.{k}") for k in a), default=(0.0, path))
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return float("inf"), f"{path} length"
        return max((largest_difference(x, y, f"{path}[{i}]") for i, (x, y) in enumerate(zip(a, b))),
                   default=(0.0, path))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return abs(float(a) - float(b)), path
    return (0.0, path) if a == b else (float("inf"), path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, required=True, help="a built project: data/shards/{clean,perturbed}, models/")
    parser.add_argument("--params", type=Path, default=REPO / "params.yaml")
    parser.add_argument("--out", type=Path, default=None, help="reports go here (default: a temporary folder)")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--only", choices=sorted(WAYS), default=None)
    parser.add_argument("--baseline", type=Path, default=None,
                        help="a checkout of the code before the speed-up (e.g. a9f6094): run beside ours, LipFD only")
    parser.add_argument("-S", "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="passed to both runs (e.g. -S evaluate.bootstrap_rounds=200)")
    args = parser.parse_args()
    for needed in ("data/shards/clean", "data/shards/perturbed", "models/lipfd.pt", "models/sync_expert.pt"):
        if not (args.root / needed).exists():
            sys.exit(f"{args.root / needed}: missing (--root must be a project after `dvc repro`)")
    out = args.out or Path(tempfile.mkdtemp(prefix="evaluate_stage_"))
    extra = [x for o in args.overrides for x in ("-S", o)]
    ways = [way for way in WAYS if not args.only or way == args.only]
    runs: dict[str, list[dict]] = {way: [] for way in ways}
    for attempt in range(args.repeat):
        for way in ways:  # alternated, so that a change in the machine's load falls on both ways alike
            folder = out / f"{way}_{attempt}"
            load_before = os.getloadavg()[0]
            # One calibration file for all runs (each run fits it again): the reports name it.
            command = evaluate_command(args.root, folder, args.params, out / "fused_calibration.json",
                                       WAYS[way] + extra)
            wall, user, system = timed(command)
            report = json.loads((folder / "robustness.json").read_text())
            windows = int(report["read"]["samples"])
            runs[way].append({"wall": wall, "cpu": user + system, "windows": windows, "report": report})
            print(f"{way} run {attempt + 1}: {windows} windows in {wall:.1f} s wall, {user:.1f} user + {system:.1f} "
                  f"system CPU s ({windows / wall:.2f} windows/s, {windows / (user + system):.2f} per CPU-s); "
                  f"load average {load_before:.1f} -> {os.getloadavg()[0]:.1f}", flush=True)
    if args.baseline:
        compare_with_baseline(args, out, extra)
    results = {way: {"wall": statistics.median(r["wall"] for r in done), "cpu": statistics.median(r["cpu"] for r in done),
                     "windows": done[0]["windows"], "report": done[0]["report"]} for way, done in runs.items()}
    if len(results) < 2:
        return
    stored, fly = results["materialised"], results["on_the_fly"]
    print(f"windows per wall second: materialised {stored['windows'] / stored['wall']:.2f}, on the fly "
          f"{fly['windows'] / fly['wall']:.2f} (ratio {(fly['windows'] / fly['wall']) / (stored['windows'] / stored['wall']):.2f})")
    print(f"windows per CPU-second: materialised {stored['windows'] / stored['cpu']:.2f}, on the fly "
          f"{fly['windows'] / fly['cpu']:.2f} (ratio {(fly['windows'] / fly['cpu']) / (stored['windows'] / stored['cpu']):.2f})")
    difference, where = largest_difference(comparable(stored["report"]), comparable(fly["report"]))
    verdict = "the same report" if difference == 0 else (
        f"reports differ by at most {difference:.3g} (at {where})" if difference != float("inf")
        else f"reports differ in structure or text at {where}")
    print(f"{verdict}; reports under {out}")


def compare_with_baseline(args: argparse.Namespace, out: Path, extra: list[str]) -> None:
    """Baseline and ours with LipFD alone, alternated, on the same shards: windows per second and the ratio."""
    runs: dict[str, list[tuple[float, float, int]]] = {"baseline": [], "ours (lipfd only)": []}
    for attempt in range(args.repeat):
        for name in runs:
            folder = out / f"{name.split()[0]}_lipfd_{attempt}"
            load_before = os.getloadavg()[0]
            if name == "baseline":
                # The checkout as working directory: `python -m avlips` imports its code, not ours.
                wall, user, system = timed(baseline_command(args.baseline, args.root, folder), cwd=args.baseline)
            else:
                wall, user, system = timed(evaluate_command(args.root, folder, args.params, out / "fused_lipfd.json",
                                                            ["-S", "evaluate.detectors=[lipfd]", *extra]))
            report = json.loads((folder / "robustness.json").read_text())
            windows = int(report.get("windows") or report["read"]["samples"])
            runs[name].append((wall, user + system, windows, report))
            print(f"{name} run {attempt + 1}: {windows} windows in {wall:.1f} s wall, {user + system:.1f} CPU s "
                  f"({windows / wall:.2f} windows/s); load average {load_before:.1f} -> {os.getloadavg()[0]:.1f}",
                  flush=True)
    (base_wall, base_cpu), (our_wall, our_cpu) = [
        (statistics.median(r[0] for r in done), statistics.median(r[1] for r in done)) for done in runs.values()]
    windows = runs["baseline"][0][2]
    print(f"LipFD only, windows per wall second: baseline {windows / base_wall:.2f}, ours {windows / our_wall:.2f} "
          f"(ratio {base_wall / our_wall:.2f}); per CPU-second: baseline {windows / base_cpu:.2f}, ours "
          f"{windows / our_cpu:.2f} (ratio {base_cpu / our_cpu:.2f})")
    base_clean, our_clean = runs["baseline"][0][3]["clean"], runs["ours (lipfd only)"][0][3]["clean"]
    difference, where = largest_difference(base_clean, our_clean)
    print("clean-set numbers: " + ("the same as the baseline's" if difference == 0 else
                                   f"differ from the baseline's by {difference:.3g} at {where}"), flush=True)


if __name__ == "__main__":
    main()
