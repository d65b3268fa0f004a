"""Security for a public deployment: the admin secret, history scoped to the visitor's session,
no stored image content, parameterised SQL, confined paths and safe loading of model files."""

import hmac
import io
import os
import shutil
import subprocess
import sys
import zipfile

import keras
import numpy as np
import pytest
from app_fixtures import SAMPLE_IMAGES, app, texts
from PIL import Image
from streamlit.testing.v1 import AppTest

from core import access, config
from core.inputs import datasets, images
from core.serving import predict_service
from core.serving.inference import Predictor
from core.storage import db, runs

SECRET = "correct horse battery staple"
INJECTION = "'; DROP TABLE predictions; --"


def keys(elements) -> set[str]:
    return {element.key for element in elements}


@pytest.fixture
def single_user(monkeypatch) -> None:
    monkeypatch.delenv(access.SECRET_VARIABLE, raising=False)


@pytest.fixture
def public(monkeypatch) -> None:
    monkeypatch.setenv(access.SECRET_VARIABLE, SECRET)


def unlock(at: AppTest, attempt: str) -> AppTest:
    at.text_input(key="admin_secret_input").set_value(attempt)
    return at.button(key="admin_unlock_button").click().run()


# --- the access rule --------------------------------------------------------------------------


def test_the_secret_comes_from_streamlit_secrets_then_the_environment():
    environment = {access.SECRET_VARIABLE: "from-env"}
    assert access.configured_secret(None, {}) is None
    assert access.configured_secret("   ", {access.SECRET_VARIABLE: ""}) is None
    assert access.configured_secret(None, environment) == "from-env"
    assert access.configured_secret("from-secrets", environment) == "from-secrets"


def test_single_user_mode_allows_everything():
    rule = access.access_for(None)
    assert rule.mode == access.SINGLE_USER and not rule.public
    assert rule.is_admin(unlocked=False)
    assert rule.history_session("visitor", unlocked=False) is None


def test_public_mode_needs_the_secret(monkeypatch):
    compared = []
    monkeypatch.setattr(hmac, "compare_digest", lambda a, b: compared.append((a, b)) or a == b)
    rule = access.access_for(SECRET)
    assert rule.mode == access.PUBLIC and SECRET not in repr(rule)
    assert not rule.is_admin(unlocked=False) and rule.is_admin(unlocked=True)
    assert rule.history_session("visitor", unlocked=False) == "visitor"
    assert rule.history_session("visitor", unlocked=True) is None
    assert [rule.unlocks(attempt) for attempt in ("", None, "wrong", SECRET)] == [
        False,
        False,
        False,
        True,
    ]
    assert len(compared) == 2  # constant-time comparison for every real attempt


# --- the app in both modes --------------------------------------------------------------------


def test_single_user_mode_is_announced_without_any_secrets_file(fresh_app, single_user):
    at = app("Home.py").run()
    assert not at.exception
    assert "Single-user mode" in texts(at.info)
    assert "admin_secret_input" not in keys(at.text_input)
    train = app("pages/2_Train.py").run()
    assert "train_start" in keys(train.button)


def test_public_mode_locks_training_until_the_secret_is_given(fresh_app, public):
    home = app("Home.py").run()
    assert "Public mode: anyone may predict" in texts(home.info)
    at = app("pages/2_Train.py").run()
    assert not at.exception
    assert "train_start" not in keys(at.button)
    assert "need the admin secret" in texts(at.info)
    unlock(at, "wrong guess")
    assert "Wrong admin secret." in texts(at.error)
    assert "train_start" not in keys(at.button)
    unlock(at, SECRET)
    assert not at.exception and at.session_state["is_admin"]
    assert "train_start" in keys(at.button)
    at.button(key="admin_lock").click().run()
    assert "train_start" not in keys(at.button)


def test_the_secret_may_come_from_streamlit_secrets(fresh_app, single_user):
    at = app("pages/2_Train.py")
    at.secrets["admin_secret"] = SECRET
    at.run()
    assert "train_start" not in keys(at.button)
    assert "need the admin secret" in texts(at.info)


def record(session_id: str, file_name: str, sha256: str = "0" * 64) -> db.PredictionRecord:
    return db.PredictionRecord(
        session_id, "some-run", file_name, sha256, 10, 10, 0.7, "malignant", 0.5, 1.0, False
    )


def test_a_visitor_sees_only_their_own_history(fresh_app, public):
    database = db.open_database(config.DB_PATH)
    database.insert_predictions([record("visitor", "mine.jpg"), record("other", "theirs.jpg")])
    at = app("pages/4_History.py")
    at.session_state["session_id"] = "visitor"
    at.run()
    assert not at.exception
    assert "this browser session only" in texts(at.caption)
    assert "1 prediction," in texts(at.caption)
    assert at.dataframe[0].value["file_name"].tolist() == ["mine.jpg"]
    unlock(at, SECRET)
    assert "2 predictions" in texts(at.caption)


def test_history_filter_values_are_never_sql(fresh_app, single_user):
    database = db.open_database(config.DB_PATH)
    database.insert_predictions([record("visitor", "a.jpg"), record("visitor", "b.jpg")])
    at = app("pages/4_History.py").run()
    at.text_input(key="history_file").set_value(INJECTION).run()
    assert not at.exception
    assert "No stored predictions match" in texts(at.info)
    assert database.count_predictions(db.HistoryFilter()) == 2


