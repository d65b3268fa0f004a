"""Helpers of the Train page: data, settings, the live job and the run manager.

Widget keys here carry the page's prefix, `train_`.
"""

import streamlit as st

import ui.jobs
import ui.metrics
import ui.page
import ui.runs
from core.inputs import datasets
from core.storage import runs

_NOTICE = "train_notice"
_RUN_NOTICE = "train_run_notice"


def site_picker() -> tuple[str, ...]:
    """The anatomical sites to keep: "all", or named sites, never both."""
    from core.inputs import data

    st.session_state.setdefault("train_sites", [data.ALL_SITES])
    chosen = st.multiselect(
        "Anatomical sites",
        data.SITE_CHOICES,
        key="train_sites",
        on_change=_all_or_named_sites,
        help="'all' keeps every site; choosing a site replaces 'all', and 'all' replaces them.",
    )
    return tuple(chosen) or (data.ALL_SITES,)


def _all_or_named_sites() -> None:
    # The latest choice wins: "all" added last replaces the sites, a site added replaces "all".
    from core.inputs import data

    chosen = st.session_state["train_sites"]
    if data.ALL_SITES in chosen and len(chosen) > 1:
        latest_is_all = chosen[-1] == data.ALL_SITES
        named = [site for site in chosen if site != data.ALL_SITES]
        st.session_state["train_sites"] = [data.ALL_SITES] if latest_is_all else named


@st.cache_data(ttl=300, max_entries=8, show_spinner="Checking the dataset")
def _validate(data_dir: str, csv: str | None, sites: tuple[str, ...]):
    from core.inputs import data

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
        show(datasets.without_paths(problem.message))
        if problem.files:
            with st.expander(f"{len(problem.files)} files"):
                st.text("\n".join(problem.files[:200]))
    return report


# The Settings widgets that a preset sets, by TrainConfig field; its tta_views has no widget.
_PRESET_WIDGETS = {
    "image_size": "train_image_size",
    "fine_tune_epochs": "train_fine_tune",
    "threshold_rule": "train_rule",
}


def preset_picker() -> str:
    """The recipe, as on the command line (--preset), with what each costs."""
    from core.train.train_config import PRESET_COSTS, PRESETS

    return st.radio(
        "Preset",
        list(PRESETS),
        captions=[PRESET_COSTS[name] for name in PRESETS],
        key="train_preset",
        on_change=_apply_preset,
        help="Sets input size, fine-tune epochs, TTA views and threshold rule; the settings "
        "below can still be changed on top of it.",
    )


def _apply_preset() -> None:
    # The preset's values replace those of the settings it sets; the others stay as chosen.
    from core.train.train_config import preset_config

    chosen = preset_config(st.session_state["train_preset"], data_dir="")
    for field, key in _PRESET_WIDGETS.items():
        st.session_state[key] = getattr(chosen, field)


