"""DuckDB storage of predictions (the History page) and of trained runs (the Models page).

Ownership rule: one app process owns the database file. DuckDB lets only one process open a
file for writing, so `open_database` keeps one connection per path for the whole process and
every call works on its own cursor of that connection (a DuckDB connection is not thread-safe,
its cursors are). Another process that opens the same file gets `DatabaseBusyError`; such
processes (the command line, scripts) read the run folders instead, which stay the source of
truth for runs: the runs, epochs and test_predictions tables are a cache rebuilt from them by
`Database.ingest_runs`.

Every query is parameterised; the only names written into SQL text are column names taken
from a whitelist. The schema carries a version number and is migrated when the file is opened,
after a copy of the older file is kept as `<name>.v<old version>.bak`.
"""

import contextlib
import dataclasses
import datetime
import json
import logging
import re
import shutil
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import duckdb
import pandas

from core import config, diagnoses, runs, spreadsheet
from core.card import Card
from core.labels import CLASS_NAMES
from core.operating_point import THRESHOLD_SOURCES

logger = logging.getLogger(__name__)

MAX_PAGE_SIZE = 1000
MAX_HISTOGRAM_BINS = 1000
# 2048 rows per vector: the CSV export holds about 100k rows in memory at a time.
_EXPORT_VECTORS_PER_CHUNK = 50
# The run files the database caches; a newer modification time of any means re-ingest.
_RUN_FILES = (runs.CARD_FILE, runs.HISTORY_FILE, runs.TEST_PREDICTIONS_FILE)

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
    # (core.operating_point); every earlier prediction used the card's.
    ("ALTER TABLE predictions ADD COLUMN threshold_source VARCHAR DEFAULT 'card'",),
    # Version 5: the predicted diagnoses, most likely first, as the Predict page showed them;
    # NULL for binary models and for every earlier prediction.
    ("ALTER TABLE predictions ADD COLUMN diagnoses STRUCT(name VARCHAR, probability DOUBLE)[]",),
)
SCHEMA_VERSION = len(MIGRATIONS)

_INSERT_COLUMNS = (
    "id, created_at, session_id, run_id, file_name, sha256, width, height, probability, label, "
    "threshold, latency_ms, tta, ood_score, ood_flag, thumbnail, threshold_source, diagnoses"
)
# Everything but the thumbnail: what exports and lookups return.
_PREDICTION_COLUMNS = (
    "id, created_at, session_id, run_id, file_name, sha256, width, height, probability, label, "
    "threshold, latency_ms, tta, ood_score, ood_flag, confirmed_label, confirmed_diagnosis, "
    "confirmed_at, threshold_source, diagnoses"
)
_EVALUATION_COLUMNS = (
    "evaluation_id, run_id, created_at, dataset, dataset_key, n_images, n_malignant, roc_auc, "
    "sensitivity, specificity, ood_flagged, record_json, source_mtime_ns"
)
_RUN_COLUMNS = (
    "run_id, created_at, backbone, image_size, threshold, roc_auc, sensitivity, specificity, "
    "n_test, card_json, folder, source_mtime_ns"
)
_SORTABLE_COLUMNS = frozenset(
    {
        "id",
        "created_at",
        "session_id",
        "run_id",
        "file_name",
        "probability",
        "label",
        "latency_ms",
        "ood_score",
        "confirmed_label",
    }
)
_ORDER_PATTERN = re.compile(r"^\s*(\w+)(?:\s+(asc|desc))?\s*$", re.IGNORECASE)


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


@dataclasses.dataclass(frozen=True)
class PredictionRecord:
    """One prediction to store; `created_at` None means now."""

    session_id: str
    run_id: str
    file_name: str
    sha256: str
    width: int
    height: int
    probability: float
    label: str
    threshold: float
    latency_ms: float
    tta: bool
    ood_score: float | None = None
    ood_flag: bool | None = None
    thumbnail: bytes | None = None
    created_at: datetime.datetime | None = None
    threshold_source: str = "card"
    # (diagnosis, probability) for every class, most likely first; empty for binary models.
    diagnoses: tuple[tuple[str, float], ...] = ()

    def __post_init__(self) -> None:
        _check_label(self.label, f"prediction of {self.file_name!r}")
        if self.threshold_source not in THRESHOLD_SOURCES:
            raise ValueError(f"threshold source must be one of {THRESHOLD_SOURCES}")
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError(
                f"probability {self.probability!r} of {self.file_name!r} is outside [0, 1]"
            )


@dataclasses.dataclass(frozen=True)
class DeletedPredictions:
    """Deleted predictions with every column, so that `restore_predictions` can undo it."""

    columns: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]

    def __len__(self) -> int:
        return len(self.rows)


@dataclasses.dataclass
class HistoryFilter:
    """Which predictions to show; empty tuples and None mean no restriction.

    A `date` bound covers whole UTC days (`end` included); a `datetime` bound is exact (naive
    values are UTC). `session_id` None means every session.
    """

    start: datetime.date | datetime.datetime | None = None
    end: datetime.date | datetime.datetime | None = None
    run_ids: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()
    min_probability: float | None = None
    max_probability: float | None = None
    file_name_contains: str | None = None
    session_id: str | None = None
    # True: flagged out of distribution; False: not flagged (also predictions made without an
    # OOD detector, which flag nothing); None: both.
    ood_flag: bool | None = None
    # True: a confirmed outcome is stored; False: none is; None: both.
    confirmed: bool | None = None


