"""The out-of-distribution score flags images unlike the training features."""

import dataclasses
import json

import numpy as np
import pytest

from core.modelling.ood import OOD_FILE, evaluate_detector, fit_ood, load_ood


def low_rank_features(rng: np.random.Generator, count: int, basis: np.ndarray) -> np.ndarray:
    """Positive features near a low-dimensional subspace, as pooled backbone features are."""
    weights = 2 * rng.normal(size=(count, len(basis)))
    return 100 + weights @ basis + rng.normal(scale=0.3, size=(count, basis.shape[1]))


@pytest.fixture
def features():
    rng = np.random.default_rng(0)
    basis = rng.normal(size=(8, 64))
    return {
        "train": low_rank_features(rng, 600, basis),
        "heldout": low_rank_features(rng, 300, basis),
        "test": low_rank_features(rng, 300, basis),
        "rng": rng,
    }


def test_held_out_pass_and_shifted_features_are_flagged(features):
    model = fit_ood(features["train"], features["heldout"], components=8)
    assert np.mean(model.score(features["heldout"]) > model.threshold) <= 0.01
    assert np.mean(model.score(features["test"]) > model.threshold) <= 0.03
    # Half the features raised: a pattern no training image has.
    shifted = features["test"][:50] + np.repeat([6.0, 0.0], 32)
    assert np.all(model.score(shifted) > model.threshold)


def test_features_off_the_principal_subspace_are_flagged(features):
    """Typical inside the subspace, unusual only outside it: what the first version missed."""
    model = fit_ood(features["train"], features["heldout"], components=8)
    rng = features["rng"]
    off_subspace = features["test"][:50] + rng.normal(scale=1.5, size=(50, 64))
    assert np.all(model.score(off_subspace) > model.threshold)
    # Without the residual term they look like the held-out images.
    inside_only = dataclasses.replace(model, residual_precision=0.0)
    typical = np.quantile(inside_only.score(features["heldout"]), 0.99)
    assert np.mean(inside_only.score(off_subspace) > typical) < 0.1


def test_all_zero_features_are_flagged_not_an_error(features):
    model = fit_ood(features["train"], features["heldout"], components=8)
    assert model.score(np.zeros((1, 64)))[0] > model.threshold


def test_save_and_load_give_identical_scores_and_method(features, tmp_path):
    model = fit_ood(features["train"], features["heldout"], components=8)
    model.save(tmp_path)
    restored = load_ood(tmp_path)
    assert restored is not None
    np.testing.assert_array_equal(restored.score(features["test"]), model.score(features["test"]))
    assert restored.threshold == model.threshold
    assert restored.method == model.method
    assert "8 components + residual" in restored.method


def test_old_format_file_loads_and_scores_as_before(tmp_path):
    rng = np.random.default_rng(1)
    mean, components = rng.normal(size=16), np.linalg.qr(rng.normal(size=(16, 4)))[0].T
    precision = np.diag([1.0, 2.0, 3.0, 4.0])
    np.savez(
        tmp_path / OOD_FILE,
        mean=mean,
        components=components,
        precision=precision,
        threshold=np.float64(7.5),
    )
    features = rng.normal(size=(20, 16))
    projected = (features - mean) @ components.T
    expected = np.sqrt(np.einsum("ij,jk,ik->i", projected, precision, projected))
    model = load_ood(tmp_path)
    assert model is not None
    np.testing.assert_allclose(model.score(features), expected)
    assert model.threshold == 7.5
    assert model.method == "Mahalanobis distance, PCA-4"


def test_missing_file_loads_as_none(tmp_path):
    assert load_ood(tmp_path) is None


def test_too_few_images_is_a_clear_error():
    with pytest.raises(ValueError, match="more than 64 training images"):
        fit_ood(np.ones((64, 128)), np.ones((5, 128)))


def test_bad_input_is_a_clear_error(features):
    with pytest.raises(ValueError, match="as wide|columns"):
        fit_ood(features["train"], features["heldout"][:, :10], components=8)
    with pytest.raises(ValueError, match="finite"):
        fit_ood(np.full((100, 64), np.nan), features["heldout"], components=8)
    model = fit_ood(features["train"], features["heldout"], components=8)
    with pytest.raises(ValueError, match=r"shape \(N, 64\)"):
        model.score(np.zeros((3, 10)))


def test_evaluate_detector_reports_json_ready_shares_and_auroc(features):
    model = fit_ood(features["train"], features["heldout"], components=8)
    other = features["test"][:40] + np.repeat([6.0, 0.0], 32)
    report = evaluate_detector(model, features["test"], other)
    assert json.loads(json.dumps(report)) == report
    assert report["n_dermoscopy"] == 300 and report["n_non_dermoscopy"] == 40
    assert report["non_dermoscopy_flagged"] == 1.0
    assert report["dermoscopy_flagged"] <= 0.03
    assert report["auroc"] > 0.99
    assert set(report) == {
        "dermoscopy_flagged",
        "non_dermoscopy_flagged",
        "auroc",
        "n_dermoscopy",
        "n_non_dermoscopy",
    }


def test_pixel_detail_separates_blank_and_smooth_from_textured_images():
    rng = np.random.default_rng(0)
    blank = np.full((1, 64, 64, 3), 255, dtype=np.uint8)
    gradient = np.broadcast_to(np.linspace(0, 255, 64, dtype=np.uint8)[None, :, None], (64, 64, 3))
    textured = rng.integers(90, 160, size=(1, 64, 64, 3), dtype=np.uint8)
    from core.serving.inference import pixel_detail

    blank_detail, gradient_detail, textured_detail = (
        float(pixel_detail(np.asarray(images, dtype=np.float32))[0])
        for images in (blank, gradient[None], textured)
    )
    assert blank_detail < gradient_detail < textured_detail


def test_images_outside_the_detail_range_are_flagged_whatever_their_features(features, tmp_path):
    heldout = features["heldout"]
    details = np.random.default_rng(1).normal(1.8, 0.3, len(heldout))
    model = fit_ood(features["train"], heldout, components=8, heldout_details=details)
    low, high = model.detail_range
    assert low < 1.8 < high and "pixel detail" in model.method
    typical = features["test"][:3]
    inside = model.score(typical, np.full(3, 1.8))
    np.testing.assert_allclose(inside, model.score(typical))
    outside = model.score(typical, np.array([low - 3.0, high + 0.5, -6.9]))
    assert np.all(outside > model.threshold)
    model.save(tmp_path)
    np.testing.assert_allclose(
        load_ood(tmp_path).score(typical, np.full(3, -6.9)), model.score(typical, np.full(3, -6.9))
    )
    assert load_ood(tmp_path).detail_range == model.detail_range