def train_settings(preset: str) -> dict:
    """The Settings expander of the Train page: TrainConfig's keyword arguments.

    Choices and defaults come from core (the preset's TrainConfig, `core.train.train_config`'s
    allowed values, `core.modelling.backbones`), the same ones the command line uses. The widgets a
    preset sets take their value from session state only, so that the preset's callback can
    set them.
    """
    from core.modelling import backbones
    from core.train.train_config import (
        AUGMENTATION_STRENGTHS,
        IMBALANCES,
        TARGETS,
        THRESHOLD_RULES,
        WEIGHTS,
        preset_config,
    )

    defaults = preset_config(preset, data_dir="")
    for field, key in _PRESET_WIDGETS.items():
        st.session_state.setdefault(key, getattr(defaults, field))

    def default(options, value) -> int:
        return list(options).index(value)

    with st.expander("Settings", expanded=True):
        left, middle, right = st.columns(3)
        settings = {
            "backbone": left.selectbox(
                "Backbone",
                backbones.BACKBONE_NAMES,
                default(backbones.BACKBONE_NAMES, defaults.backbone),
                key="train_backbone",
            ),
            "image_size": left.selectbox(
                "Input size (px)", backbones.OFFERED_IMAGE_SIZES, key="train_image_size"
            ),
            "weights": left.radio(
                "Initial weights",
                WEIGHTS,
                key="train_weights",
                help="'none' trains from random weights: only for quick checks.",
            ),
            "target": left.selectbox(
                "Target",
                TARGETS,
                default(TARGETS, defaults.target),
                key="train_target_kind",
                help="'diagnosis' learns the diagnoses, whose malignant ones sum to the "
                "probability; 'binary' learns benign or malignant only.",
            ),
            "head_epochs": middle.number_input(
                "Head epochs", 1, 200, defaults.head_epochs, key="train_epochs"
            ),
            "fine_tune_epochs": middle.number_input(
                "Fine-tune epochs", 0, 100, key="train_fine_tune"
            ),
            "seed": middle.number_input("Seed", 0, 2**31 - 1, defaults.seed, key="train_seed"),
            "imbalance": right.selectbox("Class imbalance", IMBALANCES, key="train_imbalance"),
            "augmentation": right.selectbox(
                "Augmentation",
                list(AUGMENTATION_STRENGTHS),
                default(AUGMENTATION_STRENGTHS, defaults.augmentation),
                key="train_augmentation",
            ),
            "threshold_rule": right.selectbox(
                "Threshold rule",
                THRESHOLD_RULES,
                key="train_rule",
                help="'held_out_sources' chooses it on sources held out in turn (slower).",
            ),
        }
        settings["target_sensitivity"] = right.slider(
            "Target sensitivity",
            0.5,
            0.99,
            defaults.target_sensitivity,
            key="train_target",
            disabled=settings["threshold_rule"] == "youden",
        )
    return {**settings, "tta_views": defaults.tta_views}


def start_button(train_config) -> None:
    """Start training, disabled while a job runs; the weights are checked before any data."""
    from core import worker
    from core.modelling import model

    latest = worker.latest_job()
    running = latest is not None and not latest.finished
    if _NOTICE in st.session_state:
        st.info(st.session_state.pop(_NOTICE), icon=":material/info:")
    clicked = st.button(
        "Start training",
        type="primary",
        key="train_start",
        disabled=running,
        help="One training runs at a time: wait for it or cancel it." if running else None,
    )
    if not clicked:
        return
    try:
        with st.spinner("Checking the backbone weights"):
            weights = model.resolve_weights(
                train_config.backbone, train_config.image_size, train_config.weights
            )
        worker.start_training(train_config, activate=False)
    except (worker.TrainingBusyError, ValueError) as error:
        st.error(datasets.without_paths(str(error)))
        return
    if weights.note:
        st.session_state[_NOTICE] = weights.note
    st.rerun()  # Drawn again at once, Start shows as disabled while the job runs.


def _show_finished(status) -> None:
    from core import worker

    if status.state == "cancelled":
        st.warning(f"Training {status.job_id} was cancelled; the active model is unchanged.")
        return
    if status.state == "failed":
        st.error(f"Training {status.job_id} failed: {datasets.without_paths(status.error or '')}")
        log = worker.jobs_dir() / status.job_id / "log.txt"
        st.caption(f"The full log stays on the server: {datasets.describe_location(log)}.")
        return
    st.success(
        f"Training finished {status.elapsed_seconds:.0f} s after Start: run {status.run_id}. "
        "Compare it below; activate it under Runs."
    )
    _compare_with_active(status.run_id)


def _compare_with_active(run_id: str) -> None:
    try:
        new_run = runs.load_run(runs.models_dir() / run_id)
    except runs.RunError as error:
        st.error(datasets.without_paths(str(error)))
        return
    active, _ = runs.active_run()
    cards = {f"new: {new_run.run_id}": new_run.card}
    if active is not None and active.run_id != new_run.run_id:
        cards[f"active: {active.run_id}"] = active.card
    ui.metrics.comparison_table(cards)


def training_monitor() -> None:
    """The latest training job, live while it runs; the run manager opens on its new run."""
    from core import worker

    ui.jobs.job_monitor(
        worker.TRAINING, _show_finished, "train", on_done=_open_new_run, gone=_run_deleted
    )


