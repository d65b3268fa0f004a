"""Prediction with a trained run: decoded bytes to calibrated probability, label and OOD score.

The Predict page, `python -m core predict` and `evaluate` all go through `Predictor`, so every
consumer gets the same probability. The forward pass is a traced `tf.function` with a fixed
input signature (one trace per TTA setting), which is several times faster per image than
`model.predict` and does not retrace for each batch size.
"""

import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from threadpoolctl import ThreadpoolController

from core import images
from core.calibration import Calibration
from core.model import POOLED_LAYER
from core.ood import load_ood
from core.runs import Run

BATCH_SIZE = 32


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


def label_for(probability: float, threshold: float) -> str:
    return "malignant" if probability >= threshold else "benign"


def make_forward(model: keras.Model, tta: bool):
    """A traced function: uint8 images (N, S, S, 3) to (raw probability, pooled features).

    With flip TTA the probability is the mean over the image and its left-right and
    up-down mirror images; features always come from the unflipped image.
    """
    both = keras.Model(model.input, [model.output, model.get_layer(POOLED_LAYER).output])
    size = model.input_shape[1]

    @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.uint8)])
    def forward(batch):
        x = tf.cast(batch, tf.float32)
        if not tta:
            probability, features = both(x, training=False)
            return probability[:, 0], features
        views = tf.concat([x, tf.reverse(x, axis=[2]), tf.reverse(x, axis=[1])], axis=0)
        probability, features = both(views, training=False)
        count = tf.shape(x)[0]
        mean_probability = tf.reduce_mean(tf.reshape(probability[:, 0], [3, count]), axis=0)
        return mean_probability, features[:count]

    return forward


def forward_in_batches(forward, arrays: np.ndarray, batch_size: int = BATCH_SIZE):
    """Raw probabilities and features for a stack of uint8 images."""
    probabilities, features = [], []
    for start in range(0, len(arrays), batch_size):
        probability, feature = forward(tf.constant(arrays[start : start + batch_size]))
        probabilities.append(probability.numpy())
        features.append(feature.numpy())
    if not probabilities:
        return np.zeros(0, np.float32), np.zeros((0, 0), np.float32)
    return np.concatenate(probabilities), np.concatenate(features)


class Predictor:
    """A loaded run, ready to predict. Load once per process and share it (read-only)."""

    def __init__(self, run: Run):
        self.run = run
        self.card = run.card
        self.image_size = int(run.card["image_size"])
        self.resample = run.card.get("resample", "bilinear")
        self.threshold = float(run.card["threshold"]["value"])
        self.default_tta = bool(run.card.get("tta", False))
        self.calibration = Calibration.from_dict(run.card["calibration"])
        self.ood = load_ood(run.folder)
        # safe_mode=True (the default) refuses to deserialise arbitrary code from a model file.
        self.model = keras.saving.load_model(run.model_path, safe_mode=True)
        self._forwards = {tta: make_forward(self.model, tta) for tta in (False, True)}
        self._blas = ThreadpoolController()

    def warm_up(self) -> None:
        for forward in self._forwards.values():
            forward(tf.zeros([1, self.image_size, self.image_size, 3], tf.uint8))

    def predict_arrays(self, arrays: np.ndarray, tta: bool | None = None):
        """Calibrated probabilities and OOD scores for uint8 images (N, S, S, 3)."""
        use_tta = self.default_tta if tta is None else tta
        raw, features = forward_in_batches(self._forwards[use_tta], arrays)
        probabilities = self.calibration.apply(raw) if len(raw) else raw
        # Multi-threaded BLAS on this tiny product leaves threads spinning on the cores the
        # next forward pass needs; one thread gives the same scores, faster.
        with self._blas.limit(limits=1, user_api="blas"):
            scores = self.ood.score(features) if self.ood is not None and len(raw) else None
        return np.asarray(probabilities, dtype=np.float64), scores

    def _result(self, name, probability, score, decoded, latency_ms) -> Prediction:
        flag = None if score is None or self.ood is None else bool(score > self.ood.threshold)
        return Prediction(
            file=name,
            probability=float(probability),
            label=label_for(float(probability), self.threshold),
            threshold=self.threshold,
            model=self.run.run_id,
            width=decoded.width,
            height=decoded.height,
            sha256=decoded.sha256,
            ood_score=None if score is None else float(score),
            ood_flag=flag,
            latency_ms=latency_ms,
        )

    def error_result(self, name: str, message: str) -> Prediction:
        return Prediction(name, None, None, self.threshold, self.run.run_id, error=message)

    def predict_bytes(self, name: str, data: bytes, tta: bool | None = None) -> Prediction:
        """One image: the path the Predict page takes for each upload."""
        start = time.perf_counter()
        try:
            decoded = decode_for_model(data, self.image_size, self.resample)
        except images.ImageError as error:
            return self.error_result(name, str(error))
        probabilities, scores = self.predict_arrays(decoded.array[None], tta)
        latency_ms = (time.perf_counter() - start) * 1000
        score = None if scores is None else scores[0]
        return self._result(name, probabilities[0], score, decoded, latency_ms)

    def predict_many(
        self, items: Iterable[tuple[str, bytes | Path | str]], tta: bool | None = None
    ) -> Iterator[Prediction]:
        """Many images in input order, decoded in parallel while the previous batch runs."""
        with ThreadPoolExecutor() as pool:
            pending = None
            for chunk in _chunks(items, BATCH_SIZE):
                submitted = pool.map(self._decode_item, chunk)
                if pending is not None:
                    yield from self._predict_chunk(*pending, tta)
                pending = (chunk, submitted)
            if pending is not None:
                yield from self._predict_chunk(*pending, tta)

    def _decode_item(self, item: tuple[str, bytes | Path | str]):
        _, source = item
        try:
            data = source if isinstance(source, bytes) else Path(source).read_bytes()
            return decode_for_model(data, self.image_size, self.resample)
        except (images.ImageError, OSError) as error:
            return images.ImageError(str(error))

    def _predict_chunk(self, chunk, decoded_iterator, tta) -> Iterator[Prediction]:
        start = time.perf_counter()
        decoded = list(decoded_iterator)
        good = [item for item in decoded if not isinstance(item, Exception)]
        probabilities, scores = (
            self.predict_arrays(np.stack([item.array for item in good]), tta)
            if good
            else ([], None)
        )
        latency_ms = (time.perf_counter() - start) * 1000 / max(len(chunk), 1)
        index = 0
        for (name, _), item in zip(chunk, decoded, strict=True):
            if isinstance(item, Exception):
                yield self.error_result(name, str(item))
                continue
            score = None if scores is None else scores[index]
            yield self._result(name, probabilities[index], score, item, latency_ms)
            index += 1


@dataclass(frozen=True)
class DecodedImage:
    array: np.ndarray
    width: int
    height: int
    sha256: str


def decode_for_model(data: bytes, image_size: int, resample: str) -> DecodedImage:
    image = images.decode_image(data)
    array = images.resize_for_model(image, image_size, resample)
    return DecodedImage(array, image.width, image.height, images.sha256_bytes(data))


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
    """Files as given and image files under folders (recursively), in a stable order."""
    found: list[str] = []
    for path in paths:
        if Path(path).is_dir():
            found.extend(
                str(child)
                for child in sorted(Path(path).rglob("*"))
                if child.suffix.lower() in images.IMAGE_EXTENSIONS and child.is_file()
            )
        else:
            found.append(path)
    return found
