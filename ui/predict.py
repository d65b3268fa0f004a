"""Helpers of the Predict page: the cached model, one result's summary and explanation."""

import pandas as pd
import streamlit as st

import ui
from core import db, runs


@st.cache_resource(max_entries=3)
def _load_predictor(run_id: str, models_dir: str, model_mtime_ns: int):
    # The mtime is part of the key: a run folder rewritten in place loads a fresh model.
    from core.inference import Predictor

    predictor = Predictor(runs.load_run(runs.models_dir(models_dir) / run_id))
    predictor.warm_up()
    return predictor


def predictor(run: runs.Run):
    """A loaded, shared (read-only) Predictor for `run`."""
    return _load_predictor(run.run_id, str(run.folder.parent), run.model_path.stat().st_mtime_ns)


def working_predictor(run: runs.Run):
    """(Predictor, run) for `run`, or for the active or newest run that loads when it cannot.

    A corrupt model.keras (or one Keras' safe mode refuses) must not take the page down: the
    error names the broken run and the next good one is used. (None, None) when none loads.
    """
    found, _ = runs.list_runs()
    active_id = runs.active_run_id()
    # One listing of the run folders serves both: the active run first, then newest first.
    active = [candidate for candidate in found if candidate.run_id == active_id]
    candidates = {c.run_id: c for c in (run, *active, *found)}
    for candidate in candidates.values():
        try:
            loaded = predictor(candidate)
        except Exception as error:  # noqa: BLE001 - any unloadable model file is a broken run
            reason = f"{type(error).__name__}: {error}"[:300]
            st.error(f"Run {candidate.run_id} is broken: its model cannot be loaded ({reason}).")
            continue
        if candidate.run_id != run.run_id:
            st.warning(f"Predicting with run {candidate.run_id} instead.")
        return loaded, candidate
    return None, None


@st.cache_data(max_entries=32, show_spinner="Computing Grad-CAM")
def explanation(_predictor, run_id: str, sha256: str, _data: bytes, toward: str):
    """Grad-CAM of one image, cached by run, image content and direction."""
    from core import predict_service

    return predict_service.explain(_predictor, _data, toward)


def explanation_view(_predictor, run_id: str, result, data: bytes) -> None:
    """The image, its Grad-CAM heat map toward the predicted class, or their overlay."""
    view = st.segmented_control(
        "Show", ["Image", "Heat map", "Overlay"], default="Overlay", key="predict_view"
    )
    toward = "malignant" if result.prediction.label == "malignant" else "benign"
    cam = explanation(_predictor, run_id, result.prediction.sha256, data, toward)
    shown = {"Image": cam.image, "Heat map": cam.heatmap}.get(view, cam.overlay)
    st.image(shown, caption=f"Grad-CAM toward {toward}: red regions moved the score most")


def prediction_summary(result, ood_threshold: float | None) -> None:
    """Probability, label, distance from the threshold and the OOD warning of one result."""
    prediction = result.prediction
    threshold = f"the threshold {prediction.threshold:.1%}"
    # A distance that rounds to zero gets a plain grey note, not a coloured up arrow.
    exact = round(result.distance, 3) == 0
    st.metric(
        "Malignant probability (calibrated)",
        ui.percent(prediction.probability),
        delta=f"at {threshold}" if exact else f"{result.distance:+.1%} from {threshold}",
        delta_color="off" if exact else "inverse",
        delta_arrow="off" if exact else "auto",
    )
    color = "red" if prediction.label == "malignant" else "green"
    st.badge(f"{prediction.label} at the model's threshold", color=color)
    if prediction.ood_flag:
        st.error(
            f"Out of distribution: this image is unlike the training images (score "
            f"{prediction.ood_score:.1f} > {ui.number(ood_threshold, 1)}). The probability is "
            "unreliable; is it a dermoscopy image of a skin lesion?",
            icon=":material/warning:",
        )
    st.caption(
        f"Model {prediction.model}, {prediction.width}x{prediction.height} px, "
        f"{prediction.latency_ms:.0f} ms, sha256 {prediction.sha256[:12]}..."
    )


def confirm_form(database: db.Database, prediction_id: int) -> None:
    """Record the confirmed diagnosis (say, histopathology) of a stored prediction."""
    with st.form("predict_confirm"):
        st.markdown("**Confirmed diagnosis** (when known, e.g. from histopathology)")
        label = st.selectbox("Outcome", db.LABELS, key="predict_confirm_label")
        diagnosis = st.text_input(
            "Diagnosis (optional)", key="predict_confirm_diagnosis", placeholder="e.g. melanoma"
        )
        if st.form_submit_button("Save outcome"):
            changed = database.set_confirmed(
                [prediction_id], label, diagnosis or None, session_id=ui.session_id()
            )
            st.success(f"Saved for {ui.plural(changed, 'prediction')}.")


def results_table(results) -> None:
    """A sortable table of a batch of predictions, thumbnails included, and its CSV."""
    from core import predict_service

    frame = predict_service.results_frame(results).drop(columns=["sha256", "error"])
    st.dataframe(
        frame.assign(thumbnail=frame["thumbnail"].map(ui.data_url)),
        hide_index=True,
        column_config={
            "thumbnail": st.column_config.ImageColumn("Image", width="small"),
            "file": st.column_config.TextColumn("File"),
            "probability": st.column_config.ProgressColumn("Probability", format="percent"),
            "label": st.column_config.TextColumn("Label"),
            "distance": st.column_config.NumberColumn("From threshold", format="percent"),
            "out_of_distribution": st.column_config.CheckboxColumn("Out of distribution"),
            "model": st.column_config.TextColumn("Model"),
            "threshold": st.column_config.NumberColumn("Threshold", format="percent"),
            "prediction_id": st.column_config.NumberColumn("ID", format="%d"),
        },
        placeholder="-",
        key="predict_table",
    )
    st.download_button(
        "Download CSV",
        predict_service.results_csv(results),
        "predictions.csv",
        "text/csv",
        key="predict_csv",
    )


def earlier_table(earlier: pd.DataFrame) -> None:
    """Earlier predictions of one image, with the History page's column names."""
    shown = ui.predictions_for_display(earlier)
    st.dataframe(
        shown,
        hide_index=True,
        column_order=[name for name in ui.PREDICTION_COLUMNS if name in shown],
        column_config=ui.PREDICTION_COLUMNS,
        placeholder="-",
    )
