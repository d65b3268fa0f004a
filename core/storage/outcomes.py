"""Confirmed outcomes imported from a CSV: parse, plan against the stored predictions, apply.

The CSV has a header row and, per row, the image as `file` (the file name it was uploaded
under; `file_name` is read as the same column) or `sha256` (of the image bytes, as History
exports it), and its `outcome`: benign or malignant, any case, or 0 / 1 as in the ISIC
`target` column (1 is malignant). Optional columns: `diagnosis` (read with `core.inputs.diagnoses`:
`MEL`, `mel` and `melanoma` are one name; a word outside the vocabulary makes the row a bad
value, so every imported diagnosis is one the app knows) and `confirmed_on`
(an ISO date such as 2024-03-12; the import time when blank). Other columns are ignored.

A row with a sha256 reaches every stored prediction of that image, whatever its file name; a
row with only a file name reaches every prediction stored under that name. Planning sorts the
rows into matched (something to change), unchanged (already stored so), unmatched, invalid (a
value that cannot be read: fix the file) and conflicting. Conflicts are an outcome that
contradicts the row's own diagnosis, one image given different outcomes in one file, a file
name shared by several different images (give the sha256 to say which), and a different
outcome or diagnosis already stored. Only the last kind can be imported, and only when the
caller asks to overwrite.
"""

import csv
import dataclasses
import datetime
import io
import re

import pandas

from core.inputs import diagnoses
from core.inputs.labels import CLASS_NAMES
from core.storage import db

MAX_ROWS = 100_000
MATCHED, UNCHANGED, UNMATCHED, INVALID, CONFLICT = (
    "matched",
    "unchanged",
    "unmatched",
    "invalid",
    "conflict",
)
# Conflict kinds; only STORED may be overwritten on request.
CONTRADICTION, DUPLICATE, AMBIGUOUS, STORED = (
    "contradiction",
    "duplicate",
    "ambiguous file name",
    "stored outcome differs",
)
# An outcome cell holds a class name or its label, 0 or 1.
_OUTCOMES = {
    **{name: name for name in CLASS_NAMES},
    **{str(label): name for label, name in enumerate(CLASS_NAMES)},
}
_COLUMN_ALIASES = {"file_name": "file"}
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclasses.dataclass(frozen=True)
class OutcomeRow:
    """One CSV row; `number` counts the header as row 1, as a spreadsheet does."""

    number: int
    file_name: str | None
    sha256: str | None
    outcome: str | None
    diagnosis: str | None
    confirmed_on: datetime.date | None
    problem: str | None = None


@dataclasses.dataclass(frozen=True)
class PlannedRow:
    """A row and the stored predictions it reaches; `kind` says why it conflicts, `reason` why
    it conflicts or is invalid."""

    row: OutcomeRow
    status: str
    prediction_ids: tuple[int, ...] = ()
    n_images: int = 0
    kind: str | None = None
    reason: str | None = None
    changes: tuple[db.OutcomeChange, ...] = ()


@dataclasses.dataclass(frozen=True)
class ImportPlan:
    """What importing one CSV would do; nothing is written until `changes` are applied."""

    file_name: str
    rows: tuple[PlannedRow, ...]

    def with_status(self, status: str) -> tuple[PlannedRow, ...]:
        return tuple(planned for planned in self.rows if planned.status == status)

    @property
    def overwritable(self) -> tuple[PlannedRow, ...]:
        """The conflicting rows that only differ from what is stored."""
        return tuple(planned for planned in self.with_status(CONFLICT) if planned.kind == STORED)

    def changes(self, overwrite: bool = False) -> list[db.OutcomeChange]:
        """The predictions to change: matched rows, plus stored conflicts when `overwrite`."""
        rows = self.with_status(MATCHED) + (self.overwritable if overwrite else ())
        by_id = {change.prediction_id: change for planned in rows for change in planned.changes}
        return [by_id[prediction_id] for prediction_id in sorted(by_id)]

    def table(self, status: str) -> pandas.DataFrame:
        """The rows of one status, as the preview shows them."""
        return pandas.DataFrame(
            [_table_row(planned) for planned in self.with_status(status)],
            columns=["row", "file", "sha256", "outcome", "diagnosis", "predictions", "reason"],
        )


