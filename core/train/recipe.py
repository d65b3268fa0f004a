"""The recipe's steps, shared by a training run and each of its cross-validation folds.

`prepare_data` loads, groups, splits and decodes; `fit_model` trains the head on cached
frozen-backbone features, then fine-tunes the backbone's top layers with augmentation;
`score_splits` calibrates and picks the threshold on validation and scores the test split once.
"""

import time
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from core.analysis.calibration import choose_threshold, fit_calibration
from core.inputs import data, diagnoses, images, splits
from core.modelling.model import (
    DIAGNOSIS_LAYER,
    HEAD_LAYER,
    ResolvedWeights,
    build_feature_extractor,
    build_head,
    build_model,
    member_count,
    named_outputs,
    set_fine_tune_layers,
)
from core.modelling.ood import OodModel, evaluate_detector, fit_ood
from core.progress import Cancelled, Progress, ProgressCallback
from core.serving.inference import forward_in_batches, images_per_call, make_forward
from core.train import distributed, features, pipeline
from core.train.train_config import AUGMENTATION_STRENGTHS, TrainConfig


class ProgressReporter(keras.callbacks.Callback):
    """Forwards Keras' epoch and batch events to the caller and honours cancellation."""

    def __init__(self, stage, epochs, batches, report, should_stop, history_rows):
        super().__init__()
        self.stage, self.epochs, self.batches = stage, epochs, batches
        self.report, self.should_stop, self.history_rows = report, should_stop, history_rows
        self.epoch, self.epoch_start = 0, time.perf_counter()
        self.counts: dict[str, int] = {}

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch, self.epoch_start = epoch + 1, time.perf_counter()

    def on_test_begin(self, logs=None):
        # Validation is about to reset the metrics that counted this epoch's examples.
        self.counts = distributed.example_counts(self.model)

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
        # A diagnosis model's AUC is its malignant output's: one name for every model.
        logs = {
            key.replace(f"{HEAD_LAYER}_auc", "auc"): float(value)
            for key, value in (logs or {}).items()
        }
        row = {"phase": self.stage, "epoch": epoch + 1, "seconds": 0.0, **logs, **self.counts}
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


@dataclass(frozen=True)
class Targets:
    """What a named-output model is fitted to: per-output targets, losses and row weights."""

    targets: dict
    losses: dict
    weights: dict

    def rows(self, rows: np.ndarray) -> "Targets":
        return Targets(
            {name: value[rows] for name, value in self.targets.items()},
            self.losses,
            {name: value[rows] for name, value in self.weights.items()},
        )


def fit_targets(labels, classes, target: str, row_weights: np.ndarray) -> Targets:
    """Targets for `target` ("diagnosis" or "binary"), every output weighted by `row_weights`.

    The diagnosis model learns the classes only; its malignant output is their frozen sum,
    so it needs no loss of its own.
    """
    targets = {HEAD_LAYER: labels.astype("float32")}
    losses: dict = {HEAD_LAYER: "binary_crossentropy"}
    if target == "diagnosis":
        targets[DIAGNOSIS_LAYER] = classes.astype("int64")
        losses = {HEAD_LAYER: None, DIAGNOSIS_LAYER: "sparse_categorical_crossentropy"}
    return Targets(targets, losses, {name: row_weights for name in targets})


def auc_key(fit_targets_: Targets) -> str:
    """Keras names a metric after its output only when the model has several outputs."""
    return "val_auc" if len(fit_targets_.targets) == 1 else f"val_{HEAD_LAYER}_auc"


def compile_named(model: keras.Model, optimizer, fit_targets_: Targets) -> None:
    model.compile(
        optimizer=optimizer,
        loss=fit_targets_.losses,
        metrics={HEAD_LAYER: [keras.metrics.AUC(name="auc")]},
    )


@dataclass
class PreparedData:
    dataset: data.Dataset
    split: splits.SplitResult
    # Decoded uint8 images: an array, or `pipeline.StoredImages` read from the cache.
    arrays: np.ndarray | pipeline.StoredImages
    keys: list[str]
    labels: np.ndarray
    # Class index per row in `core.inputs.diagnoses.DIAGNOSIS_NAMES`.
    classes: np.ndarray
    input_pipeline: str = "memory"

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
    size, resample = train_config.image_size, train_config.resample
    input_pipeline = pipeline.choose_pipeline(train_config.input_pipeline, len(paths), size)
    report(Progress("data", f"Decoding {len(paths)} images at {size} px ({input_pipeline})"))
    # Validation already hashed every file's bytes: those digests key both caches.
    keys = dataset.frame["sha256"].tolist()
    arrays = pipeline.load_images(input_pipeline, paths, keys, size, resample)
    labels = dataset.frame["label"].to_numpy(dtype="int64")
    classes = diagnoses.class_indices(dataset.frame["diagnosis"], labels)
    return PreparedData(dataset, split, arrays, keys, labels, classes, input_pipeline)


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


def early_stopping(patience: int, monitor: str) -> keras.callbacks.EarlyStopping:
    return keras.callbacks.EarlyStopping(
        monitor=monitor, mode="max", patience=patience, restore_best_weights=True
    )


