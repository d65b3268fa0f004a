"""Helpers of the Metrics page: headline tables and the threshold explorer's cards."""

import pandas as pd
import streamlit as st

import ui


def change(value: float | None, reference: float | None, digits: int = 3) -> str | None:
    """A signed delta for st.metric; None (no arrow) when missing or it rounds to zero."""
    if value is None or reference is None or round(value - reference, digits) == 0:
        return None
    return f"{value - reference:+.{digits}f}"


def headline_table(evaluation: dict) -> None:
    """The test metrics with their 95% bootstrap intervals, three decimals throughout."""
    from core import reports

    st.dataframe(
        reports.headline_table(evaluation),
        hide_index=True,
        column_config={
            "metric": st.column_config.TextColumn("Metric"),
            "value": st.column_config.NumberColumn("Value", format="%.3f"),
            "ci_low": st.column_config.NumberColumn("95% CI low", format="%.3f"),
            "ci_high": st.column_config.NumberColumn("95% CI high", format="%.3f"),
        },
        placeholder="n/a",
    )


def classification_report(predictions: pd.DataFrame, threshold: float) -> None:
    from core import reports

    st.dataframe(
        reports.classification_report(predictions, threshold),
        hide_index=True,
        column_config={
            "class": st.column_config.TextColumn("Class"),
            "precision": st.column_config.NumberColumn("Precision", format="%.3f"),
            "recall": st.column_config.NumberColumn("Recall", format="%.3f"),
            "f1": st.column_config.NumberColumn("F1", format="%.3f"),
            "support": st.column_config.NumberColumn("Support", format="%d"),
        },
        placeholder="n/a",
    )


def threshold_cards(point, reference) -> None:
    """Threshold metrics at `point`, with their change from the run's own threshold."""
    from core import reports

    names = ("sensitivity", "specificity", "ppv", "npv", "f1")
    for column, key in zip(st.columns(len(names)), names, strict=True):
        value = point.counts[key]
        column.metric(
            reports.HEADLINE_METRICS[key], ui.number(value), change(value, reference.counts[key])
        )
