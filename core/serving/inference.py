"""Prediction with a trained run: decoded bytes to calibrated probability, label and OOD score.

The Predict page, `python -m core predict` and `evaluate` all go through `Predictor`, so every
consumer gets the same probability. The forward pass is a traced `tf.function` with a fixed
input signature (one trace per TTA setting), which is several times faster per image than
`model.predict` and does not retrace for each batch size.
"""

import functools
import os
import time
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import keras
import numpy as np
import tensorflow as tf
from PIL import Image
from threadpoolctl import ThreadpoolController

from core.analysis import operating_point
from core.analysis.calibration import Calibration
from core.inputs import images
from core.inputs.diagnoses import coherent_distribution
from core.inputs.labels import BENIGN, MALIGNANT
from core.modelling.model import member_count, with_features
from core.modelling.ood import load_ood
from core.storage.runs import MODEL_FILE, Run, RunError
from core.train.train_config import TTA_VIEWS

BATCH_SIZE = 32
# Images times TTA views in one forward call: activation memory grows with it, so a batch
# of 32 images with the 8 dihedral views is cut into calls of 4 images (one 32-image batch of
# activations, about 1 GB at 224 px, instead of 256 images' worth).
VIEWS_PER_CALL = 32
# Images decoded together while the previous chunk runs through the model.
MIN_CHUNK = 8


@dataclass(frozen=True)
class Prediction:
    file: str
    probability: float | None
    label: str | None
    threshold: float
    model: str
    error: str = ""
    width: int | None = None
    height: int | None = None
    sha256: str = ""
    ood_score: float | None = None
    ood_flag: bool | None = None
    latency_ms: float | None = None
    # (diagnosis, probability) for every class, most likely first; empty for binary models.
    diagnoses: tuple[tuple[str, float], ...] = ()
    # "card", or "local" when the installation adopted its own (core.analysis.operating_point).
    threshold_source: str = operating_point.CARD


def label_for(probability: float, threshold: float) -> str:
    return MALIGNANT if probability >= threshold else BENIGN


def view_count(tta: bool, tta_views: str) -> int:
    return (3 if tta_views == "flips" else 8) if tta else 1


def images_per_call(tta: bool, tta_views: str, members: int = 1) -> int:
    """How many images one forward call takes so that it holds at most VIEWS_PER_CALL views
    per model: an ensemble's members may run side by side, each with its own activations."""
    return max(1, VIEWS_PER_CALL // (view_count(tta, tta_views) * members))


def _views(x: tf.Tensor, tta_views: str) -> list[tf.Tensor]:
    """The image and its mirror images ("flips": 3 views) or all 8 flips and quarter turns."""
    mirrors = [x, tf.reverse(x, axis=[2]), tf.reverse(x, axis=[1])]
    if tta_views == "flips":
        return mirrors
    # The four flips of the image and of its transpose are the 8 flips and quarter turns.
    transposed = tf.transpose(x, [0, 2, 1, 3])
    both = [tf.reverse(x, axis=[1, 2]), transposed, tf.reverse(transposed, axis=[1, 2])]
    return mirrors + both + [tf.reverse(transposed, axis=[2]), tf.reverse(transposed, axis=[1])]


def pixel_detail(x: tf.Tensor) -> tf.Tensor:
    """Log mean absolute difference between neighbouring grey values, per image (N,).

    The OOD detector's second check: blanks, gradients and other smooth pictures have almost
    none, every dermoscopy photo has skin texture and sensor noise.
    """
    grey = tf.reduce_mean(x, axis=-1)
    across = tf.reduce_mean(tf.abs(grey[:, :, 1:] - grey[:, :, :-1]), axis=[1, 2])
    down = tf.reduce_mean(tf.abs(grey[:, 1:, :] - grey[:, :-1, :]), axis=[1, 2])
    return tf.math.log(across + down + 1e-3)


class ForwardOutputs(NamedTuple):
    """One batch (or many) through `make_forward`'s function, as numpy arrays."""

    probabilities: np.ndarray
    features: np.ndarray
    diagnoses: np.ndarray
    details: np.ndarray


def make_forward(model: keras.Model, tta: bool, tta_views: str = "flips"):
    """A traced function: uint8 images (N, S, S, 3) to `ForwardOutputs` as tensors.

    Raw probability, pooled features, diagnoses ((N, 0) for a binary model) and pixel detail.
    With TTA the probability and the diagnoses are means over the views; features and detail
    always come from the unchanged image.
    """
    if tta_views not in TTA_VIEWS:
        raise ValueError(f"tta_views must be one of {TTA_VIEWS}, got {tta_views!r}")
    both = with_features(model)
    size = model.input_shape[1]

    def split(outputs, count):
        probability, diagnoses = outputs[0][:, 0], outputs[1] if len(outputs) == 3 else None
        if diagnoses is None:
            diagnoses = tf.zeros([tf.shape(probability)[0], 0])
        return probability, outputs[-1][:count], diagnoses

    def mean_over_views(diagnoses, view_count, count):
        # The class count is static: a binary model's (N, 0) needs no mean, and a Reshape to
        # width 0 would mean "keep this dimension" once exported to ONNX.
        width = diagnoses.shape[-1]
        if width == 0:
            return tf.zeros([count, 0])
        return tf.reduce_mean(tf.reshape(diagnoses, [view_count, count, width]), 0)

    @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.uint8)])
    def forward(batch):
        x = tf.cast(batch, tf.float32)
        count = tf.shape(x)[0]
        if not tta:
            return (*split(both(x, training=False), count), pixel_detail(x))
        views = _views(x, tta_views)
        probability, features, diagnoses = split(both(tf.concat(views, 0), training=False), count)
        view_count = len(views)
        mean_probability = tf.reduce_mean(tf.reshape(probability, [view_count, count]), axis=0)
        mean_diagnoses = mean_over_views(diagnoses, view_count, count)
        return mean_probability, features, mean_diagnoses, pixel_detail(x)

    return forward


