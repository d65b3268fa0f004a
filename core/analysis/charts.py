"""Plotly figures of a model's evaluation: confusion matrix, ROC and PR curves, calibration,
learning curves, AUC by subgroup and by held-out source.

Figures take results that were already computed (evaluation dicts from `core.analysis.metrics`,
history frames), so drawing never repeats a computation and this module needs only Plotly.
"""

import math
import textwrap

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from core.analysis.chart_style import (
    BELOW,
    BOTTOM_LEFT,
    BOTTOM_RIGHT,
    CHANCE_LINE,
    COLOURWAY,
    THEME_COLOUR,
    TITLE_ROW,
    TOP_LEFT,
    colour,
    count_axis,
    layout,
    legend_inside,
)
from core.inputs.labels import CLASS_NAMES

SUBGROUP_TITLES = {"site": "Anatomical site", "source": "Source"}
LABEL_CHARACTERS = 24
NOTE_CHARACTERS = 40
NOTE_LINE_PIXELS = 16


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
    return layout(figure, title, "Predicted class", "True class")


def _curve_name(name: str, curve: dict, score_key: str, score_label: str) -> str:
    score = curve.get(score_key)
    return f"{name} ({score_label} {score:.3f})" if score is not None else name


def _add_operating_points(
    figure, curves: dict, operating_points, point_label: str, axis_names
) -> None:
    """A cross on each named curve at its threshold, in that curve's colour."""
    x_name, y_name = axis_names
    order = list(curves)
    for name, (x, y) in (operating_points or {}).items():
        if name not in order:
            raise ValueError(f"operating point {name!r} names no curve; curves: {order}")
        figure.add_trace(
            go.Scatter(
                x=[x],
                y=[y],
                mode="markers",
                marker={"size": 12, "symbol": "x", "color": colour(order.index(name))},
                name=f"{name} {point_label}",
                hovertemplate=(
                    f"{name} {point_label}<br>{x_name} %{{x:.3f}}<br>{y_name} %{{y:.3f}}"
                    "<extra></extra>"
                ),
            )
        )


def roc_figure(
    curves: dict[str, dict],
    operating_points: dict[str, tuple[float, float]] | None = None,
    title: str = "ROC curve",
    point_label: str = "at its threshold",
    legend_below: bool = False,
) -> go.Figure:
    """ROC curves of several runs; `curves[name]` is an evaluation's "roc", plus optional "auc".

    `operating_points[name]` is the (false positive rate, true positive rate) of curve `name`
    at its threshold, named "<name> <point_label>". `legend_below` moves the legend out of the
    plot, for curves near the diagonal, which leave no corner free.
    """
    figure = go.Figure()
    figure.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line=CHANCE_LINE, name="chance"))
    for index, (name, curve) in enumerate(curves.items()):
        thresholds = curve.get("thresholds")
        threshold_hover = "<br>threshold %{customdata:.3f}" if thresholds else ""
        figure.add_trace(
            go.Scatter(
                x=curve["fpr"],
                y=curve["tpr"],
                customdata=thresholds,
                mode="lines",
                line={"color": colour(index)},
                name=_curve_name(name, curve, "auc", "AUC"),
                hovertemplate=(
                    f"FPR %{{x:.3f}}<br>TPR %{{y:.3f}}{threshold_hover}<extra>{name}</extra>"
                ),
            )
        )
    _add_operating_points(figure, curves, operating_points, point_label, ("FPR", "TPR"))
    figure.update_xaxes(range=[0, 1])
    figure.update_yaxes(range=[0, 1.02])
    # Below and right of a good ROC curve is the corner a curve leaves empty.
    return layout(
        figure,
        title,
        "False positive rate (1 - specificity)",
        "True positive rate",
        BELOW if legend_below else legend_inside(BOTTOM_RIGHT),
    )


