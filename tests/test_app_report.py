"""AppTest of the History page's case report: its downloads, its choices, its scope."""

import dataclasses
import io
import subprocess
import sys

import numpy as np
import pytest
from app_fixtures import app, texts
from PIL import Image

from core import access, config
from core.serving import case_report
from core.storage import db

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


def test_history_offers_the_report_of_a_stored_prediction(fresh_app, single_user):
    database = db.open_database(config.DB_PATH)
    with_picture, without = database.insert_predictions(
        [record("me", "pictured.jpg", thumbnail()), record("me", "bare.jpg")]
    )
    at = app("pages/4_History.py").run()
    assert not at.exception
    assert "Details and case report" in texts(at.markdown)
    assert download_keys(at) >= REPORT_KEYS
    choice = at.selectbox(key="history_report_id")
    assert set(choice.options) == {f"{with_picture}: pictured.jpg", f"{without}: bare.jpg"}
    choice.set_value(without).run()
    assert not at.exception
    # Without a thumbnail there is nothing to compute a Grad-CAM from.
    assert at.toggle(key="history_report_gradcam").proto.disabled
    choice.set_value(with_picture).run()
    assert not at.toggle(key="history_report_gradcam").proto.disabled


def test_a_public_visitor_gets_reports_of_their_own_predictions_only(fresh_app, monkeypatch):
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


def test_the_history_report_loads_no_tensorflow_until_grad_cam_is_asked_for(fresh_app):
    # A fresh interpreter: this one may have imported TensorFlow for other tests already.
    database = db.open_database(config.DB_PATH)
    database.insert_predictions([record("me", "a.jpg", thumbnail())])
    # One process owns the database file: the child opens it once this one lets go.
    database.close()
    script = (
        "import sys\n"
        "from streamlit.testing.v1 import AppTest\n"
        "at = AppTest.from_file('pages/4_History.py', default_timeout=60).run()\n"
        "assert not at.exception, at.exception\n"
        "assert {button.key for button in at.get('download_button')} >= "
        f"{REPORT_KEYS!r}\n"
        "print('tensorflow' in sys.modules)\n"
    )
    finished = subprocess.run(
        [sys.executable, "-c", script],
        cwd=config.REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert finished.stdout.split()[-1] == "False", "History imported TensorFlow"


def test_grad_cam_from_the_thumbnail_goes_into_the_report(trained_run, monkeypatch):
    built = []
    build = case_report.build_report

    def recorded(*args, **kwargs):
        built.append(build(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(case_report, "build_report", recorded)
    db.open_database(config.DB_PATH).insert_predictions(
        [dataclasses.replace(record("me", "cam.jpg", thumbnail()), run_id=trained_run)]
    )
    at = app("pages/4_History.py").run()
    at.selectbox(key="history_report_id").select_index(0).run()
    assert built[-1].overlay is None
    at.toggle(key="history_report_gradcam").set_value(True).run()
    assert not at.exception
    assert built[-1].file_name == "cam.jpg" and built[-1].overlay is not None
    assert built[-1].overlay_caption == "Grad-CAM toward malignant, from the stored thumbnail"
    assert download_keys(at) >= REPORT_KEYS
