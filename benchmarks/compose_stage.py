"""The whole compose stage as a user runs it, against the reference preprocessing run as a process.

Inputs: the seven shared videos x 6 copies (42 clips, 420 windows). `--layout avlips` (default) puts
them in the released AVLips layout (`0_real/`, audio in `wav/0_real/`): face-centred clips, whole
frames resized. `--layout folder` puts each copy in its own folder: a folder source, where compose
tracks the face and crops around it. The corpus stage lists them first (not timed).

Ours: `avlips compose --workers N` from process start to exit. Reference: LipFD's preprocess.py
algorithm as benchmarks/compose_throughput.py writes it (OpenCV decode up to the last window frame,
the mel through a matplotlib PNG, a 1000x2500 PNG per window), one process over one copy of each
video by default (`--reference-copies 6` for all 42: the copies are the same bytes, so the rate per
CPU-second is the same, and one copy costs about 30 CPU-seconds). The reference gets one thread for
OpenCV and BLAS, its most frugal setting. CPU-seconds are user + system time of each process and
everything it waited for (resource.getrusage(RUSAGE_CHILDREN) around it), wall from process start
to exit.

    python benchmarks/compose_stage.py [--layout avlips|folder] [--workers 2] [--repeat 3]
                                       [--reference-copies 1] [--kill-at 0.6] [--fixed-cost]

Prints each run, the median of ours, and the ratio of samples per CPU-second (target: >= 20x for the
AVLips layout with 2 workers, >= 10x for the folder layout). With --kill-at F it then starts the
stage again, kills it (SIGKILL to its process group) at F of the median wall time, counts the shards
it finished, runs it again to the end and compares the bytes with an uninterrupted run (target:
killed at 0.6, at least a third of the shards finished, skipped by the rerun, the same bytes).
With --fixed-cost it times instead the stage on one clip (the first of the 42) and, in a process that
has already composed it once, the same clip's work alone; the difference is the stage's fixed cost
(target: under 3 s of wall time).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COPIES = 6


def make_inputs(videos: list[Path], root: Path, layout: str) -> None:
    """The 42 clips (links to the shared videos) in the chosen layout, with 16 kHz wavs for the AVLips one."""
    from avlips.media.audio_decode import read_audio
    from avlips.media.encode import write_wav

    for video in videos:
        wav = root / "wav" / "0_real" / f"{video.stem}_c0.wav"
        for copy in range(COPIES):
            name = f"{video.stem}_c{copy}"
            if layout == "avlips":
                (root / "0_real").mkdir(parents=True, exist_ok=True)
                (root / "0_real" / f"{name}.mp4").symlink_to(video)
                if copy == 0:
                    wav.parent.mkdir(parents=True, exist_ok=True)
                    write_wav(wav, read_audio(video, 16000), 16000)
                else:
                    (wav.parent / f"{name}.wav").symlink_to(wav)
            else:
                (root / name).mkdir(parents=True)
                (root / name / f"{name}.mp4").symlink_to(video)
    if layout == "avlips":
        (root / "1_fake").mkdir()  # the layout has both folders; no fakes here


def timed(command: list[str], **kwargs) -> tuple[subprocess.CompletedProcess, float, float]:
    """Run a process to its end: (result, wall seconds, CPU seconds of it and all it waited for)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, **kwargs)
    wall = time.perf_counter() - wall
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return result, wall, cpu


def compose_command(clips: Path, out: Path, workers: int) -> list[str]:
    return [sys.executable, "-m", "avlips", "compose", "--clips", str(clips), "--audio", "", "--fakes", "",
            "--out", str(out), "--workers", str(workers)]


def stage_bytes(directory: Path) -> dict[str, bytes]:
    """What must be the same whatever happened to the run: shards, their manifests, the totals."""
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())
            if p.suffix in (".tar", ".parquet") or p.name == "compose_stats.json"}


def finished_shards(directory: Path) -> list[str]:
    return sorted(p.name[:-len("_stats.json")] for p in directory.glob("*_stats.json")
                  if (directory / (p.name[:-len("_stats.json")] + ".tar")).exists())


def reference_child(out: str, pairs: list[str]) -> None:
    """The reference algorithm over (video, wav) pairs, in this process; prints the samples made."""
    import cv2

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from compose_throughput import baseline

    cv2.setNumThreads(1)
    samples = 0
    for video, wav in zip(pairs[::2], pairs[1::2]):
        samples += baseline(Path(video), Path(wav), Path(out))[0]
    print(samples)