@dataclasses.dataclass(frozen=True)
class OutcomeChange:
    """A confirmed outcome to write to one prediction; `confirmed_at` None means now."""

    prediction_id: int
    label: str
    diagnosis: str | None = None
    confirmed_at: datetime.datetime | None = None

    def __post_init__(self) -> None:
        _check_label(self.label, f"outcome of prediction {self.prediction_id}")


_OPEN_DATABASES: dict[Path, "Database"] = {}
_REGISTRY_LOCK = threading.Lock()


def open_database(path: str | Path | None = None) -> "Database":
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


class Database:
    """Predictions and runs in one DuckDB file; safe to share between threads.

    Use `open_database` rather than this constructor, so each file is opened once per process.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._connection: duckdb.DuckDBPyConnection | None = _connect(path)
        # DuckDB resolves concurrent writes optimistically and fails one of two transactions
        # touching the same rows; writes here are small, so serialising them costs nothing.
        self._write_lock = threading.Lock()
        self._ingest_problems: tuple[str, ...] = ()
        try:
            _migrate(self._connection, path)
        except duckdb.Error as error:
            # Blocks that fail their checksum show only when the schema is first read.
            self._connection.close()
            raise DatabaseCorruptError(path, str(error)) from error
        except BaseException:
            self._connection.close()
            raise

    def close(self) -> None:
        """Close the connection and forget it, so that `open_database` opens the file anew."""
        with _REGISTRY_LOCK:
            if _OPEN_DATABASES.get(self.path) is self:
                del _OPEN_DATABASES[self.path]
            if self._connection is not None:
                self._connection.close()
                self._connection = None

    @contextlib.contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """Yield a cursor in a write transaction: committed on success, rolled back on error."""
        with self._write_lock, self._cursor() as cursor:
            cursor.begin()
            try:
                yield cursor
            except BaseException:
                cursor.rollback()
                raise
            cursor.commit()

    def insert_predictions(self, records: Sequence[PredictionRecord]) -> list[int]:
        """Store `records` in one transaction and return their ids, in the same order."""
        if not records:
            return []
        placeholders = _placeholders(len(_INSERT_COLUMNS.split(",")))
        with self.transaction() as cursor:
            ids = sorted(
                row[0]
                for row in cursor.execute(
                    "SELECT nextval('prediction_id_sequence') FROM range(?)", [len(records)]
                ).fetchall()
            )
            cursor.executemany(
                f"INSERT INTO predictions ({_INSERT_COLUMNS}) VALUES ({placeholders})",
                [_record_row(id_, record) for id_, record in zip(ids, records, strict=True)],
            )
        return ids

    def session_prediction_ids(
        self, session_id: str, sha256s: Sequence[str]
    ) -> dict[tuple[str, str, bool], int]:
        """This session's stored predictions of these images: (run_id, sha256, tta) to id.

        The newest id of each key, so that the Predict page can show a repeated upload again
        instead of storing it twice.
        """
        hashes = sorted(set(sha256s))
        if not hashes:
            return {}
        with self._cursor() as cursor:
            rows = cursor.execute(
                "SELECT run_id, sha256, tta, max(id) FROM predictions WHERE session_id = ? "
                f"AND sha256 IN ({_placeholders(len(hashes))}) GROUP BY run_id, sha256, tta",
                [session_id, *hashes],
            ).fetchall()
        return {(run_id, sha256, bool(tta)): int(id_) for run_id, sha256, tta, id_ in rows}

    def set_confirmed(
        self,
        prediction_ids: Sequence[int],
        label: str | None,
        diagnosis: str | None = None,
        session_id: str | None = None,
    ) -> int:
        """Record the confirmed outcome (label None clears it); return how many rows changed.

        A diagnosis in the shared vocabulary (`core.diagnoses`) is stored under its vocabulary
        name; one that contradicts the label raises ValueError. With `session_id`, only that
        session's predictions are touched.
        """
        if label is not None:
            _check_label(label, "confirmed label")
            diagnosis = _confirmed_diagnosis(label, diagnosis)
        if not prediction_ids:
            return 0
        confirmed_at = _utc_now() if label is not None else None
        where, parameters = _ids_sql(prediction_ids, session_id)
        with self.transaction() as cursor:
            row = cursor.execute(
                "UPDATE predictions SET confirmed_label = ?, confirmed_diagnosis = ?, "
                f"confirmed_at = ? WHERE {where}",
                [label, diagnosis if label is not None else None, confirmed_at, *parameters],
            ).fetchall()[0]
        return int(row[0])

    def delete_predictions(
        self, prediction_ids: Sequence[int], session_id: str | None = None
    ) -> "DeletedPredictions":
        """Delete predictions (only `session_id`'s when given); return them as they were."""
        if not prediction_ids:
            return DeletedPredictions((), ())
        where, parameters = _ids_sql(prediction_ids, session_id)
        with self.transaction() as cursor:
            cursor.execute(f"SELECT * FROM predictions WHERE {where}", parameters)
            rows = tuple(cursor.fetchall())
            columns = tuple(column[0] for column in cursor.description or ())
            cursor.execute(f"DELETE FROM predictions WHERE {where}", parameters)
        return DeletedPredictions(columns, rows)

    def restore_predictions(self, deleted: "DeletedPredictions") -> int:
        """Put deleted predictions back under their ids; return how many came back.

        An id in use again (never, as ids come from a sequence, unless restored twice) keeps
        the row it has.
        """
        if not deleted.rows:
            return 0
        with self.transaction() as cursor:
            known = {row[0] for row in cursor.execute("DESCRIBE predictions").fetchall()}
            if not set(deleted.columns) <= known:
                raise ValueError(f"not columns of predictions: {set(deleted.columns) - known}")
            before = cursor.execute("SELECT count(*) FROM predictions").fetchall()[0][0]
            cursor.executemany(
                f"INSERT OR IGNORE INTO predictions ({', '.join(deleted.columns)}) "
                f"VALUES ({_placeholders(len(deleted.columns))})",
                [list(row) for row in deleted.rows],
            )
            after = cursor.execute("SELECT count(*) FROM predictions").fetchall()[0][0]
        return int(after - before)

    def query_predictions(
        self,
        history_filter: HistoryFilter,
        page: int = 1,
        page_size: int = 50,
        order: str = "created_at DESC",
    ) -> pandas.DataFrame:
        """One page (1-based) of the filtered predictions, thumbnails included.

        `order` is "<column> [ASC|DESC]" with a column from a whitelist; ties break on id.
        """
        if page < 1 or not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(
                f"page {page} and page_size {page_size} must be >= 1 and in 1..{MAX_PAGE_SIZE}"
            )
        where, parameters = _filter_sql(history_filter)
        return self._frame(
            f"SELECT {_PREDICTION_COLUMNS}, thumbnail FROM predictions WHERE {where} "
            f"ORDER BY {_order_sql(order)} LIMIT ? OFFSET ?",
            [*parameters, page_size, (page - 1) * page_size],
        )

    def count_predictions(self, history_filter: HistoryFilter) -> int:
        """How many predictions match the filter."""
        where, parameters = _filter_sql(history_filter)
        with self._cursor() as cursor:
            row = cursor.execute(
                f"SELECT count(*) FROM predictions WHERE {where}", parameters
            ).fetchall()[0]
        return int(row[0])

    def predictions_per_day(self, history_filter: HistoryFilter) -> pandas.DataFrame:
        """Columns day (UTC date), count, malignant_share (of predicted labels), by day."""
        where, parameters = _filter_sql(history_filter)
        return self._frame(
            "SELECT CAST(created_at AS DATE) AS day, count(*) AS count, "
            "avg(CAST(label = 'malignant' AS DOUBLE)) AS malignant_share "
            f"FROM predictions WHERE {where} GROUP BY day ORDER BY day",
            parameters,
        )

    def probability_histogram(
        self, history_filter: HistoryFilter, bins: int = 20
    ) -> pandas.DataFrame:
        """Columns run_id, bin_lower, count: non-empty probability bins of width 1/bins."""
        if not 1 <= bins <= MAX_HISTOGRAM_BINS:
            raise ValueError(f"bins {bins} must be in 1..{MAX_HISTOGRAM_BINS}")
        where, parameters = _filter_sql(history_filter)
        frame = self._frame(
            # Probability 1.0 belongs to the last bin rather than a bin of its own.
            "SELECT run_id, least(CAST(floor(probability * ?) AS INTEGER), ? - 1) AS bin, "
            f"count(*) AS count FROM predictions WHERE {where} "
            "GROUP BY run_id, bin ORDER BY run_id, bin",
            [bins, bins, *parameters],
        )
        frame.insert(1, "bin_lower", frame.pop("bin") / bins)
        return frame

    def export_predictions_csv(self, history_filter: HistoryFilter, destination: BinaryIO) -> int:
        """Write the filtered predictions (no thumbnails) as UTF-8 CSV; return the row count.

        Newest first, like the History table. Rows are fetched in chunks, so a million rows
        never sit in memory at once.
        """
        where, parameters = _filter_sql(history_filter)
        classes = self._diagnosis_names(where, parameters)
        header = [
            name.strip() for name in _PREDICTION_COLUMNS.split(",") if "diagnoses" not in name
        ]
        header += [diagnoses.column_name(name) for name in classes]
        destination.write((",".join(header) + "\n").encode("utf-8"))
        written = 0
        with self._cursor() as cursor:
            cursor.execute(
                f"SELECT {_PREDICTION_COLUMNS} FROM predictions WHERE {where} "
                "ORDER BY created_at DESC, id DESC",
                parameters,
            )
            while not (chunk := cursor.fetch_df_chunk(_EXPORT_VECTORS_PER_CHUNK)).empty:
                chunk = _with_diagnosis_columns(chunk, classes)
                text = spreadsheet.to_csv(chunk, index=False, header=False)
                destination.write(text.encode("utf-8"))
                written += len(chunk)
        return written

    def _diagnosis_names(self, where: str, parameters: list[Any]) -> list[str]:
        """The diagnoses stored with these predictions, in vocabulary order, unknown ones last."""
        with self._cursor() as cursor:
            found = cursor.execute(
                "SELECT DISTINCT entry.name FROM (SELECT unnest(diagnoses) AS entry "
                f"FROM predictions WHERE {where})",
                parameters,
            ).fetchall()
        order = {name: index for index, name in enumerate(diagnoses.DIAGNOSIS_NAMES)}
        return sorted(
            (row[0] for row in found), key=lambda name: (order.get(name, len(order)), name)
        )

    def predictions_for_hash(
        self, sha256: str, exclude_ids: Sequence[int] = (), session_id: str | None = None
    ) -> pandas.DataFrame:
        """Earlier predictions of the same image content, newest first (no thumbnails)."""
        conditions = ["sha256 = ?"]
        parameters: list[Any] = [sha256]
        if exclude_ids:
            conditions.append(f"id NOT IN ({_placeholders(len(exclude_ids))})")
            parameters.extend(exclude_ids)
        if session_id is not None:
            conditions.append("session_id = ?")
            parameters.append(session_id)
        return self._frame(
            f"SELECT {_PREDICTION_COLUMNS} FROM predictions WHERE {' AND '.join(conditions)} "
            "ORDER BY created_at DESC, id DESC",
            parameters,
        )

    def prediction(
        self, prediction_id: int, session_id: str | None = None
    ) -> dict[str, Any] | None:
        """One stored prediction, thumbnail included, as column to value; None when unknown.

        With `session_id`, another session's prediction is unknown too.
        """
        where, parameters = _ids_sql([prediction_id], session_id)
        with self._cursor() as cursor:
            cursor.execute(
                f"SELECT {_PREDICTION_COLUMNS}, thumbnail FROM predictions WHERE {where}",
                parameters,
            )
            row = cursor.fetchone()
            names = [column[0] for column in cursor.description or ()]
        return None if row is None else dict(zip(names, row, strict=True))

    def same_image_comparisons(
        self, history_filter: HistoryFilter, limit: int = 100
    ) -> pandas.DataFrame:
        """Images predicted by at least two models: one row per image, newest first.

        Columns sha256, file_name, last_at, n_models, then one probability column per run_id
        (the latest prediction of that model; NaN where a model never saw the image).
        """
        where, parameters = _filter_sql(history_filter)
        long = self._frame(
            f"""
            WITH latest AS (
                SELECT sha256, run_id, arg_max(probability, created_at) AS probability,
                    arg_max(file_name, created_at) AS file_name, max(created_at) AS last_at
                FROM predictions WHERE {where} GROUP BY sha256, run_id),
            compared AS (
                SELECT sha256, arg_max(file_name, last_at) AS file_name,
                    max(last_at) AS last_at, count(*) AS n_models
                FROM latest GROUP BY sha256 HAVING count(*) >= 2
                ORDER BY last_at DESC, sha256 LIMIT ?)
            SELECT compared.*, latest.run_id, latest.probability
            FROM compared JOIN latest USING (sha256)
            """,
            [*parameters, limit],
        )
        index_columns = ["sha256", "file_name", "last_at", "n_models"]
        if long.empty:
            return pandas.DataFrame(columns=index_columns)
        wide = long.pivot(index=index_columns, columns="run_id", values="probability")
        wide.columns.name = None
        return wide.reset_index().sort_values(["last_at", "sha256"], ascending=[False, True])

    def confirmed_outcomes(self, history_filter: HistoryFilter) -> pandas.DataFrame:
        """Columns run_id, probability, threshold, confirmed_label: one case per image and model.

        An image predicted again by the same model (another session, flip TTA) is one case, its
        latest prediction: counting every repeat would inflate n and narrow the intervals.
        """
        where, parameters = _filter_sql(history_filter)
        return self._frame(
            "SELECT run_id, arg_max(probability, id) AS probability, "
            "arg_max(threshold, id) AS threshold, arg_max(confirmed_label, id) AS confirmed_label "
            f"FROM predictions WHERE {where} AND confirmed_label IS NOT NULL "
            "GROUP BY run_id, sha256 ORDER BY min(created_at), min(id)",
            parameters,
        )

    def outcome_targets(
        self, sha256s: Sequence[str], file_names: Sequence[str]
    ) -> pandas.DataFrame:
        """The predictions of these images or file names, with their stored outcomes.

        Columns id, file_name, sha256, confirmed_label, confirmed_diagnosis; every session's.
        """
        wanted = pandas.DataFrame(
            {
                "kind": ["sha256"] * len(sha256s) + ["file_name"] * len(file_names),
                "value": [*sha256s, *file_names],
            },
            dtype=object,
        )
        with self._cursor() as cursor:
            cursor.register("wanted_keys", wanted)
            return cursor.execute(
                "SELECT id, file_name, sha256, confirmed_label, confirmed_diagnosis "
                "FROM predictions WHERE sha256 IN (SELECT CAST(value AS VARCHAR) FROM wanted_keys "
                "WHERE kind = 'sha256') OR file_name IN (SELECT CAST(value AS VARCHAR) "
                "FROM wanted_keys WHERE kind = 'file_name') ORDER BY id"
            ).df()

    def apply_outcome_import(
        self, changes: Sequence[OutcomeChange], imported_by: str, file_name: str, n_rows: int
    ) -> int:
        """Write `changes` and record them as one import, in one transaction; return its id.

        Each change keeps the prediction's previous values, so `undo_outcome_import` can put
        them back. Changes to predictions deleted meanwhile are dropped.
        """
        if not changes:
            raise ValueError("nothing to import: no prediction would change")
        if not imported_by.strip():
            raise ValueError("say who imports the outcomes")
        now = _utc_now()
        incoming = pandas.DataFrame(
            {
                "prediction_id": pandas.Series([c.prediction_id for c in changes], dtype="int64"),
                "label": pandas.Series([c.label for c in changes], dtype=object),
                "diagnosis": pandas.Series([c.diagnosis for c in changes], dtype=object),
                "confirmed_at": pandas.Series(
                    [_as_utc_naive(c.confirmed_at) if c.confirmed_at else now for c in changes],
                    dtype="datetime64[us]",
                ),
            }
        )
        with self.transaction() as cursor:
            import_id = int(
                cursor.execute("SELECT nextval('outcome_import_sequence')").fetchall()[0][0]
            )
            cursor.register("incoming_outcomes", incoming)
            n_changed = int(cursor.execute(_RECORD_CHANGES_SQL, [import_id]).fetchall()[0][0])
            cursor.unregister("incoming_outcomes")
            cursor.execute(_WRITE_IMPORT_SQL.format(side="new"), [import_id])
            cursor.execute(
                "INSERT INTO outcome_imports (import_id, imported_at, imported_by, file_name, "
                "n_rows, n_changed) VALUES (?, ?, ?, ?, ?, ?)",
                [import_id, now, imported_by.strip(), file_name, int(n_rows), n_changed],
            )
        return import_id

    def undo_outcome_import(self, import_id: int) -> int:
        """Put back the values an import replaced; return how many predictions were restored.

        Refused (ValueError) when the import is unknown or undone, when a later import that is
        not undone changed the same predictions (undo that first), or when any of them was
        changed since by hand: undoing then would silently throw that later change away.
        """
        with self.transaction() as cursor:
            _check_undoable(cursor, int(import_id))
            restored = int(
                cursor.execute(
                    _WRITE_IMPORT_SQL.format(side="previous"), [int(import_id)]
                ).fetchall()[0][0]
            )
            cursor.execute(
                "UPDATE outcome_imports SET undone_at = ? WHERE import_id = ?",
                [_utc_now(), int(import_id)],
            )
        return restored

    def outcome_imports(self) -> pandas.DataFrame:
        """Every recorded outcome import, newest first."""
        return self._frame(
            "SELECT import_id, imported_at, imported_by, file_name, n_rows, n_changed, undone_at "
            "FROM outcome_imports ORDER BY import_id DESC",
            [],
        )

    def ingest_runs(self, models_dir: str | Path | None = None) -> int:
        """Bring the run tables in line with the finished run folders; return how many loaded.

        Folders whose files did not change since the last call are skipped, so calling this
        on every app start is cheap. Dot-prefixed (unfinished) folders are ignored; broken ones
        are listed in `ingest_problems` instead of raising. Rows of runs whose folder is gone
        are deleted.
        """
        folders = _run_folders(Path(models_dir if models_dir is not None else config.MODELS_DIR))
        with self._cursor() as cursor:
            known = dict(cursor.execute("SELECT run_id, source_mtime_ns FROM runs").fetchall())
        problems, loaded = [], 0
        for run_id, folder in sorted(folders.items()):
            try:
                modified_ns = _run_modified_ns(folder)
                if known.get(run_id) == modified_ns:
                    continue
                self._store_run(_read_run_folder(folder, modified_ns))
                loaded += 1
            except (
                OSError,
                ValueError,
                KeyError,
                TypeError,
                AttributeError,
                duckdb.Error,
            ) as error:
                problems.append(f"{folder.name}: {error}")
        self._delete_runs(sorted(set(known) - set(folders)))
        problems.extend(self._ingest_evaluations(folders))
        self._ingest_problems = tuple(problems)
        return loaded

    @property
    def ingest_problems(self) -> tuple[str, ...]:
        """ "<folder>: <reason>" for each run folder that the last `ingest_runs` could not read."""
        return self._ingest_problems

    def list_runs(self) -> pandas.DataFrame:
        """Every ingested run, newest first, card_json included."""
        return self._frame("SELECT * FROM runs ORDER BY created_at DESC, run_id", [])

    def run_test_predictions(self, run_id: str) -> pandas.DataFrame:
        """The test-set predictions of one run (empty when unknown)."""
        return self._frame(
            "SELECT image_name, label, probability, site, source, diagnosis "
            "FROM test_predictions WHERE run_id = ? ORDER BY image_name",
            [run_id],
        )

    def run_epochs(self, run_id: str) -> pandas.DataFrame:
        """The training history of one run, head phase first (empty when unknown)."""
        return self._frame(
            "SELECT phase, epoch, loss, auc, val_loss, val_auc, seconds FROM epochs "
            "WHERE run_id = ? ORDER BY CASE phase WHEN 'head' THEN 0 ELSE 1 END, phase, epoch",
            [run_id],
        )

    def list_evaluations(self, run_id: str | None = None) -> pandas.DataFrame:
        """The stored evaluations (of one run, when given), newest first."""
        where, parameters = ("run_id = ?", [run_id]) if run_id is not None else ("TRUE", [])
        return self._frame(
            "SELECT evaluation_id, run_id, created_at, dataset, dataset_key, n_images, "
            "n_malignant, roc_auc, sensitivity, specificity, ood_flagged FROM evaluations "
            f"WHERE {where} ORDER BY created_at DESC, evaluation_id DESC",
            parameters,
        )

    def evaluation_predictions(self, evaluation_id: str) -> pandas.DataFrame:
        """The per-image predictions of one evaluation (empty when unknown)."""
        return self._frame(
            "SELECT image_name, sha256, label, probability, ood_score, ood_flag, site, sex, "
            "age, source, diagnosis FROM evaluation_predictions WHERE evaluation_id = ? "
            "ORDER BY image_name",
            [evaluation_id],
        )

    def status(self) -> dict[str, Any]:
        """path, schema_version, n_runs, n_predictions."""
        with self._cursor() as cursor:
            n_runs, n_predictions = cursor.execute(
                "SELECT (SELECT count(*) FROM runs), (SELECT count(*) FROM predictions)"
            ).fetchall()[0]
            version = _schema_version(cursor)
        return {
            "path": str(self.path),
            "schema_version": version,
            "n_runs": n_runs,
            "n_predictions": n_predictions,
        }

    @contextlib.contextmanager
    def _cursor(self) -> Iterator[duckdb.DuckDBPyConnection]:
        if self._connection is None:
            raise RuntimeError(f"the database {self.path} is closed")
        with contextlib.closing(self._connection.cursor()) as cursor:
            yield cursor

    def _frame(self, sql: str, parameters: list[Any]) -> pandas.DataFrame:
        with self._cursor() as cursor:
            return cursor.execute(sql, parameters).df()

    def _store_run(self, run: "_RunFolder") -> None:
        with self.transaction() as cursor:
            cursor.execute("DELETE FROM epochs WHERE run_id = ?", [run.run_id])
            cursor.execute("DELETE FROM test_predictions WHERE run_id = ?", [run.run_id])
            cursor.execute(
                f"INSERT OR REPLACE INTO runs ({_RUN_COLUMNS}) "
                f"VALUES ({_placeholders(len(run.run_row))})",
                list(run.run_row),
            )
            for table, frame in (("epochs", run.epochs), ("test_predictions", run.tests)):
                cursor.register("incoming_rows", frame.assign(run_id=run.run_id))
                cursor.execute(f"INSERT INTO {table} BY NAME SELECT * FROM incoming_rows")
                cursor.unregister("incoming_rows")

    def _ingest_evaluations(self, folders: dict[str, Path]) -> list[str]:
        """Index the evaluation files of the run folders like the runs; returns problems.

        An evaluation is re-read when its files change and deleted with its file or run.
        """
        with self._cursor() as cursor:
            known = dict(
                cursor.execute("SELECT evaluation_id, source_mtime_ns FROM evaluations").fetchall()
            )
        problems, found = [], set()
        for run_id, folder in sorted(folders.items()):
            for evaluation_id in runs.evaluation_ids(folder):
                found.add(evaluation_id)
                try:
                    modified_ns = _evaluation_modified_ns(folder, evaluation_id)
                    if known.get(evaluation_id) != modified_ns:
                        self._store_evaluation(
                            _read_evaluation(folder, evaluation_id, modified_ns)
                        )
                except (OSError, ValueError, KeyError, TypeError, duckdb.Error) as error:
                    found.discard(evaluation_id)
                    problems.append(f"{run_id}: evaluation {evaluation_id}: {error}")
        self._delete_evaluations(sorted(set(known) - found))
        return problems

    def _store_evaluation(self, evaluation: "_EvaluationFiles") -> None:
        with self.transaction() as cursor:
            self._delete_evaluation_rows(cursor, [evaluation.evaluation_id])
            cursor.execute(
                f"INSERT INTO evaluations ({_EVALUATION_COLUMNS}) "
                f"VALUES ({_placeholders(len(evaluation.row))})",
                list(evaluation.row),
            )
            cursor.register("incoming_rows", evaluation.predictions)
            cursor.execute(
                "INSERT INTO evaluation_predictions BY NAME SELECT * FROM incoming_rows"
            )
            cursor.unregister("incoming_rows")

    def _delete_evaluations(self, evaluation_ids: Sequence[str]) -> None:
        if evaluation_ids:
            with self.transaction() as cursor:
                self._delete_evaluation_rows(cursor, evaluation_ids)

    @staticmethod
    def _delete_evaluation_rows(
        cursor: duckdb.DuckDBPyConnection, evaluation_ids: Sequence[str]
    ) -> None:
        for table in ("evaluations", "evaluation_predictions"):
            cursor.execute(
                f"DELETE FROM {table} WHERE evaluation_id IN "
                f"({_placeholders(len(evaluation_ids))})",
                list(evaluation_ids),
            )

    def _delete_runs(self, run_ids: Sequence[str]) -> None:
        if not run_ids:
            return
        with self.transaction() as cursor:
            for table in ("runs", "epochs", "test_predictions"):
                cursor.execute(
                    f"DELETE FROM {table} WHERE run_id IN ({_placeholders(len(run_ids))})",
                    list(run_ids),
                )


# Records every change of an import with the prediction's values before it; the count is the
# number of predictions that still exist.
_RECORD_CHANGES_SQL = """
    INSERT INTO outcome_import_changes
    SELECT ?, predictions.id, predictions.confirmed_label, predictions.confirmed_diagnosis,
        predictions.confirmed_at, CAST(incoming.label AS VARCHAR),
        CAST(incoming.diagnosis AS VARCHAR), CAST(incoming.confirmed_at AS TIMESTAMP)
    FROM incoming_outcomes AS incoming JOIN predictions ON predictions.id = incoming.prediction_id
"""
# Writes one side ("new" to apply, "previous" to undo) of an import's recorded changes.
_WRITE_IMPORT_SQL = """
    UPDATE predictions SET confirmed_label = changes.{side}_label,
        confirmed_diagnosis = changes.{side}_diagnosis, confirmed_at = changes.{side}_confirmed_at
    FROM outcome_import_changes AS changes
    WHERE changes.import_id = ? AND predictions.id = changes.prediction_id
"""


def _check_undoable(cursor: duckdb.DuckDBPyConnection, import_id: int) -> None:
    found = cursor.execute(
        "SELECT undone_at FROM outcome_imports WHERE import_id = ?", [import_id]
    ).fetchall()
    if not found:
        raise ValueError(f"there is no outcome import {import_id}")
    if found[0][0] is not None:
        raise ValueError(f"import {import_id} was undone already, on {found[0][0]:%Y-%m-%d %H:%M}")
    later = cursor.execute(
        "SELECT DISTINCT later.import_id FROM outcome_import_changes AS mine "
        "JOIN outcome_import_changes AS later USING (prediction_id) "
        "JOIN outcome_imports ON outcome_imports.import_id = later.import_id "
        "WHERE mine.import_id = ? "
        "AND later.import_id > ? AND outcome_imports.undone_at IS NULL ORDER BY 1",
        [import_id, import_id],
    ).fetchall()
    if later:
        named = ", ".join(str(row[0]) for row in later)
        raise ValueError(
            f"import {named} changed the same predictions later; undo it first, newest first"
        )
    edited = cursor.execute(
        "SELECT count(*) FROM outcome_import_changes AS changes JOIN predictions "
        "ON predictions.id = changes.prediction_id WHERE changes.import_id = ? AND ("
        "predictions.confirmed_label IS DISTINCT FROM changes.new_label OR "
        "predictions.confirmed_diagnosis IS DISTINCT FROM changes.new_diagnosis OR "
        "predictions.confirmed_at IS DISTINCT FROM changes.new_confirmed_at)",
        [import_id],
    ).fetchall()[0][0]
    if edited:
        raise ValueError(
            f"{edited} of the predictions this import changed were given another outcome by "
            "hand since; undoing it would throw that away, so nothing was undone"
        )


@dataclasses.dataclass(frozen=True)
class _RunFolder:
    run_id: str
    run_row: tuple[Any, ...]
    epochs: pandas.DataFrame
    tests: pandas.DataFrame


def _connect(path: Path) -> duckdb.DuckDBPyConnection:
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


def _schema_version(cursor: duckdb.DuckDBPyConnection) -> int:
    row = cursor.execute("SELECT max(version) FROM schema_version").fetchall()[0]
    return int(row[0]) if row[0] is not None else 0


def _migrate(connection: duckdb.DuckDBPyConnection, path: Path) -> None:
    connection.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    version = _schema_version(connection)
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


def _placeholders(count: int) -> str:
    return ", ".join(["?"] * count)


def _check_label(label: str, what: str) -> None:
    if label not in CLASS_NAMES:
        raise ValueError(f"{what}: label {label!r} is not one of {CLASS_NAMES}")


def _confirmed_diagnosis(label: str, diagnosis: str | None) -> str | None:
    """The diagnosis to store with `label`: its vocabulary name when known, else as typed."""
    text = (diagnosis or "").strip()
    if not text:
        return None
    if problem := diagnoses.contradiction(label, text):
        raise ValueError(problem)
    return diagnoses.normalise_diagnosis(text) or text


def _utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC).replace(tzinfo=None)


