"""Plotly figures for the evaluation and monitoring pages.

Figures take results that were already computed (evaluation dicts from `core.metrics`,
history frames, SQL aggregates), so drawing never repeats a computation and this module
needs only Plotly.
"""

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

TEMPLATE = "plotly_white"
CLASS_NAMES = ("benign", "malignant")
FIGURE_HEIGHT = 420
CHANCE_LINE = {"dash": "dash", "color": "gray", "width": 1}


def _layout(figure: go.Figure, title: str, x_title: str, y_title: str) -> go.Figure:
    figure.update_layout(
        title=title,
        template=TEMPLATE,
        height=FIGURE_HEIGHT,
        margin={"l": 60, "r": 30, "t": 60, "b": 50},
        legend={"orientation": "h", "yanchor": "bottom", "y": -0.3},
    )
    figure.update_xaxes(title_text=x_title)
    figure.update_yaxes(title_text=y_title)
    return figure


def confusion_matrix_figure(confusion: dict, normalize: bool = False) -> go.Figure:
    """2x2 heatmap: rows are true classes, columns predicted; cells show counts or row shares."""
    counts = [
        [confusion["tn"], confusion["fp"]],
        [confusion["fn"], confusion["tp"]],
    ]
    if normalize:
        values = [[cell / sum(row) if sum(row) else 0.0 for cell in row] for row in counts]
        text = [
            [f"{share:.1%}<br>({count})" for share, count in zip(shares, row, strict=True)]
            for shares, row in zip(values, counts, strict=True)
        ]
    else:
        values = counts
        text = [[str(count) for count in row] for row in counts]
    figure = go.Figure(
        go.Heatmap(
            z=values,
            x=[f"predicted {name}" for name in CLASS_NAMES],
            y=[f"true {name}" for name in CLASS_NAMES],
            text=text,
            texttemplate="%{text}",
            textfont={"size": 18},
            colorscale="Blues",
            showscale=False,
            hovertemplate="%{y}, %{x}: %{text}<extra></extra>",
        )
    )
    figure.update_yaxes(autorange="reversed")
    title = "Confusion matrix (row-normalised)" if normalize else "Confusion matrix"
    return _layout(figure, title, "Predicted class", "True class")


def _curve_name(name: str, curve: dict, score_key: str, score_label: str) -> str:
    score = curve.get(score_key)
    return f"{name} ({score_label} {score:.3f})" if score is not None else name


def roc_figure(
    curves: dict[str, dict],
    operating_points: dict[str, tuple[float, float]] | None = None,
) -> go.Figure:
    """ROC curves of several runs; `curves[name]` is an evaluation's "roc", plus optional "auc".

    `operating_points[name]` is (false positive rate, true positive rate) at the threshold.
    """
    figure = go.Figure()
    figure.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line=CHANCE_LINE, name="chance"))
    for name, curve in curves.items():
        thresholds = curve.get("thresholds")
        threshold_hover = "<br>threshold %{customdata:.3f}" if thresholds else ""
        figure.add_trace(
            go.Scatter(
                x=curve["fpr"],
                y=curve["tpr"],
                customdata=thresholds,
                mode="lines",
                name=_curve_name(name, curve, "auc", "AUC"),
                hovertemplate=(
                    f"FPR %{{x:.3f}}<br>TPR %{{y:.3f}}{threshold_hover}<extra>{name}</extra>"
                ),
            )
        )
    for name, (false_positive_rate, true_positive_rate) in (operating_points or {}).items():
        figure.add_trace(
            go.Scatter(
                x=[false_positive_rate],
                y=[true_positive_rate],
                mode="markers",
                marker={"size": 12, "symbol": "x"},
                name=f"{name} operating point",
                hovertemplate=f"{name}<br>FPR %{{x:.3f}}<br>TPR %{{y:.3f}}<extra></extra>",
            )
        )
    figure.update_xaxes(range=[0, 1])
    figure.update_yaxes(range=[0, 1.02])
    return _layout(
        figure, "ROC curve", "False positive rate (1 - specificity)", "True positive rate"
    )


