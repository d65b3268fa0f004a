"""Metrics: a run's held-out test results, explored at any threshold, and runs compared."""

import streamlit as st

import ui
import ui.metrics
from core import charts, reports

st.set_page_config(page_title="Metrics", page_icon=ui.page_icon("monitoring"), layout="wide")
st.title("Metrics")
ui.admin_sidebar()
database = ui.database()
# Cards come from the run folders, like every page's; the database indexes their predictions.
cards = ui.run_cards()
if not cards:
    st.info("No runs yet: train one on the Train page.")
    st.stop()
single, compare = st.tabs(["One run", "Compare runs"])

with single:
    run = ui.run_picker("metrics_run", "Run")
    run_id = run.run_id if run else next(iter(cards))
    card, predictions = cards.get(run_id), database.run_test_predictions(run_id)
    if card is None or predictions.empty:
        st.warning(f"Run {run_id} has no stored test predictions in the database.")
        st.stop()
    test = card["metrics"]["test"]
    st.caption(f"Held-out test split: {test['n']} images, {test['n_positive']} malignant.")
    ui.metrics.headline_table(test)
    card_threshold = float(card["threshold"]["value"])
    threshold = ui.metrics.threshold_slider(run_id, card_threshold)
    point = reports.operating_point(predictions, threshold)
    at_card = reports.operating_point(predictions, card_threshold)
    ui.metrics.threshold_cards(point, at_card)
    counts, normalised = st.columns(2)
    counts.plotly_chart(charts.confusion_matrix_figure(point.counts))
    normalised.plotly_chart(charts.confusion_matrix_figure(point.counts, normalize=True))
    roc, pr = st.columns(2)
    marks = {f"threshold {threshold:.3f}": point.roc_point} if point.roc_point else {}
    roc.plotly_chart(charts.roc_figure({run_id: {**test["roc"], "auc": test["roc_auc"]}}, marks))
    pr_marks = {f"threshold {threshold:.3f}": point.pr_point} if point.pr_point else {}
    prevalence = test["n_positive"] / test["n"]
    pr.plotly_chart(
        charts.pr_figure({run_id: {**test["pr"], "ap": test["pr_auc"]}}, pr_marks, prevalence)
    )
    calibration, report = st.columns(2)
    calibration.plotly_chart(charts.calibration_figure(test["calibration"]))
    report.markdown(f"**Classification report at {threshold:.3f}**")
    with report:
        ui.metrics.classification_report(predictions, threshold)
    epochs = database.run_epochs(run_id)
    if not epochs.empty:
        st.plotly_chart(charts.learning_curves_figure(epochs))
    site, origin = st.columns(2)
    for column, key in ((site, "site"), (origin, "source")):
        if test["subgroups"].get(key):
            column.plotly_chart(charts.subgroup_auc_figure(test["subgroups"], key))
    if run is not None:
        ui.metrics.crossval_section(run, test.get("roc_auc"))

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
