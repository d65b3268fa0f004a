"""Integration tests on the bundled real sample: train, evaluate, predict, activate.

Tiny settings (MobileNetV3Small at 64 px, random weights, one epoch per phase) keep each
training to seconds; they test the plumbing and the contracts, not the model's quality.
"""

import csv
import io
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from app_fixtures import tiny_train_config

from core import config
from core.inputs import diagnoses
from core.inputs.diagnoses import MALIGNANT_NAMES
from core.progress import Cancelled
from core.serving.inference import Predictor
from core.storage import runs
from core.storage.prediction_csv import PREDICT_COLUMNS
from core.train.train_config import TrainConfig
from core.train.training import train

SAMPLE_IMAGES = config.SAMPLE_DIR / "images"
SAMPLE_CSV = config.SAMPLE_DIR / "metadata.csv"
TINY_ARGUMENTS = [
    "--data",
    str(SAMPLE_IMAGES),
    "--csv",
    str(SAMPLE_CSV),
    "--backbone",
    "mobilenet_v3_small",
    "--image-size",
    "64",
    "--weights",
    "none",
    "--epochs",
    "1",
    "--fine-tune-epochs",
    "1",
]


def tiny_config(**changes) -> TrainConfig:
    """The app tests' tiny run, with one fine-tune epoch so both phases are exercised."""
    return tiny_train_config(**{"fine_tune_epochs": 1, **changes})


