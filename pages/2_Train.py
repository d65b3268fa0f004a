"""Train: choose and check the data, set the training up, start it and follow it live."""

import streamlit as st

import ui
import ui.train
from core import config, data, datasets, images, worker
from core.train_config import TrainConfig

st.set_page_config(page_title="Train", page_icon=":material/model_training:", layout="wide")
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
    archive = st.file_uploader(
        "ZIP with images and a ground-truth CSV, or benign/ and malignant/ folders",
        type=["zip"],
        key="train_zip",
    )
    if archive is not None and st.button("Unpack into the data folder", key="train_unpack"):
        try:
            unpacked = datasets.unpack_dataset_zip(archive.name, archive.getvalue())
        except (images.ArchiveError, datasets.DatasetPathError) as error:
            st.error(f"{archive.name}: {error}")
            st.stop()
        st.success(f"Unpacked {unpacked.extracted} files into {unpacked.folder}.")
        ui.show_problems([f"{name}: skipped ({why})" for name, why in unpacked.skipped[:20]])
        found = datasets.datasets_in(unpacked.folder)
        if not found:
            st.error("No dataset layout recognised in the archive (CSV or benign/ + malignant/).")
            st.stop()
        st.session_state["train_dataset"] = found[0]
choices = datasets.discover_datasets()
if source == "Bundled sample":
    data_dir, csv = config.SAMPLE_DIR, config.SAMPLE_DIR / "metadata.csv"
else:
    if not choices:
        st.info(f"No dataset found in {datasets.data_root()}: copy one there or upload a ZIP.")
        st.stop()
    choice = st.selectbox("Dataset", choices, format_func=lambda c: c.label, key="train_dataset")
    data_dir, csv = choice.data_dir, choice.csv
sites = st.multiselect("Anatomical sites", data.SITE_CHOICES, default=["all"], key="train_sites")
report = ui.train.validation_report(str(data_dir), str(csv) if csv else None, tuple(sites))
if not report.ok:
    st.stop()

settings = ui.train.train_settings()
if st.button("Start training", type="primary", key="train_start"):
    train_config = TrainConfig(
        data_dir=str(data_dir),
        csv=str(csv) if csv else None,
        sites=tuple(sites) or ("all",),
        **settings,
    )
    try:
        worker.start_training(train_config, activate=False)
    except (worker.TrainingBusyError, ValueError) as error:
        st.error(str(error))
ui.train.training_monitor()
ui.train.run_manager()
