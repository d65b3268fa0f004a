"""Train: choose and check the data, set the training up, start it and follow it live."""

import streamlit as st

import ui.datasets
import ui.page
import ui.session
import ui.train
from core.train.train_config import TrainConfig

st.set_page_config(
    page_title="Train", page_icon=ui.page.page_icon("model_training"), layout="wide"
)
st.title("Train")
ui.session.admin_sidebar()
ui.session.optional_database()  # Only to index finished runs: training does not need it.
if not ui.session.require_admin("Training, dataset uploads and managing runs"):
    st.stop()
picked = ui.datasets.dataset_picker("train")
if picked is None:
    st.stop()
data_dir, csv = picked
sites = ui.train.site_picker()
report = ui.train.validation_report(str(data_dir), str(csv) if csv else None, sites)
if not report.ok:
    st.stop()

settings = ui.train.train_settings(ui.train.preset_picker())
ui.train.start_button(
    TrainConfig(data_dir=str(data_dir), csv=str(csv) if csv else None, sites=sites, **settings)
)
ui.train.training_monitor()
ui.train.run_manager()