def _as_utc_naive(moment: datetime.datetime) -> datetime.datetime:
    """DuckDB TIMESTAMP columns hold naive UTC; aware values are converted first."""
    if moment.tzinfo is None:
        return moment
    return moment.astimezone(datetime.UTC).replace(tzinfo=None)


def _record_row(prediction_id: int, record: PredictionRecord) -> tuple[Any, ...]:
    created_at = _as_utc_naive(record.created_at) if record.created_at else _utc_now()
    return (
        prediction_id,
        created_at,
        record.session_id,
        record.run_id,
        record.file_name,
        record.sha256,
        record.width,
        record.height,
        record.probability,
        record.label,
        record.threshold,
        record.latency_ms,
        record.tta,
        record.ood_score,
        record.ood_flag,
        record.thumbnail,
        record.threshold_source,
        [{"name": name, "probability": float(p)} for name, p in record.diagnoses] or None,
    )


def stored_diagnoses(value: Any) -> tuple[tuple[str, float], ...]:
    """A stored `diagnoses` value as (name, probability) pairs, most likely first; () for none."""
    if not pandas.api.types.is_list_like(value):
        return ()
    return tuple((str(entry["name"]), float(entry["probability"])) for entry in value)


def _with_diagnosis_columns(chunk: pandas.DataFrame, classes: Sequence[str]) -> pandas.DataFrame:
    """The export's `dx_<class>` columns (named as the command line's) in place of the list."""
    shares = [dict(stored_diagnoses(value)) for value in chunk.pop("diagnoses")]
    for name in classes:
        chunk[diagnoses.column_name(name)] = [share.get(name) for share in shares]
    return chunk


