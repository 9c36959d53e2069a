"""Detection metrics against scikit-learn and hand-computed cases, reference bugs not reproduced."""
from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, balanced_accuracy_score, confusion_matrix, roc_auc_score

from avlips.model.metrics import compute_metrics, confusion, equal_error_rate, roc_auc, video_scores


@pytest.fixture
def scored():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 400)
    scores = np.clip(labels * 0.3 + rng.normal(0.35, 0.25, 400), 0, 1)
    scores[:40] = np.round(scores[:40], 1)  # ties
    return labels, scores


def test_against_scikit_learn(scored):
    labels, scores = scored
    metrics = compute_metrics(labels, scores, bootstrap_rounds=200)
    predicted = (scores >= 0.5).astype(int)
    tn, fp, fn, tp = confusion_matrix(labels, predicted, labels=[0, 1]).ravel()
    assert metrics.auc == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert metrics.ap == pytest.approx(average_precision_score(labels, scores), abs=1e-12)
    assert metrics.accuracy == pytest.approx((tp + tn) / len(labels))
    assert metrics.balanced_accuracy == pytest.approx(balanced_accuracy_score(labels, predicted))
    assert metrics.fpr == pytest.approx(fp / (fp + tn))
    assert metrics.fnr == pytest.approx(fn / (fn + tp))
    assert metrics.auc_low < metrics.auc < metrics.auc_high
    assert metrics.positives == labels.sum()


def test_hand_computed_case():
    labels = np.array([0, 0, 0, 1, 1, 1])
    scores = np.array([0.1, 0.6, 0.3, 0.8, 0.4, 0.9])
    assert confusion(labels, scores) == (2, 1, 1, 2)  # tn fp fn tp: fake is positive
    # Pairs (fake, real) ordered correctly: 8 of 9.
    assert roc_auc(labels, scores) == pytest.approx(8 / 9)
    metrics = compute_metrics(labels, scores, bootstrap_rounds=0)
    assert metrics.fpr == pytest.approx(1 / 3) and metrics.fnr == pytest.approx(1 / 3)
    assert metrics.eer == pytest.approx(1 / 3)
    # AP by hand: ranked 0.9(1) 0.8(1) 0.6(0) 0.4(1) ...: (1 + 1 + 3/4) / 3
    assert metrics.ap == pytest.approx((1 + 1 + 0.75) / 3)


def test_reference_bugs_not_reproduced():
    labels = np.array([0, 0, 1, 1, 1])
    scores = np.array([0.2, 0.45, 0.55, 0.7, 0.49])
    metrics = compute_metrics(labels, scores, bootstrap_rounds=0)
    # The reference's AP on thresholded predictions differs from AP on scores.
    thresholded_ap = average_precision_score(labels, scores >= 0.5)
    assert metrics.ap == pytest.approx(1.0) and thresholded_ap < 1.0
    # The reference unpacked the confusion matrix in the wrong order, swapping FPR and FNR.
    assert metrics.fpr == 0.0 and metrics.fnr == pytest.approx(1 / 3)


def test_equal_error_rate_on_separable_and_inverted():
    labels = np.array([0, 0, 1, 1])
    assert equal_error_rate(labels, np.array([0.1, 0.2, 0.8, 0.9])) == pytest.approx(0.0)
    assert equal_error_rate(labels, np.array([0.9, 0.8, 0.2, 0.1])) == pytest.approx(1.0)


def test_one_class_gives_nan_not_a_crash():
    metrics = compute_metrics([1, 1, 1], [0.9, 0.2, 0.7], bootstrap_rounds=10)
    assert math.isnan(metrics.auc) and math.isnan(metrics.fpr) and metrics.fnr == pytest.approx(1 / 3)
    assert metrics.to_dict()["auc"] is None


def test_video_level_is_the_mean_of_windows():
    names, labels, scores = video_scores(["b", "a", "a", "b"], [1, 0, 0, 1], [0.8, 0.1, 0.3, 0.6])
    assert names == ["a", "b"] and labels.tolist() == [0, 1]
    assert scores.tolist() == pytest.approx([0.2, 0.7])
    with pytest.raises(ValueError, match="both labels"):
        video_scores(["a", "a"], [0, 1], [0.1, 0.2])


def _bootstrap_by_rows(labels, scores, rounds, seed, groups=None):
    """The bootstrap as resampled rows ranked each round: what bootstrap_auc's counts must reproduce."""
    from avlips.model.metrics import roc_auc

    labels, scores = np.asarray(labels).astype(int), np.asarray(scores, dtype=np.float64)
    rng = np.random.default_rng(seed)
    members = ([np.array([i]) for i in range(len(labels))] if groups is None
               else [np.flatnonzero(np.asarray(groups) == g) for g in np.unique(groups)])
    values = []
    for _ in range(rounds):
        index = np.concatenate([members[i] for i in rng.integers(0, len(members), len(members))])
        value = roc_auc(labels[index], scores[index])
        if not np.isnan(value):
            values.append(value)
    return tuple(float(v) for v in np.percentile(values, [2.5, 97.5])) if values else (float("nan"),) * 2


@pytest.mark.parametrize("case", range(6))
def test_bootstrap_interval_is_that_of_resampled_rows_to_the_bit(case):
    from avlips.model.metrics import bootstrap_auc

    rng = np.random.default_rng(case)
    n = [7, 40, 120, 33, 60, 12][case]
    labels = rng.integers(0, 2, n)
    scores = np.round(rng.random(n), 1 if case % 2 else 6)  # coarse scores: many ties across the classes
    if case == 4:
        scores[3] = np.nan  # rounds that draw it are left out, as roc_auc's NaN is
    groups = rng.integers(0, max(2, n // 5), n).astype(str) if case >= 2 else None
    got = bootstrap_auc(labels, scores, rounds=300, seed=case, groups=groups)
    expected = _bootstrap_by_rows(labels, scores, 300, case, groups)
    assert np.array_equal(np.array(got), np.array(expected), equal_nan=True), (got, expected)
    assert not np.isnan(got[0])
