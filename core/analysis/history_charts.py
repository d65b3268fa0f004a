"""Plotly figures of the History page: predictions per day and their probabilities.

Figures take SQL aggregates that were already computed, so drawing never repeats a query.
"""

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from core.analysis.chart_style import TITLE_ROW, count_axis, layout

DAY_MILLISECONDS = 24 * 60 * 60 * 1000


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
    figure.update_yaxes(**count_axis(frame["count"].max() if len(frame) else 0))
    return layout(figure, "Predicted probability of malignancy", "Probability", "Predictions")


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
    layout(figure, "Predictions per day", "Day", "", TITLE_ROW)
    # Day ticks: with few days, automatic ticks would fall at hours and repeat the date.
    figure.update_xaxes(
        tickformat="%d %b %Y", dtick=DAY_MILLISECONDS if len(frame) <= 10 else None
    )
    figure.update_yaxes(
        title_text="Predictions",
        secondary_y=False,
        **count_axis(frame["count"].max() if len(frame) else 0),
    )
    # Overlaying axes copy the ticks of the axis below by default, which suits no share.
    figure.update_yaxes(
        title_text="Share malignant",
        tickformat=".0%",
        range=[0, 1],
        tickmode="linear",
        dtick=0.25,
        showgrid=False,
        secondary_y=True,
    )
    return figure
