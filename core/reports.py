"""Tables for the Metrics and History pages, computed from run cards and database frames.

Everything here works on results already stored (a card's evaluation, a run's test
predictions, confirmed outcomes), so no model is loaded and no TensorFlow is imported.
"""

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd

from core import metrics

HEADLINE_METRICS = {
    "roc_auc": "ROC AUC",
    "pr_auc": "PR AUC (average precision)",
    "sensitivity": "Sensitivity",
    "specificity": "Specificity",
    "ppv": "PPV (precision)",
    "npv": "NPV",
    "f1": "F1",
    "balanced_accuracy": "Balanced accuracy",
    "accuracy": "Accuracy",
}
LABEL_VALUES = {"benign": 0, "malignant": 1}
# Shown for a metric that cannot be computed (one class only, nothing predicted positive);
# the same words the app's metric tiles use.
MISSING = "n/a"
REAL_WORLD_BOOTSTRAP = 200


@dataclass(frozen=True)
class OperatingPoint:
    """Counts and ratios at one threshold, and where that threshold sits on ROC and PR."""

    threshold: float
    counts: dict

    @property
    def roc_point(self) -> tuple[float, float] | None:
        sensitivity, specificity = self.counts["sensitivity"], self.counts["specificity"]
        if sensitivity is None or specificity is None:
            return None
        return 1.0 - specificity, sensitivity

    @property
    def pr_point(self) -> tuple[float, float] | None:
        recall, precision = self.counts["sensitivity"], self.counts["ppv"]
        return None if recall is None or precision is None else (recall, precision)


def card_from_row(row: pd.Series | dict) -> dict:
    """The card of a row of `Database.list_runs()`."""
    return json.loads(row["card_json"])


def headline_table(evaluation: dict) -> pd.DataFrame:
    """Metric, value and 95% bootstrap interval (where one was computed) of an evaluation.

    Values are floats, NaN where missing, so that number formats apply to whole columns.
    """
    intervals = evaluation.get("intervals") or {}
    rows = []
    for key, name in HEADLINE_METRICS.items():
        low, high = intervals.get(key) or (None, None)
        rows.append({"metric": name, "value": evaluation.get(key), "ci_low": low, "ci_high": high})
    return _floats(pd.DataFrame(rows), ("value", "ci_low", "ci_high"))


def _floats(table: pd.DataFrame, names: tuple[str, ...]) -> pd.DataFrame:
    # None in a column makes it an object column, which tables show as "None" and never format.
    return table.astype(dict.fromkeys(names, "float64"))


def operating_point(test_predictions: pd.DataFrame, threshold: float) -> OperatingPoint:
    """Confusion counts and ratios of a run's stored test predictions at `threshold`."""
    counts = metrics.threshold_metrics(
        test_predictions["label"].to_numpy(), test_predictions["probability"].to_numpy(), threshold
    )
    return OperatingPoint(float(threshold), counts)


def classification_report(test_predictions: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """Per-class precision, recall and F1 (floats, NaN where undefined) and integer support."""
    rows = metrics.classification_report_table(
        test_predictions["label"].to_numpy(), test_predictions["probability"].to_numpy(), threshold
    )
    return _floats(pd.DataFrame(rows), ("precision", "recall", "f1"))


def _format_number(value: float | None, digits: int = 3) -> str:
    return MISSING if value is None or pd.isna(value) else f"{value:.{digits}f}"


def _format_interval(value: float | None, interval) -> str:
    """ "0.871 (0.820–0.915)": a value with its 95% interval, or the value alone."""
    if not interval or value is None:
        return _format_number(value)
    return f"{value:.3f} ({interval[0]:.3f}–{interval[1]:.3f})"


def comparison_table(cards: dict[str, dict]) -> pd.DataFrame:
    """Runs side by side, as text: one column per run, one row per setting or test metric."""
    columns = {}
    for run_id, card in cards.items():
        test = (card.get("metrics") or {}).get("test") or {}
        intervals = test.get("intervals") or {}
        data = card.get("data") or {}
        threshold = card["threshold"]
        column = {
            "Backbone": _text(card.get("backbone")),
            "Input size": _text(card.get("image_size"), " px"),
            "Trained on": f"{_text(data.get('source'))} ({_text(data.get('n_images'))} images)",
            "Sites": ", ".join(data.get("sites") or []) or MISSING,
            "Threshold": f"{threshold['value']:.3f} ({_text(threshold.get('rule'))})",
            "Test images": _text(test.get("n")),
        }
        for key, name in HEADLINE_METRICS.items():
            column[name] = _format_interval(test.get(key), intervals.get(key))
        columns[run_id] = column
    return pd.DataFrame(columns)


def _text(value, unit: str = "") -> str:
    return MISSING if value is None else f"{value}{unit}"


def roc_curves(cards: dict[str, dict]) -> dict[str, dict]:
    """The stored test ROC curves, with their AUCs, for `charts.roc_figure`."""
    curves = {}
    for run_id, card in cards.items():
        test = (card.get("metrics") or {}).get("test") or {}
        if test.get("roc", {}).get("fpr"):
            curves[run_id] = {**test["roc"], "auc": test.get("roc_auc")}
    return curves


def real_world_metrics(confirmed: pd.DataFrame) -> pd.DataFrame:
    """Per model, how its stored predictions fared against confirmed diagnoses.

    Uses each model's own stored threshold (the card's, at prediction time); AUC needs both
    confirmed classes, and stays empty otherwise.
    """
    rows = []
    for run_id, group in confirmed.groupby("run_id", sort=True):
        labels = group["confirmed_label"].map(LABEL_VALUES).to_numpy(dtype=np.int64)
        threshold = float(group["threshold"].iloc[-1])
        evaluation = metrics.evaluate(
            labels, group["probability"].to_numpy(), threshold, n_bootstrap=REAL_WORLD_BOOTSTRAP
        )
        intervals = evaluation["intervals"]
        rows.append(
            {
                "Model": run_id,
                "Confirmed": evaluation["n"],
                "Malignant": evaluation["n_positive"],
                "Threshold": _format_number(threshold),
                "ROC AUC": _format_interval(evaluation["roc_auc"], intervals["roc_auc"]),
                "Sensitivity": _format_interval(
                    evaluation["sensitivity"], intervals["sensitivity"]
                ),
                "Specificity": _format_interval(
                    evaluation["specificity"], intervals["specificity"]
                ),
                "PPV": _format_number(evaluation["ppv"]),
                "NPV": _format_number(evaluation["npv"]),
            }
        )
    return pd.DataFrame(rows)
