"""The predictions CSVs: which columns each holds, its rows, and resuming a half-written one.

Three CSVs list predictions, each with the columns its reader needs:

- `python -m core predict` writes PREDICT_COLUMNS, then a `dx_<class>` column per diagnosis
  of a diagnosis model (`predict_columns`), a row as each image is done, so that `--resume`
  can pick an interrupted file up where it stopped (`read_done_files`, `open_output`);
- the Predict page's download has PAGE_COLUMNS (its table shows a thumbnail before them);
- History's export has every stored column of `core.storage.db` but the thumbnail, with the
  diagnoses spread into the same `dx_<class>` columns (`history_header`,
  `with_diagnosis_columns`).
"""

import contextlib
import csv
import fcntl
import os
import sys
from collections.abc import Sequence

import pandas

from core.inputs import diagnoses
from core.storage import spreadsheet

PREDICT_COLUMNS = (
    "file",
    "probability",
    "label",
    "threshold",
    "model",
    "error",
    "ood_score",
    "out_of_distribution",
    "threshold_source",
)
_MODEL_COLUMN = PREDICT_COLUMNS.index("model")
PAGE_COLUMNS = (
    "file",
    "probability",
    "label",
    "distance",
    "out_of_distribution",
    "model",
    "threshold",
    "threshold_source",
    "sha256",
    "prediction_id",
    "error",
)


def diagnosis_columns(names: Sequence[str]) -> tuple[str, ...]:
    """The `dx_<class>` column of each diagnosis, in the order given."""
    return tuple(diagnoses.column_name(name) for name in names)


def predict_columns(run) -> tuple[str, ...]:
    """PREDICT_COLUMNS, then one `dx_` column per diagnosis class of a diagnosis model."""
    return PREDICT_COLUMNS + diagnosis_columns(run.card.diagnoses)


def prediction_row(prediction, diagnosis_names: tuple[str, ...] = ()) -> list[str]:
    """One `Prediction` as the CSV row of `predict_columns`."""
    probability = "" if prediction.probability is None else f"{prediction.probability:.6f}"
    return [
        prediction.file,
        probability,
        prediction.label or "",
        f"{prediction.threshold:.6f}",
        prediction.model,
        prediction.error,
        "" if prediction.ood_score is None else f"{prediction.ood_score:.4f}",
        "" if prediction.ood_flag is None else str(prediction.ood_flag).lower(),
        prediction.threshold_source,
        *_diagnosis_cells(prediction, diagnosis_names),
    ]


def _diagnosis_cells(prediction, names: tuple[str, ...]) -> list[str]:
    """The class probabilities in the card's order (the prediction ranks them); empty
    cells for an image that could not be read."""
    by_name = dict(prediction.diagnoses)
    return [f"{by_name[name]:.6f}" if name in by_name else "" for name in names]


def page_row(result) -> list:
    """One `predict_service.PredictionResult` as the row of PAGE_COLUMNS, values as they are
    (the page formats them)."""
    prediction = result.prediction
    return [
        prediction.file,
        prediction.probability,
        prediction.label or "",
        result.distance,
        prediction.ood_flag,
        prediction.model,
        prediction.threshold,
        prediction.threshold_source,
        prediction.sha256,
        result.prediction_id,
        prediction.error,
    ]


def history_header(stored_columns: Sequence[str], classes: Sequence[str]) -> list[str]:
    """History's export columns: the stored ones but the diagnoses list, then `dx_<class>`."""
    return [name for name in stored_columns if name != "diagnoses"] + [*diagnosis_columns(classes)]


def with_diagnosis_columns(
    frame: pandas.DataFrame, ranked: Sequence[Sequence[tuple[str, float]]], classes: Sequence[str]
) -> pandas.DataFrame:
    """`frame` without its diagnoses list, and a `dx_<class>` column per class in its place;
    `ranked` holds each row's (diagnosis, probability) pairs."""
    shares = [dict(pairs) for pairs in ranked]
    frame = frame.drop(columns="diagnoses")
    for name, column in zip(classes, diagnosis_columns(classes), strict=True):
        frame[column] = [share.get(name) for share in shares]
    return frame


