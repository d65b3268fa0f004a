"""Home: the active model at a glance, the database, and the way to each page."""

import streamlit as st

import ui
from core import runs

st.set_page_config(page_title="Dermoscopy classifier", page_icon=":material/dermatology:")
st.title("Dermoscopy classifier")
st.caption("Benign or malignant? Transfer learning on dermoscopy images, evaluated honestly.")
ui.admin_sidebar()
ui.research_notice()
ui.access_notice()

database = ui.database()
active, problems = runs.active_run()
ui.show_problems([*problems, *database.ingest_problems])

st.subheader("Active model")
if active is None:
    st.info("No trained model yet. Train one on the bundled sample on the Train page.")
else:
    if active.run_id != runs.active_run_id():
        st.error(f"No usable active model is set; showing the newest good run, {active.run_id}.")
    st.markdown(f"**{active.run_id}**")
    test = (active.card.get("metrics") or {}).get("test") or {}
    auc, sensitivity, specificity = st.columns(3)
    auc.metric("Test ROC AUC", ui.number(test.get("roc_auc")))
    sensitivity.metric("Sensitivity", ui.percent(test.get("sensitivity")))
    specificity.metric("Specificity", ui.percent(test.get("specificity")))
    st.dataframe(ui.run_facts(active.card), hide_index=True)

st.subheader("Database")
status = database.status()
trained, predicted = st.columns(2)
trained.metric("Runs", status["n_runs"])
predicted.metric("Stored predictions", status["n_predictions"])
st.caption(f"{status['path']} (schema version {status['schema_version']})")

st.subheader("Pages")
st.page_link(
    "pages/1_Predict.py", label="Predict: classify images, see Grad-CAM", icon=":material/biotech:"
)
st.page_link(
    "pages/2_Train.py", label="Train: new runs on your data", icon=":material/model_training:"
)
st.page_link(
    "pages/3_Metrics.py", label="Metrics: evaluate and compare runs", icon=":material/monitoring:"
)
st.page_link(
    "pages/4_History.py",
    label="History: stored predictions and outcomes",
    icon=":material/history:",
)
