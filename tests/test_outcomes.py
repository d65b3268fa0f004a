"""Tests of core.storage.outcomes and the outcome-import records of core.storage.db: parse, plan,
apply, undo."""

import datetime
import io
from pathlib import Path

import pandas
import pytest

from core.storage import db, outcomes

HEADER = "file,sha256,outcome,diagnosis,confirmed_on\n"
FIRST, SECOND, THIRD = "1" * 64, "2" * 64, "3" * 64


@pytest.fixture
def database(tmp_path: Path):
    database = db.open_database(tmp_path / "app.duckdb")
    yield database
    database.close()


def record(file_name: str, sha256: str, **overrides) -> db.PredictionRecord:
    values = {
        "session_id": "session-a",
        "run_id": "run-a",
        "file_name": file_name,
        "sha256": sha256,
        "width": 10,
        "height": 10,
        "probability": 0.7,
        "label": "malignant",
        "threshold": 0.5,
        "latency_ms": 1.0,
        "tta": False,
    }
    return db.PredictionRecord(**{**values, **overrides})


def stored(database: db.Database) -> dict[int, tuple]:
    rows = database.query_predictions(db.HistoryFilter(), page_size=1000)
    return {
        int(row.id): (
            None if pandas.isna(row.confirmed_label) else row.confirmed_label,
            None if pandas.isna(row.confirmed_diagnosis) else row.confirmed_diagnosis,
        )
        for row in rows.itertuples()
    }


def test_rows_are_read_with_the_vocabulary_and_numbered_like_a_spreadsheet() -> None:
    rows = outcomes.parse_csv(
        "\ufeffFile_Name, Outcome ,Diagnosis,confirmed_on,notes\n"
        "a.jpg,Malignant,MEL,2024-03-12,x\n"
        "b.jpg,0,nv,,\n"
        "c.jpg,1,,,\n"
        "d.jpg,0,Spitz naevus,,\n".encode()
    )
    assert [(row.number, row.file_name, row.outcome, row.diagnosis) for row in rows] == [
        (2, "a.jpg", "malignant", "melanoma"),
        (3, "b.jpg", "benign", "nevus"),
        (4, "c.jpg", "malignant", None),
        (5, "d.jpg", "benign", None),
    ]
    assert rows[0].confirmed_on == datetime.date(2024, 3, 12)
    assert all(row.problem is None for row in rows[:3])
    # Outside the vocabulary: a bad value, not stored as typed.
    assert "'Spitz naevus' is not in the vocabulary" in str(rows[3].problem)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("file,label\na.jpg,benign\n", "needs an 'outcome' column.*its columns are: file, label"),
        ("name,outcome\na.jpg,benign\n", "a 'file' or 'sha256' column"),
        ("", "its columns are: none"),
        ("file,outcome\n", "a header but no rows"),
        (b"file,outcome\n" + "é,benign\n".encode("latin-1"), "not UTF-8"),
    ],
)
def test_a_file_that_is_not_an_outcomes_csv_is_refused(text, message) -> None:
    with pytest.raises(ValueError, match=message):
        outcomes.parse_csv(text)


def test_bad_values_are_kept_with_their_row_number() -> None:
    tomorrow = datetime.datetime.now(datetime.UTC).date() + datetime.timedelta(days=2)
    rows = outcomes.parse_csv(
        HEADER + ",,benign,,\n"
        "a.jpg,xyz,maybe,,\n"
        f"b.jpg,,benign,,12/03/2024\n"
        f"c.jpg,,benign,,{tomorrow}\n"
    )
    assert [row.problem for row in rows] == [
        "row 2: neither a file name nor a sha256",
        (
            "row 3: sha256 'xyz' is not 64 hexadecimal characters; "
            "outcome 'maybe' is not benign, malignant, 0 or 1"
        ),
        "row 4: confirmed_on '12/03/2024' is not a date like 2024-03-12",
        f"row 5: confirmed_on '{tomorrow}' is in the future",
    ]


