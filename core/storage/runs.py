"""Run folders: the source of truth for every trained model, and which one is active.

This module owns the folder format: a run lives in MODELS_DIR/<run_id>/ with model.keras,
card.json, history.csv, test_predictions.csv, split.csv, ood.npz and, when it has one,
crossval.json. Training writes it through `save_run` and `write_tables`, the database reads
it through `read_history` and `read_test_predictions`. A run is written under a dot-prefixed
temporary name and renamed when complete, so a half-written run never looks finished. No
TensorFlow here: listing runs and reading cards stays cheap for the pages that need no model.
"""

import io
import json
import os
import shutil
import socket
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas

from core import config
from core.storage import spreadsheet
from core.storage.card import Card

MODEL_FILE = "model.keras"
CARD_FILE = "card.json"
HISTORY_FILE = "history.csv"
TEST_PREDICTIONS_FILE = "test_predictions.csv"
SPLIT_FILE = "split.csv"
OOD_FILE = "ood.npz"
# A run being saved: .<run_id>.partial/, holding WRITER_FILE (the saving process) until the
# rename. One older than STALE_PARTIAL_SECONDS is left over: no save takes an hour.
PARTIAL_PREFIX, PARTIAL_SUFFIX = ".", ".partial"
WRITER_FILE = ".writer.json"
STALE_PARTIAL_SECONDS = 3600
# Held-out-source cross-validation of the run's recipe (`python -m core crossval`): the
# head-only folds a training run makes, and folds of the recipe as trained (fine-tuned, run
# one source at a time and merged with `crossval-merge`).
CROSSVAL_FILE = "crossval.json"
CROSSVAL_FINE_TUNED_FILE = "crossval_fine_tuned.json"
RUN_FILES = (
    MODEL_FILE,
    CARD_FILE,
    HISTORY_FILE,
    TEST_PREDICTIONS_FILE,
    SPLIT_FILE,
    OOD_FILE,
    CROSSVAL_FILE,
    CROSSVAL_FINE_TUNED_FILE,
)
EPOCH_COLUMNS = ("phase", "epoch", "loss", "auc", "val_loss", "val_auc", "seconds")
TEST_PREDICTION_COLUMNS = ("image_name", "label", "probability", "site", "source", "diagnosis")
# Test predictions of older runs may lack these; they read as missing values.
OPTIONAL_TEST_PREDICTION_COLUMNS = ("site", "source", "diagnosis")
# Evaluations on users' own labelled data: <run>/evaluations/<evaluation_id>.json (the record)
# and <evaluation_id>.csv (one row per scored image). The CSV is written first, so a record
# that exists always has its predictions.
EVALUATIONS_FOLDER = "evaluations"
EVALUATION_PREDICTION_COLUMNS = (
    "image_name",
    "sha256",
    "label",
    "probability",
    "ood_score",
    "ood_flag",
    "site",
    "sex",
    "age",
    "source",
    "diagnosis",
)
_EVALUATION_TEXT_COLUMNS = ("image_name", "sha256", "site", "sex", "source", "diagnosis")


class RunError(ValueError):
    """A run that does not exist, is broken, or cannot be changed as asked."""


@dataclass(frozen=True)
class Run:
    run_id: str
    folder: Path
    card: Card

    @property
    def model_path(self) -> Path:
        return self.folder / MODEL_FILE


def models_dir(directory: Path | None = None) -> Path:
    return Path(directory) if directory else config.MODELS_DIR


def write_json_atomic(path: Path, payload: dict) -> None:
    """Write JSON through a temporary file and a rename, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as handle:
        json.dump(payload, handle, indent=2, allow_nan=False)
        temporary = Path(handle.name)
    # NamedTemporaryFile makes the file private (0600); cards and configs are for everyone.
    os.chmod(temporary, 0o644)
    os.replace(temporary, path)


def load_run(folder: Path) -> Run:
    """Read a finished run folder; RunError names what is missing or broken."""
    folder = Path(folder)
    card_path = folder / CARD_FILE
    if not card_path.is_file():
        raise RunError(f"run {folder.name}: {CARD_FILE} is missing")
    if not (folder / MODEL_FILE).is_file():
        raise RunError(f"run {folder.name}: {MODEL_FILE} is missing")
    try:
        payload = json.loads(card_path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise RunError(f"run {folder.name}: {CARD_FILE} is unreadable ({error})") from error
    try:
        card = Card.from_dict(payload)
    except ValueError as error:
        raise RunError(f"run {folder.name}: {CARD_FILE} {error}") from error
    return Run(run_id=folder.name, folder=folder, card=card)


def write_card(folder: Path, card: Card) -> None:
    """Write a run's card.json whole, so a reader never sees half a card."""
    write_json_atomic(Path(folder) / CARD_FILE, card.to_dict())


