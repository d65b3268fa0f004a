"""The Metrics page's "Evaluate on your data" tab: upload, start, follow, see the stored result."""

import io
import zipfile

import pytest
from app_fixtures import SAMPLE_IMAGES, app, texts

from core import worker
from core.storage import runs


@pytest.fixture
def labelled_zip() -> bytes:
    """Eight sample images in benign/ and malignant/ folders, zipped as a user would."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for index, image in enumerate(SAMPLE_IMAGES[:8]):
            folder = "malignant" if index % 2 else "benign"
            archive.writestr(f"mine/{folder}/{image.name}", image.read_bytes())
    return buffer.getvalue()


def keys(widgets) -> list[str]:
    return [widget.key for widget in widgets]


def test_an_uploaded_dataset_is_evaluated_in_the_background_and_shown(
    trained_run,
    labelled_zip,
):
    at = app("pages/3_Metrics.py").run()
    assert not at.exception
    at.radio(key="metrics_eval_source").set_value("Upload a ZIP").run()
    at.file_uploader(key="metrics_eval_zip").set_value(
        ("labelled.zip", labelled_zip, "application/zip")
    ).run()
    at.button(key="metrics_eval_unpack").click().run()
    assert "Unpacked 8 files" in texts(at.success)
    assert at.multiselect(key="metrics_eval_runs").value == [trained_run]
    at.button(key="metrics_eval_start").click().run()
    assert not at.exception
    job = worker.latest_job(kind=worker.EVALUATION)
    assert job is not None
    status = worker.wait(job.job_id, timeout=300)
    assert status.state == "succeeded", status.error
    at.run()
    assert not at.exception
    assert "1 evaluation stored" in texts(at.success)
    assert not at.button(key="metrics_eval_start").disabled
    assert "uploads/labelled/mine in the data folder: 8 images, 4 malignant" in texts(at.caption)
    assert "Out of distribution:" in texts(at.info)
    # Folders carry no metadata (site, sex, age, source), so there are no subgroups.
    assert "no subgroups" in texts(at.caption)
    # The last headline table is the evaluation's (the One run tab's comes first).
    headline = [t.value for t in at.table if "Metric" in t.value.columns][-1]
    (evaluation_id,) = status.evaluation_ids
    record = runs.read_evaluation(runs.models_dir() / trained_run, evaluation_id)
    assert record["threshold"] == runs.load_run(runs.models_dir() / trained_run).card.threshold
    shown = headline.set_index("Metric")["Value"]
    assert shown["Sensitivity"] == pytest.approx(record["metrics"]["sensitivity"])


def test_evaluating_needs_the_admin_secret_in_public_mode(trained_run, monkeypatch):
    monkeypatch.setenv("DERMO_ADMIN_SECRET", "a long enough secret for the test")
    at = app("pages/3_Metrics.py").run()
    assert not at.exception
    assert "metrics_eval_start" not in keys(at.button)
    assert "metrics_eval_zip" not in keys(at.get("file_uploader"))
    assert "Evaluating runs on your data and dataset uploads need the admin secret" in texts(
        at.info
    )


def clinic_evaluation(run_id: str) -> str:
    """A stored evaluation of 40 malignant and 40 benign images the run never saw."""
    import numpy as np
    import pandas as pd

    from core.serving import evaluation

    run = runs.load_run(runs.models_dir() / run_id)
    rng = np.random.default_rng(0)
    labels = np.array([1] * 40 + [0] * 40)
    predictions = pd.DataFrame(
        {
            "image_name": [f"clinic_{index}" for index in range(80)],
            "sha256": [f"{index:064x}" for index in range(80)],
            "label": labels,
            "probability": np.clip(rng.normal(0.25 + 0.35 * labels, 0.15), 0.001, 0.999),
            "ood_score": 1.0,
            "ood_flag": False,
            "site": "upper extremity",
            "sex": "female",
            "age": 50.0,
            "source": "clinic",
            "diagnosis": np.where(labels == 1, "melanoma", "nevus"),
        }
    )
    record = evaluation.evaluation_record(
        run, predictions, dataset="our clinic", tta=True, unreadable=[], n_bootstrap=50
    )
    runs.write_evaluation(run.folder, record, predictions)
    return record["evaluation_id"]


def test_a_threshold_from_an_evaluation_is_adopted_and_predict_says_so(
    trained_run,
):
    from core.analysis import operating_point

    evaluation_id = clinic_evaluation(trained_run)
    at = app("pages/3_Metrics.py").run()
    assert not at.exception
    at.selectbox(key=f"metrics_eval_id_{trained_run}").set_value(evaluation_id).run()
    assert "labels with its card threshold" in texts(at.caption)
    at.number_input(key=f"metrics_local_target_{evaluation_id}").set_value(0.9).run()
    preview = [t.value for t in at.table if "Card's threshold" in t.value.columns]
    assert preview and preview[-1]["Images"].iloc[0] == "80 (40 malignant)"
    at.button(key=f"metrics_adopt_{evaluation_id}").click().run()
    assert not at.exception
    point = operating_point.operating_point(trained_run)
    assert point is not None and point["evaluation_id"] == evaluation_id
    assert f"local threshold {point['threshold']:.3f} from evaluation" in texts(at.caption)

    predict = app("pages/1_Predict.py").run()
    predict.file_uploader(key="predict_upload").set_value(
        (SAMPLE_IMAGES[0].name, SAMPLE_IMAGES[0].read_bytes(), "image/jpeg")
    ).run()
    assert not predict.exception
    assert f"Labels use the local threshold {point['threshold']:.3f}" in texts(predict.info)

    at.button(key=f"metrics_clear_{evaluation_id}").click().run()
    assert operating_point.operating_point(trained_run) is None


def zipped(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


@pytest.fixture
def committed_run(fresh_app) -> str:
    """The committed default run (`active.json`), copied into the fresh app's models folder
    and active there."""
    import json
    import shutil

    from core import config

    committed = config.REPO_ROOT / "models"
    run_id = json.loads((committed / config.ACTIVE_FILE_NAME).read_text())["run_id"]
    default = runs.load_run(committed / run_id)
    shutil.copytree(default.folder, fresh_app.models_dir / default.run_id)
    runs.set_active(default.run_id, fresh_app.models_dir)
    return default.run_id


def upload_and_unpack(at, name: str, data: bytes) -> None:
    at.file_uploader(key="metrics_eval_zip").set_value((name, data, "application/zip")).run()
    assert "metrics_eval_start" not in keys(at.button), "Start before the upload is unpacked"
    at.button(key="metrics_eval_unpack").click().run()


def test_nothing_starts_until_the_chosen_upload_is_unpacked_and_valid(committed_run):
    at = app("pages/3_Metrics.py").run()
    at.radio(key="metrics_eval_source").set_value("Upload a ZIP").run()
    assert not at.exception
    # Neither the bundled sample nor any other dataset stands in for the upload.
    assert "metrics_eval_start" not in keys(at.button)
    assert "metrics_eval_dataset" not in keys(at.selectbox)
    upload_and_unpack(at, "photos.zip", zipped({"photos/a.jpg": SAMPLE_IMAGES[0].read_bytes()}))
    assert "no dataset layout" in texts(at.error)
    assert "metrics_eval_start" not in keys(at.button)
    # A CSV naming no image of the archive: said in words, and Start stays disabled.
    images = {f"mine/{image.name}": image.read_bytes() for image in SAMPLE_IMAGES[:4]}
    csv = "image_name,target\n" + "".join(f"other_{i},{i % 2}\n" for i in range(4))
    upload_and_unpack(at, "unmatched.zip", zipped({**images, "mine/metadata.csv": csv.encode()}))
    errors = texts(at.error)
    assert (
        "no row of metadata.csv matches an image: 4 rows name images that are not among "
        "the 4 images in uploads/unmatched/mine" in errors
    )
    assert "Error" not in errors and "('.jpg'" not in errors
    assert at.button(key="metrics_eval_start").disabled
    # A valid archive: the error goes, Start is enabled on that dataset.
    names = "".join(f"{image.stem},{i % 2}\n" for i, image in enumerate(SAMPLE_IMAGES[:4]))
    valid = zipped({**images, "mine/metadata.csv": f"image_name,target\n{names}".encode()})
    upload_and_unpack(at, "valid.zip", valid)
    assert not at.error
    assert "uploads/valid/mine" in texts(at.caption)
    assert not at.button(key="metrics_eval_start").disabled


def test_a_failed_evaluation_is_cleared_when_the_input_changes(committed_run, labelled_zip):
    failed = worker.JobStatus(
        job_id="20260101-000000-failed",
        kind=worker.EVALUATION,
        state="failed",
        error="no row of metadata.csv matches an image",
    )
    worker.write_status(failed)
    at = app("pages/3_Metrics.py").run()
    assert "matches an image" in texts(at.error)
    at.radio(key="metrics_eval_source").set_value("Upload a ZIP").run()
    upload_and_unpack(at, "labelled.zip", labelled_zip)
    assert not at.exception
    assert "matches an image" not in texts(at.error)
    assert "Unpacked 8 files" in texts(at.success)