class CompleteLines:
    """The newline-terminated lines of a binary file, decoded; `length` counts their bytes.

    A run killed mid-write leaves part of a row after the last newline: it is not yielded.
    """

    def __init__(self, handle):
        self.handle = handle
        self.length = 0

    def __iter__(self):
        for line in self.handle:
            if not line.endswith(b"\n"):
                return
            self.length += len(line)
            yield line.decode("utf-8", "surrogateescape")


def read_done_files(path: str, run) -> tuple[set[str], int]:
    """The files a predict CSV already holds (as written, escaped) and the bytes of its
    complete rows.

    A missing or empty file holds none. A CSV with other columns, or rows from another model,
    is refused rather than appended to.
    """
    if not os.path.exists(path):
        return set(), 0
    done: set[str] = set()
    with open(path, "rb") as handle:
        lines = CompleteLines(handle)
        rows = csv.reader(lines)
        try:
            header = next(rows, None)
            columns = predict_columns(run)
            if header is not None and tuple(header) != columns:
                raise ValueError(
                    f"{path} does not have the columns python -m core predict writes "
                    f"({', '.join(columns)}): write to a new file"
                )
            for row in rows:
                done.add(_checked_file(row, path, rows.line_num, run.run_id, len(columns)))
        except csv.Error as error:
            raise ValueError(f"{path}, line {rows.line_num}: {error}") from error
    return done, lines.length


def _checked_file(row: list[str], path: str, line: int, model: str, width: int) -> str:
    """The file of one row of an earlier predict CSV, once the row is known to fit."""
    if len(row) != width:
        raise ValueError(
            f"{path}, line {line}: {len(row)} fields, not {width}: "
            "not a predict CSV, or damaged there"
        )
    written_model = spreadsheet.unescape_cell(row[_MODEL_COLUMN])
    if written_model != model:
        raise ValueError(
            f"{path} holds predictions of model {written_model}, not {model}: resume with "
            f"--model {written_model}, or write to a new file"
        )
    return row[0]


def open_output(path: str | None, kept_bytes: int):
    """Standard output, a new CSV, or (resuming) the old one cut to its complete rows."""
    if path is None:
        return contextlib.nullcontext(sys.stdout)
    if not kept_bytes:
        return open(path, "w", newline="", encoding="utf-8", errors="surrogateescape")
    # Whatever follows the complete rows is half a row from an interrupted run.
    os.truncate(path, kept_bytes)
    return open(path, "a", newline="", encoding="utf-8", errors="surrogateescape")


def remaining_files(files: list[str], done: set[str], path: str | None) -> list[str]:
    """The files that a resumed CSV does not hold yet.

    ValueError when it holds predictions but none of these files: the paths were given
    another way than in the first run, and appending would predict everything again.
    """
    # The CSV holds each file as written, escaped for spreadsheets: compare in that form.
    todo = [file for file in files if spreadsheet.escape_cell(file) not in done]
    if done and files and len(todo) == len(files):
        raise ValueError(
            f"{path} holds {len(done):,} predictions, none of them for these "
            f"{len(files):,} files: give the paths as in the first run, or write to a new file"
        )
    return todo


class OutputBusyError(RuntimeError):
    """Another predict holds the lock of the output file."""


@contextlib.contextmanager
def output_lock(path: str | None):
    """Hold `<path>.lock` while this process writes `path`, so that no second writer tears it.

    The lock file holds the owner's pid for the refusal message, and is removed at the end.
    """
    if path is None:
        yield
        return
    lock_path = f"{path}.lock"
    handle = _open_lock(lock_path, path)
    try:
        handle.truncate(0)
        handle.write(str(os.getpid()))
        handle.flush()
        yield
    finally:
        os.unlink(lock_path)
        handle.close()


def _open_lock(lock_path: str, path: str):
    """The lock file, open and locked by this process; OutputBusyError when another holds it."""
    while True:
        handle = open(lock_path, "a+")  # noqa: SIM115 - held open by output_lock
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise OutputBusyError(
                f"{path} is being written by another predict (pid {holder}); wait for it to "
                "finish, or write to another file"
            ) from None
        # A holder that finished between our open and flock removed the file we locked.
        with contextlib.suppress(FileNotFoundError):
            if os.stat(lock_path).st_ino == os.fstat(handle.fileno()).st_ino:
                return handle
        handle.close()