def _ids_sql(prediction_ids: Sequence[int], session_id: str | None) -> tuple[str, list[Any]]:
    where = f"id IN ({_placeholders(len(prediction_ids))})"
    parameters: list[Any] = [int(id_) for id_ in prediction_ids]
    if session_id is not None:
        where += " AND session_id = ?"
        parameters.append(session_id)
    return where, parameters


def _order_sql(order: str) -> str:
    match = _ORDER_PATTERN.match(order)
    if match is None or match.group(1).lower() not in _SORTABLE_COLUMNS:
        raise ValueError(
            f"cannot sort by {order!r}; use '<column> ASC|DESC' with a column among "
            f"{sorted(_SORTABLE_COLUMNS)}"
        )
    direction = (match.group(2) or "ASC").upper()
    return f"{match.group(1).lower()} {direction}, id {direction}"


def _check_filter(history_filter: HistoryFilter) -> None:
    for label in history_filter.labels:
        _check_label(label, "history filter")
    if isinstance(history_filter.run_ids, str):
        raise TypeError(
            f"run_ids must be a tuple of run ids, not the string {history_filter.run_ids!r}"
        )
    bounds = (history_filter.min_probability, history_filter.max_probability)
    if any(bound is not None and not 0.0 <= bound <= 1.0 for bound in bounds):
        raise ValueError(f"probability bounds {bounds} must lie in [0, 1]")


