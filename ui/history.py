"""Helpers of the History page: the stored-prediction table and its actions."""

import hashlib
import io

import pandas as pd
import streamlit as st

import ui.formatting
import ui.outcomes
import ui.session
import ui.tables
from core.analysis import reports
from core.inputs import labels
from core.storage import db, outcomes

PAGE_SIZE = 50
_OOD_CHOICES = {"All": None, "Flagged": True, "Not flagged": False}
_CONFIRMED_CHOICES = {"All": None, "Confirmed": True, "Unconfirmed": False}
IMPORT_FORMAT = (
    "A CSV with a header row: `file` (the name the image was uploaded under) or `sha256` (of "
    "the image, as the export has it), and `outcome` (benign or malignant; 0 and 1 are read "
    "as in the ISIC `target` column, 1 is malignant). Optional: `diagnosis` (a name of the "
    "diagnosis vocabulary or a usual spelling of one, such as MEL or nv) and `confirmed_on` "
    "(a date such as 2024-03-12). A sha256 reaches every prediction of that "
    "image, a file name every prediction stored under it."
)
_PREVIEW = (
    (outcomes.MATCHED, "Matched", "imported"),
    (outcomes.UNCHANGED, "Unchanged", "already stored so"),
    (outcomes.UNMATCHED, "Unmatched", "no stored prediction of that image"),
    (outcomes.INVALID, "Invalid", "not imported: correct these values in the file"),
    (
        outcomes.CONFLICT,
        "Conflicting",
        "not imported, but a stored outcome can be overwritten on request",
    ),
)
_IMPORT_VERSION = "history_import_version"
# The import expander's state: opened after an import, so that its undo is in view.
IMPORT_OPEN = "history_import_open"
_IMPORT_COLUMNS = {
    "import_id": st.column_config.NumberColumn("Import", format="%d"),
    "imported_at": st.column_config.DatetimeColumn("When (UTC)", format="YYYY-MM-DD HH:mm"),
    "imported_by": st.column_config.TextColumn("By"),
    "file_name": st.column_config.TextColumn("File"),
    "n_rows": st.column_config.NumberColumn("Rows"),
    "n_changed": st.column_config.NumberColumn("Changed"),
    "undone_at": st.column_config.DatetimeColumn("Undone (UTC)", format="YYYY-MM-DD HH:mm"),
}
_TABLE_VERSION = "history_table_version"
_NOTICE = "history_notice"
_LAST_DELETE = "history_last_delete"


