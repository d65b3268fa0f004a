"""The Metrics page's "Evaluate on your data" tab: upload, start, follow, see the stored result."""

import io
import zipfile

import pytest
from app_fixtures import SAMPLE_IMAGES, app, app_paths, texts, trained_run  # noqa: F401

from core import runs, worker


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
    trained_run,  # noqa: F811
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
    assert (
        record["threshold"]
        == runs.load_run(runs.models_dir() / trained_run).card["threshold"]["value"]
    )
    shown = headline.set_index("Metric")["Value"]
    assert shown["Sensitivity"] == pytest.approx(record["metrics"]["sensitivity"])


def test_evaluating_needs_the_admin_secret_in_public_mode(trained_run, monkeypatch):  # noqa: F811
    monkeypatch.setenv("DERMO_ADMIN_SECRET", "a long enough secret for the test")
    at = app("pages/3_Metrics.py").run()
    assert not at.exception
    assert "metrics_eval_start" not in keys(at.button)
    assert "metrics_eval_zip" not in keys(at.get("file_uploader"))
    assert "Evaluating runs on your data and dataset uploads need the admin secret" in texts(
        at.info
    )
