"""The database file: its schema, its migrations, and opening it.

The schema carries a version number and is migrated when the file is opened, after a copy of
the older file is kept as `<name>.v<old version>.bak`. Migrations are append-only: existing
files were created by the entries there are, so old entries are never edited.
"""

import logging
import re
import shutil
from pathlib import Path

import duckdb

logger = logging.getLogger(__name__)

# Entry i migrates the schema from version i to version i + 1. Append new entries, never edit
# old ones: existing files were created by them.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        "CREATE SEQUENCE prediction_id_sequence START 1",
        """
        CREATE TABLE predictions (
            id BIGINT PRIMARY KEY DEFAULT nextval('prediction_id_sequence'),
            created_at TIMESTAMP NOT NULL,
            session_id VARCHAR NOT NULL,
            run_id VARCHAR NOT NULL,
            file_name VARCHAR NOT NULL,
            sha256 VARCHAR NOT NULL,
            width INTEGER NOT NULL,
            height INTEGER NOT NULL,
            probability DOUBLE NOT NULL CHECK (probability BETWEEN 0 AND 1),
            label VARCHAR NOT NULL CHECK (label IN ('benign', 'malignant')),
            threshold DOUBLE NOT NULL,
            latency_ms DOUBLE NOT NULL,
            tta BOOLEAN NOT NULL,
            ood_score DOUBLE,
            ood_flag BOOLEAN,
            confirmed_label VARCHAR CHECK (confirmed_label IN ('benign', 'malignant')),
            confirmed_diagnosis VARCHAR,
            confirmed_at TIMESTAMP
        )
        """,
        "CREATE INDEX predictions_sha256 ON predictions (sha256)",
        "CREATE INDEX predictions_created_at ON predictions (created_at)",
        """
        CREATE TABLE runs (
            run_id VARCHAR PRIMARY KEY,
            created_at TIMESTAMP,
            backbone VARCHAR,
            image_size INTEGER,
            threshold DOUBLE,
            roc_auc DOUBLE,
            sensitivity DOUBLE,
            specificity DOUBLE,
            n_test INTEGER,
            card_json VARCHAR NOT NULL,
            folder VARCHAR NOT NULL,
            source_mtime_ns BIGINT NOT NULL
        )
        """,
        """
        CREATE TABLE epochs (
            run_id VARCHAR NOT NULL,
            phase VARCHAR NOT NULL,
            epoch INTEGER NOT NULL,
            loss DOUBLE,
            auc DOUBLE,
            val_loss DOUBLE,
            val_auc DOUBLE,
            seconds DOUBLE
        )
        """,
        """
        CREATE TABLE test_predictions (
            run_id VARCHAR NOT NULL,
            image_name VARCHAR NOT NULL,
            label INTEGER NOT NULL,
            probability DOUBLE NOT NULL,
            site VARCHAR,
            source VARCHAR,
            diagnosis VARCHAR
        )
        """,
    ),
    # Version 2: small JPEG thumbnails, so the History page can show what was predicted.
    ("ALTER TABLE predictions ADD COLUMN thumbnail BLOB",),
    # Version 3: evaluations of runs on users' own labelled data, indexed from the run folders
    # like test predictions; and imports of confirmed outcomes, each recorded so it can be undone.
    (
        """
        CREATE TABLE evaluations (
            evaluation_id VARCHAR PRIMARY KEY,
            run_id VARCHAR NOT NULL,
            created_at TIMESTAMP,
            dataset VARCHAR,
            dataset_key VARCHAR,
            n_images INTEGER,
            n_malignant INTEGER,
            roc_auc DOUBLE,
            sensitivity DOUBLE,
            specificity DOUBLE,
            ood_flagged DOUBLE,
            record_json VARCHAR NOT NULL,
            source_mtime_ns BIGINT NOT NULL
        )
        """,
        """
        CREATE TABLE evaluation_predictions (
            evaluation_id VARCHAR NOT NULL,
            run_id VARCHAR NOT NULL,
            image_name VARCHAR NOT NULL,
            sha256 VARCHAR,
            label INTEGER NOT NULL,
            probability DOUBLE NOT NULL,
            ood_score DOUBLE,
            ood_flag BOOLEAN,
            site VARCHAR,
            sex VARCHAR,
            age DOUBLE,
            source VARCHAR,
            diagnosis VARCHAR
        )
        """,
        "CREATE SEQUENCE outcome_import_sequence START 1",
        """
        CREATE TABLE outcome_imports (
            import_id BIGINT PRIMARY KEY DEFAULT nextval('outcome_import_sequence'),
            imported_at TIMESTAMP NOT NULL,
            imported_by VARCHAR NOT NULL,
            file_name VARCHAR,
            n_rows INTEGER NOT NULL,
            n_changed INTEGER NOT NULL,
            undone_at TIMESTAMP
        )
        """,
        """
        CREATE TABLE outcome_import_changes (
            import_id BIGINT NOT NULL,
            prediction_id BIGINT NOT NULL,
            previous_label VARCHAR,
            previous_diagnosis VARCHAR,
            previous_confirmed_at TIMESTAMP,
            new_label VARCHAR,
            new_diagnosis VARCHAR,
            new_confirmed_at TIMESTAMP
        )
        """,
    ),
    # Version 4: which threshold labelled a prediction, the card's or the installation's own
    # (core.analysis.operating_point); every earlier prediction used the card's.
    ("ALTER TABLE predictions ADD COLUMN threshold_source VARCHAR DEFAULT 'card'",),
    # Version 5: the predicted diagnoses, most likely first, as the Predict page showed them;
    # NULL for binary models and for every earlier prediction.
    ("ALTER TABLE predictions ADD COLUMN diagnoses STRUCT(name VARCHAR, probability DOUBLE)[]",),
    # Version 6: the runs table no longer keeps a copy of each card; the run folder's card.json
    # is read through core.storage.runs.
    ("ALTER TABLE runs DROP COLUMN card_json",),
)
SCHEMA_VERSION = len(MIGRATIONS)


