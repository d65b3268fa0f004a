"""AppTest of the History page: predicted diagnoses, column order, undoing a delete."""

from app_fixtures import app, texts

import ui.history
import ui.tables
from core import config
from core.storage import db

RANKED = (("nevus", 0.6), ("melanoma", 0.3), ("benign keratosis", 0.06), ("dermatofibroma", 0.04))


def database() -> db.Database:
    return db.open_database(config.DB_PATH)


def record(name: str, **changes) -> db.PredictionRecord:
    values = {
        "session_id": "test",
        "run_id": "run",
        "file_name": f"{name}.jpg",
        "sha256": name * 4,
        "width": 10,
        "height": 10,
        "probability": 0.4,
        "label": "benign",
        "threshold": 0.5,
        "latency_ms": 1.0,
        "tta": False,
    }
    return db.PredictionRecord(**{**values, **changes})


def test_history_shows_the_top_diagnosis_and_the_rest_in_the_details(fresh_app):
    database().insert_predictions([record("binary"), record("ranked", diagnoses=RANKED)])
    at = app("pages/4_History.py").run()
    assert not at.exception
    table = at.dataframe[0].value
    assert table["top_diagnosis"].iloc[0] == "nevus (60.0%)"
    assert table["top_diagnosis"].isna().iloc[1]
    # The details of the chosen prediction (the newest) list every diagnosis.
    top, rest = (frame.value for frame in at.dataframe[1:3])
    assert top["diagnosis"].tolist() == ["nevus", "melanoma", "benign keratosis"]
    assert rest["diagnosis"].tolist() == ["dermatofibroma"]
    assert "not a diagnosis" in texts(at.caption)


def test_the_result_and_its_reliability_come_before_the_bookkeeping():
    order = list(ui.tables.PREDICTION_COLUMNS)
    first = order[: order.index("created_at")]
    assert first == [
        "thumbnail",
        "file_name",
        "label",
        "probability",
        "ood_flag",
        "top_diagnosis",
        "confirmed_label",
        "confirmed_diagnosis",
    ]


def test_the_last_delete_is_undone_while_the_tab_stays_open(fresh_app, monkeypatch):
    _, gone = database().insert_predictions(
        [record("kept"), record("gone", diagnoses=RANKED, thumbnail=b"\xff\xd8")]
    )
    before = database().prediction(gone)
    # The table selects the row to delete, as a click on its checkbox does in a browser.
    monkeypatch.setattr(ui.history, "history_table", lambda rows, key: [gone])
    at = app("pages/4_History.py").run()
    assert not [button for button in at.button if button.key == "history_undo_delete"]
    at.checkbox(key="history_delete_confirm").check().run()
    at.button(key="history_delete").click().run()
    assert "Deleted 1 prediction." in texts(at.success)
    assert database().prediction(gone) is None
    undo = at.button(key="history_undo_delete")
    assert undo.label == "Undo the last delete (1 prediction)"
    undo.click().run()
    assert not at.exception
    assert "Restored 1 prediction." in texts(at.success)
    assert database().prediction(gone) == before
    assert database().count_predictions(db.HistoryFilter()) == 2
    # Undone once: the button goes, so the same rows cannot be put back twice.
    assert not [button for button in at.button if button.key == "history_undo_delete"]