def parse_csv(data: bytes | str) -> list[OutcomeRow]:
    """The rows of an outcomes CSV; ValueError when it is not one (bad rows are kept, marked)."""
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8-sig")
        except UnicodeDecodeError as error:
            raise ValueError("the file is not UTF-8 text; save the CSV as UTF-8") from error
    reader = csv.DictReader(io.StringIO(data))
    columns = [_COLUMN_ALIASES.get(name, name) for name in _header(reader.fieldnames)]
    reader.fieldnames = columns
    rows = [_parse_row(number, row) for number, row in enumerate(reader, start=2)]
    if not rows:
        raise ValueError("the CSV has a header but no rows")
    if len(rows) > MAX_ROWS:
        raise ValueError(f"the CSV has {len(rows)} rows; import at most {MAX_ROWS} at a time")
    return rows


def plan_import(database: db.Database, data: bytes | str, file_name: str) -> ImportPlan:
    """Parse `data` and plan its import against what `database` stores now."""
    rows = parse_csv(data)
    stored = database.outcome_targets(
        sorted({row.sha256 for row in rows if row.sha256}),
        sorted({row.file_name for row in rows if row.file_name and not row.sha256}),
    )
    groups = _group(stored)
    reached = {row.number: _reached(row, groups) for row in rows}
    duplicates = _duplicates(rows, reached)
    planned = tuple(
        _plan_row(row, reached[row.number], duplicates.get(row.number)) for row in rows
    )
    return ImportPlan(file_name, planned)


def _header(fieldnames) -> list[str]:
    columns = [(name or "").strip().lower() for name in fieldnames or ()]
    named = {_COLUMN_ALIASES.get(name, name) for name in columns}
    if "outcome" not in named or not named & {"file", "sha256"}:
        found = ", ".join(name for name in columns if name) or "none"
        raise ValueError(
            "the CSV needs an 'outcome' column and a 'file' or 'sha256' column (optional: "
            f"'diagnosis', 'confirmed_on'); its columns are: {found}"
        )
    return columns


def _parse_row(number: int, raw: dict) -> OutcomeRow:
    def cell(name: str) -> str:
        return str(raw.get(name) or "").strip()

    file_name, sha256 = cell("file") or None, cell("sha256").lower() or None
    outcome = _OUTCOMES.get(cell("outcome").lower())
    diagnosis = cell("diagnosis") or None
    problems = []
    if file_name is None and sha256 is None:
        problems.append("neither a file name nor a sha256")
    if sha256 is not None and not _SHA256.match(sha256):
        problems.append(f"sha256 {cell('sha256')!r} is not 64 hexadecimal characters")
    if outcome is None:
        problems.append(f"outcome {cell('outcome')!r} is not benign, malignant, 0 or 1")
    confirmed_on, date_problem = _date(cell("confirmed_on"))
    problems.extend([date_problem] if date_problem else [])
    if diagnosis is not None:
        diagnosis, diagnosis_problem = _diagnosis(diagnosis)
        problems.extend([diagnosis_problem] if diagnosis_problem else [])
    problem = f"row {number}: " + "; ".join(problems) if problems else None
    return OutcomeRow(number, file_name, sha256, outcome, diagnosis, confirmed_on, problem)


def _diagnosis(text: str) -> tuple[str | None, str | None]:
    """The vocabulary name of a typed diagnosis, or why it has none."""
    name = diagnoses.normalise_diagnosis(text)
    if name is not None:
        return name, None
    known = ", ".join(diagnoses.DIAGNOSIS_NAMES)
    return None, f"diagnosis {text!r} is not in the vocabulary ({known}); or leave it blank"


def _date(text: str) -> tuple[datetime.date | None, str | None]:
    if not text:
        return None, None
    try:
        day = datetime.date.fromisoformat(text[:10])
    except ValueError:
        return None, f"confirmed_on {text!r} is not a date like 2024-03-12"
    if day > datetime.datetime.now(datetime.UTC).date():
        return None, f"confirmed_on {text!r} is in the future"
    return day, None


@dataclasses.dataclass(frozen=True)
class _Stored:
    """A stored prediction a row may reach, with its confirmed outcome (None when unknown)."""

    id: int
    sha256: str
    label: str | None
    diagnosis: str | None


def _group(stored: pandas.DataFrame) -> dict[str, dict[str, list[_Stored]]]:
    """The stored predictions by sha256 and by file name, so each row is one dict look-up."""
    groups: dict[str, dict[str, list[_Stored]]] = {"sha256": {}, "file_name": {}}
    columns = ["id", "file_name", "sha256", "confirmed_label", "confirmed_diagnosis"]
    for id_, file_name, sha256, label, diagnosis in stored[columns].itertuples(index=False):
        found = _Stored(int(id_), str(sha256), _text(label), _text(diagnosis))
        groups["sha256"].setdefault(found.sha256, []).append(found)
        groups["file_name"].setdefault(str(file_name), []).append(found)
    return groups


