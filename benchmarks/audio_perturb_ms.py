"""Milliseconds per window for every audio perturbation type and level on one core, and the call's.

A window's audio with context is 1.4 s at 16 kHz (0.2 s of window and 0.6 s either side, int16),
what audio.npy stores. Target: under 20 ms per window per audio type. The codecs run in process
through PyAV (libopus, libmp3lame, libopencore_amrnb); for comparison, one Opus round trip
through the pinned ffmpeg's command line (two processes: encode to Ogg, decode back) is timed too.
Also timed: the mel recomputation a perturbed window needs (window_mel.py), and the call channel
on a 500x500 five-frame window (VP8 and Opus). The verdict reads the CPU time of the one core the
benchmark is pinned to (ffmpeg's included); on a shared machine wall time also counts other
processes' turns, so both are printed.

    python benchmarks/audio_perturb_ms.py [--repeat 5] [--types opus,amr_nb]
"""
from __future__ import annotations

import os

# One core: fix every thread pool before numpy and OpenCV start theirs.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import subprocess  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

import avlips.perturbations as P  # noqa: E402
from avlips.media.synthetic import make_persona, render_talking_clip, speech_like_audio  # noqa: E402
from timing import median_ms  # noqa: E402  (benchmarks/timing.py: this script's folder is on sys.path)

RATE = 16000
WINDOW_S, CONTEXT_S = 0.2, 0.6
TARGET_MS = 20.0
SIDE = 500


def test_audio() -> np.ndarray:
    """1.4 s of synthetic speech at 16 kHz, int16."""
    seconds = WINDOW_S + 2 * CONTEXT_S
    audio = speech_like_audio(make_persona("bench", 3), seconds, RATE, 3)
    return np.round(audio * 32767).astype(np.int16)


def test_window() -> np.ndarray:
    """Five 500x500 frames of a synthetic talking face."""
    persona = make_persona("bench", 3)
    audio = speech_like_audio(persona, 1.0, RATE, 3)
    return np.stack(list(render_talking_clip(persona, audio, RATE, 25, SIDE, 3)))[10:15]


def ffmpeg_cli_opus(audio: np.ndarray, kbps: float) -> np.ndarray:
    """Opus through the pinned ffmpeg's command line: raw PCM in, Ogg/Opus out, and decoded back."""
    from avlips.media.ffmpeg_binary import pinned_path
    from avlips.perturbations.audio_codecs import OPUS_COMPLEXITY

    ffmpeg = pinned_path()
    encode = [ffmpeg, "-loglevel", "error", "-f", "s16le", "-ar", str(RATE), "-ac", "1", "-i", "-",
              "-c:a", "libopus", "-b:a", f"{kbps:g}k", "-vbr", "off", "-application", "voip",
              "-frame_duration", "20", "-compression_level", str(OPUS_COMPLEXITY), "-f", "ogg", "-"]  # fmt: skip
    ogg = subprocess.run(encode, input=audio.tobytes(), capture_output=True, check=True).stdout
    decode = [ffmpeg, "-loglevel", "error", "-f", "ogg", "-i", "-", "-f", "s16le", "-ar", str(RATE), "-ac", "1", "-"]
    raw = subprocess.run(decode, input=ogg, capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.int16)[:len(audio)]


def main() -> None:
    """Print the table: type, level, parameter, wall and CPU ms per window, target verdict."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="timed calls per cell (median is shown)")
    parser.add_argument("--types", default=",".join(P.AUDIO_TYPES), help="comma-separated audio type names")
    parser.add_argument("--no-call", action="store_true", help="skip the call channel")
    args = parser.parse_args()

    cv2.setNumThreads(1)
    if hasattr(os, "sched_setaffinity"):  # pin this process (and ffmpeg, which inherits it) to one core
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[-1]})
    audio = test_audio()
    print(f"window audio {len(audio) / RATE:.1f} s at {RATE} Hz int16, 1 core, median of {args.repeat}")
    print(f"load average at start {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores "
          "(other work inflates every number)")  # fmt: skip
    header = f"{'type':<17} {'L':>2} {'param':>7} {'ms/window':>10} {'cpu ms':>7} {'target':>7}"
    print(header)
    print("-" * len(header))
    for name in args.types.split(","):
        pert = P.get_audio(name)
        for level in P.LEVELS:
            wall, cpu = median_ms(lambda: pert.apply(audio, RATE, level, 0), args.repeat)
            verdict = "ok" if cpu < TARGET_MS else "SLOW"
            print(f"{name:<17} {level:>2} {pert.value(level):>7g} {wall:>10.2f} {cpu:>7.2f} {TARGET_MS:>5g}ms "
                  f"{verdict:>4}")  # fmt: skip
    wall, cpu = median_ms(lambda: ffmpeg_cli_opus(audio, 16), args.repeat)
    print(f"{'opus (ffmpeg CLI)':<17} {3:>2} {16:>7g} {wall:>10.2f} {cpu:>7.2f}   (reference: two ffmpeg processes)")

    # The mel a perturbed window stores, recomputed from its audio context (both steps, as the stage runs them).
    from avlips.media.audio import MelConfig, mel_power, power_to_db_ref_min
    from avlips.perturbations.window_mel import clip_reference_db, window_mel_db

    config = MelConfig()
    import soxr

    clip = np.concatenate([audio, audio, audio])
    db = power_to_db_ref_min(mel_power(soxr.resample(clip.astype(np.float32) / 32768, RATE, config.sample_rate),
                                       config))
    first, last = int(round(2.0 * 22050 / 512)), int(round(2.2 * 22050 / 512))
    context = clip[int(1.4 * RATE):int(2.8 * RATE)]
    meta = {"start_time": 2.0, "mel_columns": [first, last], "mel_db_max": float(db.max()), "mel": config.__dict__,
            "audio": {"sample_rate": RATE, "window_start": int(CONTEXT_S * RATE), "cut_before": 0, "cut_after": 0}}
    wall, cpu = median_ms(lambda: window_mel_db(context, clip_reference_db(context, db[:, first:last], meta, "k"), meta, "k"),
                   args.repeat)
    print(f"{'mel recompute':<17} {'':>2} {'':>7} {wall:>10.2f} {cpu:>7.2f}   (per perturbed window, any audio type)")

    if not args.no_call:
        window = test_window()
        for level in P.LEVELS:
            wall, cpu = median_ms(lambda: P.apply_call(window, 25.0, audio, RATE, level, 0), args.repeat)
            print(f"{'call':<17} {level:>2} {P.CALL.value(level):>7g} {wall:>10.2f} {cpu:>7.2f}   "
                  f"(5 frames {SIDE}x{SIDE} and the audio)")  # fmt: skip
    print(f"load average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