def pr_figure(
    curves: dict[str, dict],
    operating_points: dict[str, tuple[float, float]] | None = None,
    prevalence: float | None = None,
) -> go.Figure:
    """Precision-recall curves; `curves[name]` is an evaluation's "pr", plus optional "ap".

    `operating_points[name]` is (recall, precision); `prevalence` draws the no-skill line.
    """
    figure = go.Figure()
    if prevalence is not None:
        figure.add_trace(
            go.Scatter(
                x=[0, 1],
                y=[prevalence, prevalence],
                mode="lines",
                line=CHANCE_LINE,
                name=f"prevalence ({prevalence:.3f})",
            )
        )
    for name, curve in curves.items():
        figure.add_trace(
            go.Scatter(
                x=curve["recall"],
                y=curve["precision"],
                mode="lines",
                name=_curve_name(name, curve, "ap", "AP"),
                hovertemplate=f"recall %{{x:.3f}}<br>precision %{{y:.3f}}<extra>{name}</extra>",
            )
        )
    for name, (recall, precision) in (operating_points or {}).items():
        figure.add_trace(
            go.Scatter(
                x=[recall],
                y=[precision],
                mode="markers",
                marker={"size": 12, "symbol": "x"},
                name=f"{name} operating point",
            )
        )
    figure.update_xaxes(range=[0, 1])
    figure.update_yaxes(range=[0, 1.02])
    return _layout(figure, "Precision-recall curve", "Recall (sensitivity)", "Precision (PPV)")


def calibration_figure(bins: list[dict]) -> go.Figure:
    """Reliability diagram: observed malignant fraction against mean predicted probability."""
    filled = [bin_ for bin_ in bins if bin_["count"]]
    figure = make_subplots(specs=[[{"secondary_y": True}]])
    figure.add_trace(
        go.Bar(
            x=[(bin_["lower"] + bin_["upper"]) / 2 for bin_ in bins],
            y=[bin_["count"] for bin_ in bins],
            width=[bin_["upper"] - bin_["lower"] for bin_ in bins],
            name="images per bin",
            marker={"color": "lightgray"},
            opacity=0.6,
            hovertemplate="%{y} images<extra></extra>",
        ),
        secondary_y=True,
    )
    figure.add_trace(
        go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line=CHANCE_LINE, name="perfect calibration")
    )
    figure.add_trace(
        go.Scatter(
            x=[bin_["mean_predicted"] for bin_ in filled],
            y=[bin_["fraction_positive"] for bin_ in filled],
            customdata=[bin_["count"] for bin_ in filled],
            mode="lines+markers",
            name="model",
            hovertemplate=(
                "mean predicted %{x:.3f}<br>fraction malignant %{y:.3f}"
                "<br>%{customdata} images<extra></extra>"
            ),
        )
    )
    _layout(figure, "Calibration (reliability diagram)", "Mean predicted probability", "")
    figure.update_xaxes(range=[0, 1])
    figure.update_yaxes(title_text="Fraction malignant", range=[0, 1], secondary_y=False)
    figure.update_yaxes(title_text="Images", secondary_y=True, showgrid=False)
    return figure


def learning_curves_figure(history: pd.DataFrame) -> go.Figure:
    """Loss and AUC per epoch, train against validation, across the head and fine-tune phases."""
    history = history.reset_index(drop=True)
    epoch_index = list(range(1, len(history) + 1))
    hover_text = [
        f"{phase} epoch {epoch}"
        for phase, epoch in zip(history["phase"], history["epoch"], strict=True)
    ]
    figure = make_subplots(rows=1, cols=2, subplot_titles=("Loss", "ROC AUC"))
    for column, (metric, label) in enumerate((("loss", "loss"), ("auc", "AUC")), start=1):
        for prefix, split, dash in (("", "train", "solid"), ("val_", "validation", "dash")):
            figure.add_trace(
                go.Scatter(
                    x=epoch_index,
                    y=history[prefix + metric],
                    text=hover_text,
                    mode="lines+markers",
                    line={"dash": dash},
                    name=f"{split} {label}",
                    hovertemplate=f"%{{text}}<br>{split} {label} %{{y:.4f}}<extra></extra>",
                ),
                row=1,
                col=column,
            )
    fine_tune_rows = history.index[history["phase"] == "fine_tune"]
    if len(fine_tune_rows):
        # The boundary sits half an epoch before the first fine-tune epoch.
        for column in (1, 2):
            figure.add_vline(
                x=fine_tune_rows[0] + 0.5,
                line={"dash": "dot", "color": "gray"},
                annotation_text="fine-tune starts" if column == 1 else None,
                row=1,
                col=column,
            )
    _layout(figure, "Learning curves", "Epoch (both phases)", "")
    return figure


