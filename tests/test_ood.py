"""The out-of-distribution score flags images unlike the training features."""

import numpy as np
import pytest

from core.ood import fit_ood, load_ood


def test_held_out_pass_and_shifted_features_are_flagged(tmp_path):
    rng = np.random.default_rng(0)
    train = rng.normal(size=(600, 64))
    heldout = rng.normal(size=(300, 64))
    shifted = rng.normal(loc=3.0, size=(50, 64))
    model = fit_ood(train, heldout, dimensions=16)
    assert np.mean(model.score(heldout) > model.threshold) <= 0.01
    assert np.all(model.score(shifted) > model.threshold)
    model.save(tmp_path)
    restored = load_ood(tmp_path)
    np.testing.assert_allclose(restored.score(shifted), model.score(shifted))


def test_too_few_images_is_a_clear_error():
    with pytest.raises(ValueError, match="more than 32"):
        fit_ood(np.zeros((10, 64)), np.zeros((5, 64)))
