"""Two-phase transfer learning with honest evaluation, written to a run folder.

1. Group-aware split (patients, lesions and near-duplicate images never cross splits).
2. Head on frozen-backbone features, cached on disk and computed from unaugmented images.
3. Fine-tuning of the backbone's top layers with augmentation, at a low learning rate.
4. Calibration and the operating threshold on the validation split; the test split is
   scored once, at the end, with that threshold.
"""

import secrets
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf
from keras import layers

from core import data, features, images, runs, splits
from core.calibration import choose_threshold, fit_calibration
from core.card import build_card
from core.inference import forward_in_batches, make_forward
from core.model import build_feature_extractor, build_head, build_model, set_fine_tune_layers
from core.train_config import AUGMENTATION_STRENGTHS, TrainConfig


@dataclass
class Progress:
    """One progress report; `stage` is a short word, `message` a sentence for people."""

    stage: str
    message: str
    epoch: int = 0
    epochs: int = 0
    batch: int = 0
    batches: int = 0
    logs: dict = field(default_factory=dict)


ProgressCallback = Callable[[Progress], None]


class Cancelled(Exception):
    """Raised inside training when the caller asked it to stop."""


class ProgressReporter(keras.callbacks.Callback):
    """Forwards Keras' epoch and batch events to the caller and honours cancellation."""

    def __init__(self, stage, epochs, batches, report, should_stop, history_rows):
        super().__init__()
        self.stage, self.epochs, self.batches = stage, epochs, batches
        self.report, self.should_stop, self.history_rows = report, should_stop, history_rows
        self.epoch, self.epoch_start = 0, time.perf_counter()

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch, self.epoch_start = epoch + 1, time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        if self.should_stop():
            self.model.stop_training = True
            raise Cancelled("training was cancelled")
        if batch % 5 == 0 or batch + 1 == self.batches:
            message = f"{self.stage}: epoch {self.epoch}/{self.epochs}, batch {batch + 1}"
            self.report(
                Progress(self.stage, message, self.epoch, self.epochs, batch + 1, self.batches)
            )

    def on_epoch_end(self, epoch, logs=None):
        logs = {key: float(value) for key, value in (logs or {}).items()}
        row = {"phase": self.stage, "epoch": epoch + 1, "seconds": 0.0, **logs}
        row["seconds"] = round(time.perf_counter() - self.epoch_start, 2)
        self.history_rows.append(row)
        message = (
            f"{self.stage}: epoch {epoch + 1}/{self.epochs} "
            f"loss {logs.get('loss', float('nan')):.4f} val_auc {logs.get('val_auc', 0):.4f}"
        )
        self.report(Progress(self.stage, message, epoch + 1, self.epochs, logs=row))


def class_weights(labels: np.ndarray, imbalance: str) -> dict[int, float] | None:
    """Balanced weights: each class contributes equally to the loss."""
    if imbalance == "none":
        return None
    counts = np.bincount(labels, minlength=2)
    return {label: float(len(labels) / (2 * counts[label])) for label in (0, 1)}


def augmenter(strength: float, seed: int) -> keras.Sequential:
    """Flips, rotations, zoom, brightness, contrast and hue, scaled by `strength`."""
    return keras.Sequential(
        [
            layers.RandomFlip("horizontal_and_vertical", seed=seed),
            layers.RandomRotation(0.5 * strength, fill_mode="reflect", seed=seed),
            layers.RandomZoom((-0.15 * strength, 0.15 * strength), fill_mode="reflect", seed=seed),
            layers.RandomBrightness(0.1 * strength, value_range=(0, 255), seed=seed),
            layers.RandomContrast(0.15 * strength, value_range=(0, 255), seed=seed),
            layers.RandomHue(0.03 * strength, value_range=(0, 255), seed=seed),
        ],
        name="augmentation",
    )


def training_dataset(arrays, labels, batch_size, augmentation, seed) -> tf.data.Dataset:
    """Shuffled batches of the in-memory decoded images, augmented in parallel."""
    dataset = tf.data.Dataset.from_tensor_slices((arrays, labels.astype("float32")))
    dataset = dataset.shuffle(len(labels), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size)
    dataset = dataset.map(
        lambda x, y: (tf.cast(x, tf.float32), y), num_parallel_calls=tf.data.AUTOTUNE
    )
    if augmentation is not None:
        dataset = dataset.map(
            lambda x, y: (augmentation(x, training=True), y), num_parallel_calls=tf.data.AUTOTUNE
        )
    return dataset.prefetch(tf.data.AUTOTUNE)


