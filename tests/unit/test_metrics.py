"""Evaluation metrics against small cases computed by hand."""

import numpy as np
import pytest

from bgmfit.metrics import (
    expected_calibration_error,
    pair_classification,
    partner_retrieval,
    reliability_curve,
    style_retrieval,
)


def test_pair_classification_separates_fits_from_non_fits():
    grades = np.array([1.0, 0.5, 0.0, 0.0])
    assert pair_classification(np.array([0.9, 0.8, 0.1, 0.2]), grades) == {"roc_auc": 1.0, "pr_auc": 1.0}
    # one fit (0.5) scored below one non-fit: 3 of 4 positive/negative orderings right
    assert pair_classification(np.array([0.9, 0.15, 0.1, 0.2]), grades)["roc_auc"] == pytest.approx(0.75)


def test_partner_retrieval_by_hand():
    relevance = np.array([[1.0, 0.5, 0.0], [0.0, 0.5, 1.0]])
    scores = np.array([[0.9, 0.5, 0.1], [0.8, 0.7, 0.6]])  # query 1's partner is ranked third
    result = partner_retrieval(scores, relevance)
    assert result["recall@1"] == 0.5 and result["recall@5"] == 1.0
    assert result["mrr"] == pytest.approx((1 + 1 / 3) / 2)
    # query 0 is ideal (1.0); query 1: DCG = 0 + 0.5/log2(3) + 1/log2(4), ideal = 1 + 0.5/log2(3)
    dcg = 0.5 / np.log2(3) + 1 / np.log2(4)
    assert result["ndcg@10"] == pytest.approx((1 + dcg / (1 + 0.5 / np.log2(3))) / 2)


def test_expected_calibration_error_against_graded_labels():
    predicted = np.array([0.05, 0.05, 0.55, 0.55])
    grades = np.array([0.0, 0.0, 1.0, 0.0])
    # bin 0: |0.05 - 0| = 0.05; bin 5: |0.55 - 0.5| = 0.05; each half the pairs
    assert expected_calibration_error(predicted, grades) == pytest.approx(0.05)
    curve = reliability_curve(predicted, grades)
    assert [c["count"] for c in curve] == [2, 2] and curve[1]["observed"] == 0.5


def test_style_retrieval_precision_map_and_recall_by_hand():
    # Four tracks on a line: a0, a1 close together, b0 near a1, b1 far.
    positions = np.array([0.0, 1.0, 1.5, 5.0])
    distances = np.abs(positions[:, None] - positions[None, :])
    styles = np.array(["a", "a", "b", "b"])
    result = style_retrieval(distances, styles, k=2)
    # top-2 lists: a0 -> [a1, b0]; a1 -> [b0, a0]; b0 -> [a1, a0]; b1 -> [b0, a1]
    assert result["precision@2"] == pytest.approx((0.5 + 0.5 + 0.0 + 0.5) / 4)
    # AP@2 normalised by min(2, 1 relevant): a0 1.0, a1 0.5, b0 0.0, b1 1.0
    assert result["map@2"] == pytest.approx((1.0 + 0.5 + 0.0 + 1.0) / 4)
    assert result["per_style"]["b"]["recall@2"] == pytest.approx(0.5)


def test_isotonic_calibration_brings_the_ece_down_and_keeps_the_order(rng):
    from bgmfit.metrics import calibrated, expected_calibration_error, fit_calibration

    true = rng.uniform(0.0, 0.6, 20000)
    outcome = (rng.uniform(size=true.size) < true).astype(float)
    predicted = np.clip(true * 1.4 + 0.1, 0, 1)  # too high, as method A's fits are
    calibration = fit_calibration(predicted[::2], outcome[::2])  # fitted on one half ...
    held_out, truth = predicted[1::2], outcome[1::2]  # ... judged on the other
    after = calibrated(held_out, calibration)
    assert expected_calibration_error(after, truth) < 0.02 < expected_calibration_error(held_out, truth)
    order = np.argsort(held_out, kind="stable")
    assert np.all(np.diff(after[order]) >= 0) and len(np.unique(after)) == len(np.unique(held_out))
    assert np.array_equal(calibrated(held_out, None), held_out)
