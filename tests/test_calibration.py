"""Tests for core.analysis.calibration: fitting, serialisation and threshold rules."""

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss, roc_curve

from core.analysis.calibration import Calibration, choose_threshold, fit_calibration


def _overconfident_predictions(seed: int = 0, size: int = 2000):
    """Labels drawn from sigmoid(z), probabilities from sigmoid(3z + 1): too sharp, shifted."""
    rng = np.random.default_rng(seed)
    score = rng.normal(0.0, 1.5, size)
    labels = (rng.random(size) < 1.0 / (1.0 + np.exp(-score))).astype(int)
    probabilities = 1.0 / (1.0 + np.exp(-(3.0 * score + 1.0)))
    return labels, probabilities


@pytest.mark.parametrize("method", ["platt", "temperature"])
def test_calibration_improves_log_loss(method: str) -> None:
    labels, probabilities = _overconfident_predictions()
    calibration = fit_calibration(labels, probabilities, method=method)
    assert calibration.method == method
    calibrated = calibration.apply(probabilities)
    assert log_loss(labels, calibrated) < log_loss(labels, probabilities) - 0.05
    # The true mapping has slope 1/3 on the logit scale.
    assert calibration.a == pytest.approx(1 / 3, abs=0.05)
    if method == "temperature":
        assert calibration.b == 0.0


def test_platt_matches_unregularised_logistic_regression() -> None:
    labels, probabilities = _overconfident_predictions(seed=1)
    calibration = fit_calibration(labels, probabilities, method="platt")
    logits = np.log(probabilities / (1 - probabilities))[:, None]
    reference = LogisticRegression(C=1e8).fit(logits, labels)
    assert calibration.a == pytest.approx(reference.coef_[0, 0], abs=1e-3)
    assert calibration.b == pytest.approx(reference.intercept_[0], abs=1e-3)


def test_separable_data_gives_finite_parameters() -> None:
    calibration = fit_calibration([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9])
    assert np.isfinite(calibration.a) and np.isfinite(calibration.b)
    assert calibration.apply(0.9) > 0.5 > calibration.apply(0.1)


def test_none_method_is_identity() -> None:
    calibration = fit_calibration([0, 1], [0.0, 1.0], method="none")
    np.testing.assert_array_equal(calibration.apply([0.0, 0.3, 1.0]), [0.0, 0.3, 1.0])


def test_apply_accepts_scalar_and_handles_extremes() -> None:
    calibration = Calibration(method="platt", a=2.0, b=-1.0)
    value = calibration.apply(0.5)
    assert isinstance(value, np.ndarray)
    assert float(value) == pytest.approx(1 / (1 + np.exp(1.0)))
    assert np.all(np.isfinite(calibration.apply(np.array([0.0, 1.0]))))


def test_round_trip_through_dict() -> None:
    calibration = Calibration(method="temperature", a=0.7, b=0.0)
    values = calibration.to_dict()
    assert values == {"method": "temperature", "a": 0.7, "b": 0.0, "applied": "card"}
    assert Calibration.from_dict(values) == calibration


@pytest.mark.parametrize(
    "values",
    [{"method": "isotonic", "a": 1.0, "b": 0.0}, {"method": "platt", "a": 1.0}],
)
def test_bad_calibration_dict_raises(values: dict) -> None:
    with pytest.raises(ValueError):
        Calibration.from_dict(values)


@pytest.mark.parametrize(
    ("labels", "probabilities", "method"),
    [
        ([1, 1, 1], [0.2, 0.5, 0.9], "platt"),
        ([0, 1], [0.2], "platt"),
        ([0, 1], [0.2, 0.8], "isotonic"),
    ],
)
def test_fit_calibration_bad_input(labels, probabilities, method) -> None:
    with pytest.raises(ValueError):
        fit_calibration(labels, probabilities, method=method)


def test_sensitivity_rule_picks_highest_threshold_reaching_target() -> None:
    labels = [0, 1, 0, 1, 1, 0, 1, 1]
    probabilities = [0.05, 0.2, 0.3, 0.4, 0.6, 0.7, 0.8, 0.9]
    # Malignant probabilities, highest first: 0.9, 0.8, 0.6, 0.4, 0.2.
    assert choose_threshold(labels, probabilities, target_sensitivity=0.8) == 0.4
    assert choose_threshold(labels, probabilities, target_sensitivity=0.6) == 0.6
    assert choose_threshold(labels, probabilities, target_sensitivity=0.61) == 0.4
    assert choose_threshold(labels, probabilities, target_sensitivity=1.0) == 0.2
    assert choose_threshold(labels, probabilities, target_sensitivity=0.1) == 0.9


def test_sensitivity_rule_tolerates_float_products() -> None:
    # 0.92 * 25 is 23.000000000000004 in floating point; 23 cases must be enough.
    labels = [1] * 25 + [0]
    probabilities = [index / 100 for index in range(25, 0, -1)] + [0.0]
    threshold = choose_threshold(labels, probabilities, target_sensitivity=0.92)
    assert threshold == 0.03


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_youden_rule_matches_roc_curve(seed: int) -> None:
    labels, probabilities = _overconfident_predictions(seed=seed, size=300)
    threshold = choose_threshold(labels, probabilities, rule="youden")
    false_positive_rate, true_positive_rate, thresholds = roc_curve(labels, probabilities)
    best = np.argmax(true_positive_rate - false_positive_rate)
    assert threshold == pytest.approx(thresholds[best])


@pytest.mark.parametrize(
    ("labels", "rule", "target"),
    [([0, 0, 0], "youden", 0.9), ([0, 1, 1], "cost", 0.9), ([0, 1, 1], "sensitivity", 0.0)],
)
def test_choose_threshold_bad_input(labels, rule: str, target: float) -> None:
    with pytest.raises(ValueError):
        choose_threshold(labels, [0.1, 0.5, 0.9], rule=rule, target_sensitivity=target)


def test_mean_logit_combines_in_logit_space():
    from core.analysis.calibration import mean_logit

    combined = mean_logit(np.array([[0.9, 0.5, 0.2], [0.5, 0.5, 0.8]]))
    # logit(0.9) = 2.197 and logit(0.5) = 0 average to 1.099: sigmoid 0.75, not the mean 0.7.
    assert combined[0] == pytest.approx(0.75, abs=1e-3)
    assert combined[1] == pytest.approx(0.5)
    assert combined[2] == pytest.approx(0.5)


def test_fold_ensemble_pairs_recipes_by_source_and_image():
    import pandas as pd

    from scripts.fold_ensemble import compare

    rng = np.random.default_rng(0)
    labels = np.array([1] * 30 + [0] * 30)
    index = pd.MultiIndex.from_arrays(
        [["clinic"] * 60, [f"image_{i}" for i in range(60)]], names=["held_out", "image_name"]
    )

    def recipe(noise: float) -> pd.DataFrame:
        scores = np.clip(0.3 + 0.3 * labels + rng.normal(0, noise, 60), 0.01, 0.99)
        return pd.DataFrame({"label": labels, "probability": scores}, index=index)

    result = compare({"first": recipe(0.3), "second": recipe(0.3)})["clinic"]
    assert result["n"] == 60 and result["n_malignant"] == 30
    # Two recipes with independent errors: their combination ranks better than either.
    assert result["ensemble"]["roc_auc"] > max(
        result["first"]["roc_auc"], result["second"]["roc_auc"]
    )