def forward_in_batches(forward, arrays: np.ndarray, batch_size: int = BATCH_SIZE):
    """`ForwardOutputs` of a stack of uint8 images, batch by batch.

    `forward` takes a numpy batch and returns the four outputs as anything numpy reads, so
    another runtime's forward pass (`python -m bench --only runtimes`) can stand in for the
    traced function.
    """
    outputs: list[list[np.ndarray]] = [[] for _ in ForwardOutputs._fields]
    for start in range(0, len(arrays), batch_size):
        for collected, value in zip(
            outputs, forward(arrays[start : start + batch_size]), strict=True
        ):
            collected.append(np.asarray(value))
    if not outputs[0]:
        empty = np.zeros((0, 0), np.float32)
        return ForwardOutputs(np.zeros(0, np.float32), empty, empty, np.zeros(0, np.float32))
    return ForwardOutputs(*(np.concatenate(values) for values in outputs))


def load_run_model(run: Run) -> keras.Model:
    """The run's Keras model; RunError says whether model.keras is missing or damaged.

    Keras calls a file that is not a zip archive "not found", even when it exists.
    """
    if not run.model_path.is_file():
        raise RunError(f"run {run.run_id}: {MODEL_FILE} is missing")
    if not zipfile.is_zipfile(run.model_path):
        raise RunError(f"run {run.run_id}: {MODEL_FILE} is damaged (not a .keras zip archive)")
    try:
        # safe_mode=True (the default) refuses to deserialise arbitrary code from a model file.
        return keras.saving.load_model(run.model_path, safe_mode=True)
    except Exception as error:  # Keras raises many kinds for a bad file.
        raise RunError(
            f"run {run.run_id}: {MODEL_FILE} is damaged or refused by Keras safe mode "
            f"({type(error).__name__}: {error})"
        ) from error


