"""Helpers of the Train page: dataset check, settings, the live job and the run manager.

Widget keys here carry the page's prefix, `train_`.
"""

import pandas as pd
import streamlit as st

import ui
from core import runs


@st.cache_data(ttl=300, max_entries=8, show_spinner="Checking the dataset")
def _validate(data_dir: str, csv: str | None, sites: tuple[str, ...]):
    from core import data

    # A full decode names truncated files too: training drops exactly the files listed here.
    return data.validate_dataset(data_dir, csv, sites or None, full_decode=True)


def validation_report(data_dir: str, csv: str | None, sites: tuple[str, ...]):
    """Check a dataset (cached for a few minutes) and show what is usable and what is wrong."""
    report = _validate(data_dir, csv, sites)
    counts = st.columns(3)
    counts[0].metric("Usable images", report.n_images)
    counts[1].metric("Benign", report.class_counts["benign"])
    counts[2].metric("Malignant", report.class_counts["malignant"])
    if not report.site_counts.empty:
        with st.expander("Images by anatomical site"):
            st.dataframe(report.site_counts)
    for problem in report.problems:
        show = st.error if problem.level == "error" else st.warning
        show(problem.message)
        if problem.files:
            with st.expander(f"{len(problem.files)} files"):
                st.text("\n".join(problem.files[:200]))
    return report


def _job_fraction(status) -> float:
    if not status.epochs or not status.batches:
        return 0.0
    return min(max((status.epoch - 1 + status.batch / status.batches) / status.epochs, 0.0), 1.0)


def _show_running(status) -> None:
    from core import charts, worker

    st.progress(_job_fraction(status), text=status.message)
    remaining = status.remaining_seconds
    st.caption(
        f"Stage {status.stage}, epoch {status.epoch}/{status.epochs}; elapsed "
        f"{status.elapsed_seconds:.0f} s"
        + ("" if remaining is None else f", about {remaining:.0f} s left in this phase")
    )
    if status.history:
        st.plotly_chart(charts.learning_curves_figure(pd.DataFrame(status.history)))
    if st.button("Cancel training", key="train_cancel"):
        worker.cancel(status.job_id)
        st.info("Cancelling: the job stops after the current batch.")


def _show_finished(status) -> None:
    from core import reports, worker

    if status.state == "cancelled":
        st.warning(f"Training {status.job_id} was cancelled; the active model is unchanged.")
        return
    if status.state == "failed":
        st.error(f"Training {status.job_id} failed: {status.error}")
        log = worker.jobs_dir() / status.job_id / "log.txt"
        if log.is_file():
            with st.expander("Log (last lines)"):
                st.code("\n".join(log.read_text(errors="replace").splitlines()[-40:]))
        return
    st.success(f"Training finished in {status.elapsed_seconds:.0f} s: run {status.run_id}.")
    try:
        new_run = runs.load_run(runs.models_dir() / status.run_id)
    except runs.RunError as error:
        st.error(str(error))
        return
    active, _ = runs.active_run()
    cards = {f"new: {new_run.run_id}": new_run.card}
    if active is not None and active.run_id != new_run.run_id:
        cards[f"active: {active.run_id}"] = active.card
    st.dataframe(reports.comparison_table(cards).astype(str))
    if active is not None and active.run_id == new_run.run_id:
        st.caption("This run is the active model.")
    elif st.button("Make this run the active model", key="train_activate"):
        runs.set_active(new_run.run_id)
        st.rerun()


def training_monitor() -> None:
    """The latest training job, refreshed every 2 s while it runs (and only then)."""
    from core import worker

    first = worker.latest_job()
    running = first is not None and not first.finished

    @st.fragment(run_every=2 if running else None)
    def monitor() -> None:
        status = worker.latest_job()
        if status is None:
            return
        st.subheader(f"Training {status.job_id}")
        if not status.finished:
            _show_running(status)
        elif running:
            st.rerun()  # A full rerun stops the polling and refreshes the list of runs.
        else:
            _show_finished(status)

    monitor()


def train_settings() -> dict:
    """The Settings expander of the Train page: TrainConfig's keyword arguments."""
    from core.model import BACKBONES
    from core.train_config import AUGMENTATION_STRENGTHS, TrainConfig

    defaults = TrainConfig(data_dir="")

    with st.expander("Settings", expanded=True):
        left, middle, right = st.columns(3)
        settings = {
            "backbone": left.selectbox("Backbone", list(BACKBONES), key="train_backbone"),
            "image_size": left.selectbox(
                "Input size (px)", [64, 96, 128, 160, 192, 224], index=3, key="train_image_size"
            ),
            "weights": left.radio(
                "Initial weights",
                ["imagenet", "none"],
                key="train_weights",
                help="'none' trains from random weights: only for quick checks.",
            ),
            "head_epochs": middle.number_input(
                "Head epochs", 1, 200, defaults.head_epochs, key="train_epochs"
            ),
            "fine_tune_epochs": middle.number_input(
                "Fine-tune epochs", 0, 100, defaults.fine_tune_epochs, key="train_fine_tune"
            ),
            "seed": middle.number_input("Seed", 0, 2**31 - 1, defaults.seed, key="train_seed"),
            "imbalance": right.selectbox(
                "Class imbalance", ["class_weight", "none"], key="train_imbalance"
            ),
            "augmentation": right.selectbox(
                "Augmentation",
                list(AUGMENTATION_STRENGTHS),
                index=list(AUGMENTATION_STRENGTHS).index(defaults.augmentation),
                key="train_augmentation",
            ),
            "threshold_rule": right.selectbox(
                "Threshold rule", ["sensitivity", "youden"], key="train_rule"
            ),
        }
        settings["target_sensitivity"] = right.slider(
            "Target sensitivity",
            0.5,
            0.99,
            defaults.target_sensitivity,
            key="train_target",
            disabled=settings["threshold_rule"] != "sensitivity",
        )
    return settings


def run_manager() -> None:
    """Finished runs: download, delete (never the active one); the feature cache."""
    from core import features

    st.subheader("Runs")
    found, problems = runs.list_runs()
    ui.show_problems(problems)
    active_id = runs.active_run_id()
    if found:
        run_id = st.selectbox(
            "Run",
            [run.run_id for run in found],
            key="train_run",
            format_func=lambda run_id: ui.run_label(
                next(run for run in found if run.run_id == run_id), active_id
            ),
        )
        # One row: the delete button sits beside its confirmation, level with the download.
        actions = st.container(horizontal=True, vertical_alignment="center", gap="medium")
        actions.download_button(
            "Download run (ZIP)",
            lambda: runs.zip_run(run_id),
            f"{run_id}.zip",
            "application/zip",
            key="train_download",
        )
        sure = actions.checkbox(
            "Yes, delete this run", key="train_delete_confirm", disabled=run_id == active_id
        )
        if actions.button(
            "Delete run",
            key="train_delete",
            disabled=not sure or run_id == active_id,
            help="The active model cannot be deleted; activate another run first.",
        ):
            try:
                runs.delete_run(run_id)
            except runs.RunError as error:
                st.error(str(error))
            else:
                st.rerun()
    else:
        st.caption("No runs yet.")
    size = features.cache_size()
    st.caption(f"Feature cache: {size / 1024**2:.1f} MB of cached backbone features")
    if st.button("Clear the feature cache", key="train_clear_cache", disabled=size == 0):
        st.success(f"Freed {features.clear_cache() / 1024**2:.1f} MB.")
