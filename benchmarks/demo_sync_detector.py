"""The `sync` detector on the demo's test windows: window and clip AUC per generator, and its abstentions.

Scores every window of the clean test shards with the lip-sync expert (trained on real windows only by
`avlips train-sync`), then, per generator, the AUC of the probability of fake against the real windows of
the same split, over the windows it scored (abstentions are counted and left out; also shown with every
window, an abstention as 0.5), and the clip AUC (mean probability of a clip's scored windows). The reference numbers to beat are those of
benchmarks/demo_sync_feature.py (issue 13).

    python benchmarks/demo_sync_detector.py [--shards 'data/shards/clean/test-*.tar'] [--model models/sync_expert.pt]
"""
from __future__ import annotations

import argparse
import sys
import time
from collections import Counter, defaultdict

import numpy as np
from sklearn.metrics import roc_auc_score

from avlips.model.sync.data import expand_shards, iter_shard_samples
from avlips.model.sync.detector import SyncDetector


def main() -> None:
    """Score the windows, print AUCs per generator (window and clip level) and abstentions."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", default="data/shards/clean/test-*.tar")
    parser.add_argument("--model", default="models/sync_expert.pt")
    parser.add_argument("--expert-weights", default="")
    parser.add_argument("--min-speech-dbfs", type=float, default=-45.0)
    args = parser.parse_args()
    detector = SyncDetector(model=args.model, expert_weights=args.expert_weights, min_speech_dbfs=args.min_speech_dbfs)
    ready = detector.readiness()
    if not ready.ready:
        sys.exit(ready.reason)
    started = time.time()
    samples = [sample for _, sample in iter_shard_samples(expand_shards(args.shards))]
    rows = []
    for sample, score in zip(samples, detector.score(samples)):
        meta = sample.meta
        rows.append((meta.get("generator") or "", meta.get("clip", sample.key), sample.label, score))
    print(f"{len(rows)} windows from {args.shards} scored in {time.time() - started:.1f}s with {ready.reason}")
    abstained = Counter((r[0] or "real", r[3].abstain_reason) for r in rows if r[3].abstained)
    for (group, reason), count in sorted(abstained.items()):
        print(f"  abstained: {group:15s} {reason}: {count}")
    real = [r for r in rows if r[2] == 0 and not r[3].abstained]
    every_real = [r for r in rows if r[2] == 0]
    for generator in sorted({r[0] for r in rows if r[2] == 1}):
        fake = [r for r in rows if r[2] == 1 and r[0] == generator and not r[3].abstained]
        labels = [0] * len(real) + [1] * len(fake)
        window_auc = roc_auc_score(labels, [r[3].probability for r in real + fake])
        # The same with every window, an abstention counted as undecided (0.5).
        every_fake = [r for r in rows if r[2] == 1 and r[0] == generator]
        neutral_auc = roc_auc_score([0] * len(every_real) + [1] * len(every_fake),
                                    [0.5 if r[3].abstained else r[3].probability for r in every_real + every_fake])
        by_clip: dict[tuple[str, int], list[float]] = defaultdict(list)
        for _, clip, label, score in real + fake:
            by_clip[(clip, label)].append(score.probability)
        clip_auc = roc_auc_score([label for (_, label) in by_clip], [np.mean(v) for v in by_clip.values()])
        called = np.mean([r[3].probability >= 0.5 for r in fake])
        print(f"{generator:15s} {len(fake):4d} fake windows  window AUC {window_auc:.3f}  clip AUC {clip_auc:.3f}  "
              f"called fake at 0.5: {called:.2f}  (window AUC with abstentions as 0.5: {neutral_auc:.3f})")
    print(f"real windows called fake at 0.5: {np.mean([r[3].probability >= 0.5 for r in real]):.2f} of {len(real)}")


if __name__ == "__main__":
    main()
