"""The input pipeline of training: images in memory or streamed from a decoded-image cache.

The streaming path decodes each image once, at the training size, into its own file of raw
uint8 pixels under the cache folder, keyed (like the feature cache) by the SHA-256 of the
image bytes inside a folder per (input size, resampling filter; see `core.train.image_cache`).
Training then reads those files through `tf.data` in parallel, so peak memory holds a few
batches, not the dataset, and a second run on the same images decodes nothing.

Both paths keep uint8 until the train step and shuffle the same way (a seeded shuffle of
every row: images in memory, file names when streaming), so for one seed they feed the
same batches in the same order. Augmentation runs inside the training model, on the batch.
"""

import os
from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from core.inputs import data, images
from core.train import image_cache
from core.train.train_config import INPUT_PIPELINES

# "auto" keeps the images in memory up to this many decoded bytes (the bundled 9,419 images
# at 160 px are 0.72 GB). Measured on 2 cores, a streamed epoch ran at 0.92-1.08x of the
# in-memory one (docs/benchmarks.md): about the same speed, so the rule is about memory. Above
# it the arrays, plus tf.data's copy of the training split, would crowd a 16-24 GB machine.
AUTO_MEMORY_LIMIT_BYTES = 2 * 1024**3
# Decoding in chunks bounds the memory of a first, cold pass over a large dataset.
DECODE_CHUNK = 256


def choose_pipeline(requested: str, count: int, image_size: int) -> str:
    """The path `requested` ("auto", "memory" or "stream") means for `count` images."""
    if requested not in INPUT_PIPELINES:
        raise ValueError(f"input_pipeline must be one of {INPUT_PIPELINES}, got {requested!r}")
    if requested != "auto":
        return requested
    decoded_bytes = count * image_size * image_size * 3
    return "memory" if decoded_bytes <= AUTO_MEMORY_LIMIT_BYTES else "stream"


class StoredImages:
    """Decoded images in the cache, read on demand: an array-like of shape (N, S, S, 3).

    Indexing (by a slice or an array of rows) selects without reading; `np.asarray` reads
    the selection. So `forward_in_batches` and code written for arrays read one batch at a
    time, and `training_dataset` streams the files instead of holding them.
    """

    def __init__(self, files: Sequence[str], image_size: int):
        self.files = np.asarray(files, dtype=str)
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, rows) -> "StoredImages":
        return StoredImages(self.files[rows], self.image_size)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        shape = (len(self.files), self.image_size, self.image_size, 3)
        stacked = np.empty(shape, dtype=np.uint8)
        for index, path in enumerate(self.files):
            stacked[index] = np.fromfile(path, dtype=np.uint8).reshape(shape[1:])
        return stacked if dtype is None else stacked.astype(dtype)


def unreadable(paths: Sequence[str], decoded: list) -> list[str]:
    return [
        f"{path}: {item}"
        for path, item in zip(paths, decoded, strict=True)
        if isinstance(item, Exception)
    ]


def decode_all(paths: Sequence[str], image_size: int, resample: str) -> np.ndarray:
    """Every image decoded into one uint8 array; `DatasetError` names unreadable files."""
    decoded = images.decode_many(paths, image_size, resample)
    if failures := unreadable(paths, decoded):
        raise data.DatasetError("unreadable images: " + "; ".join(failures[:10]))
    return np.stack([item for item in decoded if isinstance(item, np.ndarray)])


def store_images(
    paths: Sequence[str],
    keys: Sequence[str],
    image_size: int,
    resample: str,
    root: Path | None = None,
    limit_bytes: int = image_cache.DEFAULT_LIMIT_BYTES,
) -> StoredImages:
    """Decode into the cache the images it lacks, and return all of them as `StoredImages`.

    Raises `DatasetError` naming the unreadable files (after caching the readable ones).
    """
    folder = image_cache.cache_folder(image_size, resample, root)
    targets = [image_cache.image_path(folder, key) for key in keys]
    missing = [index for index, target in enumerate(targets) if not target.is_file()]
    failures = []
    for start in range(0, len(missing), DECODE_CHUNK):
        chunk = [paths[index] for index in missing[start : start + DECODE_CHUNK]]
        decoded = images.decode_many(chunk, image_size, resample)
        failures += unreadable(chunk, decoded)
        for index, item in zip(missing[start : start + DECODE_CHUNK], decoded, strict=True):
            if isinstance(item, np.ndarray):
                image_cache.write_image(targets[index], item)
    if failures:
        raise data.DatasetError("unreadable images: " + "; ".join(failures[:10]))
    for target in targets:
        target.touch()  # Marks the image as recently used for the size limit.
    image_cache.enforce_limit(image_cache.cache_root(root), limit_bytes, keep=set(targets))
    return StoredImages([str(target) for target in targets], image_size)