def test_a_sha256_reaches_every_prediction_of_the_image_and_a_name_those_so_named(
    database: db.Database,
) -> None:
    a1, a2, b, c = database.insert_predictions(
        [
            record("a.jpg", FIRST),
            record("renamed.jpg", FIRST, run_id="run-b"),
            record("b.jpg", SECOND),
            record("c.jpg", THIRD, session_id="someone else"),
        ]
    )
    plan = outcomes.plan_import(
        database,
        HEADER + f",{FIRST.upper()},malignant,,\nb.jpg,,benign,nevus,\nc.jpg,,0,,\nz.jpg,,1,,\n",
        "outcomes.csv",
    )
    matched = plan.with_status(outcomes.MATCHED)
    assert [planned.prediction_ids for planned in matched] == [(a1, a2), (b,), (c,)]
    assert [planned.row.number for planned in plan.with_status(outcomes.UNMATCHED)] == [5]
    assert plan.table(outcomes.MATCHED)["predictions"].tolist() == [f"{a1}, {a2}", str(b), str(c)]
    assert [change.prediction_id for change in plan.changes()] == [a1, a2, b, c]


def test_every_kind_of_conflict_is_named(database: db.Database) -> None:
    database.insert_predictions(
        [
            record("same.jpg", FIRST),
            record("same.jpg", SECOND),
            record("twice.jpg", THIRD),
            record("kept.jpg", "4" * 64),
        ]
    )
    (kept_id,) = database.outcome_targets(["4" * 64], [])["id"]
    database.set_confirmed([int(kept_id)], "benign", "nevus")
    plan = outcomes.plan_import(
        database,
        HEADER + "any.jpg,,benign,melanoma,\n"  # row 2
        "same.jpg,,benign,,\n"  # row 3
        "twice.jpg,,benign,,\n"  # row 4
        f",{THIRD},malignant,,\n"  # row 5
        "kept.jpg,,malignant,,\n"  # row 6
        "missing.jpg,,perhaps,,\n",  # row 7
        "outcomes.csv",
    )
    kinds = {planned.row.number: planned.kind for planned in plan.with_status(outcomes.CONFLICT)}
    assert kinds == {
        2: outcomes.CONTRADICTION,
        3: outcomes.AMBIGUOUS,
        4: outcomes.DUPLICATE,
        5: outcomes.DUPLICATE,
        6: outcomes.STORED,
    }
    # A value that cannot be read is not a conflict with anything: the file needs fixing.
    (invalid,) = plan.with_status(outcomes.INVALID)
    assert invalid.row.number == 7 and "'perhaps' is not benign, malignant" in invalid.reason
    reasons = {planned.row.number: planned.reason for planned in plan.rows}
    assert reasons[3] == "same.jpg names 2 different images; give the sha256 instead"
    assert reasons[4] == "image 333333333333 gets different outcomes on rows 4, 5"
    assert reasons[6] == "stored outcome benign (nevus) on 1 of 1 predictions"
    assert plan.changes() == []
    # Overwriting reaches the stored conflict only, never the other kinds.
    assert [change.prediction_id for change in plan.changes(overwrite=True)] == [int(kept_id)]


def test_stored_agreement_is_unchanged_and_a_missing_diagnosis_keeps_the_stored_one(
    database: db.Database,
) -> None:
    first, second = database.insert_predictions([record("a.jpg", FIRST), record("b.jpg", SECOND)])
    database.set_confirmed([first], "malignant", "melanoma")
    database.set_confirmed([second], "malignant")
    plan = outcomes.plan_import(
        database, HEADER + "a.jpg,,malignant,,\nb.jpg,,malignant,bcc,\n", "outcomes.csv"
    )
    assert [planned.row.number for planned in plan.with_status(outcomes.UNCHANGED)] == [2]
    # Adding a diagnosis to an agreeing outcome overwrites nothing, so it is a plain match.
    (added,) = plan.changes()
    assert (added.prediction_id, added.diagnosis) == (second, "basal cell carcinoma")


