"""The look shared by every figure: template, colours, legend places, axis and layout helpers."""

import math

import plotly.graph_objects as go

TEMPLATE = "plotly_white"
FIGURE_HEIGHT = 420
CHANCE_LINE = {"dash": "dash", "color": "gray", "width": 1}
THEME_COLOUR = "#1f6f8b"
# The app's theme colour first; red is left out because the app keeps it for malignant labels.
COLOURWAY = [THEME_COLOUR, "#e69f00", "#6a4c93", "#2a9d8f", "#8c564b", "#7f7f7f"]
# Curve legends sit inside the plot area, in a corner the curves leave empty, on a translucent
# box: that keeps the plot tall at half a page wide, where long run ids wrap onto many rows.
BOTTOM_RIGHT = {"x": 0.98, "xanchor": "right", "y": 0.02, "yanchor": "bottom"}
BOTTOM_LEFT = {"x": 0.02, "xanchor": "left", "y": 0.02, "yanchor": "bottom"}
TOP_LEFT = {"x": 0.02, "xanchor": "left", "y": 0.98, "yanchor": "top"}
# At the bottom of the figure, for plots with no free corner. Placed in container coordinates
# (not paper ones, like y=-0.3) so Plotly grows the margin to fit it under the axis title.
BELOW = {
    "orientation": "h",
    "x": 0,
    "xanchor": "left",
    "y": 0,
    "yanchor": "bottom",
    "yref": "container",
}
# Level with the title, at the right, for a legend of a few short names.
TITLE_ROW = {
    "orientation": "h",
    "x": 1,
    "xanchor": "right",
    "y": 1,
    "yanchor": "top",
    "yref": "container",
}


def legend_inside(corner: dict) -> dict:
    return {
        **corner,
        "bgcolor": "rgba(255, 255, 255, 0.8)",
        "bordercolor": "rgba(0, 0, 0, 0.15)",
        "borderwidth": 1,
        "font": {"size": 11},
    }


def layout(
    figure: go.Figure, title: str, x_title: str, y_title: str, legend: dict | None = None
) -> go.Figure:
    figure.update_layout(
        title=title,
        template=TEMPLATE,
        colorway=COLOURWAY,
        height=FIGURE_HEIGHT,
        margin={"l": 60, "r": 30, "t": 60, "b": 40},
        legend=legend or BELOW,
    )
    figure.update_xaxes(title_text=x_title)
    figure.update_yaxes(title_text=y_title)
    return figure


def colour(index: int) -> str:
    """The index-th run colour; set explicitly, because chance lines would use up the first."""
    return COLOURWAY[index % len(COLOURWAY)]


def count_axis(axis_top: float) -> dict:
    """Axis settings for counts: whole-number ticks from zero, at a 1-2-5 step.

    `tickformat` alone would round Plotly's own fractional ticks into repeated or odd integers.
    """
    rough_step = max(axis_top, 1) / 5
    magnitude = 10 ** math.floor(math.log10(rough_step))
    step = next(factor * magnitude for factor in (1, 2, 5, 10) if factor * magnitude >= rough_step)
    return {"tickformat": "d", "rangemode": "tozero", "dtick": max(1, step)}
