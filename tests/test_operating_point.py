"""A clinic's own operating point: choosing, refusing, adopting and using a local threshold."""

import csv
import io
import json
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest
from test_pipeline import run_cli

from core import config
from core.analysis import operating_point, reports
from core.analysis.metrics import wilson_interval
from core.storage import runs
from core.storage.card import Card

DEFAULT_RUN = "20261201-221100-mobilenet-v2-73df"


def fake_run(tmp_path, split_rows, threshold=0.061) -> runs.Run:
    """A run folder with just the card and split.csv that choosing a threshold reads."""
    folder = tmp_path / "models" / "20260101-000000-fake"
    folder.mkdir(parents=True)
    pd.DataFrame(split_rows, columns=["image_name", "group", "split", "sha256"]).to_csv(
        folder / runs.SPLIT_FILE, index=False
    )
    card = Card.minimal(folder.name, 32, threshold)
    runs.write_card(folder, card)
    return runs.Run(run_id=folder.name, folder=folder, card=card)


def clinic_set(n_malignant=40, n_benign=40, seed=0) -> pd.DataFrame:
    """Scores of a clinic's labelled images: malignant ones score higher on the whole."""
    rng = np.random.default_rng(seed)
    labels = np.array([1] * n_malignant + [0] * n_benign)
    probabilities = np.clip(rng.normal(0.25 + 0.35 * labels, 0.15), 0.001, 0.999)
    names = [f"clinic_{index}" for index in range(len(labels))]
    return pd.DataFrame(
        {
            "image_name": names,
            "sha256": [f"{index:064x}" for index in range(len(labels))],
            "label": labels,
            "probability": probabilities,
        }
    )


def test_wilson_interval_never_collapses():
    low, high = wilson_interval(18, 18)
    assert high == 1.0 and 0.80 < low < 0.85
    low, high = wilson_interval(0, 30)
    assert low == 0.0 and 0.10 < high < 0.13
    assert wilson_interval(0, 0) is None


def test_choose_reaches_the_target_sensitivity_with_intervals(tmp_path):
    run = fake_run(tmp_path, [("train_0", "g0", "train", "f" * 64)])
    images = clinic_set()
    point = operating_point.choose(run, images, 0.9, dataset="clinic", tta=True)
    labels, probabilities = images["label"], images["probability"]
    caught = (probabilities[labels == 1] >= point["threshold"]).mean()
    assert caught == point["sensitivity"] >= 0.9
    # The highest such threshold: the next malignant score down would miss the target.
    assert (probabilities[labels == 1] > point["threshold"]).mean() < 0.9
    for name in ("sensitivity", "specificity"):
        low, high = point["intervals"][name]
        assert low < point[name] <= high and high - low > 0.05
    assert point["n_malignant"] == 40 and point["card_threshold"] == 0.061


def test_too_few_cases_are_refused(tmp_path):
    run = fake_run(tmp_path, [("train_0", "g0", "train", "f" * 64)])
    with pytest.raises(ValueError, match="at least 30 malignant and 30 benign.*29 malignant"):
        operating_point.choose(run, clinic_set(n_malignant=29), 0.9, dataset="x", tta=True)


def test_images_the_run_trained_on_are_refused_by_content(tmp_path):
    images = clinic_set()
    # Two of the clinic's images under other names in training, one in validation.
    rows = [
        ("a", "g1", "train", images["sha256"][0]),
        ("b", "g2", "train", images["sha256"][50]),
        ("c", "g3", "val", images["sha256"][3]),
        ("d", "g4", "test", images["sha256"][4]),
    ]
    run = fake_run(tmp_path, rows)
    with pytest.raises(ValueError, match=r"3 of these images.*training \(2\).*validation \(1\)"):
        operating_point.choose(run, images, 0.9, dataset="x", tta=True)


def test_runs_without_split_hashes_are_checked_by_name(tmp_path):
    images = clinic_set()
    run = fake_run(tmp_path, [("clinic_7", "g1", "val", None)])
    overlap = runs.split_overlap(run, images["sha256"], images["image_name"])
    assert overlap == {"by": "image_name", "train": 0, "val": 1, "test": 0}


def test_adopt_show_clear_keep_the_run_folder_untouched(tmp_path):
    run = fake_run(tmp_path, [("train_0", "g0", "train", "f" * 64)])
    models = run.folder.parent
    before = {path.name: path.read_bytes() for path in run.folder.iterdir()}
    assert operating_point.threshold_for(run, models).source == "card"
    point = operating_point.choose(run, clinic_set(), 0.9, dataset="clinic", tta=True)
    operating_point.adopt(point, models)
    local = operating_point.threshold_for(run, models)
    assert local.source == "local" and local.value == point["threshold"]
    assert "from data clinic, 80 images" in local.note
    assert {path.name: path.read_bytes() for path in run.folder.iterdir()} == before
    assert (models / operating_point.OPERATING_POINTS_FILE).is_file()
    assert operating_point.clear(run.run_id, models) is True
    assert operating_point.clear(run.run_id, models) is False
    assert operating_point.threshold_for(run, models).value == 0.061


