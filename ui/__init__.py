"""Streamlit-only helpers that several pages share: database, session, access, formatting.

Each page's own helpers live in the module named after it (`ui.train` for the Train page).

Nothing here imports TensorFlow or scikit-learn at module level, so Home, Metrics and History
stay light; the Predictor loads TensorFlow inside the function that builds it.
"""

import base64
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import streamlit as st

from core import access, config, db, diagnoses, runs

ADMIN_FLAG = "is_admin"
ICONS_DIR = Path(__file__).parent / "icons"


def page_icon(name: str) -> str:
    """A page's icon file (a Material Symbols glyph), for st.set_page_config.

    An image file, not ":material/...": Streamlit draws a material page icon from a font CDN,
    which an offline app cannot reach.
    """
    return str(ICONS_DIR / f"{name}.png")


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


def outcome_inputs(prefix: str) -> None:
    """The confirmed-outcome widgets, `<prefix>_label` and `<prefix>_diagnosis`.

    Both start empty, so that no click records an outcome nobody chose.
    """
    st.selectbox(
        "Confirmed outcome",
        db.LABELS,
        index=None,
        placeholder="Choose benign or malignant",
        key=f"{prefix}_label",
    )
    st.selectbox(
        "Diagnosis (optional)",
        diagnoses.DIAGNOSIS_NAMES,
        index=None,
        accept_new_options=True,
        placeholder="Choose or type a diagnosis",
        key=f"{prefix}_diagnosis",
    )


def save_outcome(
    database: db.Database, prediction_ids: list[int], prefix: str, scope: str | None
) -> tuple[bool, str]:
    """Store the outcome chosen in `outcome_inputs(prefix)`; (saved, what to tell the user).

    Nothing is saved without an outcome or when the diagnosis contradicts it.
    """
    label = st.session_state.get(f"{prefix}_label")
    diagnosis = st.session_state.get(f"{prefix}_diagnosis")
    if label is None:
        return False, "Choose the confirmed outcome (benign or malignant) first; nothing saved."
    try:
        changed = database.set_confirmed(prediction_ids, label, diagnosis, scope)
    except ValueError as error:
        return False, f"Not saved: {error}."
    return True, f"Outcome {label} saved for {plural(changed, 'prediction')}."


def data_url(jpeg) -> str | None:
    """A data URL that st.column_config.ImageColumn can show; None for a missing thumbnail."""
    # Database frames hold missing blobs as pandas.NA, fresh results as None.
    if not isinstance(jpeg, bytes | bytearray | memoryview) or len(jpeg) == 0:
        return None
    return "data:image/jpeg;base64," + base64.b64encode(bytes(jpeg)).decode("ascii")


def research_notice() -> None:
    st.warning(config.RESEARCH_NOTICE, icon=":material/science:")


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


def with_interval(evaluation: dict, key: str) -> str:
    """ "0.871 (95% CI 0.820-0.915)" from an evaluation dict."""
    interval = (evaluation.get("intervals") or {}).get(key)
    text = number(evaluation.get(key))
    return f"{text} (95% CI {interval[0]:.3f}-{interval[1]:.3f})" if interval else text


def run_label(run: runs.Run, active_id: str | None) -> str:
    auc = ((run.card.get("metrics") or {}).get("test") or {}).get("roc_auc")
    marker = " (active)" if run.run_id == active_id else ""
    return f"{run.run_id}{marker} - {run.card.get('backbone')}, test AUC {number(auc)}"


def run_cards() -> dict[str, dict]:
    """Every finished run's card by run id, newest first, read from the run folders."""
    found, _ = runs.list_runs()
    return {run.run_id: run.card for run in found}


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


# Stored predictions as History and Predict's "predicted before" table show them. Display
# order: what a reviewer scans first comes first, and file, label and probability fit 400 px.
PREDICTION_COLUMNS = {
    "thumbnail": st.column_config.ImageColumn("Image", width="small"),
    # Pinned, so that a row stays identifiable when a narrow screen scrolls the rest.
    "file_name": st.column_config.TextColumn("File", pinned=True),
    "label": st.column_config.TextColumn("Label"),
    "probability": st.column_config.ProgressColumn(
        "Probability", min_value=0, max_value=100, format="%.1f%%"
    ),
    "created_at": st.column_config.DatetimeColumn("When (UTC)", format="YYYY-MM-DD HH:mm"),
    "confirmed_label": st.column_config.TextColumn("Confirmed"),
    "confirmed_diagnosis": st.column_config.TextColumn("Diagnosis"),
    "run_id": st.column_config.TextColumn("Model"),
    "threshold": st.column_config.NumberColumn("Threshold", format="%.1f%%"),
    "ood_flag": st.column_config.CheckboxColumn("Out of distribution"),
    "ood_score": st.column_config.NumberColumn("OOD score", format="%.1f"),
    "tta": st.column_config.CheckboxColumn("Flip TTA"),
    "size": st.column_config.TextColumn("Size (px)"),
    "latency_ms": st.column_config.NumberColumn("Latency (ms)", format="%.0f"),
    "confirmed_at": st.column_config.DatetimeColumn("Confirmed (UTC)", format="YYYY-MM-DD HH:mm"),
    "id": st.column_config.NumberColumn("ID", format="%d"),
}


def predictions_for_display(rows: pd.DataFrame) -> pd.DataFrame:
    """Stored prediction rows ready for PREDICTION_COLUMNS: ids and hashes out, percents 0-100.

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
