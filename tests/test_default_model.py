"""The committed default model: its contract, its behaviour, and that its card tells the truth."""

import json

import keras
import numpy as np
import pandas as pd
import pytest

from core import config
from core.analysis.metrics import evaluate
from core.inputs import diagnoses, images
from core.modelling import ood_set
from core.serving.inference import Predictor
from core.storage import runs


@pytest.fixture(scope="module")
def default_run() -> runs.Run:
    run_id = runs.active_run_id(config.REPO_ROOT / "models")
    if run_id is None:
        pytest.skip("no default model is committed in models/")
    return runs.load_run(config.REPO_ROOT / "models" / run_id)


@pytest.fixture(scope="module")
def predictor(default_run) -> Predictor:
    return Predictor(default_run)


def test_card_describes_an_imagenet_mobilenet_v2_with_honest_metrics(default_run):
    card = default_run.card.to_dict()
    assert card["backbone"] == "mobilenet_v2" and card["image_size"] == 224
    assert card["weights"] == "imagenet" and card["config"]["fine_tune_epochs"] > 0
    assert card["weights_file"].endswith("_no_top.h5")
    assert card["target"] == "diagnosis" and card["diagnoses"] == list(diagnoses.DIAGNOSIS_NAMES)
    test = card["metrics"]["test"]
    low, high = test["intervals"]["roc_auc"]
    assert low <= test["roc_auc"] <= high
    assert test["n"] == sum(card["split"]["sizes"]["test"].values())
    assert card["threshold"]["rule"] == "held_out_sources"
    json.dumps(card, allow_nan=False)


def test_model_contract_probability_first_then_diagnoses(default_run):
    model = keras.saving.load_model(default_run.model_path, safe_mode=True)
    images_in = np.random.default_rng(0).uniform(0, 255, (2, 224, 224, 3)).astype("float32")
    malignant, diagnosis = (np.asarray(output) for output in model(images_in))
    assert malignant.shape == (2, 1) and diagnosis.shape == (2, len(diagnoses.DIAGNOSIS_NAMES))
    np.testing.assert_allclose(malignant[:, 0], diagnosis @ diagnoses.malignant_mask(), atol=1e-6)


def test_crossval_record_matches_the_card(default_run):
    crossval = runs.load_crossval(default_run)
    assert crossval is not None and crossval["run_threshold"] == default_run.card.threshold
    aucs = [fold["metrics"]["roc_auc"] for fold in crossval["folds"]]
    assert len(aucs) >= 3 and default_run.card.crossval["worst"]["roc_auc"] == min(aucs)
    for fold in crossval["folds"]:
        assert fold["held_out"] not in fold["train_sources"]


def test_ood_flags_non_dermoscopy_and_passes_the_sample(predictor):
    named = ood_set.non_dermoscopy_images()
    others = np.stack([images.resize_for_model(image, 224) for _, image in named])
    _, other_scores = predictor.predict_arrays(others, tta=False)
    paths = sorted((config.SAMPLE_DIR / "images").glob("*.jpg"))
    sample = np.stack([images.load_image_file(path, 224) for path in paths])
    _, sample_scores = predictor.predict_arrays(sample, tta=False)
    threshold = predictor.ood.threshold
    assert np.mean(other_scores > threshold) >= 0.95
    assert np.mean(sample_scores > threshold) <= 0.03


def test_probabilities_are_flip_stable_and_labels_follow_the_threshold(predictor):
    paths = sorted((config.SAMPLE_DIR / "images").glob("*.jpg"))[:16]
    arrays = np.stack([images.load_image_file(path, 224) for path in paths])
    plain, _ = predictor.predict_arrays(arrays, tta=False)
    mirrored, _ = predictor.predict_arrays(arrays[:, :, ::-1].copy(), tta=False)
    assert np.all((plain >= 0) & (plain <= 1))
    # Trained with flips as augmentation: a mirror image is the same lesion.
    assert np.median(np.abs(plain - mirrored)) < 0.05
    result = predictor.predict_bytes(paths[0].name, paths[0].read_bytes())
    assert result.label == ("malignant" if result.probability >= predictor.threshold else "benign")
    assert result.diagnoses[0][1] >= result.diagnoses[-1][1]


def test_test_split_metrics_reproduce_the_card(default_run, predictor, shared_data):
    """Scoring the recorded test split again gives the card's figures."""
    split = pd.read_csv(default_run.folder / "split.csv")
    metadata = pd.read_csv(shared_data / "metadata.csv").set_index("image_name")
    names = split.loc[split["split"] == "test", "image_name"]
    items = [(name, shared_data / "images" / f"{name}.jpg") for name in names]
    probabilities = np.array([p.probability for p in predictor.predict_many(items)])
    labels = metadata.loc[names, "target"].to_numpy()
    metrics = evaluate(labels, probabilities, predictor.threshold, n_bootstrap=0)
    card = default_run.card.test_metrics
    assert metrics["roc_auc"] == pytest.approx(card["roc_auc"], abs=2e-3)
    assert metrics["sensitivity"] == pytest.approx(card["sensitivity"], abs=0.01)
    assert metrics["specificity"] == pytest.approx(card["specificity"], abs=0.01)