def train_head(model, train_config, prepared, report, should_stop, history) -> float:
    """Phase 1: fit the head on cached features; returns the best validation AUC."""
    train_rows, val_rows = prepared.indices("train"), prepared.indices("val")
    # One lookup for both splits: each reads every cache shard and traces the extractor.
    vectors = head_features(
        model, train_config, prepared, np.concatenate([train_rows, val_rows]), report
    )
    train_x, val_x = vectors[: len(train_rows)], vectors[len(train_rows) :]
    targets = prepared_targets(prepared, train_config)
    head = build_head(model)
    compile_named(head, keras.optimizers.Adam(train_config.head_learning_rate), targets)
    batches = int(np.ceil(len(train_rows) / 64))
    reporter = ProgressReporter(
        "head", train_config.head_epochs, batches, report, should_stop, history
    )
    train_targets, val_targets = targets.rows(train_rows), targets.rows(val_rows)
    fit = head.fit(
        train_x,
        train_targets.targets,
        sample_weight=train_targets.weights,
        validation_data=(val_x, val_targets.targets),
        epochs=train_config.head_epochs,
        batch_size=64,
        callbacks=[early_stopping(train_config.patience + 2, auc_key(targets)), reporter],
        verbose=0,
    )
    return max(fit.history[auc_key(targets)])


def prepared_targets(prepared: PreparedData, train_config: TrainConfig) -> Targets:
    """Targets of every row, weighted to balance the training split's benign and malignant.

    Balancing the diagnoses instead would let a dozen squamous cell carcinomas weigh as much
    as thousands of nevi.
    """
    train_labels = prepared.labels[prepared.indices("train")]
    weights = class_weights(train_labels, train_config.imbalance) or {0: 1.0, 1: 1.0}
    row_weights = np.array([weights[int(label)] for label in prepared.labels], dtype="float32")
    return fit_targets(prepared.labels, prepared.classes, train_config.target, row_weights)


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
    targets = prepared_targets(prepared, train_config)
    strength = AUGMENTATION_STRENGTHS[train_config.augmentation]
    trainable = pipeline.augmented(named_outputs(model), strength, train_config.seed)
    schedule = fine_tune_schedule(
        train_config.fine_tune_learning_rate, train_config.fine_tune_epochs, batches
    )
    compile_named(trainable, keras.optimizers.Adam(schedule), targets)
    train_targets, val_targets = targets.rows(train_rows), targets.rows(val_rows)
    train_data = pipeline.training_dataset(
        prepared.arrays[train_rows],
        train_targets.targets,
        train_targets.weights,
        train_config.batch_size,
        train_config.seed,
    )
    val_data = pipeline.validation_dataset(prepared.arrays[val_rows], val_targets.targets, 64)
    train_data, val_data = map(distributed.shard_by_data, (train_data, val_data))
    reporter = ProgressReporter(
        "fine_tune", train_config.fine_tune_epochs, batches, report, should_stop, history
    )
    fit = trainable.fit(
        train_data,
        validation_data=val_data,
        epochs=train_config.fine_tune_epochs,
        shuffle=False,  # The tf.data pipeline shuffles each epoch itself.
        callbacks=[early_stopping(train_config.patience, auc_key(targets)), reporter],
        verbose=0,
    )
    return max(fit.history[auc_key(targets)])


@dataclass
class Detector:
    """The OOD detector of a run and what it was measured to do (None: too few images)."""

    ood: OodModel | None
    flagged: dict
    check: dict | None


@dataclass
class Scores:
    """Everything measured on the held-out splits once training is over."""

    calibration: dict
    threshold: float
    threshold_note: str
    val_metrics: dict
    test_metrics: dict
    test_probabilities: np.ndarray
    detector: Detector


def forward_rows(model, train_config, arrays, tta: bool):
    forward = make_forward(model, tta, train_config.tta_views)
    per_call = images_per_call(tta, train_config.tta_views, member_count(model))
    return forward_in_batches(forward, arrays, per_call)


def pick_threshold(train_config, val_labels, val_probabilities, held_out=None):
    """The operating threshold and a sentence for the card saying how it was chosen.

    With held-out-source predictions (labels, calibrated probabilities of models that never
    saw those sources), the threshold is the lower of the two reaching the target
    sensitivity, so that sensitivity holds on other clinics' images and on the validation
    split alike.
    """
    target = train_config.target_sensitivity
    rule = "youden" if train_config.threshold_rule == "youden" else "sensitivity"
    threshold = choose_threshold(val_labels, val_probabilities, rule, target)
    if train_config.threshold_rule == "youden":
        return threshold, "Youden's J on the validation split"
    note = f"highest threshold reaching {target:.0%} sensitivity on the validation split"
    if held_out is None:
        return threshold, note
    pooled = choose_threshold(*held_out, "sensitivity", target)
    note = (
        f"the lower of the {note} ({threshold:.4f}) and on the pooled held-out-source "
        f"predictions of the source cross-validation ({pooled:.4f})"
    )
    return min(threshold, pooled), note


