"""Compose throughput, bytes per sample and peak memory, against the reference preprocessing.

Baseline (UPSTREAM.md 1.1; LipFD's preprocess.py, written plainly here): sequential OpenCV decode up to
the last frame a window needs, librosa mel of the clip rendered to a PNG with matplotlib and read back,
then a 1000x2500 PNG per window written with plt.imsave as the reference does, one process.
Ours: the compose stage's per-video work (PyAV seeking to the windows and decoding only the frames
they need, mel as numbers, JPEG frames, shards), one process. Both read the same videos and the
same 16 kHz wav per video.

    python benchmarks/compose_throughput.py [--videos DIR] [--memory]

Prints samples per CPU-second on the one core both are pinned to (wall seconds beside them) and
their ratio (target >= 10x), bytes per sample and their ratio (target <= 1/5), and with --memory
the peak RSS of composing a 1-minute and a 10-minute clip and their ratio (target: independent of length).
"""
from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NUMBA_CACHE_DIR", str(Path(__file__).resolve().parents[1] / ".numba_cache"))
# "Per core": thread pools that start on import (OpenBLAS, OpenMP) get one thread.
for _pool in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_pool] = "1"

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from avlips.media.audio_decode import read_audio  # noqa: E402
from avlips.media.encode import write_wav  # noqa: E402
from avlips.media.ffmpeg_binary import ffmpeg_exe  # noqa: E402

N_WINDOWS, WINDOW_LEN = 10, 5


