"""Grad-CAM over the nested backbone, on small models with random weights (fast)."""

import keras
import numpy as np
import pytest

from core.modelling.model import BACKBONE_LAYER, HEAD_LAYER, build_model
from core.serving import gradcam

IMAGE_SIZE = 64


@pytest.fixture(scope="module")
def model() -> keras.Model:
    keras.utils.set_random_seed(0)
    return build_model("mobilenet_v3_small", IMAGE_SIZE, weights="none")


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)


def test_heatmap_has_the_image_size_and_lies_in_unit_range(model, image):
    heatmap = gradcam.grad_cam(model, image)
    assert heatmap.shape == (IMAGE_SIZE, IMAGE_SIZE)
    assert heatmap.dtype == np.float32
    assert heatmap.min() >= 0.0 and heatmap.max() <= 1.0


def test_heatmap_equals_the_class_activation_map_of_a_linear_head(model, image):
    # With global average pooling and one dense unit, the mean gradient of the logit is the
    # unit's weight over the map's area, so Grad-CAM must equal ReLU(sum_c w_c A_c), rescaled.
    feature_map = model.get_layer(BACKBONE_LAYER)(image[None].astype("float32"))[0].numpy()
    weights = model.get_layer(HEAD_LAYER).kernel.numpy()[:, 0]
    expected = np.maximum(feature_map @ weights, 0)
    if expected.max() > 0:
        expected = expected / expected.max()
    resized = gradcam.resize_heatmap(expected, IMAGE_SIZE, IMAGE_SIZE)
    np.testing.assert_allclose(gradcam.grad_cam(model, image), resized, atol=1e-4)


def test_benign_direction_shows_the_opposite_evidence(model, image):
    feature_map = model.get_layer(BACKBONE_LAYER)(image[None].astype("float32"))[0].numpy()
    weights = model.get_layer(HEAD_LAYER).kernel.numpy()[:, 0]
    against = np.maximum(-(feature_map @ weights), 0)
    benign = gradcam.grad_cam(model, image, toward="benign")
    if against.max() > 0:
        expected = gradcam.resize_heatmap(against / against.max(), IMAGE_SIZE, IMAGE_SIZE)
        np.testing.assert_allclose(benign, expected, atol=1e-4)
    else:
        assert not benign.any()


def test_layers_before_the_backbone_are_applied():
    # MobileNetV2 rescales to [-1, 1] in a layer before the backbone.
    keras.utils.set_random_seed(1)
    model = build_model("mobilenet_v2", 32, weights="none")
    image = np.full((32, 32, 3), 200, dtype=np.uint8)
    assert gradcam.grad_cam(model, image).shape == (32, 32)


def test_bad_arguments_are_refused(model, image):
    with pytest.raises(ValueError, match="toward"):
        gradcam.grad_cam(model, image, toward="melanoma")
    with pytest.raises(ValueError, match="shape"):
        gradcam.grad_cam(model, image[..., 0])
    plain = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten()])
    with pytest.raises(ValueError, match="backbone"):
        gradcam.grad_cam(plain, np.zeros((8, 8, 3), np.uint8))


def test_overlay_blends_at_the_image_size():
    image = np.full((30, 40, 3), 100, dtype=np.uint8)
    heatmap = np.linspace(0, 1, 6, dtype=np.float32).reshape(2, 3)
    blended = gradcam.overlay(image, heatmap, alpha=0.5)
    assert blended.shape == image.shape and blended.dtype == np.uint8
    np.testing.assert_array_equal(gradcam.overlay(image, heatmap, alpha=0.0), image)
    with pytest.raises(ValueError, match="uint8"):
        gradcam.overlay(image.astype(np.float32), heatmap)
    with pytest.raises(ValueError, match="alpha"):
        gradcam.overlay(image, heatmap, alpha=2)


def test_colours_run_from_blue_to_red():
    low, high = gradcam.colorize(np.array([0.0, 1.0]))
    assert low[2] > low[0] and high[0] > high[2]


def test_overlay_leaves_weak_heat_untouched_and_blends_the_peak_at_alpha():
    image = np.full((2, 2, 3), 100, dtype=np.uint8)
    heatmap = np.array([[0.0, gradcam.HEAT_FLOOR], [0.6, 1.0]], dtype=np.float32)
    blended = gradcam.overlay(image, heatmap, alpha=0.5).astype(np.int64)
    np.testing.assert_array_equal(blended[0], image[0])
    middle_colour, peak_colour = gradcam.colorize(np.array([0.6, 1.0]))
    # Halfway from the floor to the peak, the opacity is half of alpha.
    np.testing.assert_allclose(blended[1, 0], 0.75 * 100 + 0.25 * middle_colour, atol=1)
    np.testing.assert_allclose(blended[1, 1], 0.5 * 100 + 0.5 * peak_colour, atol=1)


def test_the_colour_scale_is_part_of_the_picture_and_as_wide():
    from core.serving import predict_service

    picture = np.zeros((384, 512, 3), dtype=np.uint8)  # a 640x480 image at display size
    shown = predict_service.with_colour_scale(picture)
    assert shown.shape[1] == 512 and shown.dtype == np.uint8
    assert (shown[:384] == picture).all()
    # The last row runs from blue (no influence) to red (the most).
    bottom = shown[-1].astype(int)
    assert bottom[0, 2] > bottom[0, 0] and bottom[-1, 0] > bottom[-1, 2]