def subgroup_auc_figure(subgroups: dict, key: str) -> go.Figure:
    """Horizontal AUC bars per value of subgroup `key`; values without an AUC become a note."""
    groups = subgroups[key]
    with_auc = {value: row for value, row in groups.items() if row["roc_auc"] is not None}
    without_auc = [value for value, row in groups.items() if row["roc_auc"] is None]
    figure = go.Figure(
        go.Bar(
            x=[row["roc_auc"] for row in with_auc.values()],
            y=[f"{value} (n={row['n']})" for value, row in with_auc.items()],
            orientation="h",
            text=[f"{row['roc_auc']:.3f}" for row in with_auc.values()],
            textposition="auto",
            customdata=[row["n_positive"] for row in with_auc.values()],
            hovertemplate="%{y}<br>AUC %{x:.3f}<br>%{customdata} malignant<extra></extra>",
            name="ROC AUC",
        )
    )
    if without_auc:
        figure.add_annotation(
            text="No AUC (one class only): "
            + ", ".join(f"{value} (n={groups[value]['n']})" for value in without_auc),
            xref="paper",
            yref="paper",
            x=0,
            y=-0.25,
            showarrow=False,
            align="left",
        )
    figure.update_xaxes(range=[0, 1])
    return _layout(figure, f"ROC AUC by {key}", "ROC AUC", key)


def probability_histogram_figure(frame: pd.DataFrame) -> go.Figure:
    """Predicted probability distribution per model from (model, bin_lower, count) rows."""
    figure = go.Figure()
    bin_width = _bin_width(frame["bin_lower"])
    for model, rows in frame.groupby("model", sort=True):
        figure.add_trace(
            go.Bar(
                x=rows["bin_lower"] + bin_width / 2,
                y=rows["count"],
                width=bin_width,
                name=str(model),
                opacity=0.6,
                hovertemplate=(
                    f"{model}<br>probability %{{x:.2f}} ± {bin_width / 2:.2f}"
                    "<br>%{y} predictions<extra></extra>"
                ),
            )
        )
    figure.update_layout(barmode="overlay")
    figure.update_xaxes(range=[0, 1])
    return _layout(figure, "Predicted probability of malignancy", "Probability", "Predictions")


def _bin_width(bin_lowers: pd.Series) -> float:
    """Smallest gap between distinct bin edges; 0.1 when there is only one bin."""
    gaps = pd.Series(sorted(set(bin_lowers))).diff().dropna()
    return float(gaps.min()) if len(gaps) else 0.1


def predictions_per_day_figure(frame: pd.DataFrame) -> go.Figure:
    """Daily prediction counts (bars) and the share predicted malignant (line, right axis)."""
    figure = make_subplots(specs=[[{"secondary_y": True}]])
    figure.add_trace(
        go.Bar(
            x=frame["day"],
            y=frame["count"],
            name="predictions",
            hovertemplate="%{x}<br>%{y} predictions<extra></extra>",
        ),
        secondary_y=False,
    )
    figure.add_trace(
        go.Scatter(
            x=frame["day"],
            y=frame["malignant_share"],
            mode="lines+markers",
            name="share malignant",
            hovertemplate="%{x}<br>%{y:.1%} malignant<extra></extra>",
        ),
        secondary_y=True,
    )
    _layout(figure, "Predictions per day", "Day", "")
    figure.update_yaxes(title_text="Predictions", secondary_y=False)
    figure.update_yaxes(
        title_text="Share malignant", tickformat=".0%", range=[0, 1], secondary_y=True
    )
    return figure
