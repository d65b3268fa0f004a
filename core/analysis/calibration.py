"""Probability calibration and decision-threshold choice, both fitted on validation data.

A calibration maps a raw probability p to sigmoid(a * logit(p) + b): Platt scaling fits both
a and b, temperature scaling fits only a = 1 / T. Fits are a few damped Newton steps in numpy,
which is exact for these one- or two-parameter convex problems and needs no extra dependency.
"""

from dataclasses import dataclass

import numpy as np
from sklearn.metrics import roc_curve

from core.analysis.metrics import validate_predictions
from core.train.train_config import TARGET_SENSITIVITY

CALIBRATION_METHODS = ("platt", "temperature", "none")
THRESHOLD_RULES = ("sensitivity", "youden")
# Keeps logit finite for probabilities of exactly 0 or 1.
PROBABILITY_EPSILON = 1e-7
# A weak ridge penalty keeps the fit finite when validation classes are perfectly separated.
RIDGE_PENALTY = 1e-4
NEWTON_ITERATIONS = 50


def _logit(probability: np.ndarray) -> np.ndarray:
    clipped = np.clip(probability, PROBABILITY_EPSILON, 1.0 - PROBABILITY_EPSILON)
    return np.log(clipped) - np.log1p(-clipped)


def _sigmoid(value: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * value))


@dataclass(frozen=True)
class Calibration:
    """sigmoid(a * logit(p) + b); "none" leaves probabilities untouched."""

    method: str
    a: float
    b: float

    def __post_init__(self) -> None:
        if self.method not in CALIBRATION_METHODS:
            raise ValueError(
                f"unknown calibration method {self.method!r}, expected one of "
                f"{CALIBRATION_METHODS}"
            )
        if not (np.isfinite(self.a) and np.isfinite(self.b)):
            raise ValueError(f"calibration parameters must be finite, got a={self.a}, b={self.b}")

    def apply(self, probability: np.ndarray | float) -> np.ndarray:
        probability_array = np.asarray(probability, dtype=float)
        if self.method == "none":
            return probability_array.copy()
        # asarray: numpy turns 0-d results into scalars, callers expect an array.
        return np.asarray(_sigmoid(self.a * _logit(probability_array) + self.b))

    def to_dict(self) -> dict:
        # "applied": "card" records that stored probabilities already went through it.
        return {"method": self.method, "a": float(self.a), "b": float(self.b), "applied": "card"}

    @classmethod
    def from_dict(cls, values: dict) -> "Calibration":
        missing = {"method", "a", "b"} - set(values)
        if missing:
            raise ValueError(f"calibration dict lacks keys {sorted(missing)}")
        return cls(method=str(values["method"]), a=float(values["a"]), b=float(values["b"]))


def mean_logit(probabilities: np.ndarray) -> np.ndarray:
    """Probabilities of several models (members, N) combined in logit space: the sigmoid of
    their mean logit. Unlike a plain mean, one confident member is not averaged away."""
    return np.asarray(_sigmoid(_logit(np.asarray(probabilities, dtype=float)).mean(axis=0)))


def _fit_logistic(
    feature: np.ndarray, labels: np.ndarray, fit_intercept: bool
) -> tuple[float, float]:
    """Minimise log-loss of sigmoid(a * feature + b), starting from and shrunk to identity."""
    design = (
        np.column_stack([feature, np.ones_like(feature)]) if fit_intercept else feature[:, None]
    )
    identity = np.zeros(design.shape[1])
    identity[0] = 1.0
    penalty = RIDGE_PENALTY * len(labels) * identity

    def objective(weights: np.ndarray) -> float:
        margin = design @ weights
        # log(1 + exp(margin)) - label * margin, written stably.
        loss = np.logaddexp(0.0, margin) - labels * margin
        return float(loss.sum() + 0.5 * (penalty * (weights - identity) ** 2).sum())

    weights = identity.copy()
    for _ in range(NEWTON_ITERATIONS):
        predicted = _sigmoid(design @ weights)
        gradient = design.T @ (predicted - labels) + penalty * (weights - identity)
        hessian = (design * (predicted * (1.0 - predicted))[:, None]).T @ design
        step = np.linalg.solve(hessian + np.diag(penalty + 1e-12), gradient)
        # Halve the step until the objective does not increase: Newton can overshoot.
        current = objective(weights)
        scale = 1.0
        while scale > 1e-6 and objective(weights - scale * step) > current:
            scale /= 2.0
        weights = weights - scale * step
        if np.abs(scale * step).max() < 1e-10:
            break
    return float(weights[0]), (float(weights[1]) if fit_intercept else 0.0)


def fit_calibration(labels, probabilities, method: str = "platt") -> Calibration:
    """Fit a calibration on validation labels and raw probabilities."""
    if method not in CALIBRATION_METHODS:
        raise ValueError(
            f"unknown calibration method {method!r}, expected one of {CALIBRATION_METHODS}"
        )
    label_array, probability_array = validate_predictions(labels, probabilities)
    if label_array.min() == label_array.max():
        raise ValueError("calibration needs both benign and malignant labels, got one class")
    if method == "none":
        return Calibration(method="none", a=1.0, b=0.0)
    a, b = _fit_logistic(
        _logit(probability_array), label_array.astype(float), fit_intercept=method == "platt"
    )
    return Calibration(method=method, a=a, b=b)


def _sensitivity_threshold(
    label_array: np.ndarray, probability_array: np.ndarray, target_sensitivity: float
) -> float:
    if not 0.0 < target_sensitivity <= 1.0:
        raise ValueError(f"target_sensitivity must be in (0, 1], got {target_sensitivity}")
    positive_probabilities = np.sort(probability_array[label_array == 1])[::-1]
    # The smallest number of malignant cases at or above the threshold; the tolerance stops
    # 0.92 * 25 = 23.000000000000004 from demanding a 24th case.
    required = int(np.ceil(target_sensitivity * len(positive_probabilities) - 1e-9))
    # Any higher threshold would leave one of those `required` cases below it.
    return float(positive_probabilities[max(required, 1) - 1])


def _youden_threshold(label_array: np.ndarray, probability_array: np.ndarray) -> float:
    false_positive_rate, true_positive_rate, thresholds = roc_curve(label_array, probability_array)
    best = int(np.argmax(true_positive_rate - false_positive_rate))
    # The first ROC threshold is +inf ("nothing malignant"); 1.0 is its finite stand-in.
    return float(min(thresholds[best], 1.0))


def choose_threshold(
    labels,
    probabilities,
    rule: str = "sensitivity",
    target_sensitivity: float = TARGET_SENSITIVITY,
) -> float:
    """Decision threshold (probability >= threshold means malignant) chosen on these data.

    "sensitivity": the highest threshold whose sensitivity reaches `target_sensitivity`.
    "youden": the threshold maximising sensitivity + specificity - 1.
    """
    if rule not in THRESHOLD_RULES:
        raise ValueError(f"unknown threshold rule {rule!r}, expected one of {THRESHOLD_RULES}")
    label_array, probability_array = validate_predictions(labels, probabilities)
    if label_array.min() == label_array.max():
        raise ValueError("choosing a threshold needs both benign and malignant labels")
    if rule == "sensitivity":
        return _sensitivity_threshold(label_array, probability_array, target_sensitivity)
    return _youden_threshold(label_array, probability_array)
