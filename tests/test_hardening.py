"""Hostile inputs of the hardening probes (docs/reliability.md, "Probes"), each as it came.

No training here: models are the tiny untrained run of `bench.tiny`, databases are fresh files.
"""

import csv
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas
import pytest
from app_fixtures import app, copy_run, texts

from bench.tiny import make_tiny_run
from core import __main__ as cli
from core import access, config, worker
from core.storage import db, outcomes, runs, spreadsheet
from core.train.train_config import TrainConfig

SAMPLE_IMAGES = sorted((config.SAMPLE_DIR / "images").glob("*.jpg"))
HYPERLINK_NAME = '=HYPERLINK("http://x.invalid","click").jpg'
COMMAND_DIAGNOSIS = "=cmd|' /C calc'!A0"


@pytest.fixture
def database(tmp_path):
    database = db.open_database(tmp_path / "hardening.duckdb")
    yield database
    database.close()


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> runs.Run:
    return make_tiny_run(tmp_path_factory.mktemp("models"))


def record(file_name: str, **overrides) -> db.PredictionRecord:
    values = {
        "session_id": "session-a",
        "run_id": "run-a",
        "file_name": file_name,
        "sha256": "1" * 64,
        "width": 10,
        "height": 10,
        "probability": 0.7,
        "label": "malignant",
        "threshold": 0.5,
        "latency_ms": 1.0,
        "tta": False,
    }
    return db.PredictionRecord(**{**values, **overrides})


# --- 1. spreadsheet formulas ------------------------------------------------------------------


@pytest.mark.parametrize("text", ["=1+1", "+A1", "-x", "@SUM(A1)", "\t=1", "\r=1", "'=1"])
def test_text_that_starts_a_formula_is_quoted_and_unquoted_exactly(text):
    escaped = spreadsheet.escape_cell(text)
    assert escaped == "'" + text
    assert spreadsheet.unescape_cell(escaped) == text


@pytest.mark.parametrize("value", ["-0.25", "+3", "-1e-05", -0.25, 3, None, "lesion.jpg"])
def test_numbers_and_plain_text_are_left_alone(value):
    assert spreadsheet.escape_cell(value) == value


def test_history_export_quotes_a_formula_file_name_and_a_typed_diagnosis(database):
    [prediction_id] = database.insert_predictions([record(HYPERLINK_NAME, ood_score=-1.5)])
    database.set_confirmed([prediction_id], "malignant", COMMAND_DIAGNOSIS)
    buffer = io.BytesIO()
    database.export_predictions_csv(db.HistoryFilter(), buffer)
    [row] = list(csv.DictReader(io.StringIO(buffer.getvalue().decode())))
    assert row["file_name"] == "'" + HYPERLINK_NAME
    assert row["confirmed_diagnosis"] == "'" + COMMAND_DIAGNOSIS
    exported = pandas.read_csv(io.BytesIO(buffer.getvalue()))
    assert exported["ood_score"].tolist() == [-1.5]


def test_predict_page_csv_quotes_the_file_name_and_keeps_distances_numeric():
    from core.serving.inference import Prediction
    from core.serving.predict_service import PredictionResult, results_csv

    prediction = Prediction(HYPERLINK_NAME, 0.2, "benign", 0.5, "run-a")
    frame = pandas.read_csv(io.BytesIO(results_csv([PredictionResult(prediction, 1, None)])))
    assert frame["file"].tolist() == ["'" + HYPERLINK_NAME]
    assert frame["distance"].tolist() == [pytest.approx(-0.3)]


