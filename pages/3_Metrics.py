"""Metrics: a run's test results at any threshold, runs compared, runs evaluated on your data."""

import streamlit as st

import ui.metrics
import ui.page
import ui.runs
import ui.session

st.set_page_config(page_title="Metrics", page_icon=ui.page.page_icon("monitoring"), layout="wide")
st.title("Metrics")
ui.session.admin_sidebar()
database = ui.session.database()
# Cards come from the run folders, like every page's; the database indexes their predictions.
cards = ui.runs.run_cards()
if not cards:
    st.info("No runs yet: train one on the Train page.")
    st.stop()
single, compare, own = st.tabs(["One run", "Compare runs", "Evaluate on your data"])

with single:
    run = ui.runs.run_picker("metrics_run", "Run")
    predictions = database.run_test_predictions(run.run_id) if run else None
    if run is None or predictions is None or predictions.empty:
        st.warning("This run has no stored test predictions in the database.")
    else:
        ui.metrics.test_split(run, predictions, database.run_epochs(run.run_id))

with compare:
    chosen = st.multiselect("Runs to compare", list(cards), key="metrics_compare")
    if len(chosen) < 2:
        st.info("Choose two or more runs.")
    else:
        picked = {run_id: cards[run_id] for run_id in chosen}
        splits = {run_id: database.run_test_predictions(run_id) for run_id in chosen}
        ui.metrics.comparison_table(picked, splits)
        paired = ui.metrics.paired_images(database, splits)
        if paired is not None:
            ui.metrics.paired_comparison(paired, picked)

with own:
    if ui.session.require_admin("Evaluating runs on your data and dataset uploads"):
        ui.metrics.evaluate_on_your_data(database, cards)
