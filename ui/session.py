"""What a browser session works with: this process's database, its own id, and its access.

The database is opened once per process (st.cache_resource) and shared by every session; the
access rule decides, per session, whether admin actions and every session's history are open.
"""

import uuid

import streamlit as st

import ui.formatting
from core import access, config
from core.storage import db

ADMIN_FLAG = "is_admin"


@st.cache_resource
def _open_database(path: str) -> db.Database:
    return db.open_database(path)


def database() -> db.Database:
    """This process's database; a page that cannot work without it stops after saying why."""
    opened = optional_database()
    if opened is None:
        st.stop()
    return opened


def optional_database() -> db.Database | None:
    """This process's database, with the run tables brought in line with the run folders.

    None, after an error that says what is wrong and how to recover, when the file cannot be
    opened: pages that can work without storage (Predict, Train, Home) go on without it.
    Ingesting on every page run is cheap (unchanged folders are skipped by mtime) and picks up
    runs finished by the training process, activated or deleted elsewhere.
    """
    try:
        database = _open_database(str(config.DB_PATH))
    except (db.DatabaseBusyError, db.DatabaseVersionError, db.DatabaseCorruptError) as error:
        st.error(_database_problem(error), icon=":material/database:")
        return None
    database.ingest_runs(config.MODELS_DIR)
    return database


def _database_problem(error: Exception) -> str:
    """What is wrong with the database file and how to recover, without server paths."""
    if isinstance(error, db.DatabaseCorruptError):
        location = ui.formatting.file_location(error.path)
        recovery = (
            f"copy the backup {ui.formatting.file_location(error.backup)} (kept by the last "
            "migration) over it"
            if error.backup is not None
            else "move the file aside (rename it) and a new, empty database is made"
        )
        problem = (
            f"The prediction database {location} (DERMO_DB_PATH) cannot be read: it is damaged "
            f"or not a DuckDB database file. To recover, stop the app and {recovery}; runs come "
            "back from the run folders, stored predictions only from that file"
        )
    else:
        # A second app process on the same file, or a newer schema.
        problem = (
            f"The prediction database cannot be opened: {error}. Close the other app or set "
            "DERMO_DB_PATH to another file"
        )
    return (
        f"{problem}. Then reload this page. Until then predictions still work, but nothing is "
        "stored, and History and Metrics need the database. The command line (python -m core) "
        "does not need it and keeps working."
    )


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
