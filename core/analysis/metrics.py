"""Evaluation of binary predictions (benign = 0, malignant = 1) at a decision threshold.

Every result is JSON-serialisable: plain ints, floats, lists and None. A ratio whose
denominator is zero (say, sensitivity with no malignant cases) is None, never NaN, so model
cards can be written with `json.dumps(allow_nan=False)` and compared across runs.
"""

import math
from collections.abc import Sequence

import numpy as np
from sklearn.metrics import (
    average_precision_score,
    classification_report,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)

from core.inputs.labels import CLASS_NAMES

CALIBRATION_BIN_COUNT = 10
MAX_CURVE_POINTS = 200
UNKNOWN_SUBGROUP = "unknown"
INTERVAL_PERCENTILES = (2.5, 97.5)


def validate_predictions(labels, probabilities) -> tuple[np.ndarray, np.ndarray]:
    """Return labels as an int array and probabilities as a float array, or raise ValueError."""
    label_array = np.asarray(labels)
    probability_array = np.asarray(probabilities, dtype=float)
    if label_array.ndim != 1 or probability_array.ndim != 1:
        raise ValueError("labels and probabilities must be one-dimensional sequences")
    if len(label_array) != len(probability_array):
        raise ValueError(
            f"labels ({len(label_array)}) and probabilities ({len(probability_array)}) "
            "differ in length"
        )
    if len(label_array) == 0:
        raise ValueError("labels and probabilities are empty")
    if not np.all(np.isfinite(probability_array)):
        raise ValueError("probabilities contain NaN or infinite values")
    if probability_array.min() < 0.0 or probability_array.max() > 1.0:
        raise ValueError(
            f"probabilities must lie in [0, 1], got range "
            f"[{probability_array.min()}, {probability_array.max()}]"
        )
    try:
        is_binary = bool(np.isin(label_array, (0, 1)).all())
    except TypeError:
        is_binary = False
    if not is_binary:
        unexpected = sorted({str(value) for value in label_array.tolist()} - {"0", "1"})
        raise ValueError(f"labels must be 0 or 1, got {unexpected[:5]}")
    return label_array.astype(np.int64), probability_array


def _validate_threshold(threshold: float) -> float:
    try:
        value = float(threshold)
    except (TypeError, ValueError):
        value = math.nan
    # Written as a positive test so that NaN is refused too.
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"threshold must be a number in [0, 1], got {threshold!r}")
    return value


def _ratio(numerator: float, denominator: float) -> float | None:
    return float(numerator / denominator) if denominator else None


def _mean_or_none(first: float | None, second: float | None) -> float | None:
    return None if first is None or second is None else (first + second) / 2.0


def _metrics_from_counts(tp: int, fp: int, tn: int, fn: int) -> dict:
    sensitivity = _ratio(tp, tp + fn)
    specificity = _ratio(tn, tn + fp)
    return {
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
        "sensitivity": sensitivity,
        "specificity": specificity,
        "ppv": _ratio(tp, tp + fp),
        "npv": _ratio(tn, tn + fn),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "balanced_accuracy": _mean_or_none(sensitivity, specificity),
        "accuracy": _ratio(tp + tn, tp + fp + tn + fn),
    }


def threshold_metrics(labels, probabilities, threshold: float) -> dict:
    """Confusion counts and ratios when probability >= threshold means malignant.

    Kept to a few vectorised reductions because a UI slider calls it on every move.
    """
    label_array, probability_array = validate_predictions(labels, probabilities)
    threshold = _validate_threshold(threshold)
    predicted_malignant = probability_array >= threshold
    is_malignant = label_array == 1
    tp = int(np.count_nonzero(predicted_malignant & is_malignant))
    fp = int(np.count_nonzero(predicted_malignant)) - tp
    fn = int(np.count_nonzero(is_malignant)) - tp
    tn = len(label_array) - tp - fp - fn
    return _metrics_from_counts(tp, fp, tn, fn)


def _has_both_classes(label_array: np.ndarray) -> bool:
    return 0 < int(label_array.sum()) < len(label_array)


def _downsample_indices(length: int) -> np.ndarray:
    """Evenly spaced indices, at most MAX_CURVE_POINTS, always keeping both endpoints."""
    if length <= MAX_CURVE_POINTS:
        return np.arange(length)
    return np.unique(np.linspace(0, length - 1, MAX_CURVE_POINTS).round().astype(int))


def _roc_points(label_array: np.ndarray, probability_array: np.ndarray) -> dict:
    if not _has_both_classes(label_array):
        return {"fpr": [], "tpr": [], "thresholds": []}
    fpr, tpr, thresholds = roc_curve(label_array, probability_array)
    # sklearn's first threshold is +inf ("nothing is malignant"); JSON has no infinity.
    thresholds = np.minimum(thresholds, 1.0)
    keep = _downsample_indices(len(fpr))
    return {
        "fpr": fpr[keep].tolist(),
        "tpr": tpr[keep].tolist(),
        "thresholds": thresholds[keep].tolist(),
    }


