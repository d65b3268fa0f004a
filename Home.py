"""Home: the active model at a glance, the database, and the way to each page."""

import streamlit as st

import ui
import ui.home
from core import runs

st.set_page_config(
    page_title="Dermoscopy classifier", page_icon=ui.page_icon("dermatology"), layout="wide"
)
st.title("Dermoscopy classifier")
st.caption("Benign or malignant? Transfer learning on dermoscopy images, evaluated honestly.")
ui.admin_sidebar()
ui.research_notice()
ui.access_notice()
ui.storage_notice()

database = ui.optional_database()
active, problems = runs.active_run()
ui.show_problems([*problems, *(database.ingest_problems if database else ())])

st.subheader("Active model")
if active is None:
    st.info("No active model. Train one on the bundled sample, or activate a run, on Train.")
else:
    st.markdown(f"**{active.run_id}**")
    test = (active.card.get("metrics") or {}).get("test") or {}
    auc, sensitivity, specificity = st.columns(3)
    auc.metric("Test ROC AUC", ui.number(test.get("roc_auc")))
    sensitivity.metric("Sensitivity", ui.percent(test.get("sensitivity")))
    specificity.metric("Specificity", ui.percent(test.get("specificity")))
    st.dataframe(ui.home.run_facts(active.card), hide_index=True)

stored, pages = st.columns(2, gap="large")
with stored:
    st.subheader("Database")
    ui.home.database_summary(database)
with pages:
    st.subheader("Pages")
    for path, label, icon in (
        ("pages/1_Predict.py", "Predict: classify images, see Grad-CAM", ":material/biotech:"),
        ("pages/2_Train.py", "Train: new runs on your data", ":material/model_training:"),
        ("pages/3_Metrics.py", "Metrics: evaluate and compare runs", ":material/monitoring:"),
        ("pages/4_History.py", "History: stored predictions and outcomes", ":material/history:"),
    ):
        st.page_link(path, label=label, icon=icon)
