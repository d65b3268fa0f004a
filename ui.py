"""Streamlit-only helpers shared by the pages: cached resources, the session id, widgets.

Nothing here imports TensorFlow or scikit-learn at module level, so Home, Metrics and History
stay light; the Predictor loads TensorFlow inside the function that builds it.
"""

import base64
import io
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import streamlit as st

from core import access, config, db, runs

ADMIN_FLAG = "is_admin"
RESEARCH_NOTICE = (
    "Research tool, not a diagnostic device: it must not be used to diagnose, treat or triage "
    "patients. Every output needs review by a qualified clinician."
)


@st.cache_resource
def _open_database(path: str) -> db.Database:
    return db.open_database(path)


def database() -> db.Database:
    """This process's database, with the run tables brought in line with the run folders.

    Ingesting on every page run is cheap (unchanged folders are skipped by mtime) and picks up
    runs finished by the training process, activated or deleted elsewhere.
    """
    try:
        database = _open_database(str(config.DB_PATH))
    except (db.DatabaseBusyError, db.DatabaseVersionError) as error:
        # A second app process on the same file: say so instead of showing a traceback.
        st.error(
            f"The prediction database cannot be opened: {error}. Close the other app or set "
            "DERMO_DB_PATH to another file, then reload this page. The command line "
            "(python -m core) does not need the database and keeps working.",
            icon=":material/database:",
        )
        st.stop()
    database.ingest_runs(config.MODELS_DIR)
    return database


@st.cache_resource(max_entries=3)
def _load_predictor(run_id: str, models_dir: str, model_mtime_ns: int):
    # The mtime is part of the key: a run folder rewritten in place loads a fresh model.
    from core.inference import Predictor

    predictor = Predictor(runs.load_run(runs.models_dir(models_dir) / run_id))
    predictor.warm_up()
    return predictor


def predictor(run: runs.Run):
    """A loaded, shared (read-only) Predictor for `run`."""
    return _load_predictor(run.run_id, str(run.folder.parent), run.model_path.stat().st_mtime_ns)


def working_predictor(run: runs.Run):
    """(Predictor, run) for `run`, or for the active or newest run that loads when it cannot.

    A corrupt model.keras (or one Keras' safe mode refuses) must not take the page down: the
    error names the broken run and the next good one is used. (None, None) when none loads.
    """
    found, _ = runs.list_runs()
    active_id = runs.active_run_id()
    # One listing of the run folders serves both: the active run first, then newest first.
    active = [candidate for candidate in found if candidate.run_id == active_id]
    candidates = {c.run_id: c for c in (run, *active, *found)}
    for candidate in candidates.values():
        try:
            loaded = predictor(candidate)
        except Exception as error:  # noqa: BLE001 - any unloadable model file is a broken run
            reason = f"{type(error).__name__}: {error}"[:300]
            st.error(f"Run {candidate.run_id} is broken: its model cannot be loaded ({reason}).")
            continue
        if candidate.run_id != run.run_id:
            st.warning(f"Predicting with run {candidate.run_id} instead.")
        return loaded, candidate
    return None, None


def session_id() -> str:
    """A random id per browser session, stored with each prediction."""
    if "session_id" not in st.session_state:
        st.session_state["session_id"] = uuid.uuid4().hex
    return st.session_state["session_id"]


def _streamlit_secret() -> object:
    # Without any secrets.toml, reading st.secrets raises (a FileNotFoundError subclass), and
    # so does a malformed file; the environment variable still applies then.
    try:
        return st.secrets.get(access.SECRET_NAME)
    except FileNotFoundError:
        return None


def access_rule() -> access.Access:
    """Single-user or public mode, from the Streamlit secret or DERMO_ADMIN_SECRET."""
    return access.Access(access.configured_secret(_streamlit_secret()))


def is_admin() -> bool:
    return access_rule().is_admin(st.session_state.get(ADMIN_FLAG, False))


def history_scope() -> str | None:
    """The session whose predictions this visitor may see; None means every session."""
    return access_rule().history_session(session_id(), st.session_state.get(ADMIN_FLAG, False))