def test_an_import_is_applied_recorded_and_undone(database: db.Database) -> None:
    first, second, third = database.insert_predictions(
        [record("a.jpg", FIRST), record("b.jpg", SECOND), record("c.jpg", THIRD)]
    )
    database.set_confirmed([second], "benign", "nevus")
    plan = outcomes.plan_import(
        database,
        HEADER + "a.jpg,,malignant,mel,2024-03-12\nb.jpg,,malignant,,\nnone.jpg,,benign,,\n",
        "outcomes.csv",
    )
    import_id = database.apply_outcome_import(
        plan.changes(overwrite=True), "Dr Example", plan.file_name, len(plan.rows)
    )
    assert stored(database) == {
        first: ("malignant", "melanoma"),
        second: ("malignant", None),
        third: (None, None),
    }
    (confirmed_at,) = database.query_predictions(db.HistoryFilter(file_name_contains="a.jpg"))[
        "confirmed_at"
    ]
    assert confirmed_at == pandas.Timestamp("2024-03-12")
    (entry,) = database.outcome_imports().to_dict("records")
    assert entry["import_id"] == import_id
    assert (entry["imported_by"], entry["file_name"], entry["n_rows"], entry["n_changed"]) == (
        "Dr Example",
        "outcomes.csv",
        3,
        2,
    )
    assert pandas.isna(entry["undone_at"])

    assert database.undo_outcome_import(import_id) == 2
    assert stored(database) == {
        first: (None, None),
        second: ("benign", "nevus"),
        third: (None, None),
    }
    assert not pandas.isna(database.outcome_imports()["undone_at"][0])
    with pytest.raises(ValueError, match="undone already"):
        database.undo_outcome_import(import_id)
    with pytest.raises(ValueError, match="no outcome import 99"):
        database.undo_outcome_import(99)


def test_undo_is_refused_after_a_later_import_or_a_change_by_hand(database: db.Database) -> None:
    first, second = database.insert_predictions([record("a.jpg", FIRST), record("b.jpg", SECOND)])
    earlier = database.apply_outcome_import(
        [db.OutcomeChange(first, "benign"), db.OutcomeChange(second, "benign")], "me", "1.csv", 2
    )
    later = database.apply_outcome_import([db.OutcomeChange(first, "malignant")], "me", "2.csv", 1)
    with pytest.raises(ValueError, match=f"import {later} changed the same predictions later"):
        database.undo_outcome_import(earlier)
    database.set_confirmed([second], "malignant")
    database.undo_outcome_import(later)
    with pytest.raises(ValueError, match="1 of the predictions .* by hand since"):
        database.undo_outcome_import(earlier)
    # Refused means untouched: the hand-made change and the undone state both stand.
    assert stored(database) == {first: ("benign", None), second: ("malignant", None)}
    assert database.outcome_imports()["undone_at"].isna().tolist() == [False, True]


def test_an_import_needs_changes_and_a_name(database: db.Database) -> None:
    (prediction_id,) = database.insert_predictions([record("a.jpg", FIRST)])
    with pytest.raises(ValueError, match="nothing to import"):
        database.apply_outcome_import([], "me", "x.csv", 1)
    with pytest.raises(ValueError, match="who imports"):
        database.apply_outcome_import([db.OutcomeChange(prediction_id, "benign")], " ", "x", 1)
    with pytest.raises(ValueError, match="label 'unsure'"):
        db.OutcomeChange(prediction_id, "unsure")
    assert database.outcome_imports().empty


def test_the_history_filter_on_confirmed_outcomes(database: db.Database) -> None:
    confirmed, _ = database.insert_predictions(
        [record("a.jpg", FIRST, label="benign", probability=0.1), record("b.jpg", SECOND)]
    )
    database.set_confirmed([confirmed], "benign")
    for choice, names in ((True, ["a.jpg"]), (False, ["b.jpg"]), (None, ["a.jpg", "b.jpg"])):
        history_filter = db.HistoryFilter(confirmed=choice)
        rows = database.query_predictions(history_filter, order="file_name ASC")
        assert rows["file_name"].tolist() == names
        assert database.count_predictions(history_filter) == len(names)
        assert database.probability_histogram(history_filter)["count"].sum() == len(names)
        buffer = io.BytesIO()
        assert database.export_predictions_csv(history_filter, buffer) == len(names)


def test_confirmed_outcomes_count_each_image_once_per_model(database: db.Database) -> None:
    ids = database.insert_predictions(
        [
            record("a.jpg", FIRST, probability=0.2, label="benign"),
            record("again.jpg", FIRST, probability=0.9, session_id="other"),
            record("a.jpg", FIRST, run_id="run-b"),
        ]
    )
    database.apply_outcome_import(
        [db.OutcomeChange(prediction_id, "malignant") for prediction_id in ids], "me", "x", 1
    )
    cases = database.confirmed_outcomes(db.HistoryFilter())
    assert cases[["run_id", "probability"]].to_dict("records") == [
        {"run_id": "run-a", "probability": 0.9},
        {"run_id": "run-b", "probability": 0.7},
    ]