class Predictor:
    """A loaded run, ready to predict. Load once per process and share it (read-only)."""

    def __init__(self, run: Run):
        self.run = run
        self.card = run.card
        self.image_size = run.card.image_size
        self.resample = run.card.resample
        self.default_tta = run.card.tta
        self.tta_views = run.card.tta_views
        self.calibration = Calibration.from_dict(run.card.calibration)
        self.ood = load_ood(run.folder)
        self.model = load_run_model(run)
        self.diagnosis_names = run.card.diagnoses
        self._forwards = {
            tta: make_forward(self.model, tta, self.tta_views) for tta in (False, True)
        }
        self._blas = ThreadpoolController()

    def _images_per_call(self, tta: bool) -> int:
        return images_per_call(tta, self.tta_views, member_count(self.model))

    def warm_up(self) -> None:
        for forward in self._forwards.values():
            forward(tf.zeros([1, self.image_size, self.image_size, 3], tf.uint8))

    def predict_arrays(self, arrays: np.ndarray, tta: bool | None = None):
        """Calibrated probabilities and OOD scores for uint8 images (N, S, S, 3)."""
        probabilities, scores, _ = self.predict_with_diagnoses(arrays, tta)
        return probabilities, scores

    def predict_with_diagnoses(self, arrays: np.ndarray, tta: bool | None = None):
        """Calibrated probabilities, OOD scores and diagnosis probabilities (N, C or 0)."""
        use_tta = self.default_tta if tta is None else tta
        outputs = forward_in_batches(
            self._forwards[use_tta], arrays, self._images_per_call(use_tta)
        )
        raw = outputs.probabilities
        probabilities = self.calibration.apply(raw) if len(raw) else raw
        # Multi-threaded BLAS on this tiny product leaves threads spinning on the cores the
        # next forward pass needs; one thread gives the same scores, faster.
        with self._blas.limit(limits=1, user_api="blas"):
            scores = (
                self.ood.score(outputs.features, outputs.details)
                if self.ood is not None and len(raw)
                else None
            )
        probabilities = np.asarray(probabilities, dtype=np.float64)
        return probabilities, scores, self._coherent(outputs.diagnoses, probabilities)

    def _coherent(self, class_probabilities: np.ndarray, probabilities: np.ndarray):
        """The class probabilities made to agree with the calibrated malignant probability."""
        if not self.diagnosis_names or class_probabilities.shape[-1] != len(self.diagnosis_names):
            return class_probabilities
        return coherent_distribution(class_probabilities, probabilities, self.diagnosis_names)

    def ranked_diagnoses(self, row: np.ndarray) -> tuple[tuple[str, float], ...]:
        """(name, probability) of every class, most likely first; () for a binary model.

        The malignant classes sum to the calibrated malignant probability, all to 1.
        """
        if not self.diagnosis_names or len(row) != len(self.diagnosis_names):
            return ()
        order = np.argsort(row)[::-1]
        return tuple((self.diagnosis_names[i], float(row[i])) for i in order)

    def current_threshold(self) -> operating_point.Threshold:
        """The threshold labels use now: read at each call, so that adopting a local one (or
        going back to the card's) takes effect without reloading the model."""
        return operating_point.threshold_for(self.run)

    @property
    def threshold(self) -> float:
        return self.current_threshold().value

    def _result(
        self, name, probability, score, decoded, latency_ms, threshold, diagnoses=()
    ) -> Prediction:
        flag = None if score is None or self.ood is None else bool(score > self.ood.threshold)
        return Prediction(
            file=name,
            probability=float(probability),
            label=label_for(float(probability), threshold.value),
            threshold=threshold.value,
            threshold_source=threshold.source,
            model=self.run.run_id,
            width=decoded.width,
            height=decoded.height,
            sha256=decoded.sha256,
            ood_score=None if score is None else float(score),
            ood_flag=flag,
            latency_ms=latency_ms,
            diagnoses=diagnoses,
        )

    def error_result(self, name: str, message: str, threshold=None) -> Prediction:
        threshold = threshold or self.current_threshold()
        return Prediction(
            name,
            None,
            None,
            threshold.value,
            self.run.run_id,
            error=message,
            threshold_source=threshold.source,
        )

    def predict_bytes(self, name: str, data: bytes, tta: bool | None = None) -> Prediction:
        """One image: the path the Predict page takes for each upload."""
        start = time.perf_counter()
        try:
            decoded = decode_for_model(data, self.image_size, self.resample)
        except images.ImageError as error:
            return self.error_result(name, str(error))
        probabilities, scores, diagnoses = self.predict_with_diagnoses(decoded.array[None], tta)
        latency_ms = (time.perf_counter() - start) * 1000
        score = None if scores is None else scores[0]
        ranked = self.ranked_diagnoses(diagnoses[0])
        return self._result(
            name, probabilities[0], score, decoded, latency_ms, self.current_threshold(), ranked
        )

    def predict_many(
        self, items: Iterable[tuple[str, bytes | Path | str]], tta: bool | None = None
    ) -> Iterator[Prediction]:
        """Many images in input order, decoded in parallel while the previous batch runs.

        Every image is labelled at the threshold in force when the first one is.
        """
        return (prediction for prediction, _ in self.predict_with_previews(items, 0, tta))

    def predict_with_previews(
        self,
        items: Iterable[tuple[str, bytes | Path | str]],
        preview: int,
        tta: bool | None = None,
    ) -> Iterator[tuple[Prediction, Image.Image | None]]:
        """`predict_many`, each prediction with a preview of its image (the longest side at
        most `preview` pixels; None for a failed image) made from the same decode."""
        threshold = self.current_threshold()
        use_tta = self.default_tta if tta is None else tta
        # Chunks no larger than needed to keep the forward calls full: with TTA a chunk of 32
        # would hold results back (and a progress bar still) for seconds.
        chunk_size = max(MIN_CHUNK, self._images_per_call(use_tta))
        decode = functools.partial(self._decode_item, preview=preview)
        with ThreadPoolExecutor() as pool:
            pending = None
            for chunk in _chunks(items, chunk_size):
                submitted = pool.map(decode, chunk)
                if pending is not None:
                    yield from self._predict_chunk(*pending, tta, threshold)
                pending = (chunk, submitted)
            if pending is not None:
                yield from self._predict_chunk(*pending, tta, threshold)

    def _decode_item(self, item: tuple[str, bytes | Path | str], preview: int):
        _, source = item
        try:
            data = source if isinstance(source, bytes) else Path(source).read_bytes()
            return decode_for_model(data, self.image_size, self.resample, preview)
        except (images.ImageError, OSError) as error:
            return images.ImageError(str(error))

    def _predict_chunk(
        self, chunk, decoded_iterator, tta, threshold
    ) -> Iterator[tuple[Prediction, Image.Image | None]]:
        start = time.perf_counter()
        decoded = list(decoded_iterator)
        good = [item for item in decoded if not isinstance(item, Exception)]
        probabilities, scores, diagnoses = (
            self.predict_with_diagnoses(np.stack([item.array for item in good]), tta)
            if good
            else ([], None, [])
        )
        latency_ms = (time.perf_counter() - start) * 1000 / max(len(chunk), 1)
        index = 0
        for (name, _), item in zip(chunk, decoded, strict=True):
            if isinstance(item, Exception):
                yield self.error_result(name, str(item), threshold), None
                continue
            score = None if scores is None else scores[index]
            ranked = self.ranked_diagnoses(diagnoses[index])
            prediction = self._result(
                name, probabilities[index], score, item, latency_ms, threshold, ranked
            )
            yield prediction, item.preview
            index += 1