def test_run_tables_are_quoted_on_disk_and_read_back_as_written(tmp_path):
    tests = pandas.DataFrame(
        {
            "image_name": [COMMAND_DIAGNOSIS, "ISIC_1"],
            "label": [1, 0],
            "probability": [0.9, 0.1],
            "site": ["-", None],
            "source": ["a", "b"],
            "diagnosis": ["melanoma", "nevus"],
        }
    )
    split = pandas.DataFrame({"image_name": [COMMAND_DIAGNOSIS], "group": ["@p"], "split": ["t"]})
    runs.write_tables(tmp_path, [], tests, split)
    assert "'" + COMMAND_DIAGNOSIS in (tmp_path / runs.TEST_PREDICTIONS_FILE).read_text()
    read = runs.read_test_predictions(tmp_path)
    assert read["image_name"].tolist() == [COMMAND_DIAGNOSIS, "ISIC_1"]
    assert read["site"].iloc[0] == "-"
    assert spreadsheet.read_csv(tmp_path / runs.SPLIT_FILE)["group"].tolist() == ["@p"]


def test_cli_predict_quotes_file_names_and_resume_still_finds_them(
    tiny_run, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    shutil.copy(SAMPLE_IMAGES[0], tmp_path / "=1+1.jpg")
    arguments = ["predict", "--no-tta", "--model", str(tiny_run.folder), "--out", "out.csv"]
    files = [HYPERLINK_NAME, "=1+1.jpg"]
    assert cli.main([*arguments, *files]) == 0
    rows = list(csv.DictReader(io.StringIO((tmp_path / "out.csv").read_text())))
    assert [row["file"] for row in rows] == ["'" + name for name in files]
    assert rows[1]["error"] == "" and rows[0]["error"]
    capsys.readouterr()
    assert cli.main([*arguments, "--resume", *files]) == 0
    assert "predicting 0 images (2 already in out.csv)" in capsys.readouterr().err


def test_an_imported_diagnosis_outside_the_vocabulary_is_a_bad_value(database):
    database.insert_predictions([record("a.jpg")])
    text = f'file,outcome,diagnosis\na.jpg,malignant,"{COMMAND_DIAGNOSIS}"\nb.jpg,1,MEL\n'
    plan = outcomes.plan_import(database, text, "outcomes.csv")
    [bad] = plan.with_status(outcomes.INVALID)
    assert "not in the vocabulary" in str(bad.reason)
    assert not plan.with_status(outcomes.MATCHED)
    assert [planned.row.diagnosis for planned in plan.with_status(outcomes.UNMATCHED)] == [
        "melanoma"
    ]


# --- 3. two training jobs at once -------------------------------------------------------------

# Starts training in the models folder argv[1] at the wall-clock time argv[2], with a worker
# that only sleeps, and prints what it got.
START_AT_ONCE = """
import subprocess, sys, time
from core import worker
from core.train.train_config import TrainConfig

def sleeper(folder, directory):
    sleep = [sys.executable, "-c", "import time; time.sleep(60)"]
    return subprocess.Popen(sleep, stdout=subprocess.DEVNULL).pid

worker._launch = sleeper
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))
try:
    print("started", worker.start_training(TrainConfig(data_dir="."), sys.argv[1]))
except worker.TrainingBusyError as error:
    print("busy", error)
"""


def test_two_processes_starting_training_at_once_get_one_job(tmp_path):
    start_at = str(time.time() + 5)  # after both have imported core
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", START_AT_ONCE, str(tmp_path), start_at],
            stdout=subprocess.PIPE,
            text=True,
            cwd=config.REPO_ROOT,
        )
        for _ in range(2)
    ]
    outputs = sorted(process.communicate(timeout=120)[0] for process in processes)
    try:
        assert outputs[0].startswith("busy") and "still running" in outputs[0]
        assert outputs[1].startswith("started")
    finally:
        for job in (tmp_path / worker.JOBS_FOLDER).glob("*/status.json"):
            os.kill(json.loads(job.read_text())["pid"], signal.SIGKILL)


def test_two_starts_in_one_second_get_their_own_job_folders(tmp_path, monkeypatch):
    def ended_at_once(folder, directory):
        process = subprocess.Popen([sys.executable, "-c", "pass"])
        process.wait()
        return process.pid

    monkeypatch.setattr(worker, "_launch", ended_at_once)
    train_config = TrainConfig(data_dir=".")
    first = worker.start_training(train_config, tmp_path)
    second = worker.start_training(train_config, tmp_path)
    assert first != second
    assert worker.latest_job(tmp_path).job_id == second