def _filter_sql(history_filter: HistoryFilter) -> tuple[str, list[Any]]:
    """The WHERE condition and its parameters; user values only ever travel as parameters."""
    _check_filter(history_filter)
    clauses: list[tuple[str, list[Any]]] = []
    if history_filter.start is not None:
        clauses.append(("created_at >= ?", [_day_or_moment(history_filter.start, 0)]))
    if history_filter.end is not None:
        clauses.append(_end_clause(history_filter.end))
    for column, values in (("run_id", history_filter.run_ids), ("label", history_filter.labels)):
        if values:
            clauses.append((f"{column} IN ({_placeholders(len(values))})", list(values)))
    if history_filter.min_probability is not None:
        clauses.append(("probability >= ?", [history_filter.min_probability]))
    if history_filter.max_probability is not None:
        clauses.append(("probability <= ?", [history_filter.max_probability]))
    if history_filter.file_name_contains:
        clauses.append(
            ("contains(lower(file_name), lower(?))", [history_filter.file_name_contains])
        )
    if history_filter.session_id is not None:
        clauses.append(("session_id = ?", [history_filter.session_id]))
    if history_filter.ood_flag is not None:
        clauses.append(("coalesce(ood_flag, FALSE) = ?", [bool(history_filter.ood_flag)]))
    if history_filter.confirmed is not None:
        clauses.append(("(confirmed_label IS NOT NULL) = ?", [bool(history_filter.confirmed)]))
    where = " AND ".join(condition for condition, _ in clauses) or "TRUE"
    return where, [value for _, values in clauses for value in values]