def test_a_public_visitor_predicts_and_never_sees_other_sessions(trained_run, public):
    image = SAMPLE_IMAGES[5].read_bytes()
    database = db.open_database(config.DB_PATH)
    database.insert_predictions([record("someone-else", "theirs.jpg", images.sha256_bytes(image))])
    at = app("pages/1_Predict.py")
    at.session_state["session_id"] = "visitor-predicts"
    at.run()
    at.file_uploader(key="predict_upload").set_value(("mine.jpg", image, "image/jpeg")).run()
    assert not at.exception
    assert at.metric[0].label == "Malignant probability (calibrated)"
    assert "This image was predicted before" not in texts(at.subheader)
    mine = database.query_predictions(db.HistoryFilter(session_id="visitor-predicts"))
    assert mine["file_name"].tolist() == ["mine.jpg"]


# --- no stored image content ------------------------------------------------------------------


def photo_with_metadata() -> bytes:
    exif = Image.Exif()
    exif[0x010F] = "CameraMaker"  # Make
    exif[0x0132] = "2024:01:02 03:04:05"  # DateTime
    exif[0x8825] = {1: "N", 2: (52.0, 22.0, 0.0)}  # GPS latitude
    buffer = io.BytesIO()
    Image.new("RGB", (300, 200), (180, 90, 60)).save(
        buffer, "JPEG", exif=exif, comment=b"patient 4711"
    )
    return buffer.getvalue()


def test_no_image_bytes_are_stored_unless_thumbnails_are_enabled(
    app_paths,
    trained_run,
    tmp_path,
    monkeypatch,
):
    predictor = Predictor(runs.load_run(app_paths.models_dir / trained_run))
    database = db.open_database(tmp_path / "thumbnails.duckdb")
    upload = predict_service.Upload("exif.jpg", photo_with_metadata())
    assert b"CameraMaker" in upload.data and b"patient 4711" in upload.data
    monkeypatch.setattr(config, "STORE_THUMBNAILS", False)
    (result,) = predict_service.predict_uploads(predictor, database, [upload], "default")
    assert result.thumbnail  # shown in this session's table, never stored
    stored = database.query_predictions(db.HistoryFilter(session_id="default"))
    assert stored["thumbnail"].isna().all()

    monkeypatch.setattr(config, "STORE_THUMBNAILS", True)
    predict_service.predict_uploads(predictor, database, [upload], "enabled")
    stored = database.query_predictions(db.HistoryFilter(session_id="enabled"))
    thumbnail = bytes(stored["thumbnail"].iloc[0])
    picture = Image.open(io.BytesIO(thumbnail))
    assert max(picture.size) == predict_service.THUMBNAIL_PIXELS
    assert not picture.getexif() and not {"exif", "comment", "icc_profile"} & set(picture.info)
    assert b"CameraMaker" not in thumbnail and b"patient 4711" not in thumbnail
    database.close()


@pytest.mark.parametrize(("value", "expected"), [(None, "False"), ("1", "True"), ("no", "False")])
def test_thumbnail_storage_is_off_unless_the_setting_enables_it(value, expected):
    environment = {k: v for k, v in os.environ.items() if k != "DERMO_STORE_THUMBNAILS"}
    if value is not None:
        environment["DERMO_STORE_THUMBNAILS"] = value
    completed = subprocess.run(
        [sys.executable, "-c", "from core import config; print(config.STORE_THUMBNAILS)"],
        cwd=config.REPO_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert completed.stdout.strip() == expected


# --- paths and files from outside -------------------------------------------------------------


def test_paths_from_the_ui_stay_inside_the_data_root(tmp_path):
    root = tmp_path / "data"
    (root / "set").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (root / "escape").symlink_to(tmp_path / "outside")
    assert datasets.confine("set", root) == (root / "set").resolve()
    for attempt in ("../outside", "set/../../outside", "/etc", str(tmp_path), "escape"):
        with pytest.raises(datasets.DatasetPathError, match="outside the data folder"):
            datasets.confine(attempt, root)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("labels.csv", "image_name,target\n")
    unpacked = datasets.unpack_dataset_zip("../../../evil.zip", buffer.getvalue(), root)
    assert unpacked.folder == (root / "uploads" / "evil").resolve()


@pytest.fixture
def run_copy(app_paths, trained_run, tmp_path):
    folder = tmp_path / "models" / trained_run
    shutil.copytree(app_paths.models_dir / trained_run, folder)
    return folder


def test_model_files_are_loaded_in_safe_mode(run_copy):
    inputs = keras.Input((4,))
    outputs = keras.layers.Lambda(lambda tensor: tensor * 2)(inputs)
    keras.Model(inputs, outputs).save(run_copy / runs.MODEL_FILE)
    with pytest.raises(ValueError, match="safe_mode"):
        Predictor(runs.load_run(run_copy))


def test_run_arrays_are_loaded_without_pickle(run_copy):
    np.savez(run_copy / "ood.npz", mean=np.array([{"payload": 1}], dtype=object))
    with pytest.raises(ValueError, match="allow_pickle"):
        Predictor(runs.load_run(run_copy))


def test_messages_for_people_name_locations_without_server_paths(tmp_path):
    root = tmp_path / "data"
    inside = root / "uploads" / "clinic"
    assert datasets.describe_location(inside, root) == "uploads/clinic in the data folder"
    assert datasets.describe_location(root, root) == "the data folder"
    assert datasets.describe_location(tmp_path / "elsewhere" / "isic" / "images", root) == (
        "isic/images"
    )
    assert datasets.describe_location(config.REPO_ROOT / "data" / "sample", root) == "data/sample"
    message = (
        f"URL fetch failure on https://storage.googleapis.com/x/w.h5; see {inside}/a.jpg "
        f"and {tmp_path}/lib/python3.11/trace.py"
    )
    assert datasets.without_paths(message, root) == (
        "URL fetch failure on https://storage.googleapis.com/x/w.h5; see "
        "uploads/clinic/a.jpg in the data folder and trace.py"
    )
