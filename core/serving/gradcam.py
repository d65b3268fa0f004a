"""Grad-CAM heat maps: which regions of an image moved the model's malignant score.

Adapted from the keras.io Grad-CAM example (fchollet) to our model, whose backbone is one
nested layer: input -> [rescaling] -> "backbone" -> "pooled" -> "head_dropout" ->
"malignant_probability". The backbone's output is its last convolutional feature map, so the
map is computed on it: the gradient of the head's logit with respect to each feature channel,
averaged over space, weights the channels; their ReLU'd sum is the heat map.

An ensemble's map is the mean of its members' maps, each scaled to its own peak first, so
that every member counts alike whatever the size of its gradients.
"""

import keras
import numpy as np
import tensorflow as tf
from PIL import Image

from core.inputs.labels import BENIGN, MALIGNANT
from core.modelling.model import (
    BACKBONE_LAYER,
    DIAGNOSIS_LAYER,
    HEAD_DROPOUT_LAYER,
    HEAD_LAYER,
    POOLED_LAYER,
    ensemble_members,
    has_diagnoses,
)

TOWARD_CLASSES = (MALIGNANT, BENIGN)
# Heat below this share of the peak is left off the overlay: it marks no particular region.
HEAT_FLOOR = 0.2


def _layers_before_backbone(model: keras.Model) -> list[keras.layers.Layer]:
    names = [layer.name for layer in model.layers]
    if BACKBONE_LAYER not in names:
        raise ValueError(f"model {model.name!r} has no nested layer named {BACKBONE_LAYER!r}")
    before = model.layers[: names.index(BACKBONE_LAYER)]
    return [layer for layer in before if not isinstance(layer, keras.layers.InputLayer)]


def _logit(model: keras.Model, feature_map: tf.Tensor) -> tf.Tensor:
    """The malignant score before the sigmoid: a saturated probability has no gradient.

    A diagnosis model's malignant probability is a sum of softmax outputs; its logit is the
    log-odds of the malignant classes against the others, from the class logits.
    """
    pooled = model.get_layer(POOLED_LAYER)(feature_map)
    dropped = model.get_layer(HEAD_DROPOUT_LAYER)(pooled, training=False)
    if not has_diagnoses(model):
        dense = model.get_layer(HEAD_LAYER)
        return tf.matmul(dropped, dense.kernel) + dense.bias
    classes = model.get_layer(DIAGNOSIS_LAYER)
    class_logits = tf.matmul(dropped, classes.kernel) + classes.bias
    malignant = tf.cast(model.get_layer(HEAD_LAYER).kernel[:, 0] > 0.5, tf.bool)
    negative_infinity = tf.fill(tf.shape(class_logits), -np.inf)
    above = tf.reduce_logsumexp(tf.where(malignant, class_logits, negative_infinity), axis=-1)
    below = tf.reduce_logsumexp(tf.where(malignant, negative_infinity, class_logits), axis=-1)
    return (above - below)[:, None]


def grad_cam(model: keras.Model, image: np.ndarray, toward: str = "malignant") -> np.ndarray:
    """Heat map in [0, 1] of the image's size (H, W) for a uint8 model input (S, S, 3).

    `toward="benign"` shows the evidence against malignancy instead (the negated logit).
    """
    if toward not in TOWARD_CLASSES:
        raise ValueError(f"toward must be one of {TOWARD_CLASSES}, got {toward!r}")
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"image must have shape (height, width, 3), got {image.shape}")
    members = ensemble_members(model)
    if members:
        maps = [_member_map(member, image, toward) for member in members]
        return _scaled_to_peak(np.mean(maps, axis=0))
    x = tf.convert_to_tensor(image[None], dtype=tf.float32)
    for layer in _layers_before_backbone(model):
        x = layer(x)
    feature_map = model.get_layer(BACKBONE_LAYER)(x, training=False)
    with tf.GradientTape() as tape:
        tape.watch(feature_map)
        score = _logit(model, feature_map)[:, 0]
        if toward == "benign":
            score = -score
    gradients = tape.gradient(score, feature_map)
    channel_weights = tf.reduce_mean(gradients, axis=(0, 1, 2))
    heatmap = tf.nn.relu(tf.reduce_sum(feature_map[0] * channel_weights, axis=-1)).numpy()
    return resize_heatmap(_scaled_to_peak(heatmap), image.shape[1], image.shape[0])


def _scaled_to_peak(heatmap: np.ndarray) -> np.ndarray:
    peak = float(heatmap.max())
    return heatmap / peak if peak > 0 else np.zeros_like(heatmap)


def _member_map(member: keras.Model, image: np.ndarray, toward: str) -> np.ndarray:
    """One member's map at the image's size, from the image resized to the member's input."""
    rows = member.input_shape[1]
    resized = image
    if image.shape[:2] != (rows, rows):
        resized = tf.image.resize(image, (rows, rows), antialias=True).numpy()
    return resize_heatmap(grad_cam(member, resized, toward), image.shape[1], image.shape[0])


def source_note(model: keras.Model) -> str:
    """How the map was made, when that is not the plain single-model Grad-CAM."""
    members = ensemble_members(model)
    return f"mean of the {len(members)} ensemble members' maps" if members else ""


def resize_heatmap(heatmap: np.ndarray, width: int, height: int) -> np.ndarray:
    """Bilinear resize of a float map, kept within [0, 1]."""
    resized = Image.fromarray(heatmap.astype(np.float32), mode="F").resize(
        (width, height), Image.Resampling.BILINEAR
    )
    return np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)


def colorize(heatmap: np.ndarray) -> np.ndarray:
    """Map [0, 1] to a blue-cyan-yellow-red scale (jet-like) as uint8 RGB."""
    value = np.clip(np.asarray(heatmap, dtype=np.float32), 0.0, 1.0)
    red = np.clip(1.5 - np.abs(4 * value - 3), 0, 1)
    green = np.clip(1.5 - np.abs(4 * value - 2), 0, 1)
    blue = np.clip(1.5 - np.abs(4 * value - 1), 0, 1)
    return (np.stack([red, green, blue], axis=-1) * 255).round().astype(np.uint8)


def overlay(image_uint8: np.ndarray, heatmap: np.ndarray, alpha: float = 0.6) -> np.ndarray:
    """The image with the coloured heat map blended on top, at the image's own size.

    Each pixel's opacity rises from 0 at HEAT_FLOOR to `alpha` at the map's peak: blending the
    whole map at one opacity tints every weak, uninformative region with the map's low colour.
    """
    image = np.asarray(image_uint8)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(
            f"image must be uint8 (height, width, 3), got {image.dtype} {image.shape}"
        )
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    if heatmap.shape != image.shape[:2]:
        heatmap = resize_heatmap(heatmap, image.shape[1], image.shape[0])
    heat = np.clip(np.asarray(heatmap, dtype=np.float32), 0.0, 1.0)
    opacity = alpha * np.clip((heat - HEAT_FLOOR) / (1 - HEAT_FLOOR), 0.0, 1.0)[..., None]
    blended = (1 - opacity) * image.astype(np.float32) + opacity * colorize(heat)
    return np.clip(blended.round(), 0, 255).astype(np.uint8)
