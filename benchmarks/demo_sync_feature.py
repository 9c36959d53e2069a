"""Is the demo's lip-audio sync in the samples? A one-number sync score, no training, against the windows' labels.

For each window of the demo's clean shards: the mouth's darkness in each of the five frames (mean of
255 - grey over the box where media/synthetic.py draws the mouth) and the loudness of the mel columns
that fall on each frame; the score is minus their Pearson correlation (real clips: the mouth opens, so
darkens, with the loudness). Prints the window AUC and the clip AUC (mean score of a clip's windows) of
that score for each generator against the real windows of the same split.

    python benchmarks/demo_sync_feature.py [--shards 'data/shards/clean/test-*.tar']

This is why the demo holds audio_swap out of training (README "What the demo shows"): if the score
separates audio_swap windows, the sync information is there, and a LipFD from scratch that does not
find it is short of data, not of signal.
"""
from __future__ import annotations

import argparse
import glob
import sys
import tarfile
from collections import defaultdict
from pathlib import Path

import numpy as np


from sklearn.metrics import roc_auc_score  # noqa: E402

from avlips.media.sample import WindowSample  # noqa: E402

# Where render_face draws the mouth, as fractions of the frame: centred, 0.25 face heights below the
# centre (face height 1.3 x face width 0.52-0.62 of the frame), mouth up to ~0.3 of the frame wide.
MOUTH_ROWS, MOUTH_COLS = (0.60, 0.80), (0.38, 0.62)


def read_samples(pattern: str):
    """Every WindowSample of the shards matching `pattern` (plain tar reading, sorted by key)."""
    for shard in sorted(glob.glob(pattern)):
        members: dict[str, dict[str, bytes]] = defaultdict(dict)
        with tarfile.open(shard) as tar:
            for info in tar:
                key, _, ext = info.name.partition(".")
                members[key][ext] = tar.extractfile(info).read()
        for key in sorted(members):
            yield WindowSample.decode(key, members[key])


def sync_score(sample: WindowSample) -> float:
    """Minus the correlation of per-frame mouth darkness and per-frame mel loudness."""
    frames = sample.frames.astype(np.float32).mean(axis=-1)  # (5, H, W) grey
    h, w = frames.shape[1:]
    box = frames[:, int(MOUTH_ROWS[0] * h):int(MOUTH_ROWS[1] * h), int(MOUTH_COLS[0] * w):int(MOUTH_COLS[1] * w)]
    darkness = (255.0 - box).mean(axis=(1, 2))
    columns = np.array_split(np.asarray(sample.mel_db, dtype=np.float64).mean(axis=0), len(darkness))
    loudness = np.array([c.mean() for c in columns])
    if darkness.std() < 1e-6 or loudness.std() < 1e-6:
        return 0.0
    return -float(np.corrcoef(darkness, loudness)[0, 1])


def main() -> None:
    """Score every window, print AUCs per generator (window and clip level)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", default="data/shards/clean/test-*.tar")
    args = parser.parse_args()
    rows = []
    for sample in read_samples(args.shards):
        meta = sample.meta
        rows.append((meta.get("generator") or "", meta.get("clip", sample.key), sample.label, sync_score(sample)))
    if not rows:
        sys.exit(f"no samples in {args.shards}")
    real = [r for r in rows if r[2] == 0]
    print(f"{len(rows)} windows from {args.shards}; {len(real)} real")
    for generator in sorted({r[0] for r in rows if r[2] == 1}):
        fake = [r for r in rows if r[2] == 1 and r[0] == generator]
        labels = [0] * len(real) + [1] * len(fake)
        window_auc = roc_auc_score(labels, [r[3] for r in real + fake])
        by_clip: dict[tuple[str, int], list[float]] = defaultdict(list)
        for _, clip, label, score in real + fake:
            by_clip[(clip, label)].append(score)
        clip_labels = [label for (_, label) in by_clip]
        clip_auc = roc_auc_score(clip_labels, [np.mean(v) for v in by_clip.values()])
        print(f"{generator:15s} {len(fake):5d} fake windows  window AUC {window_auc:.3f}  clip AUC {clip_auc:.3f}")


if __name__ == "__main__":
    main()
