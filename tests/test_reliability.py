"""Reliability end to end: bad input, concurrency and faults, through the real code paths.

Bad input goes through `predict_service` with a real tiny model and a real DuckDB file, the
command line and the training data check; concurrency uses threads on one shared Predictor
and Database, as Streamlit does; faults kill or break training jobs and model files.
"""

import csv
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import zipfile
from dataclasses import asdict
from pathlib import Path

import keras
import numpy as np
import pytest
from app_fixtures import copy_run, tiny_train_config
from PIL import Image
from streamlit.testing.v1 import AppTest

from core import __main__ as cli
from core import config, worker
from core.inputs import data, images
from core.serving import predict_service
from core.serving.inference import Predictor
from core.storage import db, runs
from core.train import recipe, training

SAMPLE_IMAGES = sorted((config.SAMPLE_DIR / "images").glob("*.jpg"))
TIMEOUT = 120


def encode(image: Image.Image, image_format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, image_format, **options)
    return buffer.getvalue()


def zip_of(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def truncated_jpeg(photo: Image.Image) -> bytes:
    content = encode(photo.resize((256, 256)), "JPEG", quality=90)
    return content[: len(content) // 2]  # the header survives, the pixels do not


def png_bomb() -> bytes:
    return encode(Image.new("1", (30000, 30000)), "PNG")  # 900 MP in about 100 kB


def rotated_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 40x20, displayed 20x40
    return encode(Image.new("RGB", (40, 20), (90, 60, 40)), "JPEG", exif=exif)


def odd_but_valid_images(photo: Image.Image) -> dict[str, bytes]:
    """Images in every colour mode and container the issue lists: all must be predicted."""
    frames = [Image.new("RGB", (16, 16), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    palette = photo.convert("P", palette=Image.Palette.ADAPTIVE)
    return {
        "cmyk.jpg": encode(photo.convert("CMYK"), "JPEG"),
        "sixteen.png": encode(Image.fromarray(np.full((8, 8), 40000, np.uint16)), "PNG"),
        "grey.png": encode(photo.convert("L"), "PNG"),
        "palette.png": encode(palette, "PNG"),
        "rgba.png": encode(photo.convert("RGBA"), "PNG"),
        "rotated.jpg": rotated_jpeg(),
        "one-pixel.png": encode(Image.new("RGB", (1, 1), (9, 8, 7)), "PNG"),
        "animated.gif": encode(frames[0], "GIF", save_all=True, append_images=frames[1:]),
        "pages.tif": encode(frames[0], "TIFF", save_all=True, append_images=frames[1:]),
    }


def bad_images(photo: Image.Image) -> dict[str, tuple[bytes, str]]:
    """name: (content, the words its message must contain)."""
    return {
        "empty.jpg": (b"", "empty file (0 bytes)"),
        "notes.jpg": (b"image_name,target\nISIC_1,0\n", "not an image (looks like text)"),
        "paper.jpg": (b"%PDF-1.7\n1 0 obj << >> endobj\n", "looks like a PDF"),
        "cut.jpg": (truncated_jpeg(photo), "truncated or corrupt"),
        "bomb.png": (png_bomb(), "900.0 MP, over the 50.0 MP limit"),
    }


@pytest.fixture(scope="module")
def predictor(app_paths, trained_run):
    return Predictor(runs.load_run(app_paths.models_dir / trained_run))


@pytest.fixture
def database(tmp_path):
    database = db.open_database(tmp_path / "reliability.duckdb")
    yield database
    database.close()


def texts(elements) -> str:
    return "\n".join(str(element.value) for element in elements)


def stored_names(database: db.Database, session_id: str) -> list[str]:
    rows = database.query_predictions(db.HistoryFilter(session_id=session_id), page_size=1000)
    return sorted(rows["file_name"])


# --- bad input --------------------------------------------------------------------------------


def test_bad_uploads_are_named_and_not_stored_while_good_ones_are(predictor, database, make_photo):
    photo = make_photo(seed=3, size=64)
    good = {"lesion.jpg": SAMPLE_IMAGES[0].read_bytes(), **odd_but_valid_images(photo)}
    bad = bad_images(photo)
    archives = {
        "evil.zip": zip_of({"ok.jpg": good["lesion.jpg"], "../escape.jpg": b"x"}),
        "mixed.zip": zip_of(
            {"in/a.jpg": good["lesion.jpg"], "in/inner.zip": b"PK", "in/run.sh": b"rm -rf /"}
        ),
        "bomb.zip": zip_of({"huge.png": bytes(20 * 1024 * 1024)}),
    }
    files = [*good.items(), *((name, content) for name, (content, _) in bad.items())]
    uploads, problems = predict_service.expand_uploads([*files, *archives.items()])
    results = predict_service.predict_uploads(predictor, database, uploads, "bad-input")

    by_name = {result.prediction.file: result for result in results}
    for name, (_, message) in bad.items():
        assert message in by_name[name].prediction.error
        assert by_name[name].prediction_id is None
    # mixed.zip/in/a.jpg holds the bytes of lesion.jpg: one image, stored once per session.
    assert stored_names(database, "bad-input") == sorted(good)
    assert by_name["mixed.zip/in/a.jpg"].prediction_id == by_name["lesion.jpg"].prediction_id
    problem_text = "\n".join(problems)
    assert "evil.zip: unsafe member '../escape.jpg': path traversal" in problem_text
    assert "mixed.zip/in/inner.zip: skipped (nested archive" in problem_text
    assert "mixed.zip/in/run.sh: skipped (not an image" in problem_text
    assert "bomb.zip: huge.png: compression ratio over" in problem_text
    # The EXIF orientation is applied before the model sees the photo.
    assert (by_name["rotated.jpg"].prediction.width, by_name["rotated.jpg"].prediction.height) == (
        20,
        40,
    )


def test_uploads_over_the_size_limit_are_refused_before_decoding(predictor, database, monkeypatch):
    monkeypatch.setattr(config, "MAX_UPLOAD_BYTES", 1024**2)
    noise = np.random.default_rng(0).integers(0, 256, (700, 700, 3), dtype=np.uint8)
    large = encode(Image.fromarray(noise), "PNG")
    small = SAMPLE_IMAGES[0].read_bytes()
    assert len(large) > config.MAX_UPLOAD_BYTES > len(small)
    decoded_sizes = []
    original_decode = images.decode_for_model

    def spy(content, *args, **options):
        decoded_sizes.append(len(content))
        return original_decode(content, *args, **options)

    monkeypatch.setattr(images, "decode_for_model", spy)
    # Dim noise as BMP: 1.4 MB inside the archive, a fraction of that zipped.
    dim = np.random.default_rng(1).integers(0, 4, (700, 700, 3), dtype=np.uint8)
    archive = zip_of({"large.bmp": encode(Image.fromarray(dim), "BMP"), "small.jpg": small})
    assert len(archive) < config.MAX_UPLOAD_BYTES
    uploads, problems = predict_service.expand_uploads(
        [("large.png", large), ("batch.zip", archive)]
    )
    assert problems[0].startswith("large.png: file is 1.4 MB, over the 1.0 MB upload limit")
    assert problems[1].startswith("batch.zip/large.bmp: skipped (file is 1.4 MB, over the")
    assert [upload.name for upload in uploads] == ["batch.zip/small.jpg"]
    direct = [predict_service.Upload("direct.png", large), predict_service.Upload("s.jpg", small)]
    results = predict_service.predict_uploads(predictor, database, direct, "size")
    assert "over the 1.0 MB upload limit" in results[0].prediction.error
    assert results[1].ok and stored_names(database, "size") == ["s.jpg"]
    assert len(small) in decoded_sizes and len(large) not in decoded_sizes


def mutations(original: bytes, count: int, rng: np.random.Generator) -> list[bytes]:
    """Random byte changes of a real file, a third of them also cut short."""
    source = np.frombuffer(original, dtype=np.uint8)
    mutated = []
    for _ in range(count):
        copy = source.copy()
        positions = rng.integers(0, len(copy), size=rng.integers(1, 9))
        copy[positions] = rng.integers(0, 256, size=len(positions), dtype=np.uint8)
        content = copy.tobytes()
        mutated.append(content[: rng.integers(0, len(content))] if rng.random() < 0.3 else content)
    return mutated


def test_fuzzed_uploads_never_raise_and_only_good_ones_are_stored(predictor, database):
    rng = np.random.default_rng(2024)
    jpeg = SAMPLE_IMAGES[1].read_bytes()
    png = encode(Image.open(SAMPLE_IMAGES[2]), "PNG")
    cases = mutations(jpeg, 150, rng) + mutations(png, 150, rng)
    uploads = [predict_service.Upload(f"fuzz-{i}", content) for i, content in enumerate(cases)]
    results = predict_service.predict_uploads(predictor, database, uploads, "fuzz")
    refused = [result for result in results if not result.ok]
    assert refused, "the mutations never reached a decoder error"
    assert all(result.prediction_id is None and result.prediction.error for result in refused)
    stored = database.count_predictions(db.HistoryFilter(session_id="fuzz"))
    assert stored == len(results) - len(refused)


def test_cli_predict_writes_an_error_row_for_each_bad_file(
    app_paths,
    trained_run,
    tmp_path,
    make_photo,
    capsys,
):
    photo = make_photo(seed=4, size=64)
    folder = tmp_path / "inputs"
    folder.mkdir()
    bad = bad_images(photo)
    for name, (content, _) in bad.items():
        (folder / name).write_bytes(content)
    shutil.copy(SAMPLE_IMAGES[0], folder / "lesion.jpg")
    model = str(app_paths.models_dir / trained_run)
    assert cli.main(["predict", str(folder), "--model", model, "--no-tta"]) == 0
    rows = {
        Path(row["file"]).name: row for row in csv.DictReader(io.StringIO(capsys.readouterr().out))
    }
    for name, (_, message) in bad.items():
        assert message in rows[name]["error"] and rows[name]["probability"] == ""
    assert rows["lesion.jpg"]["error"] == "" and rows["lesion.jpg"]["label"]


def write_broken_sample(folder: Path, make_photo) -> list[str]:
    """A copy of the bundled sample with four images replaced by broken files."""
    shutil.copytree(config.SAMPLE_DIR, folder)
    names = sorted((folder / "images").glob("*.jpg"))[:4]
    contents = [b"", b"just some text", truncated_jpeg(make_photo(seed=5)), png_bomb()]
    for path, content in zip(names, contents, strict=True):
        path.write_bytes(content)
    return [path.name for path in names]


def test_training_names_bad_files_and_trains_on_the_rest(
    trained_run,
    make_photo,
    tmp_path,
    monkeypatch,
):
    # Only the data root moves: the feature cache of the trained run stays warm.
    monkeypatch.setattr(config, "DATA_ROOT", tmp_path / "data")
    dataset = tmp_path / "data" / "broken_sample"
    broken = write_broken_sample(dataset, make_photo)
    report = data.validate_dataset(dataset, dataset / "metadata.csv", full_decode=True)
    dropped = next(p for p in report.problems if "unreadable or corrupt" in p.message)
    assert sorted(Path(line.split(":")[0]).name for line in dropped.files) == broken

    at = AppTest.from_file(str(config.REPO_ROOT / "pages/2_Train.py"), default_timeout=TIMEOUT)
    at.run()
    at.radio(key="train_source").set_value("A dataset in the data folder").run()
    assert not at.exception
    assert "4 unreadable or corrupt images were dropped" in texts(at.warning)

    result = training.train(
        tiny_train_config(data_dir=str(dataset), csv=str(dataset / "metadata.csv")),
        models_directory=tmp_path / "models",
    )
    card = runs.load_run(tmp_path / "models" / result.run_id).card
    assert card.data["n_images"] == report.n_images == 300 - 4


# --- concurrency ------------------------------------------------------------------------------


def test_ten_sessions_predicting_at_once_lose_no_row(predictor, database):
    contents = [path.read_bytes() for path in SAMPLE_IMAGES[:20]]
    errors: list[BaseException] = []

    def session(number: int) -> None:
        uploads = [predict_service.Upload(f"{number}-{i}.jpg", c) for i, c in enumerate(contents)]
        try:
            results = predict_service.predict_uploads(predictor, database, uploads, f"s{number}")
            assert all(result.ok for result in results)
        except BaseException as error:  # noqa: BLE001 - reported by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=session, args=(number,)) for number in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    for number in range(10):
        assert database.count_predictions(db.HistoryFilter(session_id=f"s{number}")) == 20
    everything = database.query_predictions(db.HistoryFilter(), page_size=1000)
    assert len(everything) == 200 and everything["id"].is_unique


def test_the_cli_runs_while_the_app_holds_the_database(app_paths, trained_run):
    database = db.open_database(config.DB_PATH)  # this process plays the app
    database.ingest_runs(app_paths.models_dir)
    completed = subprocess.run(
        [sys.executable, "-m", "core", "runs"],
        cwd=config.REPO_ROOT,
        env={**os.environ, "DERMO_MODELS_DIR": str(app_paths.models_dir)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert trained_run in completed.stdout
    assert database.status()["n_runs"] >= 1


# Another app process: opens the database, says so, and holds it until its stdin closes.
HOLD_DATABASE = """
import sys
from core.storage import db
db.open_database(sys.argv[1])
print("ready", flush=True)
sys.stdin.read()
"""


def test_a_second_app_process_gets_a_clear_message(fresh_app):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            HOLD_DATABASE,
            str(fresh_app.db_path),
        ],
        cwd=config.REPO_ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "ready"
        at = AppTest.from_file(str(config.REPO_ROOT / "Home.py"), default_timeout=TIMEOUT).run()
        assert not at.exception
        message = "\n".join(str(error.value) for error in at.error)
        assert "open in another process" in message and "DERMO_DB_PATH" in message
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    at.run()  # the other process has gone: the same session now works
    assert not at.exception and not at.error


PAGES = ("Home.py", "pages/1_Predict.py", "pages/2_Train.py", "pages/3_Metrics.py")


def corrupt_database(path: Path) -> bytes:
    """Garbage where the database file belongs, as a failed copy or a full disk leaves it."""
    garbage = b"\x00\x17 not a DuckDB file \xfe" * 500
    path.write_bytes(garbage)
    return garbage


@pytest.mark.parametrize("page", [*PAGES, "pages/4_History.py"])
def test_a_corrupt_database_file_is_explained_on_every_page(fresh_app, page):
    corrupt_database(fresh_app.db_path)
    at = AppTest.from_file(str(config.REPO_ROOT / page), default_timeout=TIMEOUT).run()
    assert not at.exception
    message = "\n".join(str(error.value) for error in at.error)
    assert "app.duckdb (DERMO_DB_PATH) cannot be read" in message
    assert "move the file aside" in message and "nothing is stored" in message
    assert str(fresh_app.db_path.parent) not in message


def test_a_corrupt_database_names_the_migration_backup(fresh_app):
    corrupt_database(fresh_app.db_path)
    fresh_app.db_path.with_name("app.duckdb.v2.bak").write_bytes(b"")
    at = AppTest.from_file(str(config.REPO_ROOT / "Home.py"), default_timeout=TIMEOUT).run()
    assert not at.exception
    message = "\n".join(str(error.value) for error in at.error)
    assert "copy the backup app.duckdb.v2.bak" in message


def test_predict_works_without_storage_when_the_database_is_corrupt(
    app_paths,
    trained_run,
    tmp_path,
    monkeypatch,
):
    broken = tmp_path / "app.duckdb"
    garbage = corrupt_database(broken)
    monkeypatch.setenv("DERMO_DB_PATH", str(broken))
    monkeypatch.setattr(config, "DB_PATH", broken)
    at = AppTest.from_file(str(config.REPO_ROOT / "pages/1_Predict.py"), default_timeout=TIMEOUT)
    at.run()
    image = ("lesion.jpg", SAMPLE_IMAGES[0].read_bytes(), "image/jpeg")
    at.file_uploader(key="predict_upload").set_value(image).run()
    assert not at.exception
    assert at.metric[0].label == "Malignant probability (calibrated)"
    assert "nothing is stored" in "\n".join(str(error.value) for error in at.error)
    assert broken.read_bytes() == garbage


# --- faults in training -----------------------------------------------------------------------


def run_folders(models_dir: Path) -> list[str]:
    """Every entry of the models folder but the jobs folder, dot-prefixed ones included."""
    return sorted(path.name for path in models_dir.iterdir() if path.name != worker.JOBS_FOLDER)


@pytest.fixture
def models_with_active_run(app_paths, trained_run, tmp_path):
    """A models folder of its own holding a copy of the trained run, active."""
    models = tmp_path / "models"
    shutil.copytree(app_paths.models_dir / trained_run, models / trained_run)
    runs.set_active(trained_run, models)
    return models


def test_cancel_stops_a_running_job_and_a_second_start_is_refused(models_with_active_run):
    models = models_with_active_run
    active = runs.active_run_id(models)
    before = run_folders(models)
    # A hundred fine-tune epochs without early stopping: minutes, far longer than the test.
    long_run = tiny_train_config(fine_tune_epochs=100, patience=100)
    job_id = worker.start_training(long_run, directory=models)
    running = worker.wait(job_id, 180, models, until=lambda status: status.stage == "fine_tune")
    with pytest.raises(worker.TrainingBusyError, match="still running"):
        worker.start_training(tiny_train_config(), directory=models)
    worker.cancel(job_id, models)
    cancelled = worker.wait(job_id, 120, models)
    assert not running.finished and cancelled.state == "cancelled"
    assert runs.active_run_id(models) == active
    assert [name for name in run_folders(models) if not name.startswith(".")] == before


def test_killed_training_fails_cleanly_and_predictions_go_on_during_the_next(
    models_with_active_run, predictor, database
):
    models = models_with_active_run
    active = runs.active_run_id(models)
    before = run_folders(models)
    job_id = worker.start_training(tiny_train_config(), directory=models)
    running = worker.wait(job_id, 180, models, until=lambda status: status.stage != "starting")
    assert not running.finished
    os.kill(running.pid, signal.SIGKILL)
    killed = worker.wait(job_id, 60, models)
    assert killed.state == "failed" and "ended unexpectedly" in killed.error
    assert runs.active_run_id(models) == active
    assert [name for name in run_folders(models) if not name.startswith(".")] == before

    next_job = worker.start_training(tiny_train_config(), directory=models)
    uploads = [predict_service.Upload(p.name, p.read_bytes()) for p in SAMPLE_IMAGES[:5]]
    results = predict_service.predict_uploads(predictor, database, uploads, "during-training")
    assert not worker.read_status(next_job, models).finished  # predicted while it trained
    assert all(result.ok for result in results)
    finished = worker.wait(next_job, 300, models)
    assert finished.state == "succeeded", finished.error
    assert finished.run_id in run_folders(models)
    assert runs.active_run_id(models) == active


@pytest.fixture
def job_folder(models_with_active_run):
    """A job folder for `worker.run_job` in this process (activate asked for), and its models."""
    folder = worker.jobs_dir(models_with_active_run) / "job-in-process"
    folder.mkdir(parents=True)
    payload = {"config": asdict(tiny_train_config()), "activate": True}
    (folder / "config.json").write_text(json.dumps(payload))
    previous_handler = signal.getsignal(signal.SIGTERM)  # run_job installs its own
    yield folder
    signal.signal(signal.SIGTERM, previous_handler)


def assert_failed_and_nothing_changed(folder: Path, reason: str, active: str, before) -> None:
    models = folder.parent.parent
    status = worker.read_status(folder.name, models)
    assert status.state == "failed" and reason in status.error
    assert runs.active_run_id(models) == active
    assert run_folders(models) == before  # no run folder, complete or partial, was left


def test_an_exception_in_an_epoch_fails_the_job_and_keeps_the_active_run(
    job_folder,
    trained_run,
    monkeypatch,
):
    before = run_folders(job_folder.parent.parent)

    def broken_epoch(self, epoch, logs=None):
        raise RuntimeError(f"simulated failure in epoch {epoch + 1}")

    monkeypatch.setattr(recipe.ProgressReporter, "on_epoch_end", broken_epoch)
    assert worker.run_job(job_folder) == 1
    reason = "RuntimeError: simulated failure in epoch 1"
    assert_failed_and_nothing_changed(job_folder, reason, trained_run, before)


def test_a_disk_error_while_saving_leaves_no_partial_run(
    job_folder,
    trained_run,
    monkeypatch,
):
    before = run_folders(job_folder.parent.parent)

    def full_disk(self, *arguments, **options):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(keras.Model, "save", full_disk)
    assert worker.run_job(job_folder) == 1
    reason = "OSError: [Errno 28] No space left on device"
    assert_failed_and_nothing_changed(job_folder, reason, trained_run, before)


# --- broken run folders -----------------------------------------------------------------------


@pytest.fixture
def good_and_broken_runs(fresh_app, app_paths, trained_run):
    """Two copies of the trained run in fresh app folders: the older one is the default
    (active.json), the newer one the local choice."""
    source = app_paths.models_dir / trained_run
    good = copy_run(source, fresh_app.models_dir, "20000101-000000-good")
    runs.write_json_atomic(fresh_app.models_dir / config.ACTIVE_FILE_NAME, {"run_id": good.name})
    broken = copy_run(source, fresh_app.models_dir, "20990101-000000-broken")
    runs.set_active(broken.name, fresh_app.models_dir)
    return broken


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda folder: (folder / "card.json").write_text("{not json"), "card.json is unreadable"),
        (lambda folder: (folder / "card.json").unlink(), "card.json is missing"),
        (lambda folder: (folder / "model.keras").unlink(), "model.keras is missing"),
    ],
    ids=["corrupt card", "missing card", "missing model"],
)
def test_home_names_a_broken_active_run_and_falls_back(good_and_broken_runs, damage, message):
    damage(good_and_broken_runs)
    at = AppTest.from_file(str(config.REPO_ROOT / "Home.py"), default_timeout=TIMEOUT).run()
    assert not at.exception
    assert f"run 20990101-000000-broken: {message}" in texts(at.warning)
    assert "using run 20000101-000000-good from active.json" in texts(at.warning)


def test_predict_falls_back_when_the_active_model_file_is_corrupt(good_and_broken_runs):
    (good_and_broken_runs / "model.keras").write_bytes(b"PK\x03\x04 not a keras file")
    at = AppTest.from_file(
        str(config.REPO_ROOT / "pages/1_Predict.py"), default_timeout=TIMEOUT
    ).run()
    image = SAMPLE_IMAGES[0].read_bytes()
    at.file_uploader(key="predict_upload").set_value(("lesion.jpg", image, "image/jpeg")).run()
    assert not at.exception
    assert "Run 20990101-000000-broken is broken: its model cannot be loaded" in texts(at.error)
    assert "Predicting with run 20000101-000000-good instead" in texts(at.warning)
    assert at.metric[0].label == "Malignant probability (calibrated)"
    stored = db.open_database(config.DB_PATH).query_predictions(db.HistoryFilter())
    assert stored["run_id"].tolist() == ["20000101-000000-good"]


# --- progress shown while training ------------------------------------------------------------


def test_progress_has_plain_stage_names_and_is_indeterminate_between_epochs_and_phases():
    preparing = worker.JobStatus("job", stage="data", message="Decoding 300 images")
    assert (
        preparing.fraction is None and preparing.stage_name == "Checking and decoding the images"
    )
    halfway = worker.JobStatus("job", stage="fine_tune", epoch=2, epochs=4, batch=5, batches=10)
    assert halfway.fraction == 0.375 and halfway.stage_name == "Fine-tuning the backbone"
    phase_done = worker.JobStatus("job", stage="head", epoch=4, epochs=4, batch=10, batches=10)
    assert phase_done.fraction is None and phase_done.remaining_seconds is None
    assert worker.JobStatus("job", stage="some_new_stage").stage_name == "Some new stage"


def test_the_job_clock_starts_when_start_was_clicked(job_folder):
    models = job_folder.parent.parent
    clicked = time.time() - 100
    worker.write_status(worker.JobStatus(job_id=job_folder.name, started_at=clicked), models)
    payload = json.loads((job_folder / "config.json").read_text())
    payload["config"]["data_dir"] = str(job_folder / "no such folder")
    (job_folder / "config.json").write_text(json.dumps(payload))
    assert worker.run_job(job_folder) == 1
    status = worker.read_status(job_folder.name, models)
    assert status.started_at == clicked and status.elapsed_seconds >= 100