def validation_dataset(arrays, labels, batch_size) -> tf.data.Dataset:
    dataset = tf.data.Dataset.from_tensor_slices((arrays, labels.astype("float32")))
    return dataset.batch(batch_size).map(lambda x, y: (tf.cast(x, tf.float32), y))


@dataclass
class PreparedData:
    dataset: data.Dataset
    split: splits.SplitResult
    arrays: np.ndarray
    keys: list[str]
    labels: np.ndarray

    def indices(self, name: str) -> np.ndarray:
        return np.flatnonzero(self.split.split == name)


def prepare_data(train_config: TrainConfig, report: ProgressCallback) -> PreparedData:
    """Load, group, split (before anything is tuned) and decode every image once."""
    # A full decode drops unreadable files (truncated JPEGs included) with a warning, so one
    # bad file costs that image, not the whole training.
    dataset = data.load_dataset(
        train_config.data_dir, train_config.csv, train_config.sites, full_decode=True
    )
    paths = dataset.frame["path"].tolist()
    report(Progress("data", f"Hashing {len(paths)} images to group near-duplicates"))
    hashes = splits.hash_files(paths)
    split = splits.split_dataset(
        dataset.frame, seed=train_config.seed, fractions=train_config.fractions, hashes=hashes
    )
    report(Progress("data", f"Decoding {len(paths)} images at {train_config.image_size} px"))
    decoded = images.decode_many(paths, train_config.image_size, train_config.resample)
    failures = [
        f"{path}: {item}"
        for path, item in zip(paths, decoded, strict=True)
        if isinstance(item, Exception)
    ]
    if failures:
        raise data.DatasetError("unreadable images: " + "; ".join(failures[:10]))
    # Validation already hashed every file's bytes: those digests key the feature cache.
    keys = dataset.frame["sha256"].tolist()
    labels = dataset.frame["label"].to_numpy(dtype="int64")
    arrays = np.stack([array for array in decoded if isinstance(array, np.ndarray)])
    return PreparedData(dataset, split, arrays, keys, labels)


def uint8_function(model: keras.Model, image_size: int):
    signature = [tf.TensorSpec([None, image_size, image_size, 3], tf.uint8)]
    return tf.function(lambda x: model(tf.cast(x, tf.float32), training=False), signature)


def head_features(model, train_config, prepared, rows, report) -> np.ndarray:
    """Frozen-backbone features of `rows`, from the on-disk cache where possible."""
    extractor = uint8_function(build_feature_extractor(model), train_config.image_size)
    digest = features.weights_digest(model.get_layer("backbone").get_weights())
    folder = features.cache_folder(
        train_config.backbone, train_config.image_size, train_config.resample, digest
    )

    def compute(missing: list[int]) -> np.ndarray:
        report(Progress("features", f"Computing backbone features of {len(missing)} images"))
        arrays = prepared.arrays[rows[missing]]
        batches = [extractor(arrays[i : i + 64]).numpy() for i in range(0, len(arrays), 64)]
        return np.concatenate(batches)

    keys = [prepared.keys[row] for row in rows]
    vectors, computed = features.cached_features(folder, keys, compute)
    report(Progress("features", f"Features ready ({len(keys) - computed} from the cache)"))
    return vectors


def early_stopping(patience: int) -> keras.callbacks.EarlyStopping:
    return keras.callbacks.EarlyStopping(
        monitor="val_auc", mode="max", patience=patience, restore_best_weights=True
    )


def train_head(model, train_config, prepared, report, should_stop, history) -> float:
    """Phase 1: fit the head on cached features; returns the best validation AUC."""
    train_rows, val_rows = prepared.indices("train"), prepared.indices("val")
    # One lookup for both splits: each reads every cache shard and traces the extractor.
    vectors = head_features(
        model, train_config, prepared, np.concatenate([train_rows, val_rows]), report
    )
    train_x, val_x = vectors[: len(train_rows)], vectors[len(train_rows) :]
    head = build_head(model)
    head.compile(
        optimizer=keras.optimizers.Adam(train_config.head_learning_rate),
        loss="binary_crossentropy",
        metrics=[keras.metrics.AUC(name="auc")],
    )
    batches = int(np.ceil(len(train_rows) / 64))
    reporter = ProgressReporter(
        "head", train_config.head_epochs, batches, report, should_stop, history
    )
    fit = head.fit(
        train_x,
        prepared.labels[train_rows],
        validation_data=(val_x, prepared.labels[val_rows]),
        epochs=train_config.head_epochs,
        batch_size=64,
        class_weight=class_weights(prepared.labels[train_rows], train_config.imbalance),
        callbacks=[early_stopping(train_config.patience + 2), reporter],
        verbose=0,
    )
    return max(fit.history["val_auc"])


