"""A confirmed outcome entered by hand (Predict and History): its two inputs and the save."""

import streamlit as st

import ui.formatting
from core.inputs import diagnoses, labels
from core.storage import db


def outcome_inputs(prefix: str) -> None:
    """The confirmed-outcome widgets, `<prefix>_label` and `<prefix>_diagnosis`.

    Both start empty, so that no click records an outcome nobody chose.
    """
    st.selectbox(
        "Confirmed outcome",
        labels.CLASS_NAMES,
        index=None,
        placeholder="Choose benign or malignant",
        key=f"{prefix}_label",
    )
    st.selectbox(
        "Diagnosis (optional)",
        diagnoses.DIAGNOSIS_NAMES,
        index=None,
        accept_new_options=True,
        placeholder="Choose or type a diagnosis",
        key=f"{prefix}_diagnosis",
    )


def save_outcome(
    database: db.Database, prediction_ids: list[int], prefix: str, scope: str | None
) -> tuple[bool, str]:
    """Store the outcome chosen in `outcome_inputs(prefix)`; (saved, what to tell the user).

    Nothing is saved without an outcome or when the diagnosis contradicts it.
    """
    label = st.session_state.get(f"{prefix}_label")
    diagnosis = st.session_state.get(f"{prefix}_diagnosis")
    if label is None:
        return False, "Choose the confirmed outcome (benign or malignant) first; nothing saved."
    try:
        changed = database.set_confirmed(prediction_ids, label, diagnosis, scope)
    except ValueError as error:
        return False, f"Not saved: {error}."
    return True, f"Outcome {label} saved for {ui.formatting.plural(changed, 'prediction')}."