def save_run(run_id: str, write: Callable[[Path], None], directory: Path | None = None) -> Path:
    """Let `write` fill a dot-prefixed folder, then rename it: a run appears whole or not.

    The folder names its writer, so a save killed before it could clean up is removed by the
    next save or listing (see `remove_stale_partials`).
    """
    root = models_dir(directory)
    root.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(root)
    partial = root / f"{PARTIAL_PREFIX}{run_id}{PARTIAL_SUFFIX}"
    try:
        partial.mkdir()
        writer = {"pid": os.getpid(), "host": socket.gethostname()}
        (partial / WRITER_FILE).write_text(json.dumps(writer))
        write(partial)
        (partial / WRITER_FILE).unlink()
        final = root / run_id
        partial.rename(final)
    finally:
        if partial.exists():
            shutil.rmtree(partial, ignore_errors=True)
    return final


def remove_stale_partials(root: Path) -> list[str]:
    """Remove the half-written run folders no save is writing any more; their names.

    Stale: its writer ran on this machine and is gone, or it is older than any save takes
    (a writer on another machine sharing the folder cannot be asked).
    """
    removed = []
    for partial in root.glob(f"{PARTIAL_PREFIX}*{PARTIAL_SUFFIX}"):
        if partial.is_dir() and _is_stale(partial):
            shutil.rmtree(partial, ignore_errors=True)
            removed.append(partial.name)
    return removed


def _is_stale(partial: Path) -> bool:
    try:
        age = time.time() - partial.stat().st_mtime
    except OSError:
        return False  # Removed meanwhile.
    try:
        writer = json.loads((partial / WRITER_FILE).read_text())
    except (OSError, ValueError):
        writer = None  # Not written yet (a save that just began), or damaged: age decides.
    here = isinstance(writer, dict) and writer.get("host") == socket.gethostname()
    return (here and not process_alive(writer.get("pid"))) or age > STALE_PARTIAL_SECONDS


def process_alive(pid: int | None) -> bool:
    """Whether a process with this id runs on this machine (signal 0 asks without sending)."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # It exists, under another user.
    return True


def write_tables(folder: Path, history: list[dict], tests, split) -> None:
    """The run's epoch history, test predictions and split as CSV (pandas frames)."""
    # An ensemble trains nothing itself: its history is the header alone.
    epochs = (
        pandas.DataFrame(history) if history else pandas.DataFrame(columns=list(EPOCH_COLUMNS))
    )
    spreadsheet.to_csv(epochs, folder / HISTORY_FILE, index=False)
    # Full precision: the Metrics page recomputes labels at the card threshold from these.
    columns = list(TEST_PREDICTION_COLUMNS)
    spreadsheet.to_csv(tests[columns], folder / TEST_PREDICTIONS_FILE, index=False)
    spreadsheet.to_csv(split, folder / SPLIT_FILE, index=False)


def read_history(folder: Path):
    return _read_table(folder / HISTORY_FILE, EPOCH_COLUMNS, ())


def read_test_predictions(folder: Path):
    return _read_table(
        folder / TEST_PREDICTIONS_FILE, TEST_PREDICTION_COLUMNS, OPTIONAL_TEST_PREDICTION_COLUMNS
    )


def _read_table(path: Path, columns: tuple[str, ...], optional: tuple[str, ...]):
    """The named columns of a run's CSV; ValueError names the required ones it lacks."""
    text_columns = {"phase", "image_name", *OPTIONAL_TEST_PREDICTION_COLUMNS}
    frame = spreadsheet.read_csv(path, dtype={column: "string" for column in text_columns})
    missing = [
        column for column in columns if column not in frame.columns and column not in optional
    ]
    if missing:
        raise ValueError(f"{path.name} lacks the columns {missing}")
    # Optional text columns may be left out altogether; they become NULL.
    return frame.reindex(columns=list(columns)).astype({c: "string" for c in optional})