def _text(value) -> str | None:
    return None if pandas.isna(value) else str(value)


def _reached(row: OutcomeRow, groups: dict[str, dict[str, list[_Stored]]]) -> list[_Stored]:
    """The stored predictions of the row's image: by sha256 when given, else by file name."""
    if row.problem is not None:
        return []
    if row.sha256 is not None:
        return groups["sha256"].get(row.sha256, [])
    return groups["file_name"].get(str(row.file_name), [])


def _duplicates(rows: list[OutcomeRow], reached: dict[int, list[_Stored]]) -> dict[int, str]:
    """Why each row that gives an image a different outcome than another row conflicts."""
    by_image: dict[str, dict[int, tuple]] = {}
    for row in rows:
        if row.problem is not None:
            continue
        # An unmatched sha256 still names one image: two outcomes for it are a conflict.
        images = {stored.sha256 for stored in reached[row.number]}
        images = images or ({row.sha256} if row.sha256 else set())
        for image in images:
            by_image.setdefault(image, {})[row.number] = (row.outcome, row.diagnosis)
    reasons: dict[int, str] = {}
    for image, values in by_image.items():
        if len(set(values.values())) > 1:
            numbers = ", ".join(str(number) for number in sorted(values))
            for number in values:
                reasons[number] = f"image {image[:12]} gets different outcomes on rows {numbers}"
    return reasons


def _plan_row(row: OutcomeRow, reached: list[_Stored], duplicate: str | None) -> PlannedRow:
    if row.problem is not None:
        return PlannedRow(row, INVALID, reason=row.problem)
    ids = tuple(stored.id for stored in reached)
    n_images = len({stored.sha256 for stored in reached})
    if problem := diagnoses.contradiction(str(row.outcome), row.diagnosis):
        return PlannedRow(row, CONFLICT, ids, n_images, CONTRADICTION, problem)
    if duplicate is not None:
        return PlannedRow(row, CONFLICT, ids, n_images, DUPLICATE, duplicate)
    if not ids:
        return PlannedRow(row, UNMATCHED)
    if n_images > 1:
        reason = f"{row.file_name} names {n_images} different images; give the sha256 instead"
        return PlannedRow(row, CONFLICT, ids, n_images, AMBIGUOUS, reason)
    return _compare_stored(row, reached, ids)


def _compare_stored(row: OutcomeRow, reached: list[_Stored], ids: tuple[int, ...]) -> PlannedRow:
    """Matched, unchanged or a stored conflict, by what the reached predictions hold now."""
    changes, differing = [], []
    for stored in reached:
        label, diagnosis = stored.label, stored.diagnosis
        if label == row.outcome and row.diagnosis in (None, diagnosis):
            continue
        # Adding a diagnosis to an outcome that agrees overwrites nothing.
        if label is not None and (label != row.outcome or diagnosis not in (None, row.diagnosis)):
            differing.append(f"{label} ({diagnosis})" if diagnosis else label)
        kept = diagnosis if label == row.outcome else None
        changes.append(_change(stored.id, row, row.diagnosis or kept))
    if differing:
        reason = (
            f"stored outcome {', '.join(sorted(set(differing)))} on {len(differing)} of "
            f"{len(ids)} predictions"
        )
        return PlannedRow(row, CONFLICT, ids, 1, STORED, reason, tuple(changes))
    status = MATCHED if changes else UNCHANGED
    return PlannedRow(row, status, ids, 1, changes=tuple(changes))


def _change(prediction_id: int, row: OutcomeRow, diagnosis: str | None) -> db.OutcomeChange:
    confirmed_at = (
        datetime.datetime.combine(row.confirmed_on, datetime.time()) if row.confirmed_on else None
    )
    return db.OutcomeChange(prediction_id, str(row.outcome), diagnosis, confirmed_at)


def _table_row(planned: PlannedRow) -> dict:
    row = planned.row
    shown_ids = ", ".join(str(prediction_id) for prediction_id in planned.prediction_ids[:10])
    more = len(planned.prediction_ids) - 10
    return {
        "row": row.number,
        "file": row.file_name,
        "sha256": row.sha256[:12] if row.sha256 else None,
        "outcome": row.outcome,
        "diagnosis": row.diagnosis,
        "predictions": shown_ids + (f" and {more} more" if more > 0 else ""),
        "reason": planned.reason,
    }
