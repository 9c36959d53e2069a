"""Compose throughput, bytes per sample and peak memory, against the reference preprocessing.

Baseline (UPSTREAM.md 1.1, written plainly here): sequential OpenCV decode of every frame, librosa
mel of the clip rendered to a PNG with matplotlib, then a 1000x2500 PNG per window, one process.
Ours: the compose stage's per-video work (PyAV seeking to the windows, mel as numbers, JPEG frames,
shards), one process. Both read the same videos and the same 16 kHz wav per video.

    python benchmarks/compose_throughput.py [--videos DIR] [--memory]

Prints samples per second per core for both and the ratio (target >= 10x), bytes per sample and
their ratio (target <= 1/5), and with --memory the peak RSS of composing a 1-minute and a 10-minute
clip (target: independent of length).
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
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from media import io  # noqa: E402

N_WINDOWS, WINDOW_LEN = 10, 5


def baseline(video: Path, wav: Path, out: Path) -> tuple[int, int]:
    """The reference algorithm; returns (samples, bytes written)."""
    import librosa
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    capture = cv2.VideoCapture(str(video))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    signal, _ = librosa.load(str(wav), sr=22050)
    mel = librosa.power_to_db(librosa.feature.melspectrogram(y=signal, sr=22050), ref=np.min)
    mel_png = out / f"{video.stem}_mel.png"
    plt.imsave(str(mel_png), mel)
    mel_image = cv2.imread(str(mel_png))
    ratio = mel_image.shape[1] / len(frames)
    written = 0
    starts = np.linspace(0, len(frames) - WINDOW_LEN - 1, N_WINDOWS, endpoint=True, dtype=int)
    for index, start in enumerate(starts):
        strip = cv2.resize(mel_image[:, int(round(start * ratio)):int(round((start + WINDOW_LEN) * ratio))],
                           (2500, 500))
        row = np.concatenate([cv2.resize(frames[start + i], (500, 500)) for i in range(WINDOW_LEN)], axis=1)
        path = out / f"{video.stem}_{index}.png"
        cv2.imwrite(str(path), np.concatenate([strip, row], axis=0))
        written += path.stat().st_size
    return len(starts), written


def ours(videos: list[Path], wavs: list[Path], out: Path) -> tuple[int, int]:
    """The compose stage's per-video work and the shard write; returns (samples, bytes in tars)."""
    from pipelines.compose import ComposeConfig, compose_video, write_shard

    config = ComposeConfig()
    records = []
    for video, wav in zip(videos, wavs):
        item = {"video_id": video.stem.replace(".", "-"), "path": str(video), "label": 0, "identity": video.stem,
                "split": "test", "generator": "", "centred": True, "audio_path": str(wav), "target_clip": ""}
        records += compose_video(item, config, {"test": 1})
    write_shard("test-000000", records, str(out), time.time())
    return sum(r["kind"] == "sample" for r in records), (out / "test-000000.tar").stat().st_size


def _peak_memory_child(video: str, wav: str) -> None:
    from pipelines.compose import ComposeConfig, compose_video

    item = {"video_id": "long", "path": video, "label": 0, "identity": "x", "split": "test", "generator": "",
            "centred": True, "audio_path": wav, "target_clip": ""}
    records = compose_video(item, ComposeConfig(), {"test": 1})
    if not any(r["kind"] == "sample" for r in records):
        sys.exit(f"no window composed: {records[:1]}")
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)


def peak_memory(source: Path, seconds: int, scratch: Path) -> int:
    """Peak RSS in MiB of composing one clip looped to `seconds`, in a fresh process."""
    video = scratch / f"long_{seconds}.mp4"
    subprocess.run([io.ffmpeg_exe(), "-loglevel", "error", "-y", "-stream_loop", "-1", "-i", str(source),
                    "-t", str(seconds), "-c", "copy", str(video)], check=True)
    wav = scratch / f"long_{seconds}.wav"
    io.write_wav(wav, io.read_audio(video, 16000), 16000)
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
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    cv2.setNumThreads(1)
    os.environ["OMP_NUM_THREADS"] = "1"
    videos = sorted(Path(args.videos).glob("*.mp4"))
    if not videos:
        sys.exit(f"no videos in {args.videos}")
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        wavs = []
        for video in videos:
            wav = scratch / f"{video.stem}.wav"
            io.write_wav(wav, io.read_audio(video, 16000), 16000)
            wavs.append(wav)
        # Warm both paths once (numba compiles librosa's kernels on first use).
        (scratch / "warm").mkdir()
        baseline(videos[0], wavs[0], scratch / "warm")
        ours(videos[:1], wavs[:1], scratch / "warm")
        (scratch / "base").mkdir()
        started = time.perf_counter()
        base_samples = base_bytes = 0
        for video, wav in zip(videos, wavs):
            samples, written = baseline(video, wav, scratch / "base")
            base_samples += samples
            base_bytes += written
        base_seconds = time.perf_counter() - started
        (scratch / "ours").mkdir()
        started = time.perf_counter()
        our_samples, our_bytes = ours(videos, wavs, scratch / "ours")
        our_seconds = time.perf_counter() - started
        base_rate, our_rate = base_samples / base_seconds, our_samples / our_seconds
        print(f"videos: {len(videos)} from {args.videos}")
        print(f"{'':10s} {'samples':>8s} {'seconds':>8s} {'samples/s/core':>15s} {'bytes/sample':>13s}")
        print(f"{'baseline':10s} {base_samples:8d} {base_seconds:8.2f} {base_rate:15.2f} {base_bytes / base_samples:13.0f}")
        print(f"{'ours':10s} {our_samples:8d} {our_seconds:8.2f} {our_rate:15.2f} {our_bytes / our_samples:13.0f}")
        print(f"throughput ratio (ours / baseline): {our_rate / base_rate:.1f}x  (target >= 10x)")
        print(f"bytes ratio (ours / baseline): 1/{(base_bytes / base_samples) / (our_bytes / our_samples):.1f}"
              "  (target <= 1/5)")
        # AVLips-length clips are a few seconds; on longer sources the reference decodes every
        # frame while compose seeks to the windows, so the gap grows with length.
        long_video = scratch / "long_60.mp4"
        subprocess.run([io.ffmpeg_exe(), "-loglevel", "error", "-y", "-stream_loop", "-1", "-i", str(videos[0]),
                        "-t", "60", "-c", "copy", str(long_video)], check=True)
        long_wav = scratch / "long_60.wav"
        io.write_wav(long_wav, io.read_audio(long_video, 16000), 16000)
        (scratch / "base_long").mkdir()
        started = time.perf_counter()
        samples, _ = baseline(long_video, long_wav, scratch / "base_long")
        base_long = samples / (time.perf_counter() - started)
        (scratch / "ours_long").mkdir()
        started = time.perf_counter()
        samples, _ = ours([long_video], [long_wav], scratch / "ours_long")
        ours_long = samples / (time.perf_counter() - started)
        print(f"1-minute clip: baseline {base_long:.2f}, ours {ours_long:.2f} samples/s/core: "
              f"{ours_long / base_long:.1f}x")
        if args.memory:
            for seconds in (60, 600):
                print(f"peak RSS composing a {seconds // 60}-minute clip: {peak_memory(videos[0], seconds, scratch)} MiB")


if __name__ == "__main__":
    main()