def test_the_local_state_file_is_ignored_by_git():
    ignored = subprocess.run(
        ["git", "check-ignore", f"models/{operating_point.OPERATING_POINTS_FILE}"],
        cwd=config.REPO_ROOT,
        capture_output=True,
        check=False,
    )
    assert ignored.returncode == 0


def cli(arguments, models_dir) -> subprocess.CompletedProcess:
    return run_cli(arguments, models_dir, models_dir.parent / "cache", check=False)


@pytest.fixture
def unseen_images(tmp_path, shared_data):
    """40 malignant and 40 benign images of the default run's test split (never trained on)."""
    split = pd.read_csv(config.REPO_ROOT / "models" / DEFAULT_RUN / runs.SPLIT_FILE)
    metadata = pd.read_csv(shared_data / "metadata.csv")
    test = metadata[metadata["image_name"].isin(split[split["split"] == "test"]["image_name"])]
    chosen = pd.concat([test[test["target"] == label].head(40) for label in (1, 0)])
    folder = tmp_path / "clinic"
    (folder / "images").mkdir(parents=True)
    for name in chosen["image_name"]:
        shutil.copy(shared_data / "images" / f"{name}.jpg", folder / "images")
    chosen.to_csv(folder / "metadata.csv", index=False)
    return folder


@pytest.mark.slow
def test_cli_adopts_a_threshold_that_predict_then_labels_with(tmp_path, unseen_images):
    models = tmp_path / "models"
    shutil.copytree(config.REPO_ROOT / "models" / DEFAULT_RUN, models / DEFAULT_RUN)
    (models / "active.json").write_text(json.dumps({"run_id": DEFAULT_RUN}))
    data = ["--data", str(unseen_images / "images"), "--csv", str(unseen_images / "metadata.csv")]
    adopted = cli(["operating-point", "adopt", "--model", DEFAULT_RUN, *data], models)
    assert adopted.returncode == 0, adopted.stderr
    assert "local threshold" in adopted.stdout and "80 images (40 malignant" in adopted.stdout
    threshold = operating_point.operating_point(DEFAULT_RUN, models)["threshold"]
    shown = cli(["operating-point", "show", "--model", DEFAULT_RUN], models)
    assert f"{threshold:.4f}" in shown.stdout

    predicted = cli(["predict", "--no-tta", str(unseen_images / "images")], models)
    rows = list(csv.DictReader(io.StringIO(predicted.stdout)))
    assert len(rows) == 80 and {row["threshold_source"] for row in rows} == {"local"}
    for row in rows:
        above = float(row["probability"]) >= float(row["threshold"])
        assert float(row["threshold"]) == pytest.approx(threshold, abs=1e-6)
        assert row["label"] == ("malignant" if above else "benign")

    cleared = cli(["operating-point", "clear", "--model", DEFAULT_RUN], models)
    assert "card threshold 0.061" in cleared.stdout
    assert operating_point.operating_point(DEFAULT_RUN, models) is None


@pytest.mark.slow
def test_cli_refuses_the_bundled_sample_the_default_run_trained_on(tmp_path):
    sample = config.SAMPLE_DIR
    data = ["--data", str(sample / "images"), "--csv", str(sample / "metadata.csv")]
    models = tmp_path / "models"
    shutil.copytree(config.REPO_ROOT / "models" / DEFAULT_RUN, models / DEFAULT_RUN)
    result = cli(["operating-point", "adopt", "--model", DEFAULT_RUN, *data], models)
    assert result.returncode != 0
    assert "training" in result.stderr and "matched by sha256" in result.stderr
    assert not (models / operating_point.OPERATING_POINTS_FILE).exists()


def test_an_evaluation_names_its_overlap_with_the_runs_training():
    record = {
        "metrics": {"n": 30},
        "overlap": {"by": "sha256", "train": 20, "val": 4, "test": 6},
    }
    warning = reports.overlap_warning(record)
    assert warning is not None and warning.startswith("24 of the 30 images were in the run's")
    assert "training (20) or validation (4)" in warning
    assert reports.overlap_warning({**record, "overlap": {"train": 0, "val": 0}}) is None
    assert reports.overlap_warning({**record, "overlap": None}) is None


@pytest.mark.slow
def test_evaluate_warns_that_the_bundled_sample_was_trained_on(tmp_path):
    sample = config.SAMPLE_DIR
    models = tmp_path / "models"
    shutil.copytree(config.REPO_ROOT / "models" / DEFAULT_RUN, models / DEFAULT_RUN)
    data = ["--data", str(sample / "images"), "--csv", str(sample / "metadata.csv")]
    result = cli(["evaluate", "--model", DEFAULT_RUN, "--no-tta", *data], models)
    assert result.returncode == 0, result.stderr
    assert "warning: 254 of the 300 images were in the run's training (200)" in result.stderr