def _pr_points(label_array: np.ndarray, probability_array: np.ndarray) -> dict:
    if not _has_both_classes(label_array):
        return {"precision": [], "recall": []}
    precision, recall, _ = precision_recall_curve(label_array, probability_array)
    keep = _downsample_indices(len(precision))
    return {"precision": precision[keep].tolist(), "recall": recall[keep].tolist()}


def _calibration_bins(label_array: np.ndarray, probability_array: np.ndarray) -> list[dict]:
    """Equal-width reliability bins; the last bin includes probability 1.0."""
    bin_index = np.clip(
        np.floor(probability_array * CALIBRATION_BIN_COUNT), 0, CALIBRATION_BIN_COUNT - 1
    ).astype(int)
    counts = np.bincount(bin_index, minlength=CALIBRATION_BIN_COUNT)
    probability_sums = np.bincount(
        bin_index, weights=probability_array, minlength=CALIBRATION_BIN_COUNT
    )
    positive_sums = np.bincount(bin_index, weights=label_array, minlength=CALIBRATION_BIN_COUNT)
    return [
        {
            "lower": index / CALIBRATION_BIN_COUNT,
            "upper": (index + 1) / CALIBRATION_BIN_COUNT,
            "count": int(counts[index]),
            "mean_predicted": _ratio(probability_sums[index], counts[index]),
            "fraction_positive": _ratio(positive_sums[index], counts[index]),
        }
        for index in range(CALIBRATION_BIN_COUNT)
    ]


def _percentile_interval(values: np.ndarray) -> list[float] | None:
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return None
    return [float(bound) for bound in np.percentile(values, INTERVAL_PERCENTILES)]


def _bootstrap_intervals(
    label_array: np.ndarray,
    probability_array: np.ndarray,
    threshold: float,
    n_bootstrap: int,
    seed: int,
) -> dict:
    """95% percentile intervals from row resamples, all resamples computed at once.

    Each resample is summarised by how often it drew each distinct probability among
    positives and negatives; AUC then follows from the Mann-Whitney statistic on those
    counts (ties count one half), with no per-resample sorting.
    """
    if n_bootstrap <= 0:
        return {"roc_auc": None, "sensitivity": None, "specificity": None}
    unique_values, value_index = np.unique(probability_array, return_inverse=True)
    value_count = len(unique_values)
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, len(label_array), size=(n_bootstrap, len(label_array)))
    cell = np.arange(n_bootstrap)[:, None] * value_count + value_index[rows]
    drawn_labels = label_array[rows].astype(bool)
    size = n_bootstrap * value_count
    positives = np.bincount(cell[drawn_labels], minlength=size).reshape(n_bootstrap, -1)
    negatives = np.bincount(cell[~drawn_labels], minlength=size).reshape(n_bootstrap, -1)
    positive_total = positives.sum(axis=1).astype(float)
    negative_total = negatives.sum(axis=1).astype(float)
    negatives_below = np.cumsum(negatives, axis=1) - negatives
    concordant = (positives * (negatives_below + 0.5 * negatives)).sum(axis=1)
    above = unique_values >= threshold
    with np.errstate(invalid="ignore", divide="ignore"):
        roc_auc = concordant / (positive_total * negative_total)
        sensitivity = positives[:, above].sum(axis=1) / positive_total
        specificity = negatives[:, ~above].sum(axis=1) / negative_total
    return {
        "roc_auc": _percentile_interval(roc_auc),
        "sensitivity": _percentile_interval(sensitivity),
        "specificity": _percentile_interval(specificity),
    }


