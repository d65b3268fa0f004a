"""The History page's predictions: storing them, looking them up, and queries over filters.

The columns an insert writes are the fields of `PredictionRecord`, and lookups and exports
return every stored column but the thumbnail: adding a History column is a migration
(`core.storage.db.schema`), a field here and a display entry (`ui.PREDICTION_COLUMNS`).
"""

import dataclasses
import datetime
from collections.abc import Sequence
from typing import Any, BinaryIO

import pandas

from core.analysis.operating_point import THRESHOLD_SOURCES
from core.inputs import diagnoses
from core.storage import prediction_csv, spreadsheet
from core.storage.db.filters import HistoryFilter, filter_sql, ids_sql, order_sql
from core.storage.db.store import Store, as_utc_naive, check_label, placeholders, utc_now

MAX_PAGE_SIZE = 1000
MAX_HISTOGRAM_BINS = 1000
# 2048 rows per vector: the CSV export holds about 100k rows in memory at a time.
_EXPORT_VECTORS_PER_CHUNK = 50
# Every stored column but the thumbnail, in the table's order: what exports and lookups return.
_STORED_COLUMNS = "* EXCLUDE (thumbnail)"


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
        check_label(self.label, f"prediction of {self.file_name!r}")
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


# The columns an insert writes: the id, then the record's fields (see `_record_row`).
_INSERT_COLUMNS = ("id", *(field.name for field in dataclasses.fields(PredictionRecord)))


class History(Store):
    """Predictions: insert, delete and restore them, and query them by `HistoryFilter`."""

    def insert_predictions(self, records: Sequence[PredictionRecord]) -> list[int]:
        """Store `records` in one transaction and return their ids, in the same order."""
        if not records:
            return []
        with self.transaction() as cursor:
            ids = sorted(
                row[0]
                for row in cursor.execute(
                    "SELECT nextval('prediction_id_sequence') FROM range(?)", [len(records)]
                ).fetchall()
            )
            cursor.executemany(
                f"INSERT INTO predictions ({', '.join(_INSERT_COLUMNS)}) "
                f"VALUES ({placeholders(len(_INSERT_COLUMNS))})",
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
                f"AND sha256 IN ({placeholders(len(hashes))}) GROUP BY run_id, sha256, tta",
                [session_id, *hashes],
            ).fetchall()
        return {(run_id, sha256, bool(tta)): int(id_) for run_id, sha256, tta, id_ in rows}

    def delete_predictions(
        self, prediction_ids: Sequence[int], session_id: str | None = None
    ) -> "DeletedPredictions":
        """Delete predictions (only `session_id`'s when given); return them as they were."""
        if not prediction_ids:
            return DeletedPredictions((), ())
        where, parameters = ids_sql(prediction_ids, session_id)
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
                f"VALUES ({placeholders(len(deleted.columns))})",
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
        where, parameters = filter_sql(history_filter)
        return self._frame(
            f"SELECT {_STORED_COLUMNS}, thumbnail FROM predictions WHERE {where} "
            f"ORDER BY {order_sql(order)} LIMIT ? OFFSET ?",
            [*parameters, page_size, (page - 1) * page_size],
        )

    def count_predictions(self, history_filter: HistoryFilter) -> int:
        """How many predictions match the filter."""
        where, parameters = filter_sql(history_filter)
        with self._cursor() as cursor:
            row = cursor.execute(
                f"SELECT count(*) FROM predictions WHERE {where}", parameters
            ).fetchall()[0]
        return int(row[0])

    def predictions_per_day(self, history_filter: HistoryFilter) -> pandas.DataFrame:
        """Columns day (UTC date), count, malignant_share (of predicted labels), by day."""
        where, parameters = filter_sql(history_filter)
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
        where, parameters = filter_sql(history_filter)
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
        where, parameters = filter_sql(history_filter)
        classes = self._diagnosis_names(where, parameters)
        written = 0
        with self._cursor() as cursor:
            cursor.execute(
                f"SELECT {_STORED_COLUMNS} FROM predictions WHERE {where} "
                "ORDER BY created_at DESC, id DESC",
                parameters,
            )
            stored = [column[0] for column in cursor.description or ()]
            header = prediction_csv.history_header(stored, classes)
            destination.write((",".join(header) + "\n").encode("utf-8"))
            while not (chunk := cursor.fetch_df_chunk(_EXPORT_VECTORS_PER_CHUNK)).empty:
                ranked = [stored_diagnoses(value) for value in chunk["diagnoses"]]
                chunk = prediction_csv.with_diagnosis_columns(chunk, ranked, classes)
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
            conditions.append(f"id NOT IN ({placeholders(len(exclude_ids))})")
            parameters.extend(exclude_ids)
        if session_id is not None:
            conditions.append("session_id = ?")
            parameters.append(session_id)
        return self._frame(
            f"SELECT {_STORED_COLUMNS} FROM predictions WHERE {' AND '.join(conditions)} "
            "ORDER BY created_at DESC, id DESC",
            parameters,
        )

    def prediction(
        self, prediction_id: int, session_id: str | None = None
    ) -> dict[str, Any] | None:
        """One stored prediction, thumbnail included, as column to value; None when unknown.

        With `session_id`, another session's prediction is unknown too.
        """
        where, parameters = ids_sql([prediction_id], session_id)
        with self._cursor() as cursor:
            cursor.execute(
                f"SELECT {_STORED_COLUMNS}, thumbnail FROM predictions WHERE {where}",
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
        where, parameters = filter_sql(history_filter)
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
        where, parameters = filter_sql(history_filter)
        return self._frame(
            "SELECT run_id, arg_max(probability, id) AS probability, "
            "arg_max(threshold, id) AS threshold, arg_max(confirmed_label, id) AS confirmed_label "
            f"FROM predictions WHERE {where} AND confirmed_label IS NOT NULL "
            "GROUP BY run_id, sha256 ORDER BY min(created_at), min(id)",
            parameters,
        )


def _record_row(prediction_id: int, record: PredictionRecord) -> list[Any]:
    """The values of `_INSERT_COLUMNS`, in DuckDB's terms: naive UTC, diagnoses as structs."""
    values = {field.name: getattr(record, field.name) for field in dataclasses.fields(record)}
    values["created_at"] = as_utc_naive(record.created_at) if record.created_at else utc_now()
    values["diagnoses"] = [
        {"name": name, "probability": float(p)} for name, p in record.diagnoses
    ] or None
    return [prediction_id, *values.values()]


def stored_diagnoses(value: Any) -> tuple[tuple[str, float], ...]:
    """A stored `diagnoses` value as (name, probability) pairs, most likely first; () for none."""
    if not pandas.api.types.is_list_like(value):
        return ()
    return tuple((str(entry["name"]), float(entry["probability"])) for entry in value)
