"""Tables of predictions: stored ones (History, Predict's "predicted before") and diagnoses."""

import pandas as pd
import streamlit as st

import ui.formatting
import ui.runs
from core.analysis import reports
from core.storage import db

# Stored predictions as History and Predict's "predicted before" table show them. Display
# order: what a reader needs first comes first (which image, what the model said, whether to
# trust it, what it was), so that at 1400 px the out-of-distribution flag is in view, and
# file, result and probability fit 400 px.
PREDICTION_COLUMNS = {
    "thumbnail": st.column_config.ImageColumn("Image", width="small"),
    # Pinned, so that a row stays identifiable when a narrow screen scrolls the rest.
    "file_name": st.column_config.TextColumn("File", pinned=True),
    # The stored label as people read it (reports.shown_label); the data keeps benign/malignant.
    "label": st.column_config.TextColumn("Result"),
    "probability": st.column_config.ProgressColumn(
        "Probability", min_value=0, max_value=100, format="%.1f%%"
    ),
    "ood_flag": st.column_config.CheckboxColumn("Out of distribution"),
    "top_diagnosis": st.column_config.TextColumn(
        "Top diagnosis", help="The model's most likely diagnosis and its probability"
    ),
    "confirmed_label": st.column_config.TextColumn("Confirmed"),
    "confirmed_diagnosis": st.column_config.TextColumn("Confirmed diagnosis"),
    "created_at": st.column_config.DatetimeColumn("When (UTC)", format="YYYY-MM-DD HH:mm"),
    "run_id": st.column_config.TextColumn("Model"),
    "threshold": st.column_config.NumberColumn("Threshold", format="%.1f%%"),
    "threshold_source": st.column_config.TextColumn("Threshold from"),
    "ood_score": st.column_config.NumberColumn("OOD score", format="%.1f"),
    "tta": st.column_config.TextColumn("Test-time augmentation"),
    "size": st.column_config.TextColumn("Size (px)"),
    "latency_ms": st.column_config.NumberColumn(
        "Latency (ms per image)", format="%.0f", help="The mean over the images predicted with it"
    ),
    "confirmed_at": st.column_config.DatetimeColumn("Confirmed (UTC)", format="YYYY-MM-DD HH:mm"),
    "id": st.column_config.NumberColumn("ID", format="%d"),
}


def predictions_for_display(rows: pd.DataFrame) -> pd.DataFrame:
    """Stored prediction rows ready for PREDICTION_COLUMNS: ids and hashes out, percents 0-100.

    Percent columns hold 0-100 so that the format string can ask for one decimal.
    """
    shown = rows.drop(columns=["session_id", "sha256"], errors="ignore")
    if "file_name" in shown:
        shown["file_name"] = shown["file_name"].map(reports.display_name)
    if "label" in shown:
        shown["label"] = list(map(reports.shown_label, shown["label"], shown["ood_flag"]))
    if "tta" in shown:
        # A prediction stores whether TTA was on; which views it averaged is its run's setting.
        cards = ui.runs.run_cards()
        shown["tta"] = [
            reports.tta_text(cards.get(run_id), bool(on))
            for run_id, on in zip(shown["run_id"], shown["tta"], strict=True)
        ]
    for name in ("probability", "threshold"):
        if name in shown:
            shown[name] = shown[name] * 100
    if "width" in shown:
        shown["size"] = shown["width"].astype(str) + " x " + shown["height"].astype(str)
    if "thumbnail" in shown:
        shown["thumbnail"] = shown["thumbnail"].map(ui.formatting.data_url)
    if "diagnoses" in shown:
        shown["top_diagnosis"] = shown.pop("diagnoses").map(_top_diagnosis)
    return shown


def _top_diagnosis(stored) -> str | None:
    """ "melanoma (42.0%)" for a stored diagnoses value; None for a binary model's."""
    ranked = db.stored_diagnoses(stored)
    return f"{ranked[0][0]} ({ranked[0][1]:.1%})" if ranked else None


def diagnoses_table(diagnoses: tuple[tuple[str, float], ...]) -> None:
    """The most likely diagnoses of a diagnosis model; nothing for a binary model."""
    if not diagnoses:
        return
    st.markdown("**Most likely diagnoses**")
    _diagnoses_frame(diagnoses[: reports.TOP_DIAGNOSES])
    if len(diagnoses) > reports.TOP_DIAGNOSES:
        with st.expander(f"Other diagnoses ({len(diagnoses) - reports.TOP_DIAGNOSES})"):
            _diagnoses_frame(diagnoses[reports.TOP_DIAGNOSES :])
    st.caption("Model estimates, not a diagnosis: only histopathology or a clinician confirms.")


def _diagnoses_frame(diagnoses: tuple[tuple[str, float], ...]) -> None:
    shown = pd.DataFrame(diagnoses, columns=["diagnosis", "probability"])
    st.dataframe(
        shown.assign(probability=shown["probability"] * 100),
        hide_index=True,
        column_config={
            # Medium and small fit the result column, so the probability is never scrolled off.
            "diagnosis": st.column_config.TextColumn("Diagnosis", width="medium"),
            "probability": st.column_config.ProgressColumn(
                "Probability", min_value=0, max_value=100, format="%.1f%%", width="small"
            ),
        },
    )
