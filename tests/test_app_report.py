"""AppTest of the History page's case report: its downloads, its choices, its scope."""

import io

import numpy as np
import pytest
from app_fixtures import app, fresh_app, texts  # noqa: F401
from PIL import Image

from core import access, config, db

REPORT_KEYS = {"history_report_pdf", "history_report_html"}


def thumbnail() -> bytes:
    pixels = np.random.default_rng(0).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG")
    return buffer.getvalue()


def record(session_id: str, file_name: str, picture: bytes | None = None) -> db.PredictionRecord:
    return db.PredictionRecord(
        session_id,
        "some-run",
        file_name,
        file_name.encode().hex().ljust(64, "0"),
        32,
        24,
        0.7,
        "malignant",
        0.5,
        1.0,
        False,
        thumbnail=picture,
    )


def download_keys(at) -> set[str]:
    return {button.key for button in at.get("download_button")}


@pytest.fixture
def single_user(monkeypatch) -> None:
    monkeypatch.delenv(access.SECRET_VARIABLE, raising=False)


def test_history_offers_the_report_of_a_stored_prediction(fresh_app, single_user):  # noqa: F811
    database = db.open_database(config.DB_PATH)
    with_picture, without = database.insert_predictions(
        [record("me", "pictured.jpg", thumbnail()), record("me", "bare.jpg")]
    )
    at = app("pages/4_History.py").run()
    assert not at.exception
    assert "Case report" in texts(at.markdown)
    assert download_keys(at) >= REPORT_KEYS
    choice = at.selectbox(key="history_report_id")
    assert set(choice.options) == {f"{with_picture}: pictured.jpg", f"{without}: bare.jpg"}
    choice.set_value(without).run()
    assert not at.exception
    # Without a thumbnail there is nothing to compute a Grad-CAM from.
    assert at.toggle(key="history_report_gradcam").proto.disabled
    choice.set_value(with_picture).run()
    assert not at.toggle(key="history_report_gradcam").proto.disabled


def test_a_public_visitor_gets_reports_of_their_own_predictions_only(fresh_app, monkeypatch):  # noqa: F811
    monkeypatch.setenv(access.SECRET_VARIABLE, "a secret for this test")
    database = db.open_database(config.DB_PATH)
    mine, _ = database.insert_predictions(
        [record("visitor", "mine.jpg"), record("x", "their.jpg")]
    )
    at = app("pages/4_History.py")
    at.session_state["session_id"] = "visitor"
    at.run()
    assert not at.exception
    assert at.selectbox(key="history_report_id").options == [f"{mine}: mine.jpg"]
    assert download_keys(at) >= REPORT_KEYS