def kill_and_resume(clips: Path, scratch: Path, workers: int, at_s: float, whole: Path) -> None:
    """Kill a run at `at_s`, count its finished shards, rerun it and compare with an uninterrupted run."""
    out = scratch / "killed"
    env = {**os.environ}
    process = subprocess.Popen(compose_command(clips, out, workers), cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    time.sleep(at_s)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    total = len(finished_shards(whole))
    kept = finished_shards(out) if out.exists() else []
    stamps = {name: (out / f"{name}_stats.json").stat().st_mtime_ns for name in kept}
    result, wall, cpu = timed(compose_command(clips, out, workers), cwd=REPO)
    skipped = all((out / f"{name}_stats.json").stat().st_mtime_ns == stamp for name, stamp in stamps.items())
    same = stage_bytes(out) == stage_bytes(whole)
    print(f"killed at {at_s:.1f} s: {len(kept)} of {total} shards finished ({len(kept) / total:.0%}; target >= a third); "
          f"the rerun ({wall:.1f} s wall, {cpu:.1f} CPU s) {'kept them' if skipped else 'REDID some'} and ended with "
          f"{'the same bytes' if same else 'DIFFERENT bytes'} as an uninterrupted run")


def work_child(clips: str, out: str) -> None:
    """The one clip's work alone, timed in a process that has composed it once already (imports, caches warm)."""
    from avlips.pipelines.compose import ComposeConfig, _one_thread_each, compose_inputs, compose_shard, place_videos

    import yaml

    params = yaml.safe_load((REPO / "params.yaml").read_text())  # what the stage run reads
    params["compose"].update({"clips": clips, "audio": "", "fakes": ""})
    config = ComposeConfig.from_params(params)
    placed = {name: group for name, group in place_videos(compose_inputs(params), config).items() if group}
    with _one_thread_each():
        for attempt in range(2):
            wall, cpu = time.perf_counter(), time.process_time()
            for name, group in placed.items():
                compose_shard(name, group, config, out, time.time())
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(f"{wall} {cpu}")


def fixed_cost(clips: Path, scratch: Path, repeat: int) -> None:
    """The stage on one clip, and that clip's work alone: what a stage run costs beyond its work."""
    import pyarrow.parquet as pq

    table = pq.read_table(clips)
    one = scratch / "one_clip.parquet"
    pq.write_table(table.slice(0, 1), one)
    runs = []
    for index in range(repeat):
        _, wall, cpu = timed(compose_command(one, scratch / f"one{index}", 2), cwd=REPO)
        runs.append((wall, cpu))
        print(f"avlips compose on 1 clip (--workers 2) #{index + 1}: {wall:.2f} s wall, {cpu:.2f} CPU s", flush=True)
    result, _, _ = timed([sys.executable, __file__, "--work-child", str(one), str(scratch / "work")], cwd=REPO)
    work_wall, work_cpu = (float(v) for v in result.stdout.split()[-2:])
    wall = statistics.median(w for w, _ in runs)
    cpu = statistics.median(c for _, c in runs)
    print(f"the clip's work alone: {work_wall:.2f} s wall, {work_cpu:.2f} CPU s; fixed cost of a stage run "
          f"(median): {wall - work_wall:.2f} s wall, {cpu - work_cpu:.2f} CPU s (target < 3 s wall)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", default=str(REPO.parent / "shared" / "media" / "video"))
    parser.add_argument("--layout", choices=["avlips", "folder"], default="avlips")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3, help="runs of ours (the median is compared)")
    parser.add_argument("--reference-copies", type=int, default=1, choices=range(1, COPIES + 1))
    parser.add_argument("--kill-at", type=float, default=None, help="also kill a run at this fraction of its wall time")
    parser.add_argument("--fixed-cost", action="store_true", help="time the stage on one clip against its work")
    parser.add_argument("--reference-child", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--work-child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.reference_child:
        reference_child(args.reference_child[0], args.reference_child[1:])
        return
    if args.work_child:
        work_child(*args.work_child)
        return
    videos = sorted(Path(args.videos).glob("*.mp4"))
    if not videos:
        sys.exit(f"no videos in {args.videos}")
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        source = scratch / "source"
        make_inputs(videos, source, args.layout)
        timed([sys.executable, "-m", "avlips", "corpus", "--source", f"{args.layout}:{source}", "--out",
               str(scratch / "corpus")], cwd=REPO)
        clips = scratch / "corpus" / "clips.parquet"
        if args.fixed_cost:
            fixed_cost(clips, scratch, args.repeat)
            return

        ours: list[tuple[float, float, int]] = []

        def run_ours(index: int) -> None:
            out = scratch / f"ours{index}"
            _, wall, cpu = timed(compose_command(clips, out, args.workers), cwd=REPO)
            samples = json.loads((out / "compose_stats.json").read_text())["samples"]
            ours.append((wall, cpu, samples))
            print(f"ours #{index + 1}: avlips compose --workers {args.workers}: {samples} samples, {wall:.1f} s wall, "
                  f"{cpu:.1f} CPU s: {samples / cpu:.1f} samples per CPU-second", flush=True)

        run_ours(0)
        # The reference between our runs, so both meet the machine's load of the same minutes.
        pairs = []
        for video in videos:
            for copy in range(args.reference_copies):
                wav = scratch / "ref_wav" / f"{video.stem}.wav"
                if not wav.exists():
                    from avlips.media.audio_decode import read_audio
                    from avlips.media.encode import write_wav

                    wav.parent.mkdir(exist_ok=True)
                    write_wav(wav, read_audio(video, 16000), 16000)
                pairs += [str(video), str(wav)]
        (scratch / "reference").mkdir()
        env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        result, ref_wall, ref_cpu = timed([sys.executable, __file__, "--reference-child", str(scratch / "reference"),
                                           *pairs], cwd=REPO, env=env)
        ref_samples = int(result.stdout.strip().splitlines()[-1])
        print(f"reference preprocess (one process, {len(pairs) // 2} clips): {ref_samples} samples, {ref_wall:.1f} s "
              f"wall, {ref_cpu:.1f} CPU s: {ref_samples / ref_cpu:.2f} samples per CPU-second", flush=True)
        for index in range(1, args.repeat):
            run_ours(index)
        wall = statistics.median(w for w, _, _ in ours)
        rate = statistics.median(s / c for _, c, s in ours)
        target = 20 if args.layout == "avlips" else 10
        print(f"median of ours: {rate:.1f} samples per CPU-second, {wall:.1f} s wall; reference "
              f"{ref_samples / ref_cpu:.2f}: {rate / (ref_samples / ref_cpu):.1f}x per CPU-second "
              f"(target >= {target}x), {(ours[0][2] / wall) / (ref_samples / ref_wall):.1f}x by wall clock")
        if args.kill_at is not None:
            kill_and_resume(clips, scratch, args.workers, args.kill_at * wall, scratch / "ours0")


if __name__ == "__main__":
    main()
