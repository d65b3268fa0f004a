"""Tests for core.analysis.metrics: agreement with scikit-learn, intervals, subgroups, bad
input."""

import json
import time

import numpy as np
import pytest
from sklearn.metrics import (
    average_precision_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

from core.analysis.metrics import classification_report_table, evaluate, threshold_metrics


def _random_predictions(seed: int, size: int = 400) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, size)
    probabilities = np.clip(rng.normal(0.35 + 0.3 * labels, 0.2), 0.0, 1.0)
    # Rounding creates ties, which AUC and the threshold comparison must both handle.
    return labels, probabilities.round(2)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.71])
def test_evaluate_agrees_with_sklearn(seed: int, threshold: float) -> None:
    labels, probabilities = _random_predictions(seed)
    predictions = (probabilities >= threshold).astype(int)
    result = evaluate(labels, probabilities, threshold, n_bootstrap=50)
    tn, fp, fn, tp = confusion_matrix(labels, predictions).ravel()
    assert result["confusion"] == {"tn": tn, "fp": fp, "fn": fn, "tp": tp}
    expected = {
        "roc_auc": roc_auc_score(labels, probabilities),
        "pr_auc": average_precision_score(labels, probabilities),
        "sensitivity": recall_score(labels, predictions),
        "specificity": recall_score(labels, predictions, pos_label=0),
        "ppv": precision_score(labels, predictions),
        "npv": precision_score(labels, predictions, pos_label=0),
        "f1": f1_score(labels, predictions),
        "balanced_accuracy": balanced_accuracy_score(labels, predictions),
        "accuracy": np.mean(labels == predictions),
    }
    for name, value in expected.items():
        assert result[name] == pytest.approx(value, abs=1e-6), name
    assert result["n"] == len(labels)
    assert result["n_positive"] + result["n_negative"] == len(labels)


def test_evaluate_is_strict_json_and_curves_are_bounded() -> None:
    labels, probabilities = _random_predictions(5, size=1500)
    probabilities = np.random.default_rng(5).random(1500)  # distinct values: long curves
    result = evaluate(labels, probabilities, 0.5, subgroups={"site": ["a", "b", None] * 500})
    json.dumps(result, allow_nan=False)
    roc, pr = result["roc"], result["pr"]
    assert 2 <= len(roc["fpr"]) <= 201
    assert len(roc["fpr"]) == len(roc["tpr"]) == len(roc["thresholds"])
    assert (roc["fpr"][0], roc["tpr"][0], roc["fpr"][-1], roc["tpr"][-1]) == (0, 0, 1, 1)
    assert max(roc["thresholds"]) <= 1.0
    assert len(pr["precision"]) == len(pr["recall"]) <= 201
    assert pr["recall"][0] == 1.0 and pr["recall"][-1] == 0.0


def test_calibration_bins() -> None:
    labels = np.array([0, 1, 1, 0, 1])
    probabilities = np.array([0.05, 0.05, 0.55, 0.55, 1.0])
    bins = evaluate(labels, probabilities, 0.5, n_bootstrap=0)["calibration"]
    assert len(bins) == 10
    assert bins[0] == {
        "lower": 0.0,
        "upper": 0.1,
        "count": 2,
        "mean_predicted": pytest.approx(0.05),
        "fraction_positive": 0.5,
    }
    assert bins[5]["count"] == 2
    assert bins[9]["count"] == 1 and bins[9]["fraction_positive"] == 1.0
    assert bins[3] == {
        "lower": 0.3,
        "upper": 0.4,
        "count": 0,
        "mean_predicted": None,
        "fraction_positive": None,
    }


def test_intervals_contain_estimate_and_shrink_with_more_data() -> None:
    widths = []
    for size in (200, 3000):
        labels, probabilities = _random_predictions(7, size=size)
        result = evaluate(labels, probabilities, 0.5, n_bootstrap=400, seed=3)
        for name in ("roc_auc", "sensitivity", "specificity"):
            low, high = result["intervals"][name]
            assert low <= result[name] <= high, name
        widths.append(np.diff(result["intervals"]["roc_auc"])[0])
    assert widths[1] < widths[0]