def fine_tune_schedule(peak_rate: float, epochs: int, batches: int):
    """One epoch of linear warm-up to `peak_rate`, then cosine decay to 5% of it.

    Starting at the peak rate knocked validation AUC well below the head's in the first
    epoch (the new layers meet augmented images and large updates at once); the decay keeps
    the last epochs from undoing the best ones.
    """
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=peak_rate / 10,
        decay_steps=max(1, (epochs - 1) * batches),
        alpha=0.05,
        warmup_target=peak_rate,
        warmup_steps=batches,
    )


def fine_tune(model, train_config, prepared, report, should_stop, history) -> float:
    """Phase 2: unfreeze the backbone's top layers and train with augmentation."""
    train_rows, val_rows = prepared.indices("train"), prepared.indices("val")
    set_fine_tune_layers(model, train_config.fine_tune_layers)
    batches = int(np.ceil(len(train_rows) / train_config.batch_size))
    model.compile(
        optimizer=keras.optimizers.Adam(
            fine_tune_schedule(
                train_config.fine_tune_learning_rate, train_config.fine_tune_epochs, batches
            )
        ),
        loss="binary_crossentropy",
        metrics=[keras.metrics.AUC(name="auc")],
    )
    strength = AUGMENTATION_STRENGTHS[train_config.augmentation]
    augmentation = augmenter(strength, train_config.seed) if strength > 0 else None
    train_data = training_dataset(
        prepared.arrays[train_rows],
        prepared.labels[train_rows],
        train_config.batch_size,
        augmentation,
        train_config.seed,
    )
    reporter = ProgressReporter(
        "fine_tune", train_config.fine_tune_epochs, batches, report, should_stop, history
    )
    fit = model.fit(
        train_data,
        validation_data=validation_dataset(
            prepared.arrays[val_rows], prepared.labels[val_rows], 64
        ),
        epochs=train_config.fine_tune_epochs,
        shuffle=False,  # The tf.data pipeline shuffles each epoch itself.
        class_weight=class_weights(prepared.labels[train_rows], train_config.imbalance),
        callbacks=[early_stopping(train_config.patience), reporter],
        verbose=0,
    )
    return max(fit.history["val_auc"])


@dataclass
class Scores:
    """Everything measured on the held-out splits once training is over."""

    calibration: dict
    threshold: float
    val_metrics: dict
    test_metrics: dict
    test_probabilities: np.ndarray
    ood: object


def score_splits(model, train_config, prepared, report) -> Scores:
    """Calibrate and pick the threshold on validation, then score the test split once."""
    from core.metrics import evaluate
    from core.ood import fit_ood

    report(Progress("evaluate", "Scoring the validation and test splits"))
    rows = {name: prepared.indices(name) for name in ("train", "val", "test")}
    forward = make_forward(model, train_config.tta)
    raw_val, val_features = forward_in_batches(forward, prepared.arrays[rows["val"]])
    raw_test, _ = forward_in_batches(forward, prepared.arrays[rows["test"]])
    val_labels, test_labels = prepared.labels[rows["val"]], prepared.labels[rows["test"]]
    calibration = fit_calibration(val_labels, raw_val, train_config.calibration)
    val_probabilities = calibration.apply(raw_val)
    threshold = choose_threshold(
        val_labels, val_probabilities, train_config.threshold_rule, train_config.target_sensitivity
    )
    test_probabilities = calibration.apply(raw_test)
    test_frame = prepared.dataset.frame.iloc[rows["test"]]
    subgroups = {name: test_frame[name].tolist() for name in ("site", "source", "diagnosis")}
    test_metrics = evaluate(test_labels, test_probabilities, threshold, subgroups=subgroups)
    val_metrics = evaluate(val_labels, val_probabilities, threshold, n_bootstrap=200)
    report(Progress("evaluate", "Fitting the out-of-distribution detector"))
    _, train_features = forward_in_batches(
        make_forward(model, False), prepared.arrays[rows["train"]]
    )
    return Scores(
        calibration=calibration.to_dict(),
        threshold=threshold,
        val_metrics=val_metrics,
        test_metrics=test_metrics,
        test_probabilities=test_probabilities,
        ood=fit_ood(train_features, val_features),
    )