def wilson_interval(successes: int, total: int, z: float = 1.959964) -> list[float] | None:
    """The Wilson score 95% interval of a proportion; None when there is nothing to count.

    Unlike a bootstrap, it never collapses to zero width at 0 or 100% (18 of 18 is
    0.824-1.000, not 1.000-1.000).
    """
    if total <= 0:
        return None
    share = successes / total
    centre = (share + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(share * (1 - share) / total + z * z / (4 * total * total))
    half /= 1 + z * z / total
    return [max(0.0, centre - half), min(1.0, centre + half)]


def _proportion_intervals(intervals: dict, at_threshold: dict) -> dict:
    """Sensitivity and specificity intervals that never collapse: Wilson's where the
    bootstrap's has zero width (every resample at 100% or 0%)."""
    counts = {
        "sensitivity": (at_threshold["tp"], at_threshold["tp"] + at_threshold["fn"]),
        "specificity": (at_threshold["tn"], at_threshold["tn"] + at_threshold["fp"]),
    }
    fixed = dict(intervals)
    for name, (successes, total) in counts.items():
        interval = intervals.get(name)
        if interval is None or interval[1] - interval[0] <= 0:
            fixed[name] = wilson_interval(successes, total) if interval is not None else None
    return fixed


def _subgroup_key(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return UNKNOWN_SUBGROUP
    text = str(value).strip()
    return text if text and text.lower() not in {"nan", "none", "<na>"} else UNKNOWN_SUBGROUP


def _subgroup_summary(
    label_array: np.ndarray,
    probability_array: np.ndarray,
    threshold: float,
    n_bootstrap: int = 0,
    seed: int = 0,
) -> dict:
    """n, malignant n, AUC, sensitivity and specificity; 95% intervals when `n_bootstrap`."""
    counts = threshold_metrics(label_array, probability_array, threshold)
    summary = {
        "n": len(label_array),
        "n_positive": int(label_array.sum()),
        "roc_auc": _auc_or_none(label_array, probability_array),
        "sensitivity": counts["sensitivity"],
        "specificity": counts["specificity"],
    }
    if n_bootstrap > 0:
        summary["intervals"] = _proportion_intervals(
            _bootstrap_intervals(label_array, probability_array, threshold, n_bootstrap, seed),
            counts,
        )
    return summary


def _subgroup_metrics(
    label_array: np.ndarray,
    probability_array: np.ndarray,
    threshold: float,
    subgroups: dict[str, Sequence],
    n_bootstrap: int = 0,
    seed: int = 0,
) -> dict:
    results = {}
    for name, values in subgroups.items():
        if len(values) != len(label_array):
            raise ValueError(
                f"subgroup {name!r} has {len(values)} values for {len(label_array)} predictions"
            )
        keys = np.array([_subgroup_key(value) for value in values], dtype=object)
        results[name] = {
            key: _subgroup_summary(
                label_array[keys == key],
                probability_array[keys == key],
                threshold,
                n_bootstrap,
                seed,
            )
            for key in sorted(set(keys.tolist()))
        }
    return results


def _auc_or_none(label_array: np.ndarray, probability_array: np.ndarray) -> float | None:
    if not _has_both_classes(label_array):
        return None
    return float(roc_auc_score(label_array, probability_array))


def _average_precision_or_none(
    label_array: np.ndarray, probability_array: np.ndarray
) -> float | None:
    if not _has_both_classes(label_array):
        return None
    return float(average_precision_score(label_array, probability_array))


def evaluate(
    labels,
    probabilities,
    threshold: float,
    *,
    subgroups: dict[str, Sequence] | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
    subgroup_intervals: bool = False,
) -> dict:
    """Full, JSON-serialisable evaluation of predictions at `threshold`.

    `subgroups` maps a name (say "site") to one value per prediction; missing values are
    grouped as "unknown". With `subgroup_intervals` each subgroup gets 95% bootstrap intervals
    too (off by default: training scores many subgroups and shows only their AUC).
    """
    label_array, probability_array = validate_predictions(labels, probabilities)
    threshold = _validate_threshold(threshold)
    at_threshold = threshold_metrics(label_array, probability_array, threshold)
    n_positive = int(label_array.sum())
    return {
        "n": len(label_array),
        "n_positive": n_positive,
        "n_negative": len(label_array) - n_positive,
        "threshold": threshold,
        "roc_auc": _auc_or_none(label_array, probability_array),
        "pr_auc": _average_precision_or_none(label_array, probability_array),
        **{
            name: at_threshold[name]
            for name in (
                "sensitivity",
                "specificity",
                "ppv",
                "npv",
                "f1",
                "balanced_accuracy",
                "accuracy",
            )
        },
        "confusion": {name: at_threshold[name] for name in ("tn", "fp", "fn", "tp")},
        "intervals": _proportion_intervals(
            _bootstrap_intervals(label_array, probability_array, threshold, n_bootstrap, seed),
            at_threshold,
        ),
        "roc": _roc_points(label_array, probability_array),
        "pr": _pr_points(label_array, probability_array),
        "calibration": _calibration_bins(label_array, probability_array),
        "subgroups": _subgroup_metrics(
            label_array,
            probability_array,
            threshold,
            subgroups or {},
            n_bootstrap if subgroup_intervals else 0,
            seed,
        ),
    }


def _none_if_nan(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def classification_report_table(labels, probabilities, threshold: float) -> list[dict]:
    """Per-class precision, recall, f1 and support, plus macro and weighted averages."""
    label_array, probability_array = validate_predictions(labels, probabilities)
    threshold = _validate_threshold(threshold)
    predictions = (probability_array >= threshold).astype(np.int64)
    report = classification_report(
        label_array,
        predictions,
        labels=[0, 1],
        target_names=list(CLASS_NAMES),
        output_dict=True,
        zero_division=np.nan,
    )
    return [
        {
            "class": row_name,
            "precision": _none_if_nan(report[row_name]["precision"]),
            "recall": _none_if_nan(report[row_name]["recall"]),
            "f1": _none_if_nan(report[row_name]["f1-score"]),
            "support": int(report[row_name]["support"]),
        }
        for row_name in (*CLASS_NAMES, "macro avg", "weighted avg")
    ]
