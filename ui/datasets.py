"""Choosing the data a job runs on: the bundled sample, a dataset in the data root, or a ZIP."""

from pathlib import Path

import streamlit as st

import ui.formatting
import ui.jobs
import ui.page
from core import config
from core.inputs import datasets

DATA_SOURCES = ("Bundled sample", "A dataset in the data folder", "Upload a ZIP")


def dataset_picker(prefix: str) -> tuple[Path, Path | None] | None:
    """Choose a dataset: the bundled sample, one in the data root, or an uploaded ZIP.

    Returns (data folder, ground-truth CSV or None), or None after saying there is none; in
    "Upload a ZIP" mode only the dataset unpacked from the chosen upload, once it is unpacked.
    Widget keys `<prefix>_source`, `<prefix>_zip`, `<prefix>_unpack` and `<prefix>_dataset`.
    Changing any of them clears the failure of a job started before (see `ui.jobs.job_monitor`).
    """
    source = st.radio(
        "Data",
        DATA_SOURCES,
        horizontal=True,
        key=f"{prefix}_source",
        on_change=ui.jobs.input_changed,
        args=(prefix,),
    )
    if source == "Upload a ZIP":
        return dataset_upload(prefix)
    if source == "Bundled sample":
        return config.SAMPLE_DIR, config.SAMPLE_DIR / "metadata.csv"
    choices = datasets.discover_datasets()
    if not choices:
        st.info(
            "No dataset found in the data folder (DERMO_DATA_ROOT): copy one there or "
            "upload a ZIP."
        )
        return None
    choice = st.selectbox(
        "Dataset",
        choices,
        format_func=lambda c: c.label,
        key=f"{prefix}_dataset",
        on_change=ui.jobs.input_changed,
        args=(prefix,),
    )
    return choice.data_dir, choice.csv


def dataset_upload(prefix: str) -> tuple[Path, Path | None] | None:
    """The ZIP upload: unpacked into the data root and returned, or refused with nothing kept.

    Until the chosen file is unpacked (and after a refused one) there is no dataset, so that
    nothing starts on other data than the upload.
    """
    from core.inputs import images

    archive = st.file_uploader(
        "ZIP with images and a ground-truth CSV, or benign/ and malignant/ folders",
        type=["zip"],
        max_upload_size=ui.formatting.upload_limit_mb(config.MAX_DATASET_UPLOAD_BYTES),
        key=f"{prefix}_zip",
        on_change=ui.jobs.input_changed,
        args=(prefix,),
    )
    unpacked_key = f"{prefix}_unpacked"
    if archive is None:
        st.session_state.pop(unpacked_key, None)
        st.info("Choose a ZIP, then unpack it.", icon=":material/upload:")
        return None
    if st.button("Unpack into the data folder", key=f"{prefix}_unpack"):
        ui.jobs.input_changed(prefix)
        st.session_state.pop(unpacked_key, None)
        try:
            unpacked, found = datasets.unpack_dataset(archive.name, archive.getvalue())
        except (
            images.ArchiveError,
            datasets.DatasetPathError,
            datasets.DatasetLayoutError,
        ) as error:
            st.error(f"{archive.name}: {datasets.without_paths(str(error))}")
            return None
        where = datasets.describe_location(unpacked.folder)
        st.success(f"Unpacked {unpacked.extracted} files into {where}.")
        ui.page.show_problems([f"{name}: skipped ({why})" for name, why in unpacked.skipped[:20]])
        # The upload's file id ties the dataset to this upload: another file means unpack again.
        st.session_state[unpacked_key] = (archive.file_id, found)
    chosen = st.session_state.get(unpacked_key)
    if chosen is None or chosen[0] != archive.file_id or not chosen[1].data_dir.is_dir():
        st.info(f"Unpack {archive.name} to use it.", icon=":material/unarchive:")
        return None
    found = chosen[1]
    st.caption(f"Dataset: {found.label}")
    return found.data_dir, found.csv
