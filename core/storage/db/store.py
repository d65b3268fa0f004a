"""The connection to one database file, which the History, outcome and run-index parts share.

A DuckDB connection is not thread-safe, its cursors are: every call works on a cursor of its
own, and writes go through `transaction`. Helpers every part needs (placeholders, UTC times,
label checks) live here too, so that each part is written against this one base.
"""

import contextlib
import datetime
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pandas

from core.inputs.labels import CLASS_NAMES
from core.storage.db.schema import DatabaseCorruptError, connect, migrate, schema_version


class Store:
    """One open DuckDB file: its connection, a cursor per call and serialised writes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._connection: duckdb.DuckDBPyConnection | None = connect(path)
        # DuckDB resolves concurrent writes optimistically and fails one of two transactions
        # touching the same rows; writes here are small, so serialising them costs nothing.
        self._write_lock = threading.Lock()
        try:
            migrate(self._connection, path)
        except duckdb.Error as error:
            # Blocks that fail their checksum show only when the schema is first read.
            self._connection.close()
            raise DatabaseCorruptError(path, str(error)) from error
        except BaseException:
            self._connection.close()
            raise

    def _close_connection(self) -> None:
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

    def status(self) -> dict[str, Any]:
        """path, schema_version, n_runs, n_predictions."""
        with self._cursor() as cursor:
            n_runs, n_predictions = cursor.execute(
                "SELECT (SELECT count(*) FROM runs), (SELECT count(*) FROM predictions)"
            ).fetchall()[0]
            version = schema_version(cursor)
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


def placeholders(count: int) -> str:
    return ", ".join(["?"] * count)


def check_label(label: str, what: str) -> None:
    if label not in CLASS_NAMES:
        raise ValueError(f"{what}: label {label!r} is not one of {CLASS_NAMES}")


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC).replace(tzinfo=None)


def as_utc_naive(moment: datetime.datetime) -> datetime.datetime:
    """DuckDB TIMESTAMP columns hold naive UTC; aware values are converted first."""
    if moment.tzinfo is None:
        return moment
    return moment.astimezone(datetime.UTC).replace(tzinfo=None)
