"""Model construction: the preprocessing inside, the shared head, fine-tune layers, saving."""

import keras
import numpy as np
import pytest
from keras import layers

from core.modelling.backbones import BACKBONE_NAMES
from core.modelling.model import (
    BACKBONE_LAYER,
    BACKBONES,
    build_head,
    build_model,
    set_fine_tune_layers,
)


@pytest.fixture(scope="module")
def tiny_model():
    return build_model("mobilenet_v3_small", 64, weights="none")


def test_raw_rgb_in_probability_out(tiny_model):
    images = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    output = np.asarray(tiny_model(images))
    assert output.shape == (2, 1) and np.all((output > 0) & (output < 1))


def test_save_and_load_round_trip_gives_identical_predictions(tiny_model, tmp_path):
    images = np.random.default_rng(1).uniform(0, 255, (3, 64, 64, 3)).astype("float32")
    tiny_model.save(tmp_path / "model.keras")
    restored = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True)
    np.testing.assert_array_equal(np.asarray(restored(images)), np.asarray(tiny_model(images)))


def test_mobilenet_v2_scales_inputs_to_unit_range():
    model = build_model("mobilenet_v2", 32, weights="none")
    rescaling = model.get_layer("scale_to_unit_range")
    assert np.asarray(rescaling(np.array([[0.0, 255.0]]))).tolist() == [[-1.0, 1.0]]


def test_head_shares_layers_with_the_full_model(tiny_model):
    head = build_head(tiny_model)
    dense = tiny_model.get_layer("malignant_probability")
    assert head.get_layer("malignant_probability") is dense


def test_fine_tune_unfreezes_only_the_top_layers_and_never_batch_norm():
    model = build_model("mobilenet_v3_small", 64, weights="none")
    set_fine_tune_layers(model, 20)
    backbone = model.get_layer(BACKBONE_LAYER)
    top, rest = backbone.layers[-20:], backbone.layers[:-20]
    assert not any(layer.trainable for layer in rest)
    assert all(layer.trainable != isinstance(layer, layers.BatchNormalization) for layer in top)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (("resnet", 64, "none"), "unknown backbone"),
        (("mobilenet_v2", 16, "none"), "at least 32"),
        (("mobilenet_v2", 64, "/no/such/weights.h5"), "weights must be"),
    ],
)
def test_bad_arguments_are_value_errors(arguments, message):
    with pytest.raises(ValueError, match=message):
        build_model(*arguments)


def test_every_backbone_that_can_be_chosen_can_be_built():
    assert tuple(BACKBONES) == BACKBONE_NAMES
