"""Predict: calibrated malignant probability, Grad-CAM and history of each uploaded image."""

import streamlit as st

import ui.formatting
import ui.page
import ui.predict
import ui.runs
import ui.session
from core.analysis import reports
from core.serving import predict_service

st.set_page_config(page_title="Predict", page_icon=ui.page.page_icon("biotech"), layout="wide")
st.title("Predict")
ui.session.admin_sidebar()
ui.page.research_notice()
database = ui.session.optional_database()
run = ui.runs.run_picker("predict_model")
if run is None:
    st.info("No active model: train one, or activate a run, on the Train page first.")
    st.stop()
tta = st.toggle(
    "Test-time augmentation",
    value=run.card.tta,
    key="predict_tta",
    help=f"Average the image and {reports.tta_views_text(run.card)}. The model's threshold "
    f"was chosen with TTA {'on' if run.card.tta else 'off'}.",
)
files = st.file_uploader(
    "Dermoscopy images (JPEG, PNG), or a ZIP of images",
    type=["jpg", "jpeg", "png", "zip"],
    accept_multiple_files=True,
    max_upload_size=ui.formatting.upload_limit_mb(),
    key="predict_upload",
)
if not files:
    st.info("Upload one or more images to predict.")
    st.stop()

with st.spinner(ui.predict.LOADING_MODEL):
    predictor, run = ui.predict.working_predictor(run)
if predictor is None:
    st.error("No trained run can be loaded: train a new one on the Train page.")
    st.stop()
threshold = predictor.current_threshold()
if threshold.source == "local":
    st.info(
        f"Labels use the {threshold.note} (set on the Metrics page; the card's threshold is "
        f"{run.card.threshold:.3f}).",
        icon=":material/tune:",
    )
results, problems = ui.predict.batch_results(predictor, run.run_id, tta, files, database)
for problem in problems:
    st.warning(problem)
for result in results:
    if not result.ok:
        name = reports.display_name(result.prediction.file)
        st.error(f"{name}: {result.prediction.error}. Not stored.")
good = [index for index, result in enumerate(results) if result.ok]
if not good:
    st.stop()

if len(results) > 1:
    ui.predict.results_table(results)
ui.predict.csv_button(results)
index = st.selectbox(
    "Image",
    good,
    format_func=lambda i: reports.display_name(results[i].prediction.file),
    key="predict_detail",
)
result = results[index]
data = ui.predict.image_bytes(result, files)
picture, facts = st.columns(2)
with facts:
    ui.predict.prediction_summary(result, predictor.ood.threshold if predictor.ood else None)
    ui.predict.report_buttons(database, predictor, run.run_id, result, data)
with picture:
    ui.predict.explanation_view(predictor, run.run_id, result, data)

if database is None:
    st.stop()  # Nothing was stored: no earlier predictions to show, no outcome to record.
batch_ids = [r.prediction_id for r in results if r.prediction_id is not None]
earlier = predict_service.earlier_predictions(
    database, result, batch_ids, ui.session.history_scope()
)
if not earlier.empty:
    st.subheader("This image was predicted before")
    ui.predict.earlier_table(earlier)
ui.predict.confirm_form(database, result.prediction_id)
