"""Mouth rewrite on the shared real clips: pixels kept outside the mask, sync to the driving audio, speed.

Each of the 7 videos in ../shared/media/video is driven by a speech file of another speaker. Per clip:
  psnr_out   PSNR (dB) outside the blend mask, decoded fake (crf 12) vs decoded target frames
  exact      whether the frames before encoding equal the target's outside the mask
  r_drive    correlation of mouth motion (mean abs change of the box-normalised mouth crop, smoothed
             over ~2 frames) with the driving audio's loudness
  r_orig     the same with the loudness of the target's own audio at the frames shown
  r_chance   correlation of the two loudness series themselves (what r_orig can pick up by chance)
  r_target   the unedited target's mouth motion against its own loudness (what the bank can carry)
  flow_d     like r_drive, with mouth motion measured independently as the mean optical-flow speed
             (Farneback) in the same ellipse: the generator's transition cost is a grey-level
             difference like r_drive's, so this checks the sync is not an artefact of that one measure
  flow_o     the same against the target's own loudness (compare with r_orig)
  s_per_s    seconds of wall time per second of output video for generate(), pinned to one core
  cpu_per_s  CPU seconds (this process and its ffmpeg children) per second of output video: what
             s_per_s would be with the core to itself (other jobs on a shared machine inflate wall time)

`--wav2lip` also times the native Wav2Lip generator (random weights in the released format) on one
512x512 clip with 2 s of audio and prints its frames per second on the CPU.

    python benchmarks/mouth_rewrite_sync.py [--media ../shared/media] [--wav2lip]
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

# One core for everything, ffmpeg included (children inherit the affinity): the real-time claim.
if hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
os.environ.setdefault("OMP_NUM_THREADS", "1")

import cv2  # noqa: E402
from scipy.ndimage import gaussian_filter1d  # noqa: E402

cv2.setNumThreads(1)

# Target video -> driving speech by someone else, fixed before measuring.
PAIRS = {
    "sadtalker_WDA_AlexandriaOcasioCortez_000": "hallo_audio_1",
    "sadtalker_WDA_KatieHill_000": "sadtalker_RD_Radio31_000",
    "videoretalking_face_1": "sadtalker_chinese_news",
    "videoretalking_face_2": "sadtalker_fayu",
    "videoretalking_face_3": "sadtalker_RD_Radio34_002",
    "videoretalking_face_4": "hallo_audio_2",
    "videoretalking_face_5": "sadtalker_japanese",
}


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    a, b = gaussian_filter1d(np.asarray(a, float), 2), gaussian_filter1d(np.asarray(b, float), 2)
    return float(np.corrcoef(a, b)[0, 1])


def _cpu_seconds() -> float:
    """CPU time of this process and its waited-for children (ffmpeg), user and system."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def flow_motion(frames: np.ndarray, centres: np.ndarray, halves: np.ndarray, size: tuple[int, int] = (96, 72)) -> np.ndarray:
    """Per-frame mean optical-flow speed (crop pixels per frame) in the mouth box's inscribed ellipse."""
    from avlips.generators.mouth_rewrite import _crop_matrix

    crops = [cv2.warpAffine(cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2GRAY), _crop_matrix(c, h, size), size,
                            flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REPLICATE) for f, c, h in zip(frames, centres, halves)]
    xs, ys = (np.arange(size[0]) + 0.5) / size[0] * 2 - 1, (np.arange(size[1]) + 0.5) / size[1] * 2 - 1
    inside = xs[None, :] ** 2 + ys[:, None] ** 2 <= 1
    speed = [float(np.hypot(*cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 2, 9, 3, 5, 1.1, 0).transpose(2, 0, 1))[inside].mean())
             for a, b in zip(crops[:-1], crops[1:])]
    return np.array(speed[:1] + speed) if speed else np.zeros(len(crops))


