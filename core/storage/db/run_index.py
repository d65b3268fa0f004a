"""The run index: the runs, epochs, test predictions and evaluations of the run folders.

The run folders stay the source of truth; these tables are a cache of them, read through
`core.storage.runs` (which owns the folder format and the card) and rebuilt by `ingest_runs`.
"""

import dataclasses
import datetime
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb
import pandas

from core.storage import runs
from core.storage.db.store import Store, as_utc_naive, placeholders

# The run files the index caches; a newer modification time of any means re-ingest.
_RUN_FILES = (runs.CARD_FILE, runs.HISTORY_FILE, runs.TEST_PREDICTIONS_FILE)
_RUN_COLUMNS = (
    "run_id, created_at, backbone, image_size, threshold, roc_auc, sensitivity, specificity, "
    "n_test, folder, source_mtime_ns"
)
_EVALUATION_COLUMNS = (
    "evaluation_id, run_id, created_at, dataset, dataset_key, n_images, n_malignant, roc_auc, "
    "sensitivity, specificity, ood_flagged, record_json, source_mtime_ns"
)
# What reading a run's files can raise, past what `runs.list_runs` reports itself.
_READ_ERRORS = (OSError, ValueError, KeyError, TypeError, AttributeError, duckdb.Error)


class RunIndex(Store):
    """The tables cached from the run folders, and the problems met reading them."""

    _ingest_problems: tuple[str, ...] = ()

    def ingest_runs(self, models_dir: str | Path | None = None) -> int:
        """Bring the run tables in line with the finished runs; return how many loaded.

        Runs whose files did not change since the last call are skipped, so calling this on
        every app start is cheap. Only the runs `core.storage.runs.list_runs` finds are indexed;
        the broken folders it names, and runs whose tables cannot be read, are listed in
        `ingest_problems` instead of raising. Rows of runs no longer found are deleted.
        """
        found, problems = runs.list_runs(Path(models_dir) if models_dir is not None else None)
        with self._cursor() as cursor:
            known = dict(cursor.execute("SELECT run_id, source_mtime_ns FROM runs").fetchall())
        loaded = 0
        for run in sorted(found, key=lambda run: run.run_id):
            try:
                modified_ns = _run_modified_ns(run.folder)
                if known.get(run.run_id) != modified_ns:
                    self._store_run(run, modified_ns)
                    loaded += 1
            except _READ_ERRORS as error:
                problems.append(f"run {run.run_id}: {error}")
        folders = {run.run_id: run.folder for run in found}
        self._delete_runs(sorted(set(known) - set(folders)))
        problems.extend(self._ingest_evaluations(folders))
        self._ingest_problems = tuple(problems)
        return loaded

    @property
    def ingest_problems(self) -> tuple[str, ...]:
        """ "run <run_id>: <reason>" for each run that the last `ingest_runs` could not read."""
        return self._ingest_problems

    def list_runs(self) -> pandas.DataFrame:
        """Every ingested run, newest first (the card itself is the folder's, `runs.load_run`)."""
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

    def _store_run(self, run: runs.Run, modified_ns: int) -> None:
        """Replace the run's rows with its card's figures and its tables as they are now."""
        epochs = runs.read_history(run.folder)
        tests = runs.read_test_predictions(run.folder)
        row = _run_row(run, len(tests), modified_ns)
        with self.transaction() as cursor:
            cursor.execute("DELETE FROM epochs WHERE run_id = ?", [run.run_id])
            cursor.execute("DELETE FROM test_predictions WHERE run_id = ?", [run.run_id])
            cursor.execute(
                f"INSERT OR REPLACE INTO runs ({_RUN_COLUMNS}) VALUES ({placeholders(len(row))})",
                row,
            )
            for table, frame in (("epochs", epochs), ("test_predictions", tests)):
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
                    problems.append(f"run {run_id}: evaluation {evaluation_id}: {error}")
        self._delete_evaluations(sorted(set(known) - found))
        return problems

    def _store_evaluation(self, evaluation: "_EvaluationFiles") -> None:
        with self.transaction() as cursor:
            self._delete_evaluation_rows(cursor, [evaluation.evaluation_id])
            cursor.execute(
                f"INSERT INTO evaluations ({_EVALUATION_COLUMNS}) "
                f"VALUES ({placeholders(len(evaluation.row))})",
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
                f"({placeholders(len(evaluation_ids))})",
                list(evaluation_ids),
            )

    def _delete_runs(self, run_ids: Sequence[str]) -> None:
        if not run_ids:
            return
        with self.transaction() as cursor:
            for table in ("runs", "epochs", "test_predictions"):
                cursor.execute(
                    f"DELETE FROM {table} WHERE run_id IN ({placeholders(len(run_ids))})",
                    list(run_ids),
                )


def _run_modified_ns(folder: Path) -> int:
    """The newest modification time of the files read, so that any rewrite is noticed."""
    return max((folder / name).stat().st_mtime_ns for name in _RUN_FILES)


def _run_row(run: runs.Run, n_test: int, modified_ns: int) -> list[Any]:
    """The values of `_RUN_COLUMNS` for one run."""
    card = run.card
    test_metrics = card.test_metrics
    return [
        run.run_id,
        as_utc_naive(datetime.datetime.fromisoformat(str(card.created_at))),
        card.backbone,
        card.image_size,
        card.threshold,
        test_metrics.get("roc_auc"),
        test_metrics.get("sensitivity"),
        test_metrics.get("specificity"),
        n_test,
        str(run.folder),
        modified_ns,
    ]


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
        as_utc_naive(datetime.datetime.fromisoformat(record["created_at"])),
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