@dataclass(frozen=True)
class DecodedImage:
    array: np.ndarray
    width: int
    height: int
    sha256: str
    preview: Image.Image | None = None


def decode_for_model(
    data: bytes, image_size: int, resample: str, preview: int = 0
) -> DecodedImage:
    decoded = images.decode_for_model(data, image_size, resample, preview)
    return DecodedImage(
        decoded.array, decoded.width, decoded.height, images.sha256_bytes(data), decoded.preview
    )


def _chunks(items: Iterable, size: int) -> Iterator[list]:
    chunk: list = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def find_images(paths: Sequence[str]) -> list[str]:
    """Files as given and image files under folders (recursively), in a stable order.

    Only the image paths are kept, as strings, whatever else the folders hold: 100,000 paths
    of 40 characters take about 17 MiB.
    """
    found: list[str] = []
    for path in paths:
        if Path(path).is_dir():
            found.extend(_images_under(str(Path(path))))
        else:
            found.append(path)
    return found


def _images_under(folder: str) -> Iterator[str]:
    """Image files below `folder` in sorted path order; symlinked folders are not followed."""
    with os.scandir(folder) as scan:
        entries = sorted(scan, key=lambda entry: entry.name)
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            yield from _images_under(entry.path)
        elif Path(entry.name).suffix.lower() in images.IMAGE_EXTENSIONS and entry.is_file():
            yield entry.path