def mouth_rewrite_table(media: Path, work: Path) -> None:
    """Run every pair and print the table."""
    import torch

    from avlips.generators.base import DrivingAudio, Target
    from avlips.generators.mouth_rewrite import MouthRewrite, loudness_at, mouth_activity
    from avlips.media.faces import track_faces
    from avlips.media.audio_decode import read_audio
    from avlips.media.frames import iter_frames
    from avlips.media.probe import probe

    torch.set_num_threads(1)
    header = f"{'clip':42s} {'size':>9s} {'out_s':>5s} {'psnr_out':>8s} {'exact':>5s} {'r_drive':>7s} {'r_orig':>7s} " \
             f"{'r_chance':>8s} {'r_target':>8s} {'flow_d':>6s} {'flow_o':>6s} {'s_per_s':>7s} {'cpu_per_s':>9s}"
    # Warm-up (untimed): imports and first-call set-up happen once per worker, not once per fake.
    first = next(iter(PAIRS))
    warm = work / "warm.wav"
    from avlips.media.encode import write_wav

    write_wav(warm, read_audio(media / "audio" / f"{PAIRS[first]}.wav", 16000)[:16000], 16000)
    MouthRewrite().generate(Target(first, str(media / "video" / f"{first}.mp4"), 25.0, 0, 0.0),
                            DrivingAudio("warm", str(warm), 1.0), work / "warm.mp4")
    print(header)
    rows = []
    for name, speech in PAIRS.items():
        video, wav = media / "video" / f"{name}.mp4", media / "audio" / f"{speech}.wav"
        info = probe(video)
        driving_audio = read_audio(wav, 16000)
        generator = MouthRewrite(crf=12)
        out = work / f"{name}.mp4"
        target = Target(name, str(video), info.fps, info.frames, info.duration)
        driving = DrivingAudio(speech, str(wav), len(driving_audio) / 16000)
        started, cpu_started = time.perf_counter(), _cpu_seconds()
        result = generator.generate(target, driving, out)
        seconds, cpu = time.perf_counter() - started, _cpu_seconds() - cpu_started
        per_second = seconds / (result.frames / result.fps)

        # The same plan again (deterministic) for the masks and the frames before encoding.
        frames = np.stack(list(iter_frames(video)))
        own = read_audio(video, 16000)
        track = track_faces(frames, stride=int(generator.settings["face_stride"]), fps=info.fps)
        plan = generator.plan(frames, info.fps, own, driving_audio, track=track)
        composites = list(generator.render(plan, frames))
        made = np.stack([c.frame for c in composites])
        outside = np.stack([c.full_mask() for c in composites]) == 0
        shown = frames[plan.sources]
        exact = bool(np.array_equal(made[outside], shown[outside]))
        decoded = np.stack(list(iter_frames(out)))
        if len(decoded) != len(shown):
            raise SystemExit(f"{name}: {len(decoded)} frames decoded, {len(shown)} planned")
        mse = float(np.mean((decoded.astype(np.float64) - shown)[outside] ** 2))
        psnr = 10 * np.log10(255 ** 2 / mse) if mse else float("inf")

        times = (np.arange(len(plan)) + 0.5) / info.fps
        centres, halves = plan.centres[plan.sources], plan.halves[plan.sources]
        motion = mouth_activity(made, centres, halves)
        loud_drive = loudness_at(driving_audio, times)
        loud_orig = loudness_at(own, (plan.sources + 0.5) / info.fps)
        own_motion = mouth_activity(frames, plan.centres, plan.halves)
        flow = flow_motion(made, centres, halves)
        row = (psnr, _corr(motion, loud_drive), _corr(motion, loud_orig), _corr(loud_drive, loud_orig),
               _corr(own_motion, loudness_at(own, (np.arange(len(frames)) + 0.5) / info.fps)), per_second,
               _corr(flow, loud_drive), _corr(flow, loud_orig), cpu / (result.frames / result.fps))
        rows.append(row)
        print(f"{name:42s} {info.width:>4d}x{info.height:<4d} {result.frames / result.fps:5.2f} {row[0]:8.2f} "
              f"{str(exact):>5s} {row[1]:+7.2f} {row[2]:+7.2f} {row[3]:+8.2f} {row[4]:+8.2f} {row[6]:+6.2f} "
              f"{row[7]:+6.2f} {row[5]:7.3f} {row[8]:9.3f}", flush=True)
    table = np.array(rows)
    print(f"min psnr_out {table[:, 0].min():.2f} dB; r_drive > r_orig on {int((table[:, 1] > table[:, 2]).sum())}/"
          f"{len(rows)} clips (optical flow: {int((table[:, 6] > table[:, 7]).sum())}/{len(rows)}); "
          f"mean r_drive {table[:, 1].mean():+.2f} vs r_orig {table[:, 2].mean():+.2f}; "
          f"mean {table[:, 5].mean():.3f} s (max {table[:, 5].max():.3f}) wall, {table[:, 8].mean():.3f} s CPU per s of "
          f"video on one core (real time below 1)")


def wav2lip_speed(media: Path, work: Path) -> None:
    """Frames per second of the native Wav2Lip generator on the CPU: one 512x512 clip, 2 s of audio."""
    import torch

    from avlips.generators.base import DrivingAudio, Target
    from avlips.generators.wav2lip.generator import Wav2LipGenerator
    from avlips.generators.wav2lip.network import Wav2Lip
    from avlips.media.audio_decode import read_audio
    from avlips.media.encode import write_wav
    from avlips.media.probe import probe

    torch.set_num_threads(1)
    torch.manual_seed(0)
    checkpoint = work / "wav2lip.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in Wav2Lip().state_dict().items()}}, checkpoint)
    video = media / "video" / "sadtalker_WDA_KatieHill_000.mp4"
    wav = work / "two_seconds.wav"
    write_wav(wav, read_audio(media / "audio" / "sadtalker_RD_Radio31_000.wav", 16000)[: 2 * 16000], 16000)
    info = probe(video)
    generator = Wav2LipGenerator(checkpoint=str(checkpoint), device="cpu", batch_size=16)
    generator.model()  # loading the checkpoint is once per worker, not per fake
    started = time.perf_counter()
    result = generator.generate(Target("t", str(video), info.fps, info.frames, info.duration),
                                DrivingAudio("d", str(wav), 2.0), work / "wav2lip_fake.mp4")
    seconds = time.perf_counter() - started
    print(f"wav2lip cpu (1 core): {result.frames} frames of {info.width}x{info.height} in {seconds:.2f} s = "
          f"{result.frames / seconds:.1f} frames/s ({seconds / 2.0:.2f} s per s of video)")


def main() -> None:
    """Parse arguments and run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--media", default=str(REPO.parent / "shared" / "media"))
    parser.add_argument("--wav2lip", action="store_true", help="also time the native Wav2Lip generator")
    parser.add_argument("--only-wav2lip", action="store_true")
    args = parser.parse_args()
    media = Path(args.media)
    with tempfile.TemporaryDirectory(prefix="avlips-bench-") as scratch:
        if not args.only_wav2lip:
            mouth_rewrite_table(media, Path(scratch))
        if args.wav2lip or args.only_wav2lip:
            wav2lip_speed(media, Path(scratch))


if __name__ == "__main__":
    main()