def filter_form(database: db.Database, scope: str | None) -> db.HistoryFilter:
    """The Filters expander: what its inputs chose, always within `scope`'s predictions."""
    # The model list holds only models with a prediction this visitor may see.
    everything = db.HistoryFilter(session_id=scope)
    models = sorted(database.probability_histogram(everything, bins=1)["run_id"].unique())
    with st.expander("Filters", expanded=True):
        left, middle, right = st.columns(3)
        dates = left.date_input("Dates (UTC)", value=(), key="history_dates")
        chosen_models = left.multiselect("Models", models, key="history_model")
        results = middle.multiselect(
            "Result", labels.CLASS_NAMES, format_func=reports.shown_label, key="history_label"
        )
        low, high = middle.slider(
            "Probability", 0.0, 1.0, (0.0, 1.0), 0.01, key="history_probability"
        )
        confirmed = middle.radio(
            "Confirmed outcome", list(_CONFIRMED_CHOICES), horizontal=True, key="history_confirmed"
        )
        file_name = right.text_input("File name contains", key="history_file")
        ood = right.radio(
            "Out of distribution",
            list(_OOD_CHOICES),
            horizontal=True,
            key="history_ood",
            help="Images the model's OOD detector found unlike its training images.",
        )
    return db.HistoryFilter(
        start=dates[0] if dates else None,
        end=dates[-1] if dates else None,
        run_ids=tuple(chosen_models),
        labels=tuple(results),
        min_probability=low if low > 0 else None,
        max_probability=high if high < 1 else None,
        file_name_contains=file_name or None,
        session_id=scope,
        ood_flag=_OOD_CHOICES[ood],
        confirmed=_CONFIRMED_CHOICES[confirmed],
    )


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
    shown = ui.tables.predictions_for_display(rows)
    has_thumbnails = shown["thumbnail"].notna().any()
    event = st.dataframe(
        shown,
        hide_index=True,
        column_order=[
            name for name in ui.tables.PREDICTION_COLUMNS if name != "thumbnail" or has_thumbnails
        ],
        column_config=ui.tables.PREDICTION_COLUMNS,
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
        comparisons.assign(file_name=comparisons["file_name"].map(reports.display_name)),
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
    st.markdown(f"**{ui.formatting.plural(len(prediction_ids), 'prediction')} selected**")
    outcome, remove = st.columns(2)
    with outcome:
        ui.outcomes.outcome_inputs("history_confirm")
        st.button(
            "Save outcome",
            key="history_confirm",
            on_click=_save_outcome,
            args=(database, prediction_ids, scope),
        )
    with remove:
        sure = st.checkbox("Yes, delete them", key="history_delete_confirm")
        st.button(
            "Delete selected",
            key="history_delete",
            disabled=not sure,
            on_click=_delete,
            args=(database, prediction_ids, scope),
        )


def _save_outcome(database: db.Database, prediction_ids: list[int], scope: str | None) -> None:
    saved, message = ui.outcomes.save_outcome(database, prediction_ids, "history_confirm", scope)
    if saved:
        _start_over()
    st.session_state[_NOTICE] = (saved, message)


def _delete(database: db.Database, prediction_ids: list[int], scope: str | None) -> None:
    removed = database.delete_predictions(prediction_ids, scope)
    _start_over()
    # Only the last delete can be undone, and only from this browser tab: its rows live in
    # this session's state, never in the database, so a delete is final once the tab closes.
    st.session_state[_LAST_DELETE] = removed
    st.session_state[_NOTICE] = (
        True,
        f"Deleted {ui.formatting.plural(len(removed), 'prediction')}.",
    )


def undo_delete(database: db.Database) -> None:
    """The undo of this tab's last delete, while there is one to undo."""
    removed = st.session_state.get(_LAST_DELETE)
    if not removed:
        return
    st.button(
        f"Undo the last delete ({ui.formatting.plural(len(removed), 'prediction')})",
        key="history_undo_delete",
        icon=":material/undo:",
        help="Puts the deleted predictions back as they were. Possible while this browser "
        "tab stays open; the next delete replaces it.",
        on_click=_undo_delete,
        args=(database, removed),
    )


def _undo_delete(database: db.Database, removed: db.DeletedPredictions) -> None:
    restored = database.restore_predictions(removed)
    st.session_state.pop(_LAST_DELETE, None)
    _start_over()
    st.session_state[_NOTICE] = (True, f"Restored {ui.formatting.plural(restored, 'prediction')}.")


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


def import_outcomes(database: db.Database) -> None:
    """Upload a CSV of confirmed outcomes, preview what it would change, import on request."""
    st.caption(IMPORT_FORMAT)
    # A new key after each import empties the uploader, so one click cannot import twice.
    version = st.session_state.get(_IMPORT_VERSION, 0)
    upload = st.file_uploader(
        "Outcomes CSV",
        type="csv",
        max_upload_size=ui.formatting.upload_limit_mb(),
        key=f"history_import_file_{version}",
    )
    if upload is None:
        return
    try:
        plan = outcomes.plan_import(database, upload.getvalue(), upload.name)
    except ValueError as error:
        st.error(f"{upload.name}: {error}. Nothing imported.")
        return
    _import_preview(plan)
    overwrite = bool(plan.overwritable) and st.checkbox(
        "Also overwrite the stored outcomes of "
        f"{ui.formatting.plural(len(plan.overwritable), 'row')} in conflict with this file",
        key="history_import_overwrite",
    )
    changes = plan.changes(overwrite)
    st.text_input("Imported by", placeholder=_default_importer(), key="history_import_by")
    st.button(
        f"Import: change {ui.formatting.plural(len(changes), 'prediction')}",
        key="history_import",
        type="primary",
        disabled=not changes,
        on_click=_import,
        args=(database, upload.getvalue(), upload.name, overwrite),
    )


def _import_preview(plan: outcomes.ImportPlan) -> None:
    """Counts of each kind of row, and a table of each kind that occurs."""
    for column, (status, title, _) in zip(st.columns(len(_PREVIEW)), _PREVIEW, strict=True):
        column.metric(title, len(plan.with_status(status)))
    for status, title, meaning in _PREVIEW:
        rows = plan.table(status)
        if rows.empty:
            continue
        st.markdown(f"**{title}** ({meaning})")
        explained = status in (outcomes.CONFLICT, outcomes.INVALID)
        shown = rows if explained else rows.drop(columns="reason")
        st.dataframe(shown, hide_index=True, placeholder="-", key=f"history_import_{status}")


def _default_importer() -> str:
    return "admin" if ui.session.access_rule().public else "local user"


def _import(database: db.Database, data: bytes, file_name: str, overwrite: bool) -> None:
    # Planned again at the click, so that outcomes saved since the preview are not overwritten.
    plan = outcomes.plan_import(database, data, file_name)
    imported_by = (st.session_state.get("history_import_by") or "").strip()
    try:
        import_id = database.apply_outcome_import(
            plan.changes(overwrite), imported_by or _default_importer(), file_name, len(plan.rows)
        )
    except ValueError as error:
        st.session_state[_NOTICE] = (False, f"Not imported: {error}.")
        return
    _start_over()
    st.session_state[_IMPORT_VERSION] = st.session_state.get(_IMPORT_VERSION, 0) + 1
    st.session_state["history_import_overwrite"] = False
    st.session_state[IMPORT_OPEN] = True
    st.session_state[_NOTICE] = (True, _import_message(database, import_id, plan, overwrite))


def _import_message(
    database: db.Database, import_id: int, plan: outcomes.ImportPlan, overwrite: bool
) -> str:
    record = database.outcome_imports().set_index("import_id").loc[import_id]
    conflicting = len(plan.with_status(outcomes.CONFLICT)) - len(plan.overwritable) * overwrite
    invalid = len(plan.with_status(outcomes.INVALID))
    left_out = ui.formatting.plural(conflicting, "conflicting row")
    if invalid:
        left_out += f" and {ui.formatting.plural(invalid, 'invalid row')}"
    return (
        f"Import {import_id} from {record['file_name']}: "
        f"{ui.formatting.plural(int(record['n_changed']), 'prediction')} changed, {left_out} "
        "left out. It can be undone under Past imports, below."
    )


def past_imports(database: db.Database) -> None:
    """The recorded imports, newest first, and the undo of one (after confirmation)."""
    imports = database.outcome_imports()
    if imports.empty:
        st.caption("No outcomes imported yet.")
        return
    st.dataframe(imports, hide_index=True, placeholder="-", column_config=_IMPORT_COLUMNS)
    undoable = [
        int(import_id) for import_id in imports.loc[imports["undone_at"].isna(), "import_id"]
    ]
    chosen = st.selectbox(
        "Import to undo",
        undoable,
        index=None,
        placeholder="Choose an import",
        format_func=lambda import_id: f"Import {import_id}",
        key="history_undo_choice",
    )
    if chosen is None:
        return
    # The confirmation belongs to one import: choosing another starts unticked.
    sure = st.checkbox(
        f"Yes, put back the outcomes that import {chosen} replaced",
        key=f"history_undo_confirm_{chosen}",
    )
    st.button(
        "Undo import",
        key="history_undo",
        disabled=not sure,
        on_click=_undo,
        args=(database, chosen),
    )


def _undo(database: db.Database, import_id: int) -> None:
    try:
        restored = database.undo_outcome_import(import_id)
    except ValueError as error:
        st.session_state[_NOTICE] = (False, f"Not undone: {error}.")
        return
    _start_over()
    st.session_state["history_undo_choice"] = None
    st.session_state[f"history_undo_confirm_{import_id}"] = False
    st.session_state[_NOTICE] = (
        True,
        f"Import {import_id} undone: {ui.formatting.plural(restored, 'prediction')} restored.",
    )


def export_button(database: db.Database, history_filter: db.HistoryFilter) -> None:
    """CSV of every filtered row, written only when the button is clicked."""

    def export() -> bytes:
        buffer = io.BytesIO()
        database.export_predictions_csv(history_filter, buffer)
        return buffer.getvalue()

    st.download_button(
        "Export filtered rows (CSV)", export, "predictions.csv", "text/csv", key="history_export"
    )


def report_section(
    database: db.Database, rows: pd.DataFrame, selected_ids: list[int], scope: str | None
) -> None:
    """One prediction of this page (a selected one when any are selected): its predicted
    diagnoses and its case report.

    The report's Grad-CAM overlay is computed from the stored thumbnail only when asked for, since it
    loads TensorFlow and the model, which History otherwise never imports.
    """
    if rows.empty:
        return
    st.markdown("**Details and case report**")
    names = dict(
        zip(rows["id"].astype(int), rows["file_name"].map(reports.display_name), strict=True)
    )
    options = [prediction_id for prediction_id in selected_ids if prediction_id in names]
    chosen = st.selectbox(
        "Prediction",
        options or list(names),
        format_func=lambda prediction_id: f"{prediction_id}: {names[prediction_id]}",
        key="history_report_id",
    )
    row = rows.loc[rows["id"] == chosen].iloc[0]
    ui.tables.diagnoses_table(db.stored_diagnoses(row["diagnoses"]))
    stored = ui.formatting.data_url(row["thumbnail"]) is not None
    with_cam = st.toggle(
        "Add the Grad-CAM overlay (loads the model)",
        key="history_report_gradcam",
        disabled=not stored,
        help="Computed from the stored thumbnail, which is smaller than the image predicted."
        if stored
        else "No thumbnail is stored for this prediction (see DERMO_STORE_THUMBNAILS).",
    )
    overlay, caption = _thumbnail_overlay(row) if with_cam else (None, "")
    _report_downloads(database, chosen, scope, overlay, caption)


def _thumbnail_overlay(row: pd.Series):
    """(overlay, caption) of a row's thumbnail toward its predicted label; (None, "") when its
    model cannot be loaded."""
    # Imported here: the Predict helpers and the model are needed only once this is asked for.
    import ui.predict
    from core import config
    from core.inputs import datasets, images
    from core.storage import runs

    run_id, thumbnail = str(row["run_id"]), bytes(row["thumbnail"])
    try:
        predictor = ui.predict.predictor(runs.load_run(config.MODELS_DIR / run_id))
    except Exception as error:  # noqa: BLE001 - a gone or broken run only costs the overlay
        reason = datasets.without_paths(f"{type(error).__name__}: {error}")[:300]
        st.warning(f"No Grad-CAM: the model of run {run_id} cannot be loaded ({reason}).")
        return None, ""
    # Toward the stored label, as Predict shows it; keyed by the thumbnail's own hash, so that
    # it never reuses the full image's Grad-CAM.
    toward = str(row["label"])
    cam = ui.predict.explanation(
        predictor, run_id, images.sha256_bytes(thumbnail), thumbnail, toward
    )
    return cam.overlay, f"Grad-CAM toward {toward}{cam.note}, from the stored thumbnail"


def _report_downloads(database: db.Database, prediction_id: int, scope, overlay, caption) -> None:
    # Imported here: fpdf takes most of a second to import, paid only where a report is shown.
    import ui.predict
    from core.serving import case_report

    try:
        report = case_report.build_report(
            database, prediction_id, scope, overlay=overlay, overlay_caption=caption
        )
    except ValueError as error:
        st.warning(f"No case report: {error}.")
        return
    ui.predict.report_downloads(report, "history_report")