def _day_or_moment(bound: datetime.date, days_after: int) -> datetime.datetime:
    if isinstance(bound, datetime.datetime):
        return _as_utc_naive(bound)
    return datetime.datetime.combine(bound + datetime.timedelta(days=days_after), datetime.time())


def _end_clause(end: datetime.date) -> tuple[str, list[Any]]:
    if isinstance(end, datetime.datetime):
        return "created_at <= ?", [_as_utc_naive(end)]
    # A date includes its whole day: everything before the next midnight.
    return "created_at < ?", [_day_or_moment(end, 1)]


def _run_folders(models_dir: Path) -> dict[str, Path]:
    if not models_dir.is_dir():
        return {}
    return {
        child.name: child
        for child in models_dir.iterdir()
        if child.is_dir() and not child.name.startswith(".")
    }


def _run_modified_ns(folder: Path) -> int:
    """The newest modification time of the files read, so that any rewrite is noticed."""
    return max((folder / name).stat().st_mtime_ns for name in _RUN_FILES)


def _read_run_folder(folder: Path, modified_ns: int) -> _RunFolder:
    card_text = (folder / runs.CARD_FILE).read_text(encoding="utf-8")
    card = Card.from_dict(json.loads(card_text))
    if card.run_id != folder.name:
        raise ValueError("card.json is not an object whose run_id is the folder name")
    epochs = runs.read_history(folder)
    tests = runs.read_test_predictions(folder)
    test_metrics = card.test_metrics
    run_row = (
        folder.name,
        _as_utc_naive(datetime.datetime.fromisoformat(str(card.created_at))),
        card.backbone,
        card.image_size,
        card.threshold,
        test_metrics.get("roc_auc"),
        test_metrics.get("sensitivity"),
        test_metrics.get("specificity"),
        len(tests),
        card_text,
        str(folder),
        modified_ns,
    )
    return _RunFolder(folder.name, run_row, epochs, tests)