def pr_figure(
    curves: dict[str, dict],
    operating_points: dict[str, tuple[float, float]] | None = None,
    prevalence: float | None = None,
    point_label: str = "at its threshold",
) -> go.Figure:
    """Precision-recall curves; `curves[name]` is an evaluation's "pr", plus optional "ap".

    `operating_points[name]` is the (recall, precision) of curve `name` at its threshold,
    named as in `roc_figure`; `prevalence` draws the no-skill line.
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
    for index, (name, curve) in enumerate(curves.items()):
        figure.add_trace(
            go.Scatter(
                x=curve["recall"],
                y=curve["precision"],
                mode="lines",
                line={"color": colour(index)},
                name=_curve_name(name, curve, "ap", "AP"),
                hovertemplate=f"recall %{{x:.3f}}<br>precision %{{y:.3f}}<extra>{name}</extra>",
            )
        )
    _add_operating_points(figure, curves, operating_points, point_label, ("recall", "precision"))
    figure.update_xaxes(range=[0, 1])
    figure.update_yaxes(range=[0, 1.02])
    # Below a precision-recall curve, at low recall, is the corner a curve leaves empty.
    return layout(
        figure,
        "Precision-recall curve",
        "Recall (sensitivity)",
        "Precision (PPV)",
        legend_inside(BOTTOM_LEFT),
    )


def calibration_figure(bins: list[dict]) -> go.Figure:
    """Reliability diagram: observed malignant fraction against mean predicted probability."""
    filled = [bin_ for bin_ in bins if bin_["count"]]
    counts_top = max((bin_["count"] for bin_ in bins), default=1) / 0.4
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
        secondary_y=False,
    )
    # The curves go on the overlaying axis, which Plotly draws above the bars.
    figure.add_trace(
        go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line=CHANCE_LINE, name="perfect calibration"),
        secondary_y=True,
    )
    figure.add_trace(
        go.Scatter(
            x=[bin_["mean_predicted"] for bin_ in filled],
            y=[bin_["fraction_positive"] for bin_ in filled],
            customdata=[bin_["count"] for bin_ in filled],
            mode="lines+markers",
            marker={"color": THEME_COLOUR},
            name="model",
            hovertemplate=(
                "mean predicted %{x:.3f}<br>fraction malignant %{y:.3f}"
                "<br>%{customdata} images<extra></extra>"
            ),
        ),
        secondary_y=True,
    )
    layout(
        figure,
        "Calibration (reliability diagram)",
        "Mean predicted probability",
        "",
        legend_inside(TOP_LEFT),
    )
    figure.update_xaxes(range=[0, 1])
    # Overlaying axes copy the ticks of the axis below by default: the count axis's, here.
    figure.update_yaxes(
        title_text="Fraction malignant",
        range=[0, 1.02],
        side="left",
        tickmode="linear",
        dtick=0.2,
        showgrid=True,
        secondary_y=True,
    )
    # The count bars fill the lower 40% only, so they stay clear of the reliability curve.
    figure.update_yaxes(
        title_text="Images",
        side="right",
        showgrid=False,
        secondary_y=False,
        range=[0, max(counts_top, 1)],
        **count_axis(counts_top),
    )
    return figure


MIN_LOSS_SPAN = 0.05
LEARNING_SPLITS = (
    # Validation markers are larger and hollow so a train point at the same spot stays visible.
    ("", "train", {"dash": "solid", "color": COLOURWAY[0]}, {"symbol": "circle", "size": 7}),
    (
        "val_",
        "validation",
        {"dash": "dash", "color": COLOURWAY[1]},
        {"symbol": "diamond-open", "size": 11, "line": {"width": 2}},
    ),
)


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
        for prefix, split, line, marker in LEARNING_SPLITS:
            figure.add_trace(
                go.Scatter(
                    x=epoch_index,
                    y=history[prefix + metric],
                    text=hover_text,
                    mode="lines+markers",
                    line=line,
                    marker=marker,
                    name=split,
                    legendgroup=split,
                    showlegend=column == 1,
                    hovertemplate=f"%{{text}}<br>{split} {label} %{{y:.4f}}<extra></extra>",
                ),
                row=1,
                col=column,
            )
    _mark_fine_tune_start(figure, history)
    layout(figure, "Learning curves", "Epoch (both phases)", "", TITLE_ROW)
    figure.update_xaxes(range=[0.5, len(history) + 0.5], dtick=_epoch_tick_step(len(history)))
    figure.update_yaxes(range=_loss_axis_range(history), tickformat=".3f", row=1, col=1)
    figure.update_yaxes(range=[_auc_axis_floor(history), 1.0], tickformat=".2f", row=1, col=2)
    return figure


FINE_TUNE_LINE = {"dash": "dot", "color": "gray", "width": 2}


def _mark_fine_tune_start(figure: go.Figure, history: pd.DataFrame) -> None:
    fine_tune_rows = history.index[history["phase"] == "fine_tune"]
    if not len(fine_tune_rows):
        return
    # The boundary sits half an epoch before the first fine-tune epoch. It is named in the
    # legend: a label on the plot collides with the panel title or the curves when narrow.
    for column in (1, 2):
        figure.add_vline(x=fine_tune_rows[0] + 0.5, line=FINE_TUNE_LINE, row=1, col=column)
    figure.add_trace(
        go.Scatter(x=[None], y=[None], mode="lines", line=FINE_TUNE_LINE, name="fine-tune starts"),
        row=1,
        col=1,
    )


def _epoch_tick_step(epochs: int) -> int:
    """A whole number of epochs between ticks, so that about ten ticks at most are drawn."""
    return max(1, math.ceil(epochs / 10))


def _loss_axis_range(history: pd.DataFrame) -> list[float] | None:
    """The losses with a margin, at least MIN_LOSS_SPAN tall so that no two ticks read alike."""
    losses = pd.concat([history["loss"], history["val_loss"]]).dropna()
    if losses.empty:
        return None
    middle, span = (losses.max() + losses.min()) / 2, losses.max() - losses.min()
    half = max(span * 1.1, MIN_LOSS_SPAN) / 2
    return [float(middle - half), float(middle + half)]


def _auc_axis_floor(history: pd.DataFrame) -> float:
    """0.05 below the lowest AUC, rounded down to a tenth, so close curves stay apart."""
    lowest = pd.concat([history["auc"], history["val_auc"]]).min()
    if pd.isna(lowest):
        return 0.0
    return max(0.0, math.floor((float(lowest) - 0.05) * 10) / 10)


def subgroup_auc_figure(subgroups: dict, key: str) -> go.Figure:
    """Horizontal AUC bars per value of subgroup `key`; values without an AUC become a note."""
    groups = subgroups[key]
    with_auc = {value: row for value, row in groups.items() if row["roc_auc"] is not None}
    without_auc = [value for value, row in groups.items() if row["roc_auc"] is None]
    labels = [f"{value} (n={row['n']})" for value, row in with_auc.items()]
    figure = go.Figure(
        go.Bar(
            x=[row["roc_auc"] for row in with_auc.values()],
            y=[_wrap_label(f"{value} (n={row['n']})") for value, row in with_auc.items()],
            orientation="h",
            marker={"color": THEME_COLOUR},
            text=[f"{row['roc_auc']:.3f}" for row in with_auc.values()],
            textposition="auto",
            customdata=[
                [label, row["n_positive"]]
                for label, row in zip(labels, with_auc.values(), strict=True)
            ],
            hovertemplate=(
                "%{customdata[0]}<br>AUC %{x:.3f}<br>%{customdata[1]} malignant<extra></extra>"
            ),
            name="ROC AUC",
        )
    )
    figure.add_vline(x=0.5, line=CHANCE_LINE, layer="below")
    title = SUBGROUP_TITLES.get(key, key.replace("_", " ").capitalize())
    layout(figure, f"ROC AUC by {title.lower()}", "ROC AUC (dashed line: chance)", title)
    figure.update_xaxes(range=[0, 1])
    note_lines = _note_below(
        figure, [f"{value} (n={groups[value]['n']})" for value in without_auc]
    )
    # The height follows the number of bars so that one bar is not drawn a plot-area thick.
    figure.update_layout(
        height=max(260, 150 + 34 * len(with_auc)) + NOTE_LINE_PIXELS * note_lines,
        margin={"b": 60 + NOTE_LINE_PIXELS * note_lines},
    )
    return figure


def _wrap_label(label: str) -> str:
    """A category label on lines of at most LABEL_CHARACTERS, so that none is cut off.

    Plotly gives long category labels the plot's width and squeezes the bars instead.
    """
    return "<br>".join(textwrap.wrap(label, LABEL_CHARACTERS))


def _note_below(figure: go.Figure, values_without_auc: list[str]) -> int:
    """Lists subgroups with one class only under the x-axis title; returns its line count."""
    if not values_without_auc:
        return 0
    text = "No AUC (one class only): " + ", ".join(values_without_auc)
    lines = textwrap.wrap(text, NOTE_CHARACTERS)
    figure.add_annotation(
        text="<br>".join(lines),
        xref="paper",
        yref="paper",
        x=0,
        y=0,
        xanchor="left",
        yanchor="top",
        # Pixels below the plot area: clear of the tick labels and the axis title.
        yshift=-48,
        showarrow=False,
        align="left",
        font={"size": 11, "color": "gray"},
    )
    return len(lines)


def crossval_forest_figure(crossval: dict, in_source_auc: float | None = None) -> go.Figure:
    """ROC AUC with its 95% interval per held-out source; a line at the in-source test AUC.

    Every label is drawn in full, on two lines: the source, then its image counts.
    """
    folds = [fold for fold in crossval["folds"] if (fold.get("metrics") or {}).get("roc_auc")]
    aucs = [fold["metrics"]["roc_auc"] for fold in folds]
    intervals = [
        (fold["metrics"].get("intervals") or {}).get("roc_auc") or (auc, auc)
        for fold, auc in zip(folds, aucs, strict=True)
    ]
    labels = [
        f"{fold['held_out']}<br>n={fold['metrics'].get('n')}, "
        f"{fold['metrics'].get('n_positive')} malignant"
        for fold in folds
    ]
    figure = go.Figure(
        go.Scatter(
            x=aucs,
            y=labels,
            mode="markers",
            marker={"color": THEME_COLOUR, "size": 11},
            error_x={
                "type": "data",
                "symmetric": False,
                "array": [high - auc for auc, (_, high) in zip(aucs, intervals, strict=True)],
                "arrayminus": [auc - low for auc, (low, _) in zip(aucs, intervals, strict=True)],
                "color": THEME_COLOUR,
            },
            customdata=intervals,
            hovertemplate=(
                "%{y}<br>AUC %{x:.3f} (%{customdata[0]:.3f}-%{customdata[1]:.3f})<extra></extra>"
            ),
            name="held-out source",
        )
    )
    _mark_reference_lines(figure, in_source_auc)
    layout(figure, "ROC AUC on each held-out source", "ROC AUC (95% interval)", "")
    lowest = min([0.5, *(low for low, _ in intervals)])
    figure.update_xaxes(range=[math.floor(lowest * 20) / 20, 1.0])
    figure.update_yaxes(autorange="reversed", automargin=True)
    figure.update_layout(height=max(280, 170 + 56 * len(folds)), showlegend=False)
    return figure


def _mark_reference_lines(figure: go.Figure, in_source_auc: float | None) -> None:
    figure.add_vline(x=0.5, line=CHANCE_LINE, layer="below")
    if in_source_auc is not None:
        figure.add_vline(x=in_source_auc, line={"dash": "dash", "color": COLOURWAY[1], "width": 2})
        # Above the plot area, clear of the sources' markers.
        figure.add_annotation(
            text=f"in-source test AUC {in_source_auc:.3f}",
            x=in_source_auc,
            xref="x",
            y=1,
            yref="paper",
            yanchor="bottom",
            xanchor="right",
            showarrow=False,
            font={"color": COLOURWAY[1], "size": 11},
        )
