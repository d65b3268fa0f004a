"""Helpers of the History page: the stored-prediction table and its actions."""

import hashlib
import io

import pandas as pd
import streamlit as st

import ui
from core import db

PAGE_SIZE = 50
OOD_CHOICES = {"All": None, "Flagged": True, "Not flagged": False}
_TABLE_VERSION = "history_table_version"
_NOTICE = "history_notice"


def table_key(page: int, history_filter: db.HistoryFilter) -> str:
    """The table's widget key: a new key, and so an empty selection, whenever its rows change.

    The rows change with the page, the filter, and after a delete or an outcome change; a
    selection kept across such a change would point at rows nobody chose.
    """
    shown = repr((page, history_filter)).encode("utf-8")
    digest = hashlib.sha256(shown).hexdigest()[:16]
    return f"history_table_{st.session_state.get(_TABLE_VERSION, 0)}_{digest}"


def history_table(rows: pd.DataFrame, key: str) -> list[int]:
    """One page of stored predictions; returns the ids of the selected rows.

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
        key=key,
    )
    positions = [position for position in event.selection.rows if position < len(rows)]
    return [int(prediction_id) for prediction_id in rows["id"].iloc[positions]]


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

    The buttons act on the ids selected when they were drawn, never on row positions, and
    their callbacks run before the page is drawn again, so the table shows the change at once.
    `scope` (a session id) limits both to that session's rows, whatever ids arrive.
    """
    st.markdown(f"**{ui.plural(len(prediction_ids), 'prediction')} selected**")
    outcome, remove = st.columns(2)
    with outcome:
        ui.outcome_inputs("history_confirm")
        st.button(
            "Save outcome",
            key="history_confirm",
            on_click=_save_outcome,
            args=(database, prediction_ids, scope),
        )
    with remove:
        sure = st.checkbox("Yes, delete them permanently", key="history_delete_confirm")
        st.button(
            "Delete selected",
            key="history_delete",
            disabled=not sure,
            on_click=_delete,
            args=(database, prediction_ids, scope),
        )


def _save_outcome(database: db.Database, prediction_ids: list[int], scope: str | None) -> None:
    saved, message = ui.save_outcome(database, prediction_ids, "history_confirm", scope)
    if saved:
        _start_over()
    st.session_state[_NOTICE] = (saved, message)


def _delete(database: db.Database, prediction_ids: list[int], scope: str | None) -> None:
    removed = database.delete_predictions(prediction_ids, scope)
    _start_over()
    st.session_state[_NOTICE] = (True, f"Deleted {ui.plural(removed, 'prediction')}.")


def _start_over() -> None:
    """After a change: no row selected, the confirmation unticked, the outcome empty."""
    st.session_state[_TABLE_VERSION] = st.session_state.get(_TABLE_VERSION, 0) + 1
    st.session_state["history_delete_confirm"] = False
    st.session_state["history_confirm_label"] = None
    st.session_state["history_confirm_diagnosis"] = None


def notice() -> None:
    """What the last save or delete did, shown once."""
    if _NOTICE in st.session_state:
        done, message = st.session_state.pop(_NOTICE)
        (st.success if done else st.error)(message)


def export_button(database: db.Database, history_filter: db.HistoryFilter) -> None:
    """CSV of every filtered row, written only when the button is clicked."""

    def export() -> bytes:
        buffer = io.BytesIO()
        database.export_predictions_csv(history_filter, buffer)
        return buffer.getvalue()

    st.download_button(
        "Export filtered rows (CSV)", export, "predictions.csv", "text/csv", key="history_export"
    )