def _run_deleted(status) -> bool:
    """A finished training whose run was deleted since: nothing of it is left to show."""
    return status.run_id is not None and not (runs.models_dir() / status.run_id).is_dir()


def _open_new_run(status) -> None:
    if status.run_id:
        st.session_state["train_run"] = status.run_id


def run_manager() -> None:
    """Every finished run, the committed default included: activate, download, delete."""
    from core.train import features, image_cache

    st.subheader("Runs")
    found, problems = runs.list_runs()
    ui.page.show_problems([datasets.without_paths(problem) for problem in problems])
    if found:
        active_id = runs.active_run_id()
        by_id = {run.run_id: run for run in found}
        if st.session_state.get("train_run") not in by_id:
            st.session_state.pop("train_run", None)  # deleted, or never chosen: the newest
        run_id = st.selectbox(
            "Run",
            list(by_id),
            key="train_run",
            format_func=lambda run_id: ui.runs.run_label(by_id[run_id], active_id),
        )
        _run_actions(by_id[run_id], active_id)
    else:
        st.caption("No runs yet.")
    feature_bytes, image_bytes = features.cache_size(), image_cache.cache_size()
    st.caption(
        f"Caches: {feature_bytes / 1024**2:.1f} MB of backbone features, "
        f"{image_bytes / 1024**2:.1f} MB of decoded images for streamed training"
    )
    if st.button(
        "Clear the caches", key="train_clear_cache", disabled=feature_bytes + image_bytes == 0
    ):
        freed = features.clear_cache() + image_cache.clear_cache()
        st.success(f"Freed {freed / 1024**2:.1f} MB.")


def _run_actions(run: runs.Run, active_id: str | None) -> None:
    """One row: activate (after a warning for a near-chance run), download, delete."""
    from core.analysis import reports

    is_active = run.run_id == active_id
    warning = None if is_active else reports.chance_warning(run.card)
    if warning:
        st.warning(f"Run {run.run_id} may be no use. {warning}", icon=":material/warning:")
    actions = st.container(horizontal=True, vertical_alignment="center", gap="medium")
    anyway = False
    if warning:
        anyway = actions.checkbox("Activate anyway", key=f"train_activate_anyway_{run.run_id}")
    actions.button(
        "This run is active" if is_active else "Make this run active",
        key="train_activate",
        disabled=is_active or (warning is not None and not anyway),
        on_click=_activate,
        args=(run.run_id,),
    )
    actions.download_button(
        "Download run (ZIP)",
        lambda: runs.zip_run(run.run_id),
        f"{run.run_id}.zip",
        "application/zip",
        key="train_download",
    )
    # The confirmation belongs to this run: another run, or this one deleted, starts unticked.
    sure = actions.checkbox(
        "Yes, delete this run", key=f"train_delete_confirm_{run.run_id}", disabled=is_active
    )
    actions.button(
        "Delete run",
        key="train_delete",
        disabled=not sure or is_active,
        help="The active model cannot be deleted; activate another run first.",
        on_click=_delete,
        args=(run.run_id,),
    )
    _show_notice()


def _activate(run_id: str) -> None:
    try:
        runs.set_active(run_id)
    except runs.RunError as error:
        st.session_state[_RUN_NOTICE] = (False, datasets.without_paths(str(error)))
    else:
        st.session_state[_RUN_NOTICE] = (True, f"Run {run_id} is now the active model.")


def _delete(run_id: str) -> None:
    try:
        runs.delete_run(run_id)
    except runs.RunError as error:
        st.session_state[_RUN_NOTICE] = (False, datasets.without_paths(str(error)))
        return
    st.session_state.pop(f"train_delete_confirm_{run_id}", None)
    st.session_state[_RUN_NOTICE] = (True, f"Deleted run {run_id}.")


def _show_notice() -> None:
    if _RUN_NOTICE in st.session_state:
        done, message = st.session_state.pop(_RUN_NOTICE)
        (st.success if done else st.error)(message)