def fit_detector(model, train_config, arrays: dict, report, outputs=None) -> Detector:
    """Fit the OOD detector on the training split, threshold it on validation, measure it.

    `arrays` holds the uint8 images of "train", "val" and "test"; `outputs` any of their
    `ForwardOutputs` already computed (their features and details do not depend on TTA).
    """
    report(Progress("evaluate", "Fitting the out-of-distribution detector"))
    outputs = dict(outputs or {})
    for name in ("train", "val", "test"):
        if name not in outputs:
            outputs[name] = forward_rows(model, train_config, arrays[name], False)
    features = {name: values.features for name, values in outputs.items()}
    details = {name: values.details for name, values in outputs.items()}
    try:
        ood = fit_ood(features["train"], features["val"], heldout_details=details["val"])
    except ValueError as error:
        report(Progress("evaluate", f"No out-of-distribution detector: {error}"))
        return Detector(None, dict.fromkeys(("val", "test")), None)
    flagged = {
        name: float(np.mean(ood.score(features[name], details[name]) > ood.threshold))
        for name in ("val", "test")
    }
    real_features, real_details = (
        np.concatenate([group["val"], group["test"]]) for group in (features, details)
    )
    check = non_dermoscopy_check(model, train_config, ood, real_features, real_details, report)
    return Detector(ood, flagged, check)


def non_dermoscopy_check(model, train_config, ood, derm_features, derm_details, report) -> dict:
    """The detector on the generated non-dermoscopy set against real validation/test images.

    Shares flagged of both, the score's AUROC, and how many of each kind went unflagged.
    """
    from core.modelling.ood_set import kind_of, non_dermoscopy_images

    report(Progress("evaluate", "Checking the detector on non-dermoscopy images"))
    named = non_dermoscopy_images()
    size, resample = train_config.image_size, train_config.resample
    arrays = np.stack([images.resize_for_model(image, size, resample) for _, image in named])
    outputs = forward_rows(model, train_config, arrays, False)
    features, details = outputs.features, outputs.details
    result: dict = dict(evaluate_detector(ood, derm_features, features, derm_details, details))
    missed = ood.score(features, details) <= ood.threshold
    kinds = [kind_of(name) for name, _ in named]
    result["missed_by_kind"] = {
        kind: int(sum(miss for miss, other in zip(missed, kinds, strict=True) if other == kind))
        for kind in sorted(set(kinds))
    }
    return result


def score_splits(model, train_config, prepared, report, held_out=None) -> Scores:
    """Calibrate and pick the threshold on validation, then score the test split once."""
    from core.analysis.metrics import evaluate

    report(Progress("evaluate", "Scoring the validation and test splits"))
    rows = {name: prepared.indices(name) for name in ("train", "val", "test")}
    outputs = {
        name: forward_rows(model, train_config, prepared.arrays[rows[name]], train_config.tta)
        for name in ("val", "test")
    }
    raw_val, raw_test = outputs["val"].probabilities, outputs["test"].probabilities
    val_labels, test_labels = prepared.labels[rows["val"]], prepared.labels[rows["test"]]
    calibration = fit_calibration(val_labels, raw_val, train_config.calibration)
    val_probabilities = calibration.apply(raw_val)
    threshold, note = pick_threshold(train_config, val_labels, val_probabilities, held_out)
    test_probabilities = calibration.apply(raw_test)
    test_frame = prepared.dataset.frame.iloc[rows["test"]]
    subgroups = {name: test_frame[name].tolist() for name in ("site", "source")}
    subgroups["diagnosis"] = diagnoses.vocabulary_names(test_frame["diagnosis"], test_labels)
    test_metrics = evaluate(test_labels, test_probabilities, threshold, subgroups=subgroups)
    val_metrics = evaluate(val_labels, val_probabilities, threshold, n_bootstrap=200)
    arrays = {name: prepared.arrays[rows[name]] for name in rows}
    detector = fit_detector(model, train_config, arrays, report, outputs)
    return Scores(
        calibration=calibration.to_dict(),
        threshold=threshold,
        threshold_note=note,
        val_metrics=val_metrics,
        test_metrics=test_metrics,
        test_probabilities=test_probabilities,
        detector=detector,
    )


def distribution_strategy(name: str) -> tf.distribute.Strategy:
    """Mirrored across visible GPUs (one CPU replica where there is none), else default."""
    if name == "mirrored":
        if tf.config.list_physical_devices("GPU"):
            keras.mixed_precision.set_global_policy("mixed_float16")
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        return distributed.strategy()
    return tf.distribute.get_strategy()


def fit_model(train_config, prepared, weights: ResolvedWeights, report, should_stop):
    """Build the model, train its head, then fine-tune; returns (model, history, timings)."""
    keras.utils.set_random_seed(train_config.seed)
    history: list[dict] = []
    timings: dict[str, float] = {}
    strategy = distribution_strategy(train_config.strategy)
    distributed.check_same_split(strategy, prepared.keys, prepared.split.split)
    with strategy.scope():
        model = build_model(
            train_config.backbone,
            train_config.image_size,
            weights.argument,
            target=train_config.target,
        )
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
    return model, history, timings