def baseline(video: Path, wav: Path, out: Path) -> tuple[int, int]:
    """The reference algorithm (LipFD's preprocess.py, UPSTREAM.md 1.1); returns (samples, bytes written).

    As the reference: OpenCV reads frames in order up to the last one a window needs, each needed frame
    becomes RGBA and is resized to 500x500; the clip's mel goes through a matplotlib PNG and back
    (`plt.imread` * 255 as uint8); each window is written with `plt.imsave` (an RGBA PNG).
    """
    import librosa
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    capture = cv2.VideoCapture(str(video))
    frame_count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    # np.linspace(..., dtype=int): the reference's uint8 wraps past 261 frames (a bug we do not copy).
    starts = np.linspace(0, frame_count - WINDOW_LEN - 1, N_WINDOWS, endpoint=True, dtype=int).tolist()
    wanted = [i for start in starts for i in range(start, start + WINDOW_LEN)]
    wanted_set, frames, current = set(wanted), [], 0
    while current <= wanted[-1]:
        ok, frame = capture.read()
        if not ok:
            break
        if current in wanted_set:
            frames.append(cv2.resize(cv2.cvtColor(frame, cv2.COLOR_BGR2RGBA), (500, 500)))
        current += 1
    capture.release()
    signal, sr = librosa.load(str(wav))
    mel = librosa.power_to_db(librosa.feature.melspectrogram(y=signal, sr=sr), ref=np.min)
    mel_png = out / f"{video.stem}_mel.png"
    plt.imsave(str(mel_png), mel)
    mel_image = (plt.imread(str(mel_png)) * 255).astype(np.uint8)
    ratio = mel_image.shape[1] / frame_count
    written = 0
    for index in range(len(frames) // WINDOW_LEN):
        start = wanted[index * WINDOW_LEN]
        strip = cv2.resize(mel_image[:, int(np.round(start * ratio)):int(np.round((start + WINDOW_LEN) * ratio))],
                           (500 * WINDOW_LEN, 500))
        row = np.concatenate(frames[index * WINDOW_LEN:(index + 1) * WINDOW_LEN], axis=1)
        path = out / f"{video.stem}_{index}.png"
        plt.imsave(str(path), np.concatenate([strip[:, :, :3], row[:, :, :3]], axis=0))
        written += path.stat().st_size
    return len(frames) // WINDOW_LEN, written


def ours(videos: list[Path], wavs: list[Path], out: Path) -> tuple[int, int]:
    """The compose stage's per-video work and the shard write; returns (samples, bytes in tars)."""
    from avlips.pipelines.compose import ComposeConfig, compose_video, write_shard

    config = ComposeConfig()
    records = []
    for video, wav in zip(videos, wavs):
        item = {"video_id": video.stem.replace(".", "-"), "path": str(video), "label": 0, "identity": video.stem,
                "split": "test", "generator": "", "centred": True, "audio_path": str(wav), "target_clip": ""}
        records += compose_video(item, config, "test-000000")
    write_shard("test-000000", records, str(out), time.time())
    return sum(r["kind"] == "sample" for r in records), (out / "test-000000.tar").stat().st_size


def _pin_to_one_core() -> None:
    """Every thread of this process, and so every thread started later, on the lowest allowed core."""
    core = {min(os.sched_getaffinity(0))}
    for thread in os.listdir("/proc/self/task"):  # threads started on import keep their own affinity
        os.sched_setaffinity(int(thread), core)


def _timed(fn, *args):
    """fn(*args), its wall seconds, and its CPU seconds.

    Pinned to one core, CPU seconds are that core's time spent on the work: unlike wall time they
    do not count the time other jobs on the machine hold the core.
    """
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn(*args)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if cpu > 1.05 * wall + 0.05:
        sys.exit(f"{getattr(fn, '__name__', fn)} used {cpu:.2f} CPU s in {wall:.2f} s: not one core")
    return result, wall, cpu


def _peak_memory_child(video: str, wav: str) -> None:
    from avlips.pipelines.compose import ComposeConfig, compose_video

    item = {"video_id": "long", "path": video, "label": 0, "identity": "x", "split": "test", "generator": "",
            "centred": True, "audio_path": wav, "target_clip": ""}
    records = compose_video(item, ComposeConfig(), "test-000000")
    if not any(r["kind"] == "sample" for r in records):
        sys.exit(f"no window composed: {records[:1]}")
    print(_peak_rss_mib())


def _peak_rss_mib() -> int:
    """This process's peak resident memory in MiB.

    VmHWM, where Linux has it: ru_maxrss survives exec, so a child started from the benchmark
    would report the benchmark's own peak.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) // 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024


def peak_memory(source: Path, seconds: int, scratch: Path) -> int:
    """Peak RSS in MiB of composing one clip looped to `seconds`, in a fresh process."""
    video = scratch / f"long_{seconds}.mp4"
    subprocess.run([ffmpeg_exe(), "-loglevel", "error", "-y", "-stream_loop", "-1", "-i", str(source),
                    "-t", str(seconds), "-c", "copy", str(video)], check=True)
    wav = scratch / f"long_{seconds}.wav"
    write_wav(wav, read_audio(video, 16000), 16000)
    result = subprocess.run([sys.executable, __file__, "--child", str(video), str(wav)], capture_output=True,
                            text=True, check=True)
    return int(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", default=str(Path(__file__).resolve().parents[2] / "shared" / "media" / "video"))
    parser.add_argument("--memory", action="store_true", help="also measure peak memory on 1- and 10-minute clips")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _peak_memory_child(*args.child)
        return
    # "Per core": both sides run pinned to one core, whatever threads their decoders start.
    _pin_to_one_core()
    cv2.setNumThreads(1)
    videos = sorted(Path(args.videos).glob("*.mp4"))
    if not videos:
        sys.exit(f"no videos in {args.videos}")
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        wavs = []
        for video in videos:
            wav = scratch / f"{video.stem}.wav"
            write_wav(wav, read_audio(video, 16000), 16000)
            wavs.append(wav)
        # Warm both paths once (numba compiles librosa's kernels on first use).
        (scratch / "warm").mkdir()
        baseline(videos[0], wavs[0], scratch / "warm")
        ours(videos[:1], wavs[:1], scratch / "warm")
        (scratch / "base").mkdir()

        def run_baseline(pairs, out):
            counts = [baseline(video, wav, out) for video, wav in pairs]
            return sum(c[0] for c in counts), sum(c[1] for c in counts)

        (base_samples, base_bytes), base_wall, base_cpu = _timed(run_baseline, list(zip(videos, wavs)),
                                                                 scratch / "base")
        (scratch / "ours").mkdir()
        (our_samples, our_bytes), our_wall, our_cpu = _timed(ours, videos, wavs, scratch / "ours")
        base_rate, our_rate = base_samples / base_cpu, our_samples / our_cpu
        print(f"videos: {len(videos)} from {args.videos}")
        print(f"{'':10s} {'samples':>8s} {'wall s':>8s} {'cpu s':>8s} {'samples/s/core':>15s} {'bytes/sample':>13s}")
        print(f"{'baseline':10s} {base_samples:8d} {base_wall:8.2f} {base_cpu:8.2f} {base_rate:15.2f} "
              f"{base_bytes / base_samples:13.0f}")
        print(f"{'ours':10s} {our_samples:8d} {our_wall:8.2f} {our_cpu:8.2f} {our_rate:15.2f} "
              f"{our_bytes / our_samples:13.0f}")
        print(f"throughput ratio (ours / baseline): {our_rate / base_rate:.1f}x  (target >= 10x; by wall clock "
              f"{(our_samples / our_wall) / (base_samples / base_wall):.1f}x)")
        print(f"bytes ratio (ours / baseline): 1/{(base_bytes / base_samples) / (our_bytes / our_samples):.1f}"
              "  (target <= 1/5)")
        # AVLips-length clips are a few seconds; on longer sources the reference decodes every
        # frame while compose seeks to the windows, so the gap grows with length.
        long_video = scratch / "long_60.mp4"
        subprocess.run([ffmpeg_exe(), "-loglevel", "error", "-y", "-stream_loop", "-1", "-i", str(videos[0]),
                        "-t", "60", "-c", "copy", str(long_video)], check=True)
        long_wav = scratch / "long_60.wav"
        write_wav(long_wav, read_audio(long_video, 16000), 16000)
        (scratch / "base_long").mkdir()
        (samples, _), _, cpu = _timed(baseline, long_video, long_wav, scratch / "base_long")
        base_long = samples / cpu
        (scratch / "ours_long").mkdir()
        (samples, _), _, cpu = _timed(ours, [long_video], [long_wav], scratch / "ours_long")
        ours_long = samples / cpu
        print(f"1-minute clip: baseline {base_long:.2f}, ours {ours_long:.2f} samples/s/core: "
              f"{ours_long / base_long:.1f}x")
        if args.memory:
            peaks = {}
            for seconds in (60, 600):
                peaks[seconds] = peak_memory(videos[0], seconds, scratch)
                print(f"peak RSS composing a {seconds // 60}-minute clip: {peaks[seconds]} MiB")
            print(f"10-minute peak / 1-minute peak: {peaks[600] / peaks[60]:.3f}  (target: within a few percent of 1)")


if __name__ == "__main__":
    main()