def load_images(input_pipeline: str, paths, keys, image_size: int, resample: str):
    """The images at the training size: one array in memory, or `StoredImages` to stream."""
    if input_pipeline == "stream":
        return store_images(paths, keys, image_size, resample)
    return decode_all(paths, image_size, resample)


def read_stored(path: tf.Tensor, image_size: int) -> tf.Tensor:
    raw = tf.io.decode_raw(tf.io.read_file(path), tf.uint8)
    return tf.reshape(raw, (image_size, image_size, 3))


def batched(dataset: tf.data.Dataset, source, batch_size: int) -> tf.data.Dataset:
    """Batches of uint8 images; `StoredImages` are read in parallel, in order."""
    if isinstance(source, StoredImages):
        size = source.image_size
        dataset = dataset.map(
            lambda path, *rest: (read_stored(path, size), *rest),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE).with_options(input_options())


def input_options() -> tf.data.Options:
    """A small private thread pool for the input pipeline, without tf.data's autotuner.

    With tf.data's default pool (one thread per core) and its autotuner, the input threads
    contend with the train step's: on 2 cores `fit` ran at 0.62x of the bare train step in
    memory and 0.49x streaming; with one input thread and no autotuner, at 0.98x and 0.97x
    (docs/benchmarks.md). Reading stored pixels needs little, so a quarter of the cores is
    plenty.
    """
    options = tf.data.Options()
    options.threading.private_threadpool_size = max(1, (os.cpu_count() or 1) // 4)
    options.autotune.enabled = False
    return options


def elements(source):
    """What a dataset slices: the pixels themselves, or the names of the stored files."""
    return source.files if isinstance(source, StoredImages) else source


def training_dataset(source, targets, weights, batch_size: int, seed: int) -> tf.data.Dataset:
    """Batches of (uint8 images, targets, weights), shuffled anew each epoch.

    The shuffle spans every row: when streaming it holds file names (about 100 bytes per
    image), not images, so it costs no image memory and matches the in-memory order.
    """
    dataset = tf.data.Dataset.from_tensor_slices((elements(source), targets, weights))
    dataset = dataset.shuffle(len(source), seed=seed, reshuffle_each_iteration=True)
    return batched(dataset, source, batch_size)


def validation_dataset(source, targets, batch_size: int) -> tf.data.Dataset:
    dataset = tf.data.Dataset.from_tensor_slices((elements(source), targets))
    return batched(dataset, source, batch_size)


class Augmentation(layers.Layer):
    """Geometry, scale and the colour differences between dermatoscopes, scaled by `strength`.

    Zoom in or out by up to a quarter with its own factor per axis (lesion size and aspect in
    the frame), brightness, contrast, saturation and hue, and a random gain per colour
    channel: other cameras and light sources mostly differ in white balance. It takes uint8
    batches and returns float32; outside training it only casts. Running it in the train
    step, on the batch, leaves the input pipeline nothing to do but read.
    """

    def __init__(self, strength: float, seed: int, **kwargs):
        super().__init__(**kwargs)
        self.strength = strength
        self.layers_in_order = keras.Sequential(
            [
                layers.RandomFlip("horizontal_and_vertical", seed=seed),
                layers.RandomRotation(0.5 * strength, fill_mode="reflect", seed=seed),
                layers.RandomZoom(
                    (-0.25 * strength, 0.15 * strength),
                    (-0.25 * strength, 0.15 * strength),
                    fill_mode="reflect",
                    seed=seed,
                ),
                layers.RandomBrightness(0.15 * strength, value_range=(0, 255), seed=seed),
                layers.RandomContrast(0.2 * strength, value_range=(0, 255), seed=seed),
                layers.RandomSaturation(
                    (0.5 - 0.15 * strength, 0.5 + 0.15 * strength),
                    value_range=(0, 255),
                    seed=seed,
                ),
                layers.RandomHue(0.03 * strength, value_range=(0, 255), seed=seed),
            ]
        )
        self.seed_generator = keras.random.SeedGenerator(seed)

    def build(self, input_shape):
        self.layers_in_order.build(input_shape)

    def call(self, inputs, training=False):
        x = keras.ops.cast(inputs, "float32")
        if not training or self.strength == 0:
            return x
        x = self.layers_in_order(x, training=True)
        spread = 0.1 * self.strength
        gains = keras.random.uniform(
            (keras.ops.shape(x)[0], 1, 1, 3), 1 - spread, 1 + spread, seed=self.seed_generator
        )
        return keras.ops.clip(x * gains, 0.0, 255.0)


def augmented(model: keras.Model, strength: float, seed: int) -> keras.Model:
    """`model` behind `Augmentation`, taking uint8 batches: for fit only, never saved."""
    inputs = keras.Input(model.input_shape[1:], dtype="uint8")
    return keras.Model(inputs, model(Augmentation(strength, seed, name="augmentation")(inputs)))
