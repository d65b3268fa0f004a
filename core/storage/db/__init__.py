"""DuckDB storage of predictions (the History page) and of trained runs (the Models page).

Ownership rule: one app process owns the database file. DuckDB lets only one process open a
file for writing, so `open_database` keeps one connection per path for the whole process and
every call works on its own cursor of that connection (a DuckDB connection is not thread-safe,
its cursors are). Another process that opens the same file gets `DatabaseBusyError`; such
processes (the command line, scripts) read the run folders instead, which stay the source of
truth for runs: the runs, epochs and test_predictions tables are a cache rebuilt from them by
`Database.ingest_runs`.

`Database` is the connection (`store`) with its four jobs: the schema and its migrations
(`schema`), History's predictions and filters (`history`, `filters`), confirmed outcomes and
their imports (`outcomes`) and the run index (`run_index`). Every query is parameterised.
"""

import threading
from pathlib import Path

from core import config
from core.storage.db.filters import HistoryFilter
from core.storage.db.history import (
    MAX_HISTOGRAM_BINS,
    MAX_PAGE_SIZE,
    DeletedPredictions,
    History,
    PredictionRecord,
    stored_diagnoses,
)
from core.storage.db.outcomes import OutcomeChange, Outcomes
from core.storage.db.run_index import RunIndex
from core.storage.db.schema import (
    MIGRATIONS,
    SCHEMA_VERSION,
    DatabaseBusyError,
    DatabaseCorruptError,
    DatabaseVersionError,
    latest_backup,
)

__all__ = [
    "MAX_HISTOGRAM_BINS",
    "MAX_PAGE_SIZE",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "Database",
    "DatabaseBusyError",
    "DatabaseCorruptError",
    "DatabaseVersionError",
    "DeletedPredictions",
    "HistoryFilter",
    "OutcomeChange",
    "PredictionRecord",
    "latest_backup",
    "open_database",
    "stored_diagnoses",
]

_OPEN_DATABASES: dict[Path, "Database"] = {}
_REGISTRY_LOCK = threading.Lock()


class Database(History, Outcomes, RunIndex):
    """Predictions and runs in one DuckDB file; safe to share between threads.

    Use `open_database` rather than this constructor, so each file is opened once per process.
    """

    def close(self) -> None:
        """Close the connection and forget it, so that `open_database` opens the file anew."""
        with _REGISTRY_LOCK:
            if _OPEN_DATABASES.get(self.path) is self:
                del _OPEN_DATABASES[self.path]
            self._close_connection()


def open_database(path: str | Path | None = None) -> Database:
    """Return this process's `Database` for `path` (default `config.DB_PATH`), opening it once.

    Raises `DatabaseBusyError` when another process holds the file, `DatabaseCorruptError`
    when it cannot be read.
    """
    resolved = Path(path if path is not None else config.DB_PATH).expanduser().resolve()
    with _REGISTRY_LOCK:
        database = _OPEN_DATABASES.get(resolved)
        if database is None:
            database = Database(resolved)
            _OPEN_DATABASES[resolved] = database
        return database
