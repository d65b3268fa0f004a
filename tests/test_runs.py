"""Run folders, the active run and its fallback, without TensorFlow."""

import io
import zipfile

import pandas
import pytest

from core.storage import runs
from core.storage.card import Card


def make_run(models_dir, run_id, auc=0.9):
    folder = models_dir / run_id
    folder.mkdir(parents=True)
    (folder / "model.keras").write_bytes(b"stand-in")
    runs.write_card(folder, Card.minimal(run_id, 64, 0.5, metrics={"test": {"roc_auc": auc}}))
    return folder


def test_list_runs_skips_unfinished_and_reports_broken(tmp_path):
    make_run(tmp_path, "20260101-000000-a")
    make_run(tmp_path, "20260102-000000-b")
    (tmp_path / ".20260103-000000-c.partial").mkdir()
    broken = make_run(tmp_path, "20260104-000000-d")
    (broken / "card.json").write_text("{not json")
    found, problems = runs.list_runs(tmp_path)
    assert [run.run_id for run in found] == ["20260102-000000-b", "20260101-000000-a"]
    assert len(problems) == 1 and "20260104-000000-d" in problems[0]


def test_a_broken_local_choice_falls_back_to_the_default_and_says_why(tmp_path):
    make_run(tmp_path, "20260101-000000-a")
    active = make_run(tmp_path, "20260102-000000-b")
    make_run(tmp_path, "20260103-000000-newest")
    (tmp_path / "active.json").write_text('{"run_id": "20260101-000000-a"}')
    runs.set_active("20260102-000000-b", tmp_path)
    (active / "model.keras").unlink()
    run, problems = runs.active_run(tmp_path)
    assert run.run_id == "20260101-000000-a"
    assert any("model.keras is missing" in problem for problem in problems)
    assert any(
        "active.local.json names run '20260102-000000-b'" in problem
        and "using run 20260101-000000-a from active.json" in problem
        for problem in problems
    )


def test_no_usable_active_run_is_refused_not_replaced_by_the_newest(tmp_path):
    make_run(tmp_path, "20260101-000000-a")
    runs.set_active("20260101-000000-a", tmp_path)
    (tmp_path / "20260101-000000-a" / "card.json").write_text("{not json")
    make_run(tmp_path, "20260103-000000-newest")
    run, problems = runs.active_run(tmp_path)
    assert run is None and "activate a run" in problems[-1]
    with pytest.raises(runs.RunError, match="card.json is unreadable.*activate a run"):
        runs.resolve_run(None, tmp_path)


def test_set_active_refuses_unknown_or_broken_runs(tmp_path):
    make_run(tmp_path, "20260101-000000-a")
    runs.set_active("20260101-000000-a", tmp_path)
    with pytest.raises(runs.RunError, match="no run"):
        runs.set_active("missing", tmp_path)
    assert runs.active_run_id(tmp_path) == "20260101-000000-a"


def test_delete_refuses_the_active_run_and_paths_outside(tmp_path):
    make_run(tmp_path, "20260101-000000-a")
    make_run(tmp_path, "20260102-000000-b")
    runs.set_active("20260101-000000-a", tmp_path)
    with pytest.raises(runs.RunError, match="active"):
        runs.delete_run("20260101-000000-a", tmp_path)
    with pytest.raises(runs.RunError):
        runs.delete_run("../20260101-000000-a", tmp_path)
    runs.delete_run("20260102-000000-b", tmp_path)
    assert [run.run_id for run in runs.list_runs(tmp_path)[0]] == ["20260101-000000-a"]


def test_resolve_run_accepts_id_folder_and_model_path(tmp_path):
    folder = make_run(tmp_path, "20260101-000000-a")
    for reference in ("20260101-000000-a", str(folder), str(folder / "model.keras")):
        assert runs.resolve_run(reference, tmp_path).run_id == "20260101-000000-a"
    with pytest.raises(runs.RunError, match="no trained model"):
        runs.resolve_run(None, tmp_path / "empty")


def test_zip_run_holds_the_run_files(tmp_path):
    make_run(tmp_path, "20260101-000000-a")
    archive = zipfile.ZipFile(io.BytesIO(runs.zip_run("20260101-000000-a", tmp_path)))
    assert sorted(archive.namelist()) == [
        "20260101-000000-a/card.json",
        "20260101-000000-a/model.keras",
    ]


def test_zip_run_holds_the_stored_evaluations(tmp_path):
    folder = make_run(tmp_path, "20260101-000000-a")
    predictions = pandas.DataFrame(
        [dict.fromkeys(runs.EVALUATION_PREDICTION_COLUMNS, "x") | {"label": 1, "probability": 0.5}]
    )
    runs.write_evaluation(folder, {"evaluation_id": "20260102-000000-e"}, predictions)
    archive = zipfile.ZipFile(io.BytesIO(runs.zip_run("20260101-000000-a", tmp_path)))
    assert "20260101-000000-a/evaluations/20260102-000000-e.json" in archive.namelist()
    assert "20260101-000000-a/evaluations/20260102-000000-e.csv" in archive.namelist()


def test_activating_a_run_leaves_the_committed_default_file_alone(tmp_path):
    make_run(tmp_path, "20260101-000000-default")
    make_run(tmp_path, "20260102-000000-local")
    committed = '{"run_id": "20260101-000000-default"}'
    (tmp_path / "active.json").write_text(committed)
    assert runs.active_run_id(tmp_path) == "20260101-000000-default"
    runs.set_active("20260102-000000-local", tmp_path)
    assert (tmp_path / "active.json").read_text() == committed
    # The local choice, in a file that git ignores, wins over the committed default.
    assert runs.active_run_id(tmp_path) == "20260102-000000-local"
    assert runs.active_run(tmp_path)[0].run_id == "20260102-000000-local"
    (tmp_path / "active.local.json").unlink()
    assert runs.active_run_id(tmp_path) == "20260101-000000-default"