def admin_sidebar() -> None:
    """In public mode, the sidebar box that unlocks (or locks again) the admin actions."""
    rule = access_rule()
    if not rule.public:
        return
    with st.sidebar:
        if st.session_state.get(ADMIN_FLAG):
            st.success("Admin unlocked", icon=":material/lock_open:")
            if st.button("Lock", key="admin_lock"):
                st.session_state[ADMIN_FLAG] = False
                st.rerun()
            return
        with st.form("admin_unlock", clear_on_submit=True):
            attempt = st.text_input("Admin secret", type="password", key="admin_secret_input")
            if st.form_submit_button("Unlock", key="admin_unlock_button"):
                if rule.unlocks(attempt):
                    st.session_state[ADMIN_FLAG] = True
                    st.rerun()
                st.error("Wrong admin secret.")


def require_admin(what: str) -> bool:
    """True for an admin; otherwise says that `what` needs the admin secret."""
    if is_admin():
        return True
    st.info(f"{what} need the admin secret: unlock in the sidebar.", icon=":material/lock:")
    return False


def access_notice() -> None:
    """Which mode the app runs in, and what that means for this visitor."""
    rule = access_rule()
    if not rule.public:
        st.info(
            "Single-user mode: no admin secret is configured, so whoever opens the app can "
            "train, delete runs and see every stored prediction. Set DERMO_ADMIN_SECRET (or "
            "admin_secret in the Streamlit secrets) before a public deployment.",
            icon=":material/person:",
        )
    elif is_admin():
        st.success("Public mode, admin unlocked: every action and every session's history.")
    else:
        st.info(
            "Public mode: anyone may predict, and you see only the predictions of this browser "
            "session. Training and managing models need the admin secret (sidebar).",
            icon=":material/public:",
        )


def storage_notice() -> None:
    """Warn when trained runs and history live on storage that a restart wipes."""
    reason = config.ephemeral_storage_reason()
    if reason:
        st.warning(
            f"Temporary storage: {reason}. Trained runs, uploaded datasets and the prediction "
            "history are lost when the app restarts; download runs you want to keep.",
            icon=":material/cloud_off:",
        )


def data_url(jpeg) -> str | None:
    """A data URL that st.column_config.ImageColumn can show; None for a missing thumbnail."""
    # Database frames hold missing blobs as pandas.NA, fresh results as None.
    if not isinstance(jpeg, bytes | bytearray | memoryview) or len(jpeg) == 0:
        return None
    return "data:image/jpeg;base64," + base64.b64encode(bytes(jpeg)).decode("ascii")


def research_notice() -> None:
    st.warning(RESEARCH_NOTICE, icon=":material/science:")


def show_problems(problems: list[str] | tuple[str, ...]) -> None:
    for problem in problems:
        st.warning(problem, icon=":material/report:")


def percent(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:.{digits}%}"


