"""Helpers of the Predict page: the cached model, one result's summary and explanation."""

import pandas as pd
import streamlit as st

import ui.formatting
import ui.outcomes
import ui.session
import ui.tables
from core.analysis import reports
from core.inputs import datasets
from core.storage import db, runs

# Loading TensorFlow and a model takes seconds the first time: the page says so (a spinner
# shows only after half a second, so a cached model flashes nothing).
LOADING_MODEL = "Loading the model (first time: about 10 s)…"


@st.cache_resource(max_entries=3, show_spinner=False)
def _load_predictor(run_id: str, models_dir: str, model_mtime_ns: int):
    # The mtime is part of the key: a run folder rewritten in place loads a fresh model.
    from core.serving.inference import Predictor

    predictor = Predictor(runs.load_run(runs.models_dir(models_dir) / run_id))
    predictor.warm_up()
    return predictor


def predictor(run: runs.Run):
    """A loaded, shared (read-only) Predictor for `run`."""
    return _load_predictor(run.run_id, str(run.folder.parent), run.model_path.stat().st_mtime_ns)


def working_predictor(run: runs.Run):
    """(Predictor, run) for `run`, else for the active run, else the committed default.

    A corrupt model.keras (or one Keras' safe mode refuses) must not take the page down: the
    error names the broken run and the next one is used, never a run nobody chose (the
    newest, say). (None, None) when none loads.
    """
    active, _ = runs.active_run()
    chain = (run, active, runs.default_run())
    candidates = {candidate.run_id: candidate for candidate in chain if candidate is not None}
    for candidate in candidates.values():
        try:
            loaded = predictor(candidate)
        except Exception as error:  # noqa: BLE001 - any unloadable model file is a broken run
            reason = datasets.without_paths(f"{type(error).__name__}: {error}")[:300]
            st.error(f"Run {candidate.run_id} is broken: its model cannot be loaded ({reason}).")
            continue
        if candidate.run_id != run.run_id:
            st.warning(f"Predicting with run {candidate.run_id} instead.")
        return loaded, candidate
    return None, None


def batch_results(predictor, run_id: str, tta: bool, files, database: db.Database | None):
    """(results, problems) of the uploaded files, predicted and stored once per batch.

    Session state keeps the results (names, hashes, ids), never the image bytes: those stay in
    the uploader and are read again for the image shown.
    """
    from core.serving import predict_service

    batch = (run_id, tta, tuple(file.file_id for file in files))
    if st.session_state.get("predict_batch") != batch:
        uploads, problems = predict_service.expand_uploads([(f.name, f.getvalue()) for f in files])
        bar = st.progress(0.0, text="Predicting")
        results = predict_service.predict_uploads(
            predictor,
            database,
            uploads,
            ui.session.session_id(),
            tta,
            lambda done, total: bar.progress(done / total, text=f"Predicted {done} of {total}"),
        )
        bar.empty()
        st.session_state.update(
            predict_batch=batch, predict_results=results, predict_problems=problems
        )
    return st.session_state["predict_results"], st.session_state["predict_problems"]


@st.cache_data(max_entries=32, show_spinner="Computing Grad-CAM")
def explanation(_predictor, run_id: str, sha256: str, _data: bytes, toward: str):
    """Grad-CAM of one image, cached by run, image content and direction."""
    from core.serving import predict_service

    return predict_service.explain(_predictor, _data, toward)


def image_bytes(result, files) -> bytes | None:
    """The uploaded bytes of a result's image, read again from the uploader's files."""
    from core.serving import predict_service

    pairs = ((file.name, file.getvalue()) for file in files)
    return predict_service.upload_bytes(pairs, result.prediction.file, result.prediction.sha256)


def toward(result) -> str:
    """The class that the Grad-CAM shows evidence for: the predicted one."""
    return "malignant" if result.prediction.label == "malignant" else "benign"


def explanation_view(_predictor, run_id: str, result, data: bytes | None) -> None:
    """The image, its Grad-CAM heat map toward the predicted class, or their overlay."""
    from core.serving import predict_service

    if data is None:
        name = reports.display_name(result.prediction.file)
        st.info(f"{name} is no longer among the uploaded files.")
        return
    view = st.segmented_control(
        "Show", ["Image", "Heat map", "Overlay"], default="Overlay", key="predict_view"
    )
    cam = explanation(_predictor, run_id, result.prediction.sha256, data, toward(result))
    if view == "Image":
        st.image(cam.image, caption=reports.display_name(result.prediction.file))
        return
    shown = cam.heatmap if view == "Heat map" else cam.overlay
    st.image(
        predict_service.with_colour_scale(shown),
        caption=f"Grad-CAM toward {toward(result)}{cam.note}. The colour scale below it: "
        "blue, little influence on the score; red, the most.",
    )


def report_buttons(
    database: db.Database | None, _predictor, run_id: str, result, data: bytes | None
) -> None:
    """The case report of this stored prediction, with its image and Grad-CAM overlay."""
    from core.serving import case_report

    if result.prediction_id is None:
        return
    overlay, overlay_note = None, ""
    if data is not None:
        cam = explanation(_predictor, run_id, result.prediction.sha256, data, toward(result))
        overlay, overlay_note = cam.overlay, cam.note
    try:
        report = case_report.build_report(
            database,
            result.prediction_id,
            ui.session.history_scope(),
            image=data,
            overlay=overlay,
            overlay_caption=f"Grad-CAM toward {toward(result)}{overlay_note}",
        )
    except ValueError as error:
        st.warning(f"No case report: {error}.")
        return
    report_downloads(report, "predict_report")


