"""History: every stored prediction, filtered and paged in SQL, with outcomes where known."""

import math

import streamlit as st

import ui.formatting
import ui.history
import ui.page
import ui.session
from core.analysis import history_charts, reports

st.set_page_config(page_title="History", page_icon=ui.page.page_icon("history"), layout="wide")
st.title("History")
ui.session.admin_sidebar()
database = ui.session.database()
# In public mode a visitor's filter always carries their own session id.
scope = ui.session.history_scope()
if scope is not None:
    st.caption("Showing the predictions of this browser session only.")
history_filter = ui.history.filter_form(database, scope)
# One container whether or not they show, so the tabs below keep their place in the page
# and a rerun after a delete or its undo never shows the old tabs beside the new ones.
with st.container():
    ui.history.notice()
    ui.history.undo_delete(database)
with st.expander("Import confirmed outcomes (CSV)", key=ui.history.IMPORT_OPEN, on_change="rerun"):
    if ui.session.require_admin("Outcome imports"):
        ui.history.import_outcomes(database)
        st.subheader("Past imports")
        ui.history.past_imports(database)
total = database.count_predictions(history_filter)
if total == 0:
    st.info("No stored predictions match. Predictions made on the Predict page appear here.")
    st.stop()
table, charts_tab, same_image, outcomes = st.tabs(
    ["Predictions", "Charts", "Same image, other models", "Confirmed outcomes"]
)

with table:
    pages = math.ceil(total / ui.history.PAGE_SIZE)
    st.caption(
        f"{ui.formatting.plural(total, 'prediction')}, newest first; "
        f"page size {ui.history.PAGE_SIZE}."
    )
    page = st.pagination(pages, key="history_page") if pages > 1 else 1
    rows = database.query_predictions(history_filter, page, ui.history.PAGE_SIZE)
    selected_ids = ui.history.history_table(rows, ui.history.table_key(page, history_filter))

    ui.history.export_button(database, history_filter)
    if selected_ids:
        ui.history.history_actions(database, selected_ids, scope)
    ui.history.report_section(database, rows, selected_ids, scope)

with charts_tab:
    st.plotly_chart(
        history_charts.predictions_per_day_figure(database.predictions_per_day(history_filter))
    )
    histogram = database.probability_histogram(history_filter).rename(columns={"run_id": "model"})
    st.plotly_chart(history_charts.probability_histogram_figure(histogram))

with same_image:
    comparisons = database.same_image_comparisons(history_filter)
    if comparisons.empty:
        st.info("No image was predicted by two or more models.")
    else:
        ui.history.same_image_table(comparisons)

with outcomes:
    confirmed = database.confirmed_outcomes(history_filter)
    if confirmed.empty and history_filter.confirmed is False:
        st.info("The filter shows unconfirmed predictions only.")
    elif confirmed.empty:
        st.info(
            "No confirmed diagnoses yet: add them on the Predict page, below the table, or "
            "import a CSV of outcomes."
        )
    else:
        st.caption(
            "Stored predictions against confirmed outcomes, at each model's threshold. A metric "
            f"needs {reports.MIN_CONFIRMED_CASES} confirmed cases of the class it depends on "
            "(both classes for ROC AUC, PPV and NPV). An image predicted more than once by a "
            "model counts once, its latest prediction."
        )
        st.table(reports.real_world_metrics(confirmed), hide_index=True)
