"""Home: what to do first, the active model at a glance, and the database."""

import streamlit as st

import ui.formatting
import ui.home
import ui.page
import ui.session
from core.storage import runs

st.set_page_config(
    page_title="Dermoscopy classifier", page_icon=ui.page.page_icon("dermatology"), layout="wide"
)
st.title("Dermoscopy classifier")
st.caption("Benign or malignant? Transfer learning on dermoscopy images, evaluated honestly.")
ui.session.admin_sidebar()
ui.page.research_notice()
ui.session.access_notice()
ui.session.storage_notice()

database = ui.session.optional_database()
active, problems = runs.active_run()
ui.page.show_problems([*problems, *(database.ingest_problems if database else ())])

st.subheader("Start here")
for path, label, icon in ui.home.START_HERE:
    st.page_link(path, label=label, icon=icon)

st.subheader("Active model")
if active is None:
    st.info("No active model. Train one on the bundled sample, or activate a run, on Train.")
else:
    st.markdown(f"**{active.run_id}**")
    test = active.card.test_metrics
    auc, sensitivity, specificity = st.columns(3)
    auc.metric("Test ROC AUC", ui.formatting.number(test.get("roc_auc")))
    sensitivity.metric("Sensitivity", ui.formatting.percent(test.get("sensitivity")))
    specificity.metric("Specificity", ui.formatting.percent(test.get("specificity")))
    st.dataframe(ui.home.run_facts(active.card), hide_index=True)

st.subheader("Database")
ui.home.database_summary(database)