def split_overlap(run: Run, sha256s, image_names) -> dict | None:
    """How many of these images the run trained, validated or was tested on; None when the
    run has no split.csv (with image_name and split columns) to tell.

    Matched by content (split.csv's sha256 column) when the run has it, else by image name
    (runs from before it): `"by"` says which. Copies under another name are caught only by
    content.
    """
    path = run.folder / SPLIT_FILE
    if not path.is_file():
        return None
    table = pandas.read_csv(path, dtype="string")
    if not {"image_name", "split"} <= set(table.columns):
        return None
    by = "sha256" if "sha256" in table.columns and table["sha256"].notna().all() else "image_name"
    wanted = set(sha256s if by == "sha256" else image_names)
    inside = table[table[by].isin(wanted)]
    counts = inside.drop_duplicates(by)["split"].value_counts()
    return {"by": by, **{name: int(counts.get(name, 0)) for name in ("train", "val", "test")}}


def load_crossval(run: Run, file_name: str = CROSSVAL_FILE) -> dict | None:
    """The run's held-out-source cross-validation, or None when it has none (or it is broken)."""
    path = run.folder / file_name
    try:
        payload = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return payload if isinstance(payload, dict) and payload.get("folds") else None


def list_runs(directory: Path | None = None) -> tuple[list[Run], list[str]]:
    """Finished runs, newest first, and a message for each broken run folder."""
    root = models_dir(directory)
    runs: list[Run] = []
    problems: list[str] = []
    if not root.is_dir():
        return runs, problems
    remove_stale_partials(root)
    for folder in sorted(root.iterdir(), reverse=True):
        if not folder.is_dir() or folder.name.startswith("."):
            continue
        try:
            runs.append(load_run(folder))
        except RunError as error:
            problems.append(str(error))
    return runs, problems


def _named_run_id(path: Path) -> str | None:
    try:
        return json.loads(path.read_text()).get("run_id")
    except (OSError, json.JSONDecodeError, AttributeError):
        return None


def active_run_id(directory: Path | None = None) -> str | None:
    """The active run: the local choice (active.local.json) if any, else the default.

    `set_active` writes the local file, which git ignores; active.json names the committed
    default model and is never rewritten by the app.
    """
    root = models_dir(directory)
    local = _named_run_id(root / config.LOCAL_ACTIVE_FILE_NAME)
    return local or _named_run_id(root / config.ACTIVE_FILE_NAME)


def set_active(run_id: str, directory: Path | None = None) -> Run:
    """Make a finished, loadable run the active one (a local choice; see `active_run_id`)."""
    root = models_dir(directory)
    run = load_run(root / run_id) if (root / run_id).is_dir() else None
    if run is None:
        raise RunError(f"no run {run_id!r} in {root}")
    write_json_atomic(root / config.LOCAL_ACTIVE_FILE_NAME, {"run_id": run_id})
    return run


def active_run(directory: Path | None = None) -> tuple[Run | None, list[str]]:
    """The active run: the local choice when it loads, else the default (active.json).

    None when neither loads: a caller refuses rather than guess, since the newest folder may
    be a run nobody chose. The second value names the broken run folders and, whenever a
    named run is passed over, which one and why, so that the app can say so.
    """
    root = models_dir(directory)
    found, problems = list_runs(root)
    run, note = _resolve_active(root)
    if run is None:
        note = _nothing_active(note, found)
    return run, [*problems, note] if note else problems


def _nothing_active(note: str | None, found: list[Run]) -> str | None:
    """Why no run is active: a named run that cannot be used, or none named among `found`."""
    if note or not found:
        return note
    return "no run is active: " + _ACTIVATE


_ACTIVATE = "activate a run (Train page, or python -m core activate)"


def _resolve_active(root: Path) -> tuple[Run | None, str | None]:
    """The run the active files pick, and a note when one was passed over or none loads."""
    passed_over: list[str] = []
    for file_name in (config.LOCAL_ACTIVE_FILE_NAME, config.ACTIVE_FILE_NAME):
        run_id = _named_run_id(root / file_name)
        if run_id is None:
            continue
        try:
            run = _named_run(root, run_id)
        except RunError as error:
            passed_over.append(f"{file_name} names run {run_id!r}, which cannot be used ({error})")
            continue
        note = "; ".join([*passed_over, f"using run {run_id} from {file_name}"])
        return run, note if passed_over else None
    return None, f"{'; '.join(passed_over)}: {_ACTIVATE}" if passed_over else None


def _named_run(root: Path, run_id: str) -> Run:
    """The finished run an active file names; RunError when it is not one."""
    if not isinstance(run_id, str) or Path(run_id).name != run_id or run_id.startswith("."):
        raise RunError(f"{run_id!r} is not a run id")
    if not (root / run_id).is_dir():
        raise RunError(f"run {run_id} does not exist")
    return load_run(root / run_id)