@dataclass(frozen=True)
class TrainResult:
    run_id: str
    folder: str
    test_metrics: dict


def new_run_id(backbone: str) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{backbone.replace('_', '-')}-{secrets.token_hex(2)}"


def write_run_files(folder: Path, model, card, history, prepared, scores) -> None:
    # An uncompiled twin sharing the layers is saved, so the file carries no optimizer state
    # (the Adam slots of the fine-tuned layers would double its size for nothing).
    keras.Model(model.input, model.output, name=model.name).save(folder / runs.MODEL_FILE)
    pd.DataFrame(history).to_csv(folder / "history.csv", index=False)
    frame = prepared.dataset.frame
    test_rows = prepared.indices("test")
    test_frame = frame.iloc[test_rows][["image_name", "label", "site", "source", "diagnosis"]]
    # Full precision: the Metrics page recomputes labels at the card threshold from these.
    test_frame.insert(2, "probability", scores.test_probabilities)
    test_frame.to_csv(folder / "test_predictions.csv", index=False)
    prepared.split.to_frame().to_csv(folder / "split.csv", index=False)
    scores.ood.save(folder)
    runs.write_json_atomic(folder / runs.CARD_FILE, card)


def save_run(run_id, model, card, history, prepared, scores, directory=None) -> Path:
    """Write everything under a dot-prefixed name, then rename: a run appears whole or not."""
    root = runs.models_dir(directory)
    root.mkdir(parents=True, exist_ok=True)
    partial = root / f".{run_id}.partial"
    try:
        partial.mkdir()
        write_run_files(partial, model, card, history, prepared, scores)
        final = root / run_id
        partial.rename(final)
    finally:
        if partial.exists():
            shutil.rmtree(partial, ignore_errors=True)
    return final


def distribution_strategy(name: str) -> tf.distribute.Strategy:
    """Mirrored across visible GPUs (one CPU replica where there is none), else default."""
    if name == "mirrored":
        if tf.config.list_physical_devices("GPU"):
            keras.mixed_precision.set_global_policy("mixed_float16")
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def train(
    train_config: TrainConfig,
    report: ProgressCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
    models_directory: Path | None = None,
    activate: bool = False,
) -> TrainResult:
    """Train, evaluate and save one run; the active model changes only if `activate`."""
    train_config.validate()
    report = report or (lambda progress: None)
    should_stop = should_stop or (lambda: False)
    keras.utils.set_random_seed(train_config.seed)
    started = time.perf_counter()
    prepared = prepare_data(train_config, report)
    timings = {"prepare_seconds": round(time.perf_counter() - started, 1)}
    history: list[dict] = []
    with distribution_strategy(train_config.strategy).scope():
        model = build_model(train_config.backbone, train_config.image_size, train_config.weights)
        phase_start = time.perf_counter()
        head_auc = train_head(model, train_config, prepared, report, should_stop, history)
        timings["head_seconds"] = round(time.perf_counter() - phase_start, 1)
        if train_config.fine_tune_epochs:
            head_weights = model.get_weights()
            phase_start = time.perf_counter()
            tuned_auc = fine_tune(model, train_config, prepared, report, should_stop, history)
            timings["fine_tune_seconds"] = round(time.perf_counter() - phase_start, 1)
            if tuned_auc < head_auc:
                # Fine-tuning that does not beat the head on validation is not kept.
                report(Progress("fine_tune", "Fine-tuning did not help; keeping the head"))
                model.set_weights(head_weights)
    phase_start = time.perf_counter()
    scores = score_splits(model, train_config, prepared, report)
    timings["evaluate_seconds"] = round(time.perf_counter() - phase_start, 1)
    timings["total_seconds"] = round(time.perf_counter() - started, 1)
    run_id = new_run_id(train_config.backbone)
    card = build_card(run_id, train_config, prepared, scores, timings)
    folder = save_run(run_id, model, card, history, prepared, scores, models_directory)
    if activate:
        runs.set_active(run_id, models_directory)
    report(Progress("done", f"Run {run_id} saved"))
    return TrainResult(run_id, str(folder), scores.test_metrics)
