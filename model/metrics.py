"""Detection metrics with fake as the positive class (label 1), at window and video level.

Unlike the reference: AP is computed on scores (a ranking metric), not on thresholded 0/1
predictions, and the confusion matrix is read in scikit-learn's order (tn, fp, fn, tp), so the
classes are not swapped.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Iterable

import numpy as np


@dataclass(frozen=True)
class Metrics:
    """The metrics of one set of scores."""

    n: int
    positives: int
    auc: float
    auc_low: float  # bootstrap 95% interval
    auc_high: float
    ap: float
    accuracy: float  # at threshold 0.5
    balanced_accuracy: float
    fpr: float  # real called fake
    fnr: float  # fake called real
    eer: float

    def to_dict(self) -> dict:
        """Plain dict, NaN kept as None for JSON."""
        return {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in asdict(self).items()}


def confusion(labels: np.ndarray, scores: np.ndarray, threshold: float = 0.5) -> tuple[int, int, int, int]:
    """(tn, fp, fn, tp) with fake (1) as the positive class; score >= threshold means fake."""
    labels = np.asarray(labels).astype(int)
    predicted = (np.asarray(scores) >= threshold).astype(int)
    tp = int(np.sum((predicted == 1) & (labels == 1)))
    tn = int(np.sum((predicted == 0) & (labels == 0)))
    fp = int(np.sum((predicted == 1) & (labels == 0)))
    fn = int(np.sum((predicted == 0) & (labels == 1)))
    return tn, fp, fn, tp


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (ties count half); NaN when one class is absent."""
    labels = np.asarray(labels).astype(int)
    scores = np.asarray(scores, dtype=np.float64)
    positives, negatives = scores[labels == 1], scores[labels == 0]
    if len(positives) == 0 or len(negatives) == 0:
        return float("nan")
    # Mann-Whitney U via average ranks handles ties exactly.
    from scipy.stats import rankdata

    ranks = rankdata(np.concatenate([positives, negatives]))
    u = ranks[: len(positives)].sum() - len(positives) * (len(positives) + 1) / 2
    return float(u / (len(positives) * len(negatives)))


def average_precision(labels: np.ndarray, scores: np.ndarray) -> float:
    """Average precision of the ranking by score (as scikit-learn defines it); NaN without positives."""
    labels = np.asarray(labels).astype(int)
    if labels.sum() == 0:
        return float("nan")
    from sklearn.metrics import average_precision_score

    return float(average_precision_score(labels, np.asarray(scores, dtype=np.float64)))


def equal_error_rate(labels: np.ndarray, scores: np.ndarray) -> float:
    """The error rate where FPR equals FNR, interpolated on the ROC curve; NaN when a class is absent."""
    labels = np.asarray(labels).astype(int)
    if labels.min(initial=1) == labels.max(initial=0) or len(labels) == 0:
        return float("nan")
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(labels, np.asarray(scores, dtype=np.float64))
    fnr = 1 - tpr
    difference = fpr - fnr
    index = int(np.flatnonzero(difference >= 0)[0])
    if index == 0 or difference[index] == 0:
        return float((fpr[index] + fnr[index]) / 2)
    # Linear interpolation between the two ROC points around the crossing.
    a, b = difference[index - 1], difference[index]
    t = a / (a - b)
    return float(fpr[index - 1] + t * (fpr[index] - fpr[index - 1]))


def bootstrap_auc(labels: np.ndarray, scores: np.ndarray, rounds: int = 1000, seed: int = 0,
                  groups: np.ndarray | None = None) -> tuple[float, float]:
    """95% percentile interval of the AUC over bootstrap resamples (of groups, e.g. videos, if given).

    Each round draws as many groups as there are, with replacement; a window then counts as often as its
    group was drawn, and the round's AUC is the Mann-Whitney U of those counts (ties half): the number
    `roc_auc` gives on the resampled rows, to the last bit (the sums are of halves and small integers),
    without building and ranking them, which made evaluate's report cost about a tenth of its CPU.
    """
    labels = np.asarray(labels).astype(int)
    scores = np.asarray(scores, dtype=np.float64)
    if labels.min(initial=1) == labels.max(initial=0) or rounds <= 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    if groups is None:
        group_of, count = np.arange(len(labels)), len(labels)
    else:
        names, group_of = np.unique(np.asarray(groups), return_inverse=True)
        group_of, count = group_of.reshape(-1), len(names)
    unscored = np.isnan(scores)
    levels, level_of = np.unique(np.where(unscored, np.inf, scores), return_inverse=True)
    level_of = level_of.reshape(-1)
    positive, negative = labels == 1, labels == 0
    values = []
    for _ in range(rounds):
        drawn = np.bincount(rng.integers(0, count, count), minlength=count)
        weight = drawn[group_of].astype(np.float64)
        if unscored.any() and weight[unscored].any():
            continue  # roc_auc of rows with a NaN score is NaN: such rounds are left out
        positives, negatives = weight[positive].sum(), weight[negative].sum()
        if positives == 0 or negatives == 0:
            continue
        negatives_at = np.bincount(level_of[negative], weights=weight[negative], minlength=len(levels))
        below = np.cumsum(negatives_at) - negatives_at
        at = level_of[positive]
        u = float(np.dot(weight[positive], below[at] + 0.5 * negatives_at[at]))
        values.append(u / (positives * negatives))
    if not values:
        return float("nan"), float("nan")
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


def compute_metrics(labels: Iterable[int], scores: Iterable[float], bootstrap_rounds: int = 1000,
                    seed: int = 0, groups: np.ndarray | None = None) -> Metrics:
    """All metrics of one set of scores (probabilities of fake)."""
    labels = np.asarray(list(labels), dtype=int)
    scores = np.asarray(list(scores), dtype=np.float64)
    if labels.shape != scores.shape:
        raise ValueError(f"{len(labels)} labels but {len(scores)} scores")
    tn, fp, fn, tp = confusion(labels, scores)
    positives, negatives = tp + fn, tn + fp
    fpr = fp / negatives if negatives else float("nan")
    fnr = fn / positives if positives else float("nan")
    recall_fake = 1 - fnr if positives else float("nan")
    recall_real = 1 - fpr if negatives else float("nan")
    balanced = float(np.nanmean([recall_fake, recall_real])) if (positives or negatives) else float("nan")
    low, high = bootstrap_auc(labels, scores, bootstrap_rounds, seed, groups)
    return Metrics(
        n=int(len(labels)), positives=int(positives), auc=roc_auc(labels, scores), auc_low=low, auc_high=high,
        ap=average_precision(labels, scores), accuracy=float((tp + tn) / len(labels)) if len(labels) else float("nan"),
        balanced_accuracy=balanced, fpr=float(fpr), fnr=float(fnr), eer=equal_error_rate(labels, scores),
    )


def video_scores(clips: Iterable[str], labels: Iterable[int], scores: Iterable[float]
                 ) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Per clip: its label and the mean of its window scores (clips sorted by id)."""
    table: dict[str, list] = {}
    for clip, label, score in zip(clips, labels, scores):
        entry = table.setdefault(clip, [int(label), []])
        if entry[0] != int(label):
            raise ValueError(f"clip {clip} has windows with both labels")
        entry[1].append(float(score))
    names = sorted(table)
    return (names, np.array([table[n][0] for n in names], dtype=int),
            np.array([np.mean(table[n][1]) for n in names], dtype=np.float64))
