"""Model construction: an ImageNet backbone with the preprocessing and a binary head inside.

The saved model takes raw RGB values 0-255 of shape (N, S, S, 3) and returns the malignant
probability (N, 1) before calibration. Only built-in layers are used, so
`keras.saving.load_model(path)` works with `safe_mode=True` and no custom objects.
"""

from dataclasses import dataclass
from pathlib import Path

import keras
from keras import layers

BACKBONE_LAYER = "backbone"
POOLED_LAYER = "pooled"
HEAD_DROPOUT_LAYER = "head_dropout"
HEAD_LAYER = "malignant_probability"


@dataclass(frozen=True)
class Backbone:
    """How to build one keras.applications backbone and scale its input."""

    constructor: str
    # MobileNetV2 expects inputs in [-1, 1]; MobileNetV3 and EfficientNet rescale inside.
    rescale_to_unit_range: bool
    feature_size: int


BACKBONES = {
    "mobilenet_v2": Backbone("MobileNetV2", rescale_to_unit_range=True, feature_size=1280),
    "mobilenet_v3_small": Backbone(
        "MobileNetV3Small", rescale_to_unit_range=False, feature_size=576
    ),
    "efficientnet_b0": Backbone("EfficientNetB0", rescale_to_unit_range=False, feature_size=1280),
}


def weights_argument(weights: str) -> str | None:
    """Map the user-facing weights choice to keras.applications' `weights` argument."""
    if weights == "imagenet":
        return "imagenet"
    if weights == "none":
        return None
    if not Path(weights).is_file():
        raise ValueError(
            f"weights must be 'imagenet', 'none' or an existing file, got {weights!r}"
        )
    return str(weights)


def build_backbone(name: str, image_size: int, weights: str) -> keras.Model:
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {sorted(BACKBONES)}")
    if image_size < 32:
        raise ValueError(f"image_size must be at least 32, got {image_size}")
    constructor = getattr(keras.applications, BACKBONES[name].constructor)
    backbone = constructor(
        include_top=False,
        weights=weights_argument(weights),
        input_shape=(image_size, image_size, 3),
    )
    backbone.name = BACKBONE_LAYER
    return backbone


def build_model(
    backbone_name: str, image_size: int, weights: str = "imagenet", dropout: float = 0.3
) -> keras.Model:
    """Raw RGB in, malignant probability out, with the backbone nested as one layer."""
    backbone = build_backbone(backbone_name, image_size, weights)
    inputs = keras.Input(shape=(image_size, image_size, 3), name="rgb_0_255")
    x = inputs
    if BACKBONES[backbone_name].rescale_to_unit_range:
        x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="scale_to_unit_range")(x)
    # training=False keeps BatchNorm statistics frozen, also while the top layers fine-tune.
    x = backbone(x, training=False)
    x = layers.GlobalAveragePooling2D(name=POOLED_LAYER)(x)
    x = layers.Dropout(dropout, name=HEAD_DROPOUT_LAYER)(x)
    outputs = layers.Dense(1, activation="sigmoid", name=HEAD_LAYER)(x)
    return keras.Model(inputs, outputs, name=f"dermoscopy_{backbone_name}")


def build_feature_extractor(model: keras.Model) -> keras.Model:
    """The frozen part of `model`: raw RGB in, pooled backbone features out."""
    return keras.Model(model.input, model.get_layer(POOLED_LAYER).output)


def build_head(model: keras.Model) -> keras.Model:
    """The head of `model` as a model on pooled features, sharing the same layer objects.

    Training it on cached features trains the full model's head in place.
    """
    feature_size = model.get_layer(POOLED_LAYER).output.shape[-1]
    features = keras.Input(shape=(feature_size,), name="pooled_features")
    x = model.get_layer(HEAD_DROPOUT_LAYER)(features)
    outputs = model.get_layer(HEAD_LAYER)(x)
    return keras.Model(features, outputs, name="head")


def set_fine_tune_layers(model: keras.Model, trainable_layers: int) -> None:
    """Unfreeze the top `trainable_layers` layers of the backbone, BatchNorm excepted."""
    backbone = model.get_layer(BACKBONE_LAYER)
    backbone.trainable = True
    cutoff = len(backbone.layers) - trainable_layers
    for index, layer in enumerate(backbone.layers):
        # Batch statistics of a small dermoscopy set would wreck ImageNet's; keep BN frozen.
        is_batch_norm = isinstance(layer, layers.BatchNormalization)
        layer.trainable = index >= cutoff and not is_batch_norm