@dataclasses.dataclass(frozen=True)
class _EvaluationFiles:
    evaluation_id: str
    row: tuple[Any, ...]
    predictions: pandas.DataFrame


def _evaluation_modified_ns(folder: Path, evaluation_id: str) -> int:
    return max(path.stat().st_mtime_ns for path in runs.evaluation_files(folder, evaluation_id))


def _read_evaluation(folder: Path, evaluation_id: str, modified_ns: int) -> _EvaluationFiles:
    record = runs.read_evaluation(folder, evaluation_id)
    if record.get("run_id") != folder.name:
        raise ValueError("the record's run_id is not the run folder's name")
    scored = record["metrics"]
    ood = record.get("ood") or {}
    row = (
        evaluation_id,
        folder.name,
        _as_utc_naive(datetime.datetime.fromisoformat(record["created_at"])),
        record.get("dataset"),
        record.get("dataset_key"),
        scored["n"],
        scored["n_positive"],
        scored.get("roc_auc"),
        scored.get("sensitivity"),
        scored.get("specificity"),
        ood.get("share"),
        json.dumps(record, allow_nan=False),
        modified_ns,
    )
    predictions = runs.read_evaluation_predictions(folder, evaluation_id)
    predictions = predictions.assign(evaluation_id=evaluation_id, run_id=folder.name)
    return _EvaluationFiles(evaluation_id, row, predictions.astype({"ood_flag": "boolean"}))
