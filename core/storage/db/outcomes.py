"""Confirmed outcomes: set by hand on the History page, or imported from a file and undone.

Each import is recorded with every prediction's values before it, so that it can be undone
as long as nothing changed those predictions since.
"""

import dataclasses
import datetime
from collections.abc import Sequence

import duckdb
import pandas

from core.inputs import diagnoses
from core.storage.db.filters import ids_sql
from core.storage.db.store import Store, as_utc_naive, check_label, utc_now


@dataclasses.dataclass(frozen=True)
class OutcomeChange:
    """A confirmed outcome to write to one prediction; `confirmed_at` None means now."""

    prediction_id: int
    label: str
    diagnosis: str | None = None
    confirmed_at: datetime.datetime | None = None

    def __post_init__(self) -> None:
        check_label(self.label, f"outcome of prediction {self.prediction_id}")


class Outcomes(Store):
    """Confirmed outcomes of stored predictions, and the record of outcome imports."""

    def set_confirmed(
        self,
        prediction_ids: Sequence[int],
        label: str | None,
        diagnosis: str | None = None,
        session_id: str | None = None,
    ) -> int:
        """Record the confirmed outcome (label None clears it); return how many rows changed.

        A diagnosis in the shared vocabulary (`core.inputs.diagnoses`) is stored under its
        vocabulary name; one that contradicts the label raises ValueError. With `session_id`, only that
        session's predictions are touched.
        """
        if label is not None:
            check_label(label, "confirmed label")
            diagnosis = _confirmed_diagnosis(label, diagnosis)
        if not prediction_ids:
            return 0
        confirmed_at = utc_now() if label is not None else None
        where, parameters = ids_sql(prediction_ids, session_id)
        with self.transaction() as cursor:
            row = cursor.execute(
                "UPDATE predictions SET confirmed_label = ?, confirmed_diagnosis = ?, "
                f"confirmed_at = ? WHERE {where}",
                [label, diagnosis if label is not None else None, confirmed_at, *parameters],
            ).fetchall()[0]
        return int(row[0])

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
        now = utc_now()
        incoming = pandas.DataFrame(
            {
                "prediction_id": pandas.Series([c.prediction_id for c in changes], dtype="int64"),
                "label": pandas.Series([c.label for c in changes], dtype=object),
                "diagnosis": pandas.Series([c.diagnosis for c in changes], dtype=object),
                "confirmed_at": pandas.Series(
                    [as_utc_naive(c.confirmed_at) if c.confirmed_at else now for c in changes],
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
                [utc_now(), int(import_id)],
            )
        return restored

    def outcome_imports(self) -> pandas.DataFrame:
        """Every recorded outcome import, newest first."""
        return self._frame(
            "SELECT import_id, imported_at, imported_by, file_name, n_rows, n_changed, undone_at "
            "FROM outcome_imports ORDER BY import_id DESC",
            [],
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


def _confirmed_diagnosis(label: str, diagnosis: str | None) -> str | None:
    """The diagnosis to store with `label`: its vocabulary name when known, else as typed."""
    text = (diagnosis or "").strip()
    if not text:
        return None
    if problem := diagnoses.contradiction(label, text):
        raise ValueError(problem)
    return diagnoses.normalise_diagnosis(text) or text