class DatabaseBusyError(RuntimeError):
    """The database file is held by another process (only one process may own it)."""


class DatabaseVersionError(RuntimeError):
    """The database file has a newer schema than this version of the app understands."""


class DatabaseCorruptError(RuntimeError):
    """The database file cannot be read: damaged, or not a DuckDB file at all.

    `backup` is the newest copy kept by a migration, or None; the message says how to recover.
    """

    def __init__(self, path: Path, reason: str) -> None:
        self.path, self.reason, self.backup = path, reason, latest_backup(path)
        recovery = (
            f"copy the backup {self.backup} over it"
            if self.backup is not None
            else "move it aside (rename it) so that a new, empty one is made"
        )
        super().__init__(
            f"the database {path} cannot be read ({reason}); stop the app, then {recovery}. "
            "Runs come back from the run folders; stored predictions are only in that file"
        )


def latest_backup(path: Path) -> Path | None:
    """The newest `<name>.v<version>.bak` beside the database, as a migration keeps them."""
    backups = sorted(path.parent.glob(f"{path.name}.v*.bak"), key=lambda b: b.stat().st_mtime)
    return backups[-1] if backups else None


def connect(path: Path) -> duckdb.DuckDBPyConnection:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        return duckdb.connect(str(path))
    except duckdb.IOException as error:
        if "lock" not in str(error).lower():
            raise DatabaseCorruptError(path, str(error)) from error
        pid = re.search(r"PID (\d+)", str(error))
        holder = f" (pid {pid.group(1)})" if pid else ""
        raise DatabaseBusyError(
            f"the database {path} is open in another process{holder}; one app process owns "
            "the file, other processes read the run folders instead"
        ) from error
    except duckdb.Error as error:
        raise DatabaseCorruptError(path, str(error)) from error


def schema_version(cursor: duckdb.DuckDBPyConnection) -> int:
    row = cursor.execute("SELECT max(version) FROM schema_version").fetchall()[0]
    return int(row[0]) if row[0] is not None else 0


def migrate(connection: duckdb.DuckDBPyConnection, path: Path) -> None:
    connection.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    version = schema_version(connection)
    if version > SCHEMA_VERSION:
        raise DatabaseVersionError(
            f"the database {path} has schema version {version}, newer than this app's "
            f"{SCHEMA_VERSION}; update the app or open another file"
        )
    if 0 < version < SCHEMA_VERSION:
        # Checkpointing first moves the write-ahead log into the file, so the copy is complete.
        connection.execute("CHECKPOINT")
        backup = path.with_name(f"{path.name}.v{version}.bak")
        shutil.copy2(path, backup)
        logger.info(
            "migrating %s from schema %d to %d; backup %s", path, version, SCHEMA_VERSION, backup
        )
    for next_version in range(version + 1, SCHEMA_VERSION + 1):
        connection.begin()
        try:
            for statement in MIGRATIONS[next_version - 1]:
                connection.execute(statement)
            connection.execute("DELETE FROM schema_version")
            connection.execute("INSERT INTO schema_version VALUES (?)", [next_version])
        except BaseException:
            connection.rollback()
            raise
        connection.commit()