def default_run(directory: Path | None = None) -> Run | None:
    """The committed default model (active.json), when it names a run that loads."""
    root = models_dir(directory)
    run_id = _named_run_id(root / config.ACTIVE_FILE_NAME)
    try:
        return _named_run(root, run_id) if run_id else None
    except RunError:
        return None


def resolve_run(
    reference: str | None,
    directory: Path | None = None,
    warn: Callable[[str], None] | None = None,
) -> Run:
    """A run id, a run folder, or a model.keras path; None means the active run.

    `warn` hears why the active run is not the local choice, when it is not.
    """
    if reference is None:
        root = models_dir(directory)
        run, note = _resolve_active(root)
        if run is None:
            found, _ = list_runs(root)
            raise RunError(_nothing_active(note, found) or "no trained model found: train one")
        if note and warn is not None:
            warn(note)
        return run
    path = Path(reference)
    if path.name == MODEL_FILE:
        path = path.parent
    candidate = path if path.is_dir() else models_dir(directory) / reference
    if not candidate.is_dir():
        raise RunError(f"no run or model folder {reference!r}")
    return load_run(candidate)


def delete_run(run_id: str, directory: Path | None = None) -> None:
    root = models_dir(directory)
    if run_id == active_run_id(root):
        raise RunError(f"run {run_id} is active; activate another run before deleting it")
    folder = root / run_id
    if not folder.is_dir() or folder.parent != root or run_id.startswith("."):
        raise RunError(f"no run {run_id!r} in {root}")
    shutil.rmtree(folder)


def zip_run(run_id: str, directory: Path | None = None) -> bytes:
    """Model, card, history, predictions and stored evaluations of a run as one ZIP."""
    run = load_run(models_dir(directory) / run_id)
    names = [name for name in RUN_FILES if (run.folder / name).is_file()]
    for evaluation_id in evaluation_ids(run.folder):
        names += [
            path.relative_to(run.folder).as_posix()
            for path in evaluation_files(run.folder, evaluation_id)
            if path.is_file()
        ]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in names:
            archive.write(run.folder / name, f"{run_id}/{name}")
    return buffer.getvalue()


def evaluation_files(folder: Path, evaluation_id: str) -> tuple[Path, Path]:
    """The record (JSON) and predictions (CSV) of one evaluation of the run in `folder`."""
    if not evaluation_id or "/" in evaluation_id or evaluation_id.startswith("."):
        raise RunError(f"not an evaluation id: {evaluation_id!r}")
    evaluations = Path(folder) / EVALUATIONS_FOLDER
    return evaluations / f"{evaluation_id}.json", evaluations / f"{evaluation_id}.csv"


def write_evaluation(folder: Path, record: dict, predictions: pandas.DataFrame) -> Path:
    """Store an evaluation record and its per-image predictions; returns the record's path."""
    record_path, predictions_path = evaluation_files(folder, record["evaluation_id"])
    record_path.parent.mkdir(parents=True, exist_ok=True)
    columns = list(EVALUATION_PREDICTION_COLUMNS)
    spreadsheet.to_csv(predictions[columns], predictions_path, index=False)
    write_json_atomic(record_path, record)
    return record_path


def evaluation_ids(folder: Path) -> list[str]:
    """The ids of a run's stored evaluations, newest first (ids begin with their time)."""
    evaluations = Path(folder) / EVALUATIONS_FOLDER
    if not evaluations.is_dir():
        return []
    found = (path.stem for path in evaluations.glob("*.json") if not path.name.startswith("."))
    return sorted(found, reverse=True)


def read_evaluation(folder: Path, evaluation_id: str) -> dict:
    """One stored evaluation record; RunError when it is missing or unreadable."""
    record_path, _ = evaluation_files(folder, evaluation_id)
    try:
        record = json.loads(record_path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise RunError(f"evaluation {evaluation_id} is unreadable ({error})") from error
    if not isinstance(record, dict) or record.get("evaluation_id") != evaluation_id:
        raise RunError(f"evaluation {evaluation_id}: the record does not carry its own id")
    return record


def read_evaluation_predictions(folder: Path, evaluation_id: str) -> pandas.DataFrame:
    """The per-image predictions of one stored evaluation."""
    _, predictions_path = evaluation_files(folder, evaluation_id)
    frame = spreadsheet.read_csv(
        predictions_path, dtype={column: "string" for column in _EVALUATION_TEXT_COLUMNS}
    )
    missing = [name for name in EVALUATION_PREDICTION_COLUMNS if name not in frame.columns]
    if missing:
        raise ValueError(f"{predictions_path.name} lacks the columns {missing}")
    return frame[list(EVALUATION_PREDICTION_COLUMNS)]