# --- 4. the wrong model, silently -------------------------------------------------------------

GOOD, NEWEST, GONE = "20000101-000000-good", "20990101-000000-newest", "20500101-000000-gone"


@pytest.fixture
def default_and_newest(tiny_run, fresh_app) -> Path:
    """The default run (active.json) and a newer run nobody chose; the models folder."""
    models = fresh_app.models_dir
    copy_run(tiny_run.folder, models, GOOD)
    copy_run(tiny_run.folder, models, NEWEST)
    runs.write_json_atomic(models / config.ACTIVE_FILE_NAME, {"run_id": GOOD})
    return models


def predict_sample(capsys) -> tuple[int, list[dict], str]:
    code = cli.main(["predict", "--no-tta", str(SAMPLE_IMAGES[0])])
    captured = capsys.readouterr()
    return code, list(csv.DictReader(io.StringIO(captured.out))), captured.err


def test_a_missing_local_choice_falls_back_to_the_default_and_says_so(default_and_newest, capsys):
    runs.write_json_atomic(default_and_newest / config.LOCAL_ACTIVE_FILE_NAME, {"run_id": GONE})
    code, rows, errors = predict_sample(capsys)
    assert code == 0 and rows[0]["model"] == GOOD
    assert f"warning: active.local.json names run '{GONE}'" in errors
    assert f"run {GONE} does not exist); using run {GOOD} from active.json" in errors
    at = app("Home.py").run()
    assert not at.exception
    assert f"using run {GOOD} from active.json" in texts(at.warning)
    assert GOOD in texts(at.markdown)


def test_a_corrupt_card_of_the_only_named_run_is_refused(default_and_newest, capsys):
    (default_and_newest / config.ACTIVE_FILE_NAME).unlink()
    runs.set_active(GOOD, default_and_newest)
    (default_and_newest / GOOD / runs.CARD_FILE).write_text("{not json")
    code, rows, errors = predict_sample(capsys)
    assert code == 2 and not rows
    assert f"run {GOOD}: card.json is unreadable" in errors and "activate a run" in errors
    assert NEWEST not in errors


def test_a_corrupt_model_file_is_called_damaged(default_and_newest, capsys):
    (default_and_newest / GOOD / runs.MODEL_FILE).write_bytes(b"PK\x03\x04 not a keras file")
    code, _, errors = predict_sample(capsys)
    assert code == 2
    assert f"run {GOOD}: model.keras is damaged" in errors and "not found" not in errors


# --- 7. operating-system errors on the command line -------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        ["predict", "lesion.jpg", "--out", "/no/such/dir/p.csv"],
        ["evaluate", "--data", ".", "--json", "/no/such/dir/m.json"],
        ["crossval", "--data", ".", "--json", "/no/such/dir/c.json"],
        ["crossval", "--data", ".", "--predictions", "/no/such/dir/c.csv"],
    ],
    ids=["predict --out", "evaluate --json", "crossval --json", "crossval --predictions"],
)
@pytest.mark.usefixtures("fresh_app")
def test_an_output_path_in_a_missing_folder_is_refused_before_any_work(command, capsys):
    assert cli.main(command) == 2
    expected = f"error: cannot write {command[-1]}: the folder /no/such/dir does not exist\n"
    assert capsys.readouterr().err == expected


@pytest.mark.usefixtures("fresh_app")
def test_a_full_disk_during_training_is_one_line_and_exit_1(monkeypatch, capsys):
    from core.train import training

    def full_disk(*arguments, **options):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(training, "train", full_disk)
    assert cli.main(["train", "--data", str(config.SAMPLE_DIR)]) == 1
    assert capsys.readouterr().err == "error: [Errno 28] No space left on device\n"


# --- 8. half-written runs of killed saves -----------------------------------------------------

# Saves a run into the models folder argv[1] and is killed halfway through writing it.
KILLED_SAVE = """
import os, signal, sys
from core.storage import runs

def write(folder):
    (folder / runs.CARD_FILE).write_text("{}")
    os.kill(os.getpid(), signal.SIGKILL)

runs.save_run("20260101-000000-killed", write, sys.argv[1])
"""


