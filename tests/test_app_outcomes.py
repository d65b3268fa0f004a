"""AppTest of the History page's outcome import: preview, import, overwrite, undo, access."""

import pytest
from app_fixtures import app, texts

from core import access, config
from core.analysis import reports
from core.storage import db

HEADER = "file,sha256,outcome,diagnosis,confirmed_on\n"
CSV = (
    HEADER + "new.jpg,,malignant,MEL,2024-03-12\n"  # matched
    "same.jpg,,benign,,\n"  # unchanged
    "gone.jpg,,benign,,\n"  # unmatched
    "stored.jpg,,malignant,,\n"  # conflicts with the stored benign
    "odd.jpg,,benign,melanoma,\n"  # contradicts itself
    "new.jpg,,perhaps,,\n"  # invalid
)


def database() -> db.Database:
    return db.open_database(config.DB_PATH)


@pytest.fixture
def history(fresh_app) -> dict[str, int]:
    """Four stored predictions by file name; same.jpg and stored.jpg are confirmed benign."""
    names = ("new.jpg", "same.jpg", "stored.jpg", "odd.jpg")
    ids = database().insert_predictions(
        [
            db.PredictionRecord(
                "test", "run-a", name, str(index) * 64, 10, 10, 0.6, "malignant", 0.5, 1.0, False
            )
            for index, name in enumerate(names)
        ]
    )
    by_name = dict(zip(names, ids, strict=True))
    database().set_confirmed([by_name["same.jpg"], by_name["stored.jpg"]], "benign")
    return by_name


def outcome(name: str) -> tuple:
    row = database().query_predictions(db.HistoryFilter(file_name_contains=name)).iloc[0]
    return (row.confirmed_label, row.confirmed_diagnosis)


def upload(at, text: str = CSV, version: int = 0):
    at.file_uploader(key=f"history_import_file_{version}").set_value(
        ("outcomes.csv", text.encode(), "text/csv")
    )
    return at.run()


def import_expander(at):
    (expander,) = [e for e in at.expander if e.label == "Import confirmed outcomes (CSV)"]
    return expander


def test_the_preview_counts_each_kind_and_the_import_takes_only_the_matches(history):
    at = upload(app("pages/4_History.py").run())
    assert not at.exception
    counts = {metric.label: metric.value for metric in at.metric}
    assert counts == {
        "Matched": "1",
        "Unchanged": "1",
        "Unmatched": "1",
        "Invalid": "1",
        "Conflicting": "2",
    }
    assert "stored outcome benign on 1 of 1 predictions" in texts(at.dataframe)
    reasons = [t.value["reason"].tolist() for t in at.dataframe if "reason" in t.value]
    assert reasons[0] == ["row 7: outcome 'perhaps' is not benign, malignant, 0 or 1"]
    assert at.button(key="history_import").label == "Import: change 1 prediction"

    assert not import_expander(at).proto.expanded
    at.text_input(key="history_import_by").set_value("Dr Example")
    at.button(key="history_import").click().run()
    assert not at.exception
    assert (
        "Import 1 from outcomes.csv: 1 prediction changed, 2 conflicting rows and 1 invalid row "
        "left out" in texts(at.success)
    )
    # The undo is inside the import expander: it opens, so that "below" is in view.
    assert "It can be undone under Past imports, below." in texts(at.success)
    assert import_expander(at).proto.expanded
    assert outcome("new.jpg") == ("malignant", "melanoma")
    assert outcome("stored.jpg")[0] == "benign"
    (entry,) = database().outcome_imports().to_dict("records")
    assert (entry["imported_by"], entry["n_rows"], entry["n_changed"]) == ("Dr Example", 6, 1)
    # The uploader starts empty again, so a second click cannot import the file twice.
    assert at.file_uploader(key="history_import_file_1").value is None
    assert at.selectbox(key="history_undo_choice").options == ["Import 1"]


def test_stored_outcomes_are_overwritten_only_after_the_explicit_confirmation(history):
    at = upload(app("pages/4_History.py").run())
    at.checkbox(key="history_import_overwrite").check().run()
    assert at.button(key="history_import").label == "Import: change 2 predictions"
    at.button(key="history_import").click().run()
    assert outcome("stored.jpg")[0] == "malignant"
    assert outcome("odd.jpg")[0] is None  # a self-contradicting row is never imported
    assert database().outcome_imports()["imported_by"].tolist() == ["local user"]
    assert at.session_state["history_import_overwrite"] is False
    at = upload(at, version=1)
    assert at.button(key="history_import").disabled  # nothing left to change


def test_an_import_is_undone_after_confirmation_and_the_controls_reset(history):
    at = upload(app("pages/4_History.py").run())
    at.button(key="history_import").click().run()
    at.selectbox(key="history_undo_choice").set_value(1).run()
    assert at.button(key="history_undo").disabled
    at.checkbox(key="history_undo_confirm_1").check().run()
    at.button(key="history_undo").click().run()
    assert not at.exception
    assert "Import 1 undone: 1 prediction restored." in texts(at.success)
    assert outcome("new.jpg")[0] is None
    assert at.selectbox(key="history_undo_choice").value is None
    assert at.selectbox(key="history_undo_choice").options == []


def test_an_undo_that_would_lose_a_later_change_is_refused_with_the_reason(history):
    at = upload(app("pages/4_History.py").run())
    at.button(key="history_import").click().run()
    database().set_confirmed([history["new.jpg"]], "benign")
    at.selectbox(key="history_undo_choice").set_value(1).run()
    at.checkbox(key="history_undo_confirm_1").check().run()
    at.button(key="history_undo").click().run()
    assert "Not undone: 1 of the predictions this import changed" in texts(at.error)
    assert outcome("new.jpg")[0] == "benign"


def test_a_file_that_is_not_an_outcomes_csv_says_why_and_imports_nothing(history):
    at = upload(app("pages/4_History.py").run(), "name,label\nx.jpg,benign\n")
    assert "outcomes.csv: the CSV needs an 'outcome' column" in texts(at.error)
    assert "Nothing imported" in texts(at.error)
    assert database().outcome_imports().empty


def test_imported_outcomes_feed_the_confirmed_filter_and_the_real_world_metrics(history):
    at = upload(app("pages/4_History.py").run())
    at.button(key="history_import").click().run()
    at.radio(key="history_confirmed").set_value("Confirmed").run()
    assert "3 predictions," in texts(at.caption)
    (table,) = [t.value for t in at.table if "Model" in t.value.columns]
    assert table["Confirmed"].tolist() == [3]
    assert reports.TOO_FEW_CASES in table.to_string()
    at.radio(key="history_confirmed").set_value("Unconfirmed").run()
    assert "1 prediction," in texts(at.caption)
    assert "unconfirmed predictions only" in texts(at.info)


def test_in_public_mode_only_the_admin_imports(history, monkeypatch):
    monkeypatch.setenv(access.SECRET_VARIABLE, "open sesame")
    at = app("pages/4_History.py").run()
    assert not at.exception
    assert "Outcome imports need the admin secret" in texts(at.info)
    assert not at.get("file_uploader")
    at.text_input(key="admin_secret_input").set_value("open sesame")
    at.button(key="admin_unlock_button").click().run()
    at = upload(at)
    at.button(key="history_import").click().run()
    assert database().outcome_imports()["imported_by"].tolist() == ["admin"]
