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
    """Metric, value and 95% bootstrap interval (where one was computed) of an evaluation."""
    intervals = evaluation.get("intervals") or {}
    rows = []
    for key, name in HEADLINE_METRICS.items():
        low, high = intervals.get(key) or (None, None)
        rows.append({"metric": name, "value": evaluation.get(key), "ci_low": low, "ci_high": high})
    return pd.DataFrame(rows)


def operating_point(test_predictions: pd.DataFrame, threshold: float) -> OperatingPoint:
    """Confusion counts and ratios of a run's stored test predictions at `threshold`."""
    counts = metrics.threshold_metrics(
        test_predictions["label"].to_numpy(), test_predictions["probability"].to_numpy(), threshold
    )
    return OperatingPoint(float(threshold), counts)


def classification_report(test_predictions: pd.DataFrame, threshold: float) -> pd.DataFrame:
    return pd.DataFrame(
        metrics.classification_report_table(
            test_predictions["label"].to_numpy(),
            test_predictions["probability"].to_numpy(),
            threshold,
        )
    )


def _format_interval(value: float | None, interval) -> str:
    if value is None:
        return "n/a"
    if not interval:
        return f"{value:.3f}"
    return f"{value:.3f} ({interval[0]:.3f}-{interval[1]:.3f})"


def comparison_table(cards: dict[str, dict]) -> pd.DataFrame:
    """Runs side by side: one column per run, one row per setting or test metric."""
    columns = {}
    for run_id, card in cards.items():
        test = (card.get("metrics") or {}).get("test") or {}
        intervals = test.get("intervals") or {}
        data = card.get("data") or {}
        column = {
            "backbone": card.get("backbone"),
            "input size": card.get("image_size"),
            "trained on": f"{data.get('source')} ({data.get('n_images')} images)",
            "sites": ", ".join(data.get("sites") or []),
            "threshold": f"{card['threshold']['value']:.3f} ({card['threshold'].get('rule')})",
            "test images": test.get("n"),
        }
        for key, name in HEADLINE_METRICS.items():
            column[name] = _format_interval(test.get(key), intervals.get(key))
        columns[run_id] = column
    return pd.DataFrame(columns)


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
                "model": run_id,
                "confirmed": evaluation["n"],
                "malignant": evaluation["n_positive"],
                "threshold": threshold,
                "ROC AUC": _format_interval(evaluation["roc_auc"], intervals["roc_auc"]),
                "sensitivity": _format_interval(
                    evaluation["sensitivity"], intervals["sensitivity"]
                ),
                "specificity": _format_interval(
                    evaluation["specificity"], intervals["specificity"]
                ),
                "PPV": evaluation["ppv"],
                "NPV": evaluation["npv"],
            }
        )
    return pd.DataFrame(rows)