def run_cli(arguments, models_dir, cache_dir, check=True) -> subprocess.CompletedProcess:
    environment = {
        **os.environ,
        "DERMO_MODELS_DIR": str(models_dir),
        "DERMO_CACHE_DIR": str(cache_dir),
        "TF_CPP_MIN_LOG_LEVEL": "3",
    }
    result = subprocess.run(
        [sys.executable, "-m", "core", *arguments],
        cwd=config.REPO_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"exit {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny run trained through the command line, active in its own models folder."""
    models_dir = tmp_path_factory.mktemp("models")
    cache_dir = tmp_path_factory.mktemp("cache")
    result = run_cli(["train", *TINY_ARGUMENTS, "--activate"], models_dir, cache_dir)
    run_id = runs.active_run_id(models_dir)
    return {"models": models_dir, "cache": cache_dir, "run_id": run_id, "output": result.stdout}


def test_train_prints_run_and_test_metrics(trained):
    assert trained["run_id"] in trained["output"]
    assert "roc_auc" in trained["output"] and "sensitivity" in trained["output"]


def test_run_folder_is_complete(trained):
    folder = trained["models"] / trained["run_id"]
    # crossval.json comes only with the held-out-sources threshold rule, and fine-tuned
    # folds only when they are run and merged afterwards.
    for name in set(runs.RUN_FILES) - {runs.CROSSVAL_FILE, runs.CROSSVAL_FINE_TUNED_FILE}:
        assert (folder / name).is_file(), name
    assert not [path for path in trained["models"].iterdir() if path.name.endswith(".partial")]
    card = json.loads((folder / "card.json").read_text())
    assert card["image_size"] == 64 and card["backbone"] == "mobilenet_v3_small"
    assert card["split"]["seed"] == 42 and card["calibration"]["applied"] == "card"
    assert 0 < card["threshold"]["value"] <= 1
    sizes = card["split"]["sizes"]
    assert sum(sum(counts.values()) for counts in sizes.values()) == card["data"]["n_images"]
    for key in ("roc_auc", "sensitivity", "specificity", "intervals", "subgroups"):
        assert key in card["metrics"]["test"]


def test_model_contract_raw_rgb_in_probability_out(trained):
    """Loads with safe_mode and no custom objects; (N, 64, 64, 3) 0-255 in, (N, 1) first out.

    The second output holds the diagnoses, whose malignant ones sum to the first.
    """
    model = keras.saving.load_model(trained["models"] / trained["run_id"] / "model.keras")
    images = np.random.default_rng(0).uniform(0, 255, (3, 64, 64, 3)).astype("float32")
    malignant, diagnosis = (np.asarray(output) for output in model(images))
    assert malignant.shape == (3, 1)
    assert np.all((malignant >= 0) & (malignant <= 1))
    assert diagnosis.shape == (3, len(diagnoses.DIAGNOSIS_NAMES))
    np.testing.assert_allclose(diagnosis.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(malignant[:, 0], diagnosis @ diagnoses.malignant_mask(), atol=1e-6)
    card = json.loads((trained["models"] / trained["run_id"] / "card.json").read_text())
    assert card["diagnoses"] == list(diagnoses.DIAGNOSIS_NAMES) and card["target"] == "diagnosis"


def test_predictions_rank_the_diagnoses(trained):
    predictor = Predictor(runs.load_run(trained["models"] / trained["run_id"]))
    prediction = predictor.predict_bytes("one.jpg", min(SAMPLE_IMAGES.iterdir()).read_bytes())
    names = [name for name, _ in prediction.diagnoses]
    chances = [chance for _, chance in prediction.diagnoses]
    assert sorted(names) == sorted(diagnoses.DIAGNOSIS_NAMES)
    assert chances == sorted(chances, reverse=True) and sum(chances) == pytest.approx(1, abs=1e-4)


def test_predictor_applies_card_calibration(trained):
    run = runs.load_run(trained["models"] / trained["run_id"])
    predictor = Predictor(run)
    images = np.random.default_rng(1).integers(0, 256, (4, 64, 64, 3), dtype=np.uint8)
    raw = np.asarray(predictor.model(images.astype("float32"))[0])[:, 0]
    probabilities, scores = predictor.predict_arrays(images, tta=False)
    np.testing.assert_allclose(probabilities, predictor.calibration.apply(raw), atol=1e-5)
    assert scores is not None and scores.shape == (4,)


def test_predict_cli_writes_one_row_per_image_with_errors_inline(trained, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    names = sorted(path.name for path in SAMPLE_IMAGES.iterdir())[:3]
    for name in names:
        (folder / name).write_bytes((SAMPLE_IMAGES / name).read_bytes())
    (folder / "broken.jpg").write_bytes(b"not an image at all")
    result = run_cli(["predict", "--no-tta", str(folder)], trained["models"], trained["cache"])
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    # New columns come after the original six, so older readers keep working; then one
    # probability per diagnosis class.
    assert PREDICT_COLUMNS[:6] == ("file", "probability", "label", "threshold", "model", "error")
    assert PREDICT_COLUMNS[6:] == ("ood_score", "out_of_distribution", "threshold_source")
    dx_columns = tuple(rows[0])[len(PREDICT_COLUMNS) :]
    assert tuple(rows[0])[: len(PREDICT_COLUMNS)] == PREDICT_COLUMNS
    assert len(dx_columns) == 10 and dx_columns[:3] == (
        "dx_melanoma",
        "dx_nevus",
        "dx_basal_cell_carcinoma",
    )
    assert "dx_actinic_keratosis_intraepithelial_carcinoma" in dx_columns
    assert [os.path.basename(row["file"]) for row in rows] == sorted([*names, "broken.jpg"])
    broken = next(row for row in rows if row["file"].endswith("broken.jpg"))
    assert broken["error"] and broken["probability"] == "" and broken["label"] == ""
    good = [row for row in rows if not row["error"]]
    assert len(good) == 3
    assert {row["threshold_source"] for row in rows} == {"card"}
    assert all(broken[column] == "" for column in dx_columns)
    for row in good:
        # The diagnosis distribution agrees with the calibrated malignant probability.
        classes = {column: float(row[column]) for column in dx_columns}
        malignant = sum(classes[diagnoses.column_name(name)] for name in MALIGNANT_NAMES)
        assert malignant == pytest.approx(float(row["probability"]), abs=1e-5)
        assert sum(classes.values()) == pytest.approx(1.0, abs=1e-5)
    for row in good:
        expected = (
            "malignant" if float(row["probability"]) >= float(row["threshold"]) else "benign"
        )
        assert row["label"] == expected and row["model"] == trained["run_id"]
        assert float(row["ood_score"]) >= 0 and row["out_of_distribution"] in ("true", "false")
    assert broken["ood_score"] == "" and broken["out_of_distribution"] == ""


def test_predict_cli_missing_model_is_an_error(tmp_path):
    result = run_cli(["predict", str(SAMPLE_IMAGES)], tmp_path, tmp_path, check=False)
    assert result.returncode != 0
    assert "no trained model" in result.stderr


def test_evaluate_cli_json_uses_card_threshold(trained, tmp_path):
    output = tmp_path / "metrics.json"
    arguments = [
        "evaluate",
        "--data",
        str(SAMPLE_IMAGES),
        "--csv",
        str(SAMPLE_CSV),
        "--json",
        str(output),
    ]
    run_cli(arguments, trained["models"], trained["cache"])
    metrics = json.loads(output.read_text())
    card = json.loads((trained["models"] / trained["run_id"] / "card.json").read_text())
    assert metrics["n"] == 300
    assert metrics["threshold"] == pytest.approx(card["threshold"]["value"])
    for key in ("roc_auc", "sensitivity", "specificity", "intervals", "subgroups"):
        assert key in metrics


def test_runs_and_activate_cli(trained):
    listing = run_cli(["runs"], trained["models"], trained["cache"]).stdout
    assert f"* {trained['run_id']}" in listing
    result = run_cli(["activate", "no-such-run"], trained["models"], trained["cache"], check=False)
    assert result.returncode == 2 and "no run" in result.stderr
    assert runs.active_run_id(trained["models"]) == trained["run_id"]


def test_features_are_cached_between_runs(trained, tmp_path, monkeypatch):
    """Same data, backbone, size and weights: the head phase reuses the cached features."""
    monkeypatch.setattr(config, "CACHE_DIR", tmp_path / "cache")
    messages = []
    # The validation threshold: a source cross-validation would fill the cache first.
    settings = tiny_config(
        fine_tune_epochs=0, weights="none", seed=3, threshold_rule="sensitivity"
    )
    for _ in range(2):
        train(
            settings,
            report=lambda progress: messages.append(progress.message),
            models_directory=tmp_path / "models",
        )
    ready = [message for message in messages if message.startswith("Features ready")]
    assert ready[0].startswith("Features ready (0 from the cache)")
    assert ready[-1] != ready[0] and "(0 from" not in ready[-1]


def test_cancelled_training_leaves_no_run_and_keeps_active(trained, tmp_path, monkeypatch):
    monkeypatch.setattr(config, "CACHE_DIR", tmp_path / "cache")
    before = sorted(path.name for path in trained["models"].iterdir())
    with pytest.raises(Cancelled):
        train(
            tiny_config(),
            should_stop=lambda: True,
            models_directory=trained["models"],
            activate=True,
        )
    assert sorted(path.name for path in trained["models"].iterdir()) == before
    assert runs.active_run_id(trained["models"]) == trained["run_id"]


def test_bad_data_fails_before_anything_is_written(tmp_path):
    (tmp_path / "data" / "benign").mkdir(parents=True)
    for index in range(12):
        (tmp_path / "data" / "benign" / f"{index}.jpg").write_bytes(
            next(SAMPLE_IMAGES.iterdir()).read_bytes()
        )
    with pytest.raises(ValueError, match="malignant"):
        train(
            tiny_config(data_dir=str(tmp_path / "data"), csv=None),
            models_directory=tmp_path / "models",
        )
    assert not (tmp_path / "models").exists() or not any((tmp_path / "models").iterdir())


@pytest.mark.slow
def test_mirrored_strategy_runs_with_one_cpu_replica(tmp_path, monkeypatch):
    monkeypatch.setattr(config, "CACHE_DIR", tmp_path / "cache")
    result = train(tiny_config(strategy="mirrored"), models_directory=tmp_path / "models")
    assert runs.load_run(tmp_path / "models" / result.run_id).card.config["strategy"] == (
        "mirrored"
    )


def test_refit_ood_gives_a_run_the_current_detector(trained):
    folder = trained["models"] / trained["run_id"]
    before = json.loads((folder / "card.json").read_text())
    result = run_cli(["refit-ood", trained["run_id"]], trained["models"], trained["cache"])
    assert "non-dermoscopy images" in result.stdout
    card = json.loads((folder / "card.json").read_text())
    assert card["threshold"] == before["threshold"] and card["metrics"] == before["metrics"]
    check = card["ood"]["non_dermoscopy_check"]
    assert check["n_non_dermoscopy"] > 100 and 0 <= check["non_dermoscopy_flagged"] <= 1
    assert runs.load_run(folder) and Predictor(runs.load_run(folder)).ood.detail_range


def test_one_forward_call_holds_at_most_views_per_call_views():
    from core.serving.inference import VIEWS_PER_CALL, images_per_call

    assert images_per_call(True, "dihedral") * 8 <= VIEWS_PER_CALL
    assert images_per_call(True, "flips") * 3 <= VIEWS_PER_CALL
    assert images_per_call(False, "dihedral") == VIEWS_PER_CALL
    assert images_per_call(True, "dihedral", members=2) * 8 * 2 <= VIEWS_PER_CALL
