"""Helpers of the History page: the stored-prediction table and its actions."""

import io

import pandas as pd
import streamlit as st

import ui
from core import db

PAGE_SIZE = 50


def history_table(rows: pd.DataFrame) -> list[int]:
    """One page of stored predictions; returns the selected row positions.

    Thumbnails are stored only when config.STORE_THUMBNAILS is on: without any, the image
    column is left out rather than showing an empty cell on every row.
    """
    shown = ui.predictions_for_display(rows)
    has_thumbnails = shown["thumbnail"].notna().any()
    event = st.dataframe(
        shown,
        hide_index=True,
        column_order=[
            name for name in ui.PREDICTION_COLUMNS if name != "thumbnail" or has_thumbnails
        ],
        column_config=ui.PREDICTION_COLUMNS,
        placeholder="-",
        on_select="rerun",
        selection_mode="multi-row",
        key="history_table",
    )
    return list(event.selection.rows)


def same_image_table(comparisons: pd.DataFrame) -> None:
    """One row per image content, one probability column per model that predicted it."""
    fixed = ("sha256", "file_name", "last_at", "n_models")
    models = [name for name in comparisons if name not in fixed]
    percent_column = st.column_config.NumberColumn(format="percent")
    st.dataframe(
        comparisons,
        hide_index=True,
        column_config={
            "sha256": None,
            "file_name": st.column_config.TextColumn("File"),
            "last_at": st.column_config.DatetimeColumn("Last (UTC)", format="YYYY-MM-DD HH:mm"),
            "n_models": st.column_config.NumberColumn("Models"),
            **dict.fromkeys(models, percent_column),
        },
        placeholder="-",
    )


def history_actions(
    database: db.Database, prediction_ids: list[int], scope: str | None = None
) -> None:
    """Record an outcome for, or delete (after confirmation), the selected predictions.

    `scope` (a session id) limits both to that session's rows, whatever ids arrive.
    """
    st.markdown(f"**{len(prediction_ids)} selected**")
    outcome, remove = st.columns(2)
    label = outcome.selectbox("Confirmed outcome", db.LABELS, key="history_confirm_label")
    diagnosis = outcome.text_input("Diagnosis (optional)", key="history_confirm_diagnosis")
    if outcome.button("Save outcome", key="history_confirm"):
        changed = database.set_confirmed(prediction_ids, label, diagnosis or None, scope)
        st.success(f"Outcome saved for {ui.plural(changed, 'prediction')}.")
    sure = remove.checkbox("Yes, delete them permanently", key="history_delete_confirm")
    if remove.button("Delete selected", key="history_delete", disabled=not sure):
        removed = database.delete_predictions(prediction_ids, scope)
        st.toast(f"Deleted {ui.plural(removed, 'prediction')}.")
        st.rerun()


def export_button(database: db.Database, history_filter: db.HistoryFilter) -> None:
    """CSV of every filtered row, written only when the button is clicked."""

    def export() -> bytes:
        buffer = io.BytesIO()
        database.export_predictions_csv(history_filter, buffer)
        return buffer.getvalue()

    st.download_button(
        "Export filtered rows (CSV)", export, "predictions.csv", "text/csv", key="history_export"
    )
