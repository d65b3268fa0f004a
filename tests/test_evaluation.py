"""Evaluation records on users' data: age bands, the record, its subgroup table, its storage."""

import json
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_db import write_run

from core.analysis import metrics, reports
from core.serving import evaluation
from core.storage import db, runs
from core.storage.card import Card


@pytest.fixture
def database(tmp_path: Path):
    database = db.open_database(tmp_path / "app.duckdb")
    yield database
    database.close()


@pytest.mark.parametrize(
    ("age", "band"),
    [
        (0, "<30"),
        (29.9, "<30"),
        (30, "30-44"),
        (44, "30-44"),
        (45, "45-59"),
        (60, "60-74"),
        (74.5, "60-74"),
        (75, "75+"),
        (90, "75+"),
        (None, "unknown"),
        (math.nan, "unknown"),
        ("", "unknown"),
    ],
)
def test_age_bands(age, band):
    assert evaluation.age_band(age) == band


def scored_images(n_benign: int = 40, n_malignant: int = 30, seed: int = 0) -> pd.DataFrame:
    """Per-image predictions as `evaluation.score_images` returns them, with metadata."""
    rng = np.random.default_rng(seed)
    labels = np.array([0] * n_benign + [1] * n_malignant)
    count = len(labels)
    return pd.DataFrame(
        {
            "image_name": [f"ISIC_{index:04d}" for index in range(count)],
            "sha256": [f"{index:064x}" for index in range(count)],
            "label": labels,
            "probability": np.clip(labels * 0.4 + rng.random(count) * 0.6, 0, 1),
            "ood_score": rng.random(count) * 10,
            "ood_flag": pd.array([index % 10 == 0 for index in range(count)], dtype="boolean"),
            # Torso holds most images; palms/soles only three, too few for any metric.
            "site": ["palms/soles"] * 3 + ["torso"] * (count - 3),
            "sex": ["female", "male"] * (count // 2),
            "age": [25.0, 50.0, np.nan, 80.0, 35.0] * (count // 5),
            "source": [""] * count,
            "diagnosis": ["melanoma" if label else "nevus" for label in labels],
        }
    )


def fake_run(folder: Path, threshold: float = 0.42) -> runs.Run:
    return runs.Run(folder.name, folder, Card.minimal(folder.name, 32, threshold))


def test_a_record_keeps_the_runs_threshold_and_reports_subgroups_and_ood(tmp_path):
    predictions = scored_images()
    record = evaluation.evaluation_record(
        fake_run(tmp_path / "run-1"),
        predictions,
        dataset="mine in the data folder",
        tta=False,
        unreadable=["broken.jpg"],
        n_bootstrap=50,
    )
    expected = metrics.evaluate(predictions["label"], predictions["probability"], 0.42)
    assert record["threshold"] == 0.42 and record["metrics"]["threshold"] == 0.42
    assert record["metrics"]["sensitivity"] == expected["sensitivity"]
    assert record["metrics"]["roc_auc"] == pytest.approx(expected["roc_auc"])
    assert record["run_id"] == "run-1" and record["unreadable"] == ["broken.jpg"]
    assert record["ood"] == {"n_scored": 70, "flagged": 7, "share": pytest.approx(0.1)}
    subgroups = record["metrics"]["subgroups"]
    assert set(subgroups["age_band"]) == {"<30", "30-44", "45-59", "75+", "unknown"}
    torso = subgroups["site"]["torso"]
    assert torso["n"] == 67 and torso["n_positive"] == 30
    low, high = torso["intervals"]["roc_auc"]
    assert low <= torso["roc_auc"] <= high
    json.dumps(record, allow_nan=False)


def test_the_dataset_key_depends_on_the_image_contents_only():
    first = scored_images()
    renamed = first.assign(image_name=first["image_name"] + "_copy").iloc[::-1]
    assert evaluation.dataset_key(first["sha256"]) == evaluation.dataset_key(renamed["sha256"])
    assert evaluation.dataset_key(first["sha256"]) != evaluation.dataset_key(
        first["sha256"].iloc[1:]
    )


def test_the_subgroup_table_says_too_few_cases_instead_of_a_number(tmp_path):
    record = evaluation.evaluation_record(
        fake_run(tmp_path / "run-1"),
        scored_images(),
        dataset="mine",
        tta=False,
        unreadable=[],
        n_bootstrap=50,
    )
    table = reports.subgroup_table(record["metrics"])
    # Source is unknown for every image, so it has no rows.
    assert list(dict.fromkeys(table["Subgroup"])) == ["Site", "Sex", "Age band"]
    ages = table.loc[table["Subgroup"] == "Age band", "Value"].tolist()
    assert ages == ["<30", "30-44", "45-59", "75+", "unknown"]  # by age, not as text
    rows = table.set_index(["Subgroup", "Value"])
    palms = rows.loc[("Site", "palms/soles")]
    assert palms["Images"] == 3
    assert {palms["ROC AUC (95% CI)"], palms["Sensitivity (95% CI)"]} == {reports.TOO_FEW_CASES}
    torso = rows.loc[("Site", "torso")]
    group = record["metrics"]["subgroups"]["site"]["torso"]
    low, high = group["intervals"]["roc_auc"]
    assert torso["ROC AUC (95% CI)"] == f"{group['roc_auc']:.3f} ({low:.3f}–{high:.3f})"
    # 30 malignant but only 37 benign torso images: each metric is judged by its own class.
    assert torso["Sensitivity (95% CI)"] != reports.TOO_FEW_CASES


def test_a_small_evaluation_is_called_too_uncertain_to_judge_a_run_by():
    warning = reports.few_cases_warning({"n": 6, "n_positive": 3})
    assert warning is not None and warning.startswith("Only 3 malignant and 3 benign images")
    assert reports.few_cases_warning({"n": 200, "n_positive": 9}) is not None
    assert reports.few_cases_warning({"n": 20, "n_positive": 10}) is None


def test_records_are_stored_with_the_run_and_read_back(tmp_path):
    folder = tmp_path / "run-1"
    predictions = scored_images()
    record = evaluation.evaluation_record(
        fake_run(folder), predictions, dataset="mine", tta=False, unreadable=[], n_bootstrap=20
    )
    runs.write_evaluation(folder, record, predictions)
    assert runs.evaluation_ids(folder) == [record["evaluation_id"]]
    assert runs.read_evaluation(folder, record["evaluation_id"]) == record
    stored = runs.read_evaluation_predictions(folder, record["evaluation_id"])
    assert stored["probability"].tolist() == pytest.approx(predictions["probability"].tolist())
    with pytest.raises(runs.RunError):
        runs.evaluation_files(folder, "../card")


def stored_evaluation(folder: Path, seed: int = 0) -> dict:
    predictions = scored_images(seed=seed)
    record = evaluation.evaluation_record(
        fake_run(folder), predictions, dataset="mine", tta=False, unreadable=[], n_bootstrap=20
    )
    runs.write_evaluation(folder, record, predictions)
    return record


def test_ingest_indexes_evaluations_updates_them_and_drops_them_with_the_run(database, tmp_path):
    models_dir = tmp_path / "models"
    first, second = write_run(models_dir, "run-1"), write_run(models_dir, "run-2")
    old = stored_evaluation(first)
    new = stored_evaluation(second, seed=1)
    database.ingest_runs(models_dir)
    listed = database.list_evaluations()
    assert listed["evaluation_id"].tolist() == [new["evaluation_id"], old["evaluation_id"]]
    assert list(listed.columns) == [
        "evaluation_id",
        "run_id",
        "created_at",
        "dataset",
        "dataset_key",
        "n_images",
        "n_malignant",
        "roc_auc",
        "sensitivity",
        "specificity",
        "ood_flagged",
    ]
    only_first = database.list_evaluations("run-1")
    assert only_first["evaluation_id"].tolist() == [old["evaluation_id"]]
    assert only_first["roc_auc"].iloc[0] == pytest.approx(old["metrics"]["roc_auc"])
    assert only_first["ood_flagged"].iloc[0] == pytest.approx(0.1)
    rows = database.evaluation_predictions(old["evaluation_id"])
    assert len(rows) == 70 and int(rows["ood_flag"].sum()) == 7
    assert set(rows["site"]) == {"palms/soles", "torso"}

    # A changed record is read again; a run deleted takes its evaluations with it.
    path, _ = runs.evaluation_files(first, old["evaluation_id"])
    changed = {**old, "dataset": "renamed"}
    path.write_text(json.dumps(changed))
    os.utime(path, ns=(path.stat().st_mtime_ns + 10**9,) * 2)
    database.ingest_runs(models_dir)
    assert database.list_evaluations("run-1")["dataset"].tolist() == ["renamed"]
    runs.delete_run("run-2", models_dir)
    database.ingest_runs(models_dir)
    assert database.list_evaluations()["run_id"].tolist() == ["run-1"]
    assert database.evaluation_predictions(new["evaluation_id"]).empty


def test_a_broken_evaluation_file_is_a_problem_not_a_crash(database, tmp_path):
    models_dir = tmp_path / "models"
    folder = write_run(models_dir, "run-1")
    record = stored_evaluation(folder)
    runs.evaluation_files(folder, record["evaluation_id"])[0].write_text("{not json")
    database.ingest_runs(models_dir)
    assert database.list_evaluations().empty
    assert any(record["evaluation_id"] in problem for problem in database.ingest_problems)