def report_downloads(report, key: str) -> None:
    """The report as PDF and as printable HTML, each written only when its button is clicked."""
    from core.serving import case_report

    stem = case_report.file_stem(report)
    pdf, page = st.columns(2)
    pdf.download_button(
        "Case report (PDF)",
        lambda: case_report.to_pdf(report),
        f"{stem}.pdf",
        "application/pdf",
        key=f"{key}_pdf",
        on_click="ignore",
        icon=":material/picture_as_pdf:",
    )
    page.download_button(
        "Case report (HTML)",
        lambda: case_report.to_html(report),
        f"{stem}.html",
        "text/html",
        key=f"{key}_html",
        on_click="ignore",
        icon=":material/print:",
        help="A printable page: open it in a browser and print it.",
    )


def prediction_summary(result, ood_threshold: float | None) -> None:
    """The OOD warning first, then probability, label, distance and the likely diagnoses."""
    prediction = result.prediction
    if prediction.ood_flag:
        st.warning(
            f"**Out of distribution**: this image is unlike the training images (score "
            f"{prediction.ood_score:.1f} > {ui.formatting.number(ood_threshold, 1)}), so the "
            "probability below is unreliable. Is it a dermoscopy image of a skin lesion?",
            icon=":material/warning:",
        )
    # A distance that rounds to zero points gets a plain grey note, not a coloured up arrow.
    exact = round(result.distance * 100, 1) == 0
    st.metric(
        "Malignant probability (calibrated)",
        ui.formatting.percent(prediction.probability),
        delta=reports.threshold_distance(result.distance, prediction.threshold),
        delta_color="off" if exact else "inverse",
        delta_arrow="off" if exact else "auto",
    )
    shown = reports.shown_label(prediction.label, prediction.ood_flag)
    if prediction.ood_flag:
        st.badge(shown, color="gray", icon=":material/help:")
    else:
        whose = reports.whose_threshold(prediction.threshold_source)
        st.badge(
            f"{shown}, at {whose} threshold {prediction.threshold:.1%}",
            color="red" if prediction.label == "malignant" else "green",
            help="Above the threshold means a closer look is advised, not that the lesion is "
            "malignant: the threshold is an operating point, usually chosen for high sensitivity.",
        )
    ui.tables.diagnoses_table(prediction.diagnoses)
    st.caption(
        f"Model {prediction.model}, {prediction.width}x{prediction.height} px, "
        f"{prediction.latency_ms:.0f} ms, sha256 {prediction.sha256[:12]}..."
    )
    if result.repeated:
        st.caption(
            "This session predicted this image with this model and settings before: shown "
            "again, not stored again."
        )


def confirm_form(database: db.Database, prediction_id: int) -> None:
    """Record the confirmed outcome (say, from histopathology) of a stored prediction."""
    with st.form("predict_confirm"):
        st.markdown("**Confirmed outcome** (when known, e.g. from histopathology)")
        ui.outcomes.outcome_inputs("predict_confirm")
        if st.form_submit_button("Save outcome"):
            saved, message = ui.outcomes.save_outcome(
                database, [prediction_id], "predict_confirm", ui.session.session_id()
            )
            (st.success if saved else st.error)(message)


# Percent columns hold 0-100, so that one printf format gives one decimal everywhere.
_RESULT_COLUMNS = {
    "thumbnail": st.column_config.ImageColumn("Image", width="small"),
    "label": st.column_config.TextColumn("Result", width="medium"),
    "probability": st.column_config.ProgressColumn(
        "Probability", min_value=0, max_value=100, format="%.1f%%"
    ),
    "out_of_distribution": st.column_config.CheckboxColumn("Out of distribution"),
    "file": st.column_config.TextColumn("File"),
    # Probability minus threshold: a difference of percentages, in percentage points.
    "distance": st.column_config.NumberColumn("From threshold (points)", format="%+.1f pp"),
    "model": st.column_config.TextColumn("Model"),
    "threshold": st.column_config.NumberColumn("Threshold", format="%.1f%%"),
    "threshold_source": st.column_config.TextColumn("Threshold from"),
    "prediction_id": st.column_config.NumberColumn("ID", format="%d"),
}


def results_table(results) -> None:
    """A sortable table of a batch of predictions, thumbnails included."""
    from core.serving import predict_service

    frame = predict_service.results_frame(results)
    percents = {name: frame[name] * 100 for name in ("probability", "distance", "threshold")}
    labels = map(reports.shown_label, frame["label"], frame["out_of_distribution"])
    st.dataframe(
        frame.assign(
            thumbnail=frame["thumbnail"].map(ui.formatting.data_url),
            file=frame["file"].map(reports.display_name),
            label=list(labels),
            **percents,
        ),
        hide_index=True,
        column_order=list(_RESULT_COLUMNS),
        column_config=_RESULT_COLUMNS,
        placeholder="-",
        key="predict_table",
    )


def csv_button(results) -> None:
    """Every result of the upload, one or many, as CSV."""
    from core.serving import predict_service

    st.download_button(
        "Download CSV" if len(results) > 1 else "Download this prediction (CSV)",
        predict_service.results_csv(results),
        "predictions.csv",
        "text/csv",
        key="predict_csv",
    )


def earlier_table(earlier: pd.DataFrame) -> None:
    """Earlier predictions of one image, with the History page's column names."""
    shown = ui.tables.predictions_for_display(earlier)
    st.dataframe(
        shown,
        hide_index=True,
        column_order=[name for name in ui.tables.PREDICTION_COLUMNS if name in shown],
        column_config=ui.tables.PREDICTION_COLUMNS,
        placeholder="-",
    )
