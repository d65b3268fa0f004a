"""Train: choose and check the data, set the training up, start it and follow it live."""

import streamlit as st

import ui
import ui.train
from core import config, datasets
from core.train_config import TrainConfig

st.set_page_config(page_title="Train", page_icon=ui.page_icon("model_training"), layout="wide")
st.title("Train")
ui.admin_sidebar()
ui.database()
if not ui.require_admin("Training, dataset uploads and managing runs"):
    st.stop()
source = st.radio(
    "Data",
    ["Bundled sample", "A dataset in the data folder", "Upload a ZIP"],
    horizontal=True,
    key="train_source",
)
if source == "Upload a ZIP":
    ui.train.dataset_upload()
if source == "Bundled sample":
    data_dir, csv = config.SAMPLE_DIR, config.SAMPLE_DIR / "metadata.csv"
else:
    choices = datasets.discover_datasets()
    if not choices:
        st.info(
            "No dataset found in the data folder (DERMO_DATA_ROOT): copy one there or "
            "upload a ZIP."
        )
        st.stop()
    choice = st.selectbox("Dataset", choices, format_func=lambda c: c.label, key="train_dataset")
    data_dir, csv = choice.data_dir, choice.csv
sites = ui.train.site_picker()
report = ui.train.validation_report(str(data_dir), str(csv) if csv else None, sites)
if not report.ok:
    st.stop()

settings = ui.train.train_settings()
ui.train.start_button(
    TrainConfig(data_dir=str(data_dir), csv=str(csv) if csv else None, sites=sites, **settings)
)
ui.train.training_monitor()
ui.train.run_manager()
