"""Tests for the figures of core.analysis.charts and core.analysis.history_charts: each builds
and serialises."""

import subprocess
import sys

import pandas as pd
import plotly.graph_objects as go
import pytest

from core.analysis import charts, history_charts
from core.analysis.metrics import evaluate


def _evaluation() -> dict:
    labels = [0, 0, 1, 1, 0, 1, 0, 1]
    probabilities = [0.1, 0.4, 0.35, 0.8, 0.2, 0.9, 0.6, 0.7]
    sites = ["head", "head", "torso", "torso", "torso", "torso", "", "leg"]
    return evaluate(labels, probabilities, 0.5, subgroups={"site": sites}, n_bootstrap=20)


def _check(figure: go.Figure, trace_count: int) -> None:
    assert isinstance(figure, go.Figure)
    assert len(figure.data) == trace_count
    assert figure.layout.title.text
    figure.to_json()


def test_module_does_not_import_sklearn() -> None:
    code = (
        "import sys, core.analysis.charts, core.analysis.history_charts; "
        "sys.exit('sklearn' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_confusion_matrix_figure() -> None:
    confusion = {"tn": 5, "fp": 1, "fn": 2, "tp": 8}
    figure = charts.confusion_matrix_figure(confusion)
    _check(figure, 1)
    assert list(figure.data[0].z[1]) == [2, 8]
    normalized = charts.confusion_matrix_figure(confusion, normalize=True)
    _check(normalized, 1)
    assert list(normalized.data[0].z[1]) == [0.2, 0.8]


def test_roc_and_pr_figures() -> None:
    evaluation = _evaluation()
    curves = {
        "run-a": {**evaluation["roc"], "auc": evaluation["roc_auc"]},
        "run-b": evaluation["roc"],
    }
    figure = charts.roc_figure(curves, {"run-b": (0.25, 0.75), "run-a": (0.2, 0.7)})
    _check(figure, 5)  # chance line, two curves, two operating points
    assert "AUC" in figure.data[1].name and figure.data[2].name == "run-b"
    # Each cross has its own curve's colour, whatever order the points come in.
    assert figure.data[3].name == "run-b at its threshold"
    assert figure.data[3].marker.color == figure.data[2].line.color
    assert figure.data[4].marker.color == figure.data[1].line.color != figure.data[2].line.color
    assert figure.layout.legend.y == 0.02  # inside, in the corner a good curve leaves empty
    below = charts.roc_figure(curves, legend_below=True)
    assert below.layout.legend.yref == "container" and below.layout.legend.orientation == "h"
    with pytest.raises(ValueError, match="names no curve"):
        charts.roc_figure(curves, {"run-c": (0.1, 0.1)})
    pr = charts.pr_figure(
        {"run-a": {**evaluation["pr"], "ap": evaluation["pr_auc"]}},
        {"run-a": (0.75, 0.75)},
        prevalence=0.5,
    )
    _check(pr, 3)


def test_calibration_figure() -> None:
    figure = charts.calibration_figure(_evaluation()["calibration"])
    _check(figure, 3)  # counts, diagonal, reliability line
    assert all(value is not None for value in figure.data[2].y)


def test_learning_curves_figure() -> None:
    history = pd.DataFrame(
        {
            "phase": ["head", "head", "fine_tune", "fine_tune", "fine_tune"],
            "epoch": [1, 2, 1, 2, 3],
            "loss": [0.7, 0.6, 0.5, 0.45, 0.4],
            "auc": [0.7, 0.75, 0.8, 0.82, 0.85],
            "val_loss": [0.72, 0.65, 0.6, 0.58, 0.57],
            "val_auc": [0.68, 0.72, 0.77, 0.79, 0.8],
            "seconds": [3.0] * 5,
        }
    )
    figure = charts.learning_curves_figure(history)
    _check(figure, 5)  # train and validation, loss and AUC, and the fine-tune line's name
    assert list(figure.data[0].x) == [1, 2, 3, 4, 5]
    assert any(shape.x0 == 2.5 for shape in figure.layout.shapes)
    assert figure.data[-1].name == "fine-tune starts" and not figure.layout.annotations[2:]
    _check(charts.learning_curves_figure(history[history["phase"] == "head"]), 4)


def test_subgroup_auc_figure() -> None:
    figure = charts.subgroup_auc_figure(_evaluation()["subgroups"], "site")
    _check(figure, 1)
    # "head" and "leg" have one class: a note, not a bar.
    assert list(figure.data[0].y) == ["torso (n=4)"]
    assert "head" in figure.layout.annotations[0].text
    assert figure.layout.yaxis.title.text == "Anatomical site"


def test_subgroup_labels_are_shown_in_full_on_several_lines() -> None:
    long_source = "ISIC 2020 challenge training set (Sydney Melanoma Diagnostic Centre)"
    subgroups = {"source": {long_source: {"n": 9, "n_positive": 3, "roc_auc": 0.8}}}
    figure = charts.subgroup_auc_figure(subgroups, "source")
    label = figure.data[0].y[0]
    assert "<br>" in label and label.replace("<br>", " ") == f"{long_source} (n=9)"
    assert all(len(line) <= charts.LABEL_CHARACTERS for line in label.split("<br>"))
    assert figure.data[0].customdata[0][0] == f"{long_source} (n=9)"


def test_probability_histogram_figure() -> None:
    frame = pd.DataFrame(
        {
            "model": ["a", "a", "b", "b", "b"],
            "bin_lower": [0.0, 0.1, 0.0, 0.5, 0.9],
            "count": [3, 4, 1, 2, 5],
        }
    )
    figure = history_charts.probability_histogram_figure(frame)
    _check(figure, 2)
    assert list(figure.data[1].y) == [1, 2, 5]


def test_predictions_per_day_figure() -> None:
    frame = pd.DataFrame(
        {
            "day": pd.to_datetime(["2024-05-01", "2024-05-02", "2024-05-04"]),
            "count": [10, 4, 7],
            "malignant_share": [0.1, 0.25, 0.0],
        }
    )
    _check(history_charts.predictions_per_day_figure(frame), 2)


def test_crossval_forest_figure_shows_every_source_in_full_and_the_in_source_line() -> None:
    from app_fixtures import crossval_payload

    crossval = crossval_payload()
    figure = charts.crossval_forest_figure(crossval, in_source_auc=0.91)
    _check(figure, 1)
    labels = list(figure.data[0].y)
    assert labels[0].startswith("ISIC 2017 challenge<br>n=120, ")
    assert labels[1].startswith("ISIC Archive 9-class set<br>")
    low, high = crossval["folds"][0]["metrics"]["intervals"]["roc_auc"]
    auc = crossval["folds"][0]["metrics"]["roc_auc"]
    assert figure.data[0].error_x.array[0] == high - auc
    assert figure.data[0].error_x.arrayminus[0] == auc - low
    lines = [shape.x0 for shape in figure.layout.shapes]
    assert 0.91 in lines and 0.5 in lines
    label = figure.layout.annotations[0]
    assert label.text == "in-source test AUC 0.910" and label.yref == "paper" and label.y == 1
    _check(charts.crossval_forest_figure(crossval), 1)