def test_bootstrap_auc_matches_sklearn_on_a_resample() -> None:
    # The vectorised AUC must equal roc_auc_score on the same resampled rows.
    labels, probabilities = _random_predictions(11, size=60)
    repeated = evaluate(labels, probabilities, 0.5, n_bootstrap=200, seed=1)
    again = evaluate(labels, probabilities, 0.5, n_bootstrap=200, seed=1)
    assert repeated["intervals"] == again["intervals"]
    rng = np.random.default_rng(1)
    rows = rng.integers(0, 60, size=(200, 60))
    aucs = [roc_auc_score(labels[row], probabilities[row]) for row in rows]
    assert repeated["intervals"]["roc_auc"] == pytest.approx(np.percentile(aucs, [2.5, 97.5]))


def test_bootstrap_is_fast() -> None:
    labels, probabilities = _random_predictions(2, size=1500)
    probabilities = np.random.default_rng(2).random(1500)
    start = time.perf_counter()
    evaluate(labels, probabilities, 0.5, n_bootstrap=1000)
    assert time.perf_counter() - start < 2.0


def test_threshold_metrics_is_fast() -> None:
    labels, probabilities = _random_predictions(3, size=2000)
    threshold_metrics(labels, probabilities, 0.5)
    start = time.perf_counter()
    for _ in range(20):
        threshold_metrics(labels, probabilities, 0.5)
    assert (time.perf_counter() - start) / 20 < 0.05


def test_threshold_metrics_undefined_ratios_are_none() -> None:
    result = threshold_metrics([0, 0, 0], [0.1, 0.2, 0.3], 0.5)
    assert result["sensitivity"] is None
    assert result["ppv"] is None
    assert result["specificity"] == 1.0
    assert result["balanced_accuracy"] is None
    json.dumps(result, allow_nan=False)


def test_one_class_gives_none_auc_and_subgroup_none() -> None:
    labels = np.array([0, 0, 1, 1, 0, 1])
    probabilities = np.array([0.1, 0.4, 0.8, 0.6, 0.3, 0.9])
    sites = ["head", "head", "torso", "torso", "", None]
    result = evaluate(labels, probabilities, 0.5, subgroups={"site": sites}, n_bootstrap=20)
    site = result["subgroups"]["site"]
    assert set(site) == {"head", "torso", "unknown"}
    assert site["head"] == {
        "n": 2,
        "n_positive": 0,
        "roc_auc": None,
        "sensitivity": None,
        "specificity": 1.0,
    }
    assert site["torso"]["roc_auc"] is None
    assert site["unknown"]["roc_auc"] == 1.0
    only_benign = evaluate([0, 0, 0], [0.1, 0.5, 0.9], 0.5, n_bootstrap=20)
    assert only_benign["roc_auc"] is None and only_benign["pr_auc"] is None
    assert only_benign["intervals"]["roc_auc"] is None
    json.dumps(only_benign, allow_nan=False)


@pytest.mark.parametrize(
    ("labels", "probabilities", "threshold"),
    [
        ([0, 1], [0.5], 0.5),
        ([], [], 0.5),
        ([0, 1], [0.2, 1.2], 0.5),
        ([0, 1], [0.2, -0.1], 0.5),
        ([0, 1], [0.2, float("nan")], 0.5),
        ([0, 2], [0.2, 0.3], 0.5),
        (["benign", "malignant"], [0.2, 0.3], 0.5),
        ([0, 1], [0.2, 0.3], 1.5),
        ([0, 1], [0.2, 0.3], float("nan")),
    ],
)
def test_bad_input_raises_value_error(labels, probabilities, threshold) -> None:
    with pytest.raises(ValueError):
        evaluate(labels, probabilities, threshold)
    with pytest.raises(ValueError):
        threshold_metrics(labels, probabilities, threshold)


def test_subgroup_length_mismatch_raises() -> None:
    with pytest.raises(ValueError, match="site"):
        evaluate([0, 1], [0.2, 0.8], 0.5, subgroups={"site": ["a"]})


def test_classification_report_table() -> None:
    labels, probabilities = _random_predictions(4)
    predictions = (probabilities >= 0.5).astype(int)
    rows = classification_report_table(labels, probabilities, 0.5)
    assert [row["class"] for row in rows] == ["benign", "malignant", "macro avg", "weighted avg"]
    malignant = rows[1]
    assert malignant["precision"] == pytest.approx(precision_score(labels, predictions))
    assert malignant["recall"] == pytest.approx(recall_score(labels, predictions))
    assert malignant["f1"] == pytest.approx(f1_score(labels, predictions))
    assert malignant["support"] == int(labels.sum())
    assert rows[2]["f1"] == pytest.approx(f1_score(labels, predictions, average="macro"))
    json.dumps(rows, allow_nan=False)