def number(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def plural(count: int, noun: str) -> str:
    """ "1 prediction", "2 predictions"."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def utc_time(iso_text: str | None) -> str:
    """ "2026-11-28 06:23 UTC" from an ISO 8601 timestamp; the text itself when unparsable."""
    try:
        moment = datetime.fromisoformat(str(iso_text))
    except ValueError:
        return "n/a" if iso_text is None else str(iso_text)
    # Timestamps without an offset are UTC everywhere in this app (cards, database).
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def file_location(path: str | Path) -> str:
    """A file's path relative to the repository when inside it, else only its name.

    Absolute machine paths say nothing useful to a visitor and reveal the server's layout.
    """
    resolved = Path(path).resolve()
    if resolved.is_relative_to(config.REPO_ROOT):
        return str(resolved.relative_to(config.REPO_ROOT))
    return resolved.name


def change(value: float | None, reference: float | None, digits: int = 3) -> str | None:
    """A signed delta for st.metric; None (no arrow) when missing or it rounds to zero."""
    if value is None or reference is None or round(value - reference, digits) == 0:
        return None
    return f"{value - reference:+.{digits}f}"


def with_interval(evaluation: dict, key: str) -> str:
    """ "0.871 (95% CI 0.820-0.915)" from an evaluation dict."""
    interval = (evaluation.get("intervals") or {}).get(key)
    text = number(evaluation.get(key))
    return f"{text} (95% CI {interval[0]:.3f}-{interval[1]:.3f})" if interval else text


def run_label(run: runs.Run, active_id: str | None) -> str:
    auc = ((run.card.get("metrics") or {}).get("test") or {}).get("roc_auc")
    marker = " (active)" if run.run_id == active_id else ""
    return f"{run.run_id}{marker} - {run.card.get('backbone')}, test AUC {number(auc)}"


def run_picker(key: str, label: str = "Model") -> runs.Run | None:
    """A selectbox of the finished runs, the active one first and selected by default."""
    active, problems = runs.active_run()
    found, _ = runs.list_runs()
    show_problems(problems)
    if active is None:
        return None
    by_id = {active.run_id: active, **{run.run_id: run for run in found}}
    chosen = st.selectbox(
        label,
        list(by_id),
        key=key,
        format_func=lambda run_id: run_label(by_id[run_id], active.run_id),
    )
    return by_id[chosen]


def run_facts(card: dict) -> pd.DataFrame:
    """What a researcher asks first about a model, from its card."""
    data, test = card.get("data") or {}, (card.get("metrics") or {}).get("test") or {}
    threshold = card.get("threshold") or {}
    balance = data.get("class_balance") or {}
    facts = {
        "Backbone": f"{card.get('backbone')} (weights {card.get('weights')})",
        "Input size": f"{card.get('image_size')} px, {card.get('resample')}",
        "Trained on": f"{data.get('source')}, sites {', '.join(data.get('sites') or [])}",
        "Images": f"{data.get('n_images')} ({balance.get('malignant')} malignant)",
        "Test ROC AUC": with_interval(test, "roc_auc"),
        "Threshold": f"{number(threshold.get('value'))} (rule: {threshold.get('rule')})",
        "Sensitivity at threshold": with_interval(test, "sensitivity"),
        "Specificity at threshold": with_interval(test, "specificity"),
        "Flip TTA": "on" if card.get("tta") else "off",
        "Trained at": utc_time(card.get("created_at")),
    }
    return pd.DataFrame({"Property": list(facts), "Value": list(facts.values())})


@st.cache_data(max_entries=32, show_spinner="Computing Grad-CAM")
def explanation(_predictor, run_id: str, sha256: str, _data: bytes, toward: str):
    """Grad-CAM of one image, cached by run, image content and direction."""
    from core import predict_service

    return predict_service.explain(_predictor, _data, toward)


def headline_table(evaluation: dict) -> None:
    """The test metrics with their 95% bootstrap intervals, three decimals throughout."""
    from core import reports

    st.dataframe(
        reports.headline_table(evaluation),
        hide_index=True,
        column_config={
            "metric": st.column_config.TextColumn("Metric"),
            "value": st.column_config.NumberColumn("Value", format="%.3f"),
            "ci_low": st.column_config.NumberColumn("95% CI low", format="%.3f"),
            "ci_high": st.column_config.NumberColumn("95% CI high", format="%.3f"),
        },
        placeholder="n/a",
    )


def classification_report(predictions: pd.DataFrame, threshold: float) -> None:
    from core import reports

    st.dataframe(
        reports.classification_report(predictions, threshold),
        hide_index=True,
        column_config={
            "class": st.column_config.TextColumn("Class"),
            "precision": st.column_config.NumberColumn("Precision", format="%.3f"),
            "recall": st.column_config.NumberColumn("Recall", format="%.3f"),
            "f1": st.column_config.NumberColumn("F1", format="%.3f"),
            "support": st.column_config.NumberColumn("Support", format="%d"),
        },
        placeholder="n/a",
    )


def threshold_cards(point, reference) -> None:
    """Threshold metrics at `point`, with their change from the run's own threshold."""
    from core import reports

    names = ("sensitivity", "specificity", "ppv", "npv", "f1")
    for column, key in zip(st.columns(len(names)), names, strict=True):
        value = point.counts[key]
        column.metric(
            reports.HEADLINE_METRICS[key], number(value), change(value, reference.counts[key])
        )


def explanation_view(_predictor, run_id: str, result, data: bytes) -> None:
    """The image, its Grad-CAM heat map toward the predicted class, or their overlay."""
    view = st.segmented_control(
        "Show", ["Image", "Heat map", "Overlay"], default="Overlay", key="predict_view"
    )
    toward = "malignant" if result.prediction.label == "malignant" else "benign"
    cam = explanation(_predictor, run_id, result.prediction.sha256, data, toward)
    shown = {"Image": cam.image, "Heat map": cam.heatmap}.get(view, cam.overlay)
    st.image(shown, caption=f"Grad-CAM toward {toward}: red regions moved the score most")


def prediction_summary(result, ood_threshold: float | None) -> None:
    """Probability, label, distance from the threshold and the OOD warning of one result."""
    prediction = result.prediction
    threshold = f"the threshold {prediction.threshold:.1%}"
    # A distance that rounds to zero gets a plain grey note, not a coloured up arrow.
    exact = round(result.distance, 3) == 0
    st.metric(
        "Malignant probability (calibrated)",
        percent(prediction.probability),
        delta=f"at {threshold}" if exact else f"{result.distance:+.1%} from {threshold}",
        delta_color="off" if exact else "inverse",
        delta_arrow="off" if exact else "auto",
    )
    color = "red" if prediction.label == "malignant" else "green"
    st.badge(f"{prediction.label} at the model's threshold", color=color)
    if prediction.ood_flag:
        st.error(
            f"Out of distribution: this image is unlike the training images (score "
            f"{prediction.ood_score:.1f} > {number(ood_threshold, 1)}). The probability is "
            "unreliable; is it a dermoscopy image of a skin lesion?",
            icon=":material/warning:",
        )
    st.caption(
        f"Model {prediction.model}, {prediction.width}x{prediction.height} px, "
        f"{prediction.latency_ms:.0f} ms, sha256 {prediction.sha256[:12]}..."
    )


def confirm_form(database: db.Database, prediction_id: int) -> None:
    """Record the confirmed diagnosis (say, histopathology) of a stored prediction."""
    with st.form("predict_confirm"):
        st.markdown("**Confirmed diagnosis** (when known, e.g. from histopathology)")
        label = st.selectbox("Outcome", db.LABELS, key="predict_confirm_label")
        diagnosis = st.text_input(
            "Diagnosis (optional)", key="predict_confirm_diagnosis", placeholder="e.g. melanoma"
        )
        if st.form_submit_button("Save outcome"):
            changed = database.set_confirmed(
                [prediction_id], label, diagnosis or None, session_id=session_id()
            )
            st.success(f"Saved for {plural(changed, 'prediction')}.")


def results_table(results) -> None:
    """A sortable table of a batch of predictions, thumbnails included, and its CSV."""
    from core import predict_service

    frame = predict_service.results_frame(results).drop(columns=["sha256", "error"])
    st.dataframe(
        frame.assign(thumbnail=frame["thumbnail"].map(data_url)),
        hide_index=True,
        column_config={
            "thumbnail": st.column_config.ImageColumn("Image", width="small"),
            "file": st.column_config.TextColumn("File"),
            "probability": st.column_config.ProgressColumn("Probability", format="percent"),
            "label": st.column_config.TextColumn("Label"),
            "distance": st.column_config.NumberColumn("From threshold", format="percent"),
            "out_of_distribution": st.column_config.CheckboxColumn("Out of distribution"),
            "model": st.column_config.TextColumn("Model"),
            "threshold": st.column_config.NumberColumn("Threshold", format="percent"),
            "prediction_id": st.column_config.NumberColumn("ID", format="%d"),
        },
        placeholder="-",
        key="predict_table",
    )
    st.download_button(
        "Download CSV",
        predict_service.results_csv(results),
        "predictions.csv",
        "text/csv",
        key="predict_csv",
    )


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
    show_problems(problems)
    active_id = runs.active_run_id()
    if found:
        run_id = st.selectbox(
            "Run",
            [run.run_id for run in found],
            key="train_run",
            format_func=lambda run_id: run_label(
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


HISTORY_PAGE_SIZE = 50


# Display order: what a reviewer scans first fits a 1280 px screen without scrolling.
_PREDICTION_COLUMNS = {
    "thumbnail": st.column_config.ImageColumn("Image", width="small"),
    "created_at": st.column_config.DatetimeColumn("When (UTC)", format="YYYY-MM-DD HH:mm"),
    "file_name": st.column_config.TextColumn("File"),
    "probability": st.column_config.ProgressColumn(
        "Probability", min_value=0, max_value=100, format="%.1f%%"
    ),
    "label": st.column_config.TextColumn("Label"),
    "run_id": st.column_config.TextColumn("Model"),
    "confirmed_label": st.column_config.TextColumn("Confirmed"),
    "confirmed_diagnosis": st.column_config.TextColumn("Diagnosis"),
    "threshold": st.column_config.NumberColumn("Threshold", format="%.1f%%"),
    "ood_flag": st.column_config.CheckboxColumn("Out of distribution"),
    "ood_score": st.column_config.NumberColumn("OOD score", format="%.1f"),
    "tta": st.column_config.CheckboxColumn("Flip TTA"),
    "size": st.column_config.TextColumn("Size (px)"),
    "latency_ms": st.column_config.NumberColumn("Latency (ms)", format="%.0f"),
    "confirmed_at": st.column_config.DatetimeColumn("Confirmed (UTC)", format="YYYY-MM-DD HH:mm"),
    "id": st.column_config.NumberColumn("ID", format="%d"),
}


def _predictions_for_display(rows: pd.DataFrame) -> pd.DataFrame:
    """Stored prediction rows ready for _PREDICTION_COLUMNS: ids and hashes out, percents 0-100.

    Percent columns hold 0-100 so that the format string can ask for one decimal.
    """
    shown = rows.drop(columns=["session_id", "sha256"], errors="ignore")
    for name in ("probability", "threshold"):
        if name in shown:
            shown[name] = shown[name] * 100
    if "width" in shown:
        shown["size"] = shown["width"].astype(str) + " x " + shown["height"].astype(str)
    if "thumbnail" in shown:
        shown["thumbnail"] = shown["thumbnail"].map(data_url)
    return shown


def history_table(rows: pd.DataFrame) -> list[int]:
    """One page of stored predictions; returns the selected row positions.

    Thumbnails are stored only when config.STORE_THUMBNAILS is on: without any, the image
    column is left out rather than showing an empty cell on every row.
    """
    shown = _predictions_for_display(rows)
    has_thumbnails = shown["thumbnail"].notna().any()
    event = st.dataframe(
        shown,
        hide_index=True,
        column_order=[
            name for name in _PREDICTION_COLUMNS if name != "thumbnail" or has_thumbnails
        ],
        column_config=_PREDICTION_COLUMNS,
        placeholder="-",
        on_select="rerun",
        selection_mode="multi-row",
        key="history_table",
    )
    return list(event.selection.rows)


def earlier_table(earlier: pd.DataFrame) -> None:
    """Earlier predictions of one image, with the History page's column names."""
    shown = _predictions_for_display(earlier)
    st.dataframe(
        shown,
        hide_index=True,
        column_order=[name for name in _PREDICTION_COLUMNS if name in shown],
        column_config=_PREDICTION_COLUMNS,
        placeholder="-",
    )


def same_image_table(comparisons: pd.DataFrame) -> None:
    """One row per image content, one probability column per model that predicted it."""
    fixed = ("sha256", "file_name", "last_at", "n_models")
    models = [name for name in comparisons if name not in fixed]
    percent_column = st.column_config.NumberColumn(format="percent")
    st.dataframe(
        comparisons,
        hide_index=True,
        column_config={
            "sha256": None,
            "file_name": st.column_config.TextColumn("File"),
            "last_at": st.column_config.DatetimeColumn("Last (UTC)", format="YYYY-MM-DD HH:mm"),
            "n_models": st.column_config.NumberColumn("Models"),
            **dict.fromkeys(models, percent_column),
        },
        placeholder="-",
    )


def history_actions(
    database: db.Database, prediction_ids: list[int], scope: str | None = None
) -> None:
    """Record an outcome for, or delete (after confirmation), the selected predictions.

    `scope` (a session id) limits both to that session's rows, whatever ids arrive.
    """
    st.markdown(f"**{len(prediction_ids)} selected**")
    outcome, remove = st.columns(2)
    label = outcome.selectbox("Confirmed outcome", db.LABELS, key="history_confirm_label")
    diagnosis = outcome.text_input("Diagnosis (optional)", key="history_confirm_diagnosis")
    if outcome.button("Save outcome", key="history_confirm"):
        changed = database.set_confirmed(prediction_ids, label, diagnosis or None, scope)
        st.success(f"Outcome saved for {plural(changed, 'prediction')}.")
    sure = remove.checkbox("Yes, delete them permanently", key="history_delete_confirm")
    if remove.button("Delete selected", key="history_delete", disabled=not sure):
        removed = database.delete_predictions(prediction_ids, scope)
        st.toast(f"Deleted {plural(removed, 'prediction')}.")
        st.rerun()


def export_button(database: db.Database, history_filter: db.HistoryFilter) -> None:
    """CSV of every filtered row, written only when the button is clicked."""

    def export() -> bytes:
        buffer = io.BytesIO()
        database.export_predictions_csv(history_filter, buffer)
        return buffer.getvalue()

    st.download_button(
        "Export filtered rows (CSV)", export, "predictions.csv", "text/csv", key="history_export"
    )
