"""Streamlit-only helpers that several pages share: database, session, access, formatting.

Each page's own helpers live in the module named after it (`ui.train` for the Train page).

Nothing here imports TensorFlow or scikit-learn at module level, so Home, Metrics and History
stay light; the Predictor loads TensorFlow inside the function that builds it.
"""

import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import streamlit as st

import ui.formatting
import ui.page
from core import config, datasets, worker

DATA_SOURCES = ("Bundled sample", "A dataset in the data folder", "Upload a ZIP")


def dataset_picker(prefix: str) -> tuple[Path, Path | None] | None:
    """Choose a dataset: the bundled sample, one in the data root, or an uploaded ZIP.

    Returns (data folder, ground-truth CSV or None), or None after saying there is none; in
    "Upload a ZIP" mode only the dataset unpacked from the chosen upload, once it is unpacked.
    Widget keys `<prefix>_source`, `<prefix>_zip`, `<prefix>_unpack` and `<prefix>_dataset`.
    Changing any of them clears the failure of a job started before (see `job_monitor`).
    """
    source = st.radio(
        "Data",
        DATA_SOURCES,
        horizontal=True,
        key=f"{prefix}_source",
        on_change=_input_changed,
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
        on_change=_input_changed,
        args=(prefix,),
    )
    return choice.data_dir, choice.csv


def _input_changed(prefix: str) -> None:
    st.session_state[f"{prefix}_input_changed_at"] = time.time()


def dataset_upload(prefix: str) -> tuple[Path, Path | None] | None:
    """The ZIP upload: unpacked into the data root and returned, or refused with nothing kept.

    Until the chosen file is unpacked (and after a refused one) there is no dataset, so that
    nothing starts on other data than the upload.
    """
    from core import images

    archive = st.file_uploader(
        "ZIP with images and a ground-truth CSV, or benign/ and malignant/ folders",
        type=["zip"],
        max_upload_size=ui.formatting.upload_limit_mb(config.MAX_DATASET_UPLOAD_BYTES),
        key=f"{prefix}_zip",
        on_change=_input_changed,
        args=(prefix,),
    )
    unpacked_key = f"{prefix}_unpacked"
    if archive is None:
        st.session_state.pop(unpacked_key, None)
        st.info("Choose a ZIP, then unpack it.", icon=":material/upload:")
        return None
    if st.button("Unpack into the data folder", key=f"{prefix}_unpack"):
        _input_changed(prefix)
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


def job_monitor(
    kind: str,
    show_finished: Callable[[worker.JobStatus], None],
    prefix: str,
    on_done: Callable[[worker.JobStatus], None] | None = None,
    gone: Callable[[worker.JobStatus], bool] | None = None,
) -> None:
    """The latest background job of `kind`, refreshed every 2 s while it runs (only then).

    When a job seen running finishes, `on_done` runs and the page reruns in full (so that
    Start buttons are enabled again); a finished job is drawn by `show_finished`, unless it
    is out of date: it failed on input changed since (`dataset_picker`), or `gone` says what
    it made is gone (a deleted run).
    """
    first = worker.latest_job(kind=kind)
    running = first is not None and not first.finished

    @st.fragment(run_every=2 if running else None)
    def monitor() -> None:
        status = worker.latest_job(kind=kind)
        if status is None or (
            status.finished and not running and _out_of_date(status, prefix, gone)
        ):
            return
        st.subheader(f"{status.kind.capitalize()} {status.job_id}")
        if not status.finished:
            _show_running(status, prefix)
        elif running:
            if on_done is not None:
                on_done(status)
            st.rerun()
        else:
            show_finished(status)

    monitor()


def _out_of_date(
    status: worker.JobStatus, prefix: str, gone: Callable[[worker.JobStatus], bool] | None
) -> bool:
    changed_at = st.session_state.get(f"{prefix}_input_changed_at", 0.0)
    failed_before = status.state == "failed" and status.started_at < changed_at
    return failed_before or (gone is not None and gone(status))


def _progress_text(status: worker.JobStatus) -> str:
    """What the job is doing, in plain words."""
    step = "run" if status.kind == worker.EVALUATION else "epoch"
    if status.fraction is not None:
        return f"{status.stage_name}: {step} {status.epoch} of {status.epochs}"
    if status.epochs:
        # A phase's last step is done; what follows until the next report has no progress.
        return f"{status.stage_name}: done, preparing the next step"
    if status.message and status.message.lower() not in (status.stage, status.stage_name.lower()):
        return f"{status.stage_name}: {status.message}"
    return status.stage_name


def _show_running(status: worker.JobStatus, prefix: str) -> None:
    from core import charts

    if status.fraction is None:
        st.status(_progress_text(status), state="running")
    else:
        st.progress(status.fraction, text=_progress_text(status))
    remaining = status.remaining_seconds
    st.caption(
        f"{status.elapsed_seconds:.0f} s since Start"
        + ("" if remaining is None else f"; about {remaining:.0f} s left in this phase")
    )
    if status.history:
        st.plotly_chart(charts.learning_curves_figure(pd.DataFrame(status.history)))
    if st.button(f"Cancel {status.kind}", key=f"{prefix}_cancel"):
        worker.cancel(status.job_id)
        st.info("Cancelling: the job stops after the current batch.")