def test_a_killed_save_leaves_a_partial_folder_the_next_listing_removes(tmp_path):
    command = [sys.executable, "-c", KILLED_SAVE, str(tmp_path)]
    killed = subprocess.run(command, check=False, cwd=config.REPO_ROOT)
    assert killed.returncode == -signal.SIGKILL
    assert [path.name for path in tmp_path.iterdir()] == [".20260101-000000-killed.partial"]
    assert runs.list_runs(tmp_path) == ([], [])
    assert list(tmp_path.iterdir()) == []


def test_partial_folders_of_live_or_recent_writers_are_kept(tmp_path):
    live = tmp_path / ".20260101-000000-live.partial"
    live.mkdir()
    writer = {"pid": os.getpid(), "host": socket.gethostname()}
    (live / runs.WRITER_FILE).write_text(json.dumps(writer))
    just_begun = tmp_path / ".20260102-000000-begun.partial"
    just_begun.mkdir()  # its writer record not written yet
    forgotten = tmp_path / ".20260103-000000-old.partial"
    forgotten.mkdir()
    old = time.time() - runs.STALE_PARTIAL_SECONDS - 60
    os.utime(forgotten, (old, old))
    assert runs.remove_stale_partials(tmp_path) == [forgotten.name]
    assert sorted(path.name for path in tmp_path.iterdir()) == [live.name, just_begun.name]


def test_a_saved_run_keeps_no_writer_record(tmp_path):
    folder = runs.save_run("20260101-000000-a", lambda partial: None, tmp_path)
    assert list(folder.iterdir()) == []


# --- 9. an admin secret with a newline --------------------------------------------------------


@pytest.mark.parametrize("source", ["environment", "streamlit secrets"])
def test_an_admin_secret_with_surrounding_whitespace_can_be_typed(source):
    padded = " abc\n"
    if source == "environment":
        secret = access.configured_secret(None, {access.SECRET_VARIABLE: padded})
    else:
        secret = access.configured_secret(padded, {})
    assert access.Access(secret).unlocks("abc")


# --- 14. autograph's generated files ----------------------------------------------------------


def generated_files_of_this_process() -> list[Path]:
    """Autograph registers each module it compiles from a generated file in sys.modules."""
    return [
        Path(module.__file__)
        for name, module in list(sys.modules.items())
        if name.startswith("__autograph_generated_file") and getattr(module, "__file__", None)
    ]


@pytest.fixture
def autograph_loader(monkeypatch):
    """Autograph's loader, pointed back at the session's folder after the test."""
    from tensorflow.python.autograph.pyct import loader

    monkeypatch.setattr(loader, "tempfile", loader.tempfile)
    return loader


@pytest.mark.usefixtures("autograph_loader")
def test_autograph_writes_its_files_in_the_cache_not_the_temporary_folder(tmp_path):
    import tensorflow as tf

    from core.modelling import autograph

    folder = autograph.keep_generated_files_in_cache(tmp_path)
    known = set(generated_files_of_this_process())

    @tf.function
    def doubled_when_positive(x):
        if x > 0:  # control flow, so that autograph converts the function
            x = x * 2
        return x

    assert float(doubled_when_positive(tf.constant(1.5))) == 3.0
    new = set(generated_files_of_this_process()) - known
    assert new and all(path.parent == folder for path in new)
    temporary = Path(tempfile.gettempdir()).resolve()
    assert not [path for path in generated_files_of_this_process() if path.parent == temporary]


@pytest.mark.usefixtures("autograph_loader")
def test_the_autograph_folder_of_a_process_that_is_gone_is_removed(tmp_path):
    from core.modelling import autograph

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    abandoned = tmp_path / autograph.FOLDER_NAME / f"{socket.gethostname()}-{gone.pid}"
    abandoned.mkdir(parents=True)
    (abandoned / "__autograph_generated_fileabc.py").write_text("")
    folder = autograph.keep_generated_files_in_cache(tmp_path)
    assert not abandoned.exists() and folder is not None and folder.is_dir()
