"""Rows an evaluation cannot score: refused by default, skipped and recorded when asked.

No model is needed: the refusals come before any image is scored, and the Metrics page reads
a stored record. Scoring with `--skip-unmatched` is in `test_evaluation_worker.py`.
"""

import pytest
from app_fixtures import app, texts
from test_app_compare import image_names, scored
from test_app_compare import write_run as write_scored_run

from core.__main__ import main
from core.serving import evaluation
from core.storage import runs


def test_rows_that_cannot_be_scored_are_refused_with_their_counts(hostile_dataset):
    with pytest.raises(evaluation.SkippedRowsError) as refused:
        evaluation.load_evaluation_dataset(hostile_dataset, hostile_dataset / "metadata.csv")
    message = str(refused.value)
    assert "rows with an invalid target: 3 (bad_maybe, bad_2, bad_-1)" in message
    assert "rows whose name matches no image: 1 (ISIC_9999999)" in message
    assert "rows sharing an image name (the first of each kept): 2" in message
    assert "evaluate the other 12 images" in message


def test_skipping_keeps_the_counts_for_the_record(hostile_dataset):
    dataset, skipped = evaluation.load_evaluation_dataset(
        hostile_dataset, hostile_dataset / "metadata.csv", skip_unmatched=True
    )
    assert len(dataset.frame) == 12
    assert skipped["invalid_target"] == {"count": 3, "examples": ["bad_maybe", "bad_2", "bad_-1"]}
    assert skipped["unmatched_name"]["count"] == 1
    assert skipped["duplicate_name"] == {
        "count": 2,
        "examples": ["ISIC_0000000.jpg", "ISIC_0000000.jpg"],
    }


def test_a_csv_matching_no_image_says_so_instead_of_no_images_found(make_dataset):
    data_dir = make_dataset("csv", n_benign=2, n_malignant=2)
    (data_dir / "metadata.csv").write_text("image_name,target\nnot_here,0\nnor_here,1\n")
    with pytest.raises(evaluation.data.DatasetError) as refused:
        evaluation.load_evaluation_dataset(data_dir)
    # In words: what does not match, how many rows and images; no class names or tuples.
    assert (
        "no row of metadata.csv matches an image: 2 rows name images that are not among "
        "the 4 images in" in str(refused.value)
    )
    assert "no images" not in str(refused.value) and "(" not in str(refused.value)


def cli_evaluate(data_dir, run_folder, *options: str) -> int:
    csv_path = str(data_dir / "metadata.csv")
    arguments = ["evaluate", "--data", str(data_dir), "--csv", csv_path]
    return main([*arguments, "--model", str(run_folder), *options])


def test_the_command_line_refuses_and_saves_nothing(
    hostile_dataset,
    fresh_app,
    capsys,
):
    write_scored_run(fresh_app.models_dir, "run-1", 0.4, scored(image_names(0, 10), 0))
    folder = fresh_app.models_dir / "run-1"
    output = fresh_app.models_dir / "metrics.json"
    assert cli_evaluate(hostile_dataset, folder, "--save", "--json", str(output)) == 1
    assert "rows with an invalid target: 3" in capsys.readouterr().err
    assert runs.evaluation_ids(folder) == [] and not output.exists()


def test_an_output_file_that_cannot_be_written_is_refused_before_any_work(
    hostile_dataset,
    fresh_app,
    capsys,
):
    write_scored_run(fresh_app.models_dir, "run-1", 0.4, scored(image_names(0, 10), 0))
    folder = fresh_app.models_dir / "run-1"
    missing = fresh_app.models_dir / "no" / "such" / "x.json"
    options = ("--save", "--skip-unmatched", "--json", str(missing))
    assert cli_evaluate(hostile_dataset, folder, *options) == 2
    error = capsys.readouterr().err
    assert "the folder" in error and "does not exist" in error and "Traceback" not in error
    assert runs.evaluation_ids(folder) == []


def test_the_metrics_page_shows_the_skipped_rows_of_an_evaluation(fresh_app):
    tests = scored(image_names(0, 30), 0)
    write_scored_run(fresh_app.models_dir, "run-1", 0.4, tests)
    # A run is shown only when it is active (the newest folder is never taken instead).
    run = runs.set_active("run-1", fresh_app.models_dir)
    predictions = tests.assign(
        sha256=[f"hash-{name}" for name in tests["image_name"]],
        ood_score=1.0,
        ood_flag=False,
        site=None,
        sex=None,
        age=None,
        source=None,
        diagnosis=None,
    )
    skipped = {"unmatched_name": {"count": 7, "examples": ["a", "b", "c", "d", "e"]}}
    record = evaluation.evaluation_record(
        run,
        predictions,
        dataset="clinic",
        tta=False,
        unreadable=[],
        skipped=skipped,
        n_bootstrap=20,
    )
    evaluation.save_evaluation(run, record, predictions)
    at = app("pages/3_Metrics.py").run()
    assert not at.exception
    assert "Skipped rows whose name matches no image: 7 (a, b, c, d, e, ...)" in texts(at.warning)
