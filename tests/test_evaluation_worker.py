"""Evaluation jobs in the background worker, and `python -m core evaluate --save`."""

import dataclasses
import json
import shutil

import pytest

from core import config, worker
from core.__main__ import main
from core.storage import db, runs


def copy_run(source, models_dir, run_id: str, threshold: float):
    """A copy of a trained run under another id, with another threshold in its card."""
    folder = models_dir / run_id
    shutil.copytree(source, folder)
    shutil.rmtree(folder / runs.EVALUATIONS_FOLDER, ignore_errors=True)
    card = json.loads((folder / runs.CARD_FILE).read_text())
    card["run_id"], card["threshold"]["value"] = run_id, threshold
    (folder / runs.CARD_FILE).write_text(json.dumps(card))
    return folder


@pytest.fixture
def two_runs(tmp_path, app_paths, trained_run):
    """A models folder holding two copies of the trained run, thresholds 0.3 and 0.6."""
    models = tmp_path / "models"
    source = app_paths.models_dir / trained_run
    return models, [copy_run(source, models, name, t) for name, t in (("low", 0.3), ("hi", 0.6))]


def test_one_job_scores_each_run_at_its_own_threshold(two_runs, make_dataset, tmp_path):
    models, folders = two_runs
    data_dir = make_dataset("csv", n_benign=6, n_malignant=5)
    request = worker.EvaluationRequest(
        str(data_dir), str(data_dir / "metadata.csv"), ("all",), ("low", "hi")
    )
    job_id = worker.start_evaluation(request, models)
    with pytest.raises(worker.TrainingBusyError, match="still running"):
        worker.start_evaluation(request, models)
    status = worker.wait(job_id, 300, models)
    assert status.state == "succeeded", status.error
    assert status.kind == worker.EVALUATION and len(status.evaluation_ids) == 2
    records = [runs.read_evaluation(folder, runs.evaluation_ids(folder)[0]) for folder in folders]
    assert [record["threshold"] for record in records] == [0.3, 0.6]
    assert {record["evaluation_id"] for record in records} == set(status.evaluation_ids)
    # The same images make the same dataset key, so the two runs can be paired.
    assert records[0]["dataset_key"] == records[1]["dataset_key"]
    assert records[0]["metrics"]["n"] == 11 and records[0]["metrics"]["n_positive"] == 5
    assert set(records[0]["metrics"]["subgroups"]["sex"]) == {"female", "male"}
    database = db.open_database(tmp_path / "app.duckdb")
    try:
        database.ingest_runs(models)
        listed = database.list_evaluations()
        assert sorted(listed["run_id"]) == ["hi", "low"]
        rows = database.evaluation_predictions(records[0]["evaluation_id"])
        assert len(rows) == 11 and rows["sha256"].str.len().eq(64).all()
    finally:
        database.close()


def test_a_cancelled_evaluation_keeps_only_whole_records(two_runs):
    models, folders = two_runs
    sample = worker.EvaluationRequest(
        str(config.SAMPLE_DIR), str(config.SAMPLE_DIR / "metadata.csv"), ("all",), ("low", "hi")
    )
    job_id = worker.start_evaluation(sample, models)
    worker.wait(job_id, 300, models, until=lambda status: status.stage in ("data", "scoring"))
    worker.cancel(job_id, models)
    status = worker.wait(job_id, 300, models)
    assert status.state == "cancelled", status.error
    stored = [name for folder in folders for name in runs.evaluation_ids(folder)]
    assert sorted(stored) == sorted(status.evaluation_ids)


def test_a_bad_request_is_refused_before_any_process_starts(two_runs, tmp_path):
    models, _ = two_runs
    with pytest.raises(ValueError, match="at least one run"):
        worker.start_evaluation(
            worker.EvaluationRequest(str(tmp_path), None, ("all",), ()), models
        )
    with pytest.raises(runs.RunError):
        worker.start_evaluation(
            worker.EvaluationRequest(str(tmp_path), None, ("all",), ("no-such-run",)), models
        )
    assert worker.latest_job(models) is None


def test_evaluate_save_stores_the_record_with_the_run(
    two_runs, make_dataset, monkeypatch, tmp_path
):
    models, (low, _) = two_runs
    monkeypatch.setattr(config, "MODELS_DIR", models)
    data_dir = make_dataset("folders", n_benign=3, n_malignant=3)
    output = tmp_path / "metrics.json"
    arguments = ["evaluate", "--data", str(data_dir), "--model", "low", "--json", str(output)]
    assert main([*arguments, "--save"]) == 0
    (evaluation_id,) = runs.evaluation_ids(low)
    record = runs.read_evaluation(low, evaluation_id)
    written = json.loads(output.read_text())
    assert written["threshold"] == record["threshold"] == 0.3
    assert written["evaluation_id"] == evaluation_id and written["model"] == "low"
    assert written["roc_auc"] == record["metrics"]["roc_auc"]
    assert len(runs.read_evaluation_predictions(low, evaluation_id)) == 6


def test_rows_that_cannot_be_scored_fail_the_job_in_words_unless_skipped(
    two_runs,
    hostile_dataset,
):
    models, (low, _) = two_runs
    csv_path = str(hostile_dataset / "metadata.csv")
    request = worker.EvaluationRequest(str(hostile_dataset), csv_path, ("all",), ("low",))
    status = worker.wait(worker.start_evaluation(request, models), 300, models)
    assert status.state == "failed" and runs.evaluation_ids(low) == []
    assert status.error.startswith("rows with an invalid target: 3 (bad_maybe, bad_2, bad_-1)")
    skipping = dataclasses.replace(request, skip_unmatched=True)
    status = worker.wait(worker.start_evaluation(skipping, models), 300, models)
    assert status.state == "succeeded", status.error
    record = runs.read_evaluation(low, runs.evaluation_ids(low)[0])
    assert record["metrics"]["n"] == 12
    unmatched = record["skipped_rows"]["unmatched_name"]
    assert unmatched == {"count": 1, "examples": ["ISIC_9999999"]}
