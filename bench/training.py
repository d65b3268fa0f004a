"""Training benchmarks: the feature cache of the head phase and the fine-tuning pipeline."""

import contextlib
import functools
import tempfile
from pathlib import Path

import keras
import numpy as np
from sklearn.metrics import roc_auc_score

from bench.common import Settings, predictor_for, timed
from bench.report import Figure, Goal
from core import config
from core.modelling.model import (
    BACKBONE_LAYER,
    DIAGNOSIS_LAYER,
    HEAD_LAYER,
    build_head,
    build_model,
    has_diagnoses,
    named_outputs,
    set_fine_tune_layers,
)
from core.serving.inference import forward_in_batches, make_forward
from core.train import image_cache, pipeline
from core.train.recipe import (
    PreparedData,
    Targets,
    compile_named,
    head_features,
    prepare_data,
    prepared_targets,
    train_head,
)
from core.train.train_config import AUGMENTATION_STRENGTHS, TrainConfig

TIMED_HEAD_EPOCHS = 10
HEAD_BATCH_SIZE = 64


def ignore_progress(progress) -> None:
    """Benchmarks print their own table, not training progress."""


def never_stop() -> bool:
    return False


def train_config(settings: Settings, head_epochs: int = TIMED_HEAD_EPOCHS) -> TrainConfig:
    """The run's backbone and input size on the benchmark data; early stopping never fires."""
    card = settings.run.card
    return TrainConfig(
        data_dir=str(settings.images_dir),
        csv=str(settings.metadata_csv),
        backbone=card.backbone,
        image_size=card.image_size,
        resample=card.resample,
        target=card.target,
        weights="none",
        head_epochs=head_epochs,
        patience=head_epochs,
    )


@functools.cache
def prepared_data(train_settings: tuple) -> tuple[PreparedData, float]:
    data_dir, csv, image_size, resample = train_settings
    train = TrainConfig(data_dir=data_dir, csv=csv, image_size=image_size, resample=resample)
    seconds, prepared = timed(lambda: prepare_data(train, ignore_progress))
    return prepared, seconds


def prepared_for(settings: Settings) -> tuple[PreparedData, float]:
    """Split and decoded images, prepared once per session and shared by both benchmarks."""
    train = train_config(settings)
    return prepared_data((train.data_dir, train.csv, train.image_size, train.resample))


def fresh_model(settings: Settings, train: TrainConfig) -> keras.Model:
    """A new model with the run's backbone weights and a freshly initialised head.

    Copying the backbone from the run needs no ImageNet download, and a frozen backbone is
    all the head phase sees.
    """
    keras.utils.set_random_seed(train.seed)
    model = build_model(train.backbone, train.image_size, weights="none", target=train.target)
    trained = predictor_for(settings.run).model.get_layer(BACKBONE_LAYER)
    model.get_layer(BACKBONE_LAYER).set_weights(trained.get_weights())
    return model


@contextlib.contextmanager
def empty_feature_cache(settings: Settings):
    """Point the feature cache at an empty folder, so the first pass really extracts."""
    saved = config.CACHE_DIR
    with tempfile.TemporaryDirectory(dir=settings.work_dir) as folder:
        config.CACHE_DIR = Path(folder)
        try:
            yield
        finally:
            config.CACHE_DIR = saved


def training_cache(settings: Settings) -> list[Figure]:
    """Ten head epochs on cached features vs one feature-extraction pass, and equal AUC."""
    prepared, prepare_seconds = prepared_for(settings)
    train = train_config(settings)
    rows = np.concatenate([prepared.indices("train"), prepared.indices("val")])
    with empty_feature_cache(settings):
        model = fresh_model(settings, train)
        extract_seconds, _ = timed(
            lambda: head_features(model, train, prepared, rows, ignore_progress)
        )
        head_seconds, _ = timed(
            lambda: train_head(model, train, prepared, ignore_progress, never_stop, [])
        )
        comparison = compare_head_training(settings, prepared, settings.size(3, 2))
    return [
        Figure(
            group="cache",
            name=f"{TIMED_HEAD_EPOCHS} head epochs on cached features",
            value=head_seconds,
            baseline=extract_seconds,
            unit="s",
            baseline_name=f"one feature extraction pass ({len(rows)} images)",
            goal=Goal("ratio", "<=", 1.5),
            details={"prepare_data_seconds": prepare_seconds, "images": len(rows)},
        ),
        Figure(
            group="cache",
            name=f"val AUC, head on cached features ({comparison['epochs']} epochs)",
            value=comparison["cached_auc"],
            baseline=comparison["full_auc"],
            unit="",
            baseline_name="same head through the full model",
            goal=Goal("difference", "<=", 0.005),
            details=comparison,
        ),
    ]


def fit_head(model: keras.Model, inputs, targets: Targets, train: TrainConfig, epochs: int):
    """The head phase's optimiser, losses, batch size and weights; no augmentation.

    `model` has named outputs (`build_head`, or `named_outputs` of the full model).
    """
    keras.utils.set_random_seed(train.seed)
    dataset = pipeline.training_dataset(
        inputs, targets.targets, targets.weights, HEAD_BATCH_SIZE, train.seed
    )
    compile_named(model, keras.optimizers.Adam(train.head_learning_rate), targets)
    model.fit(dataset, epochs=epochs, verbose=0)


def head_layers(model: keras.Model) -> list[str]:
    """The layers the head phase trains (a diagnosis model's malignant sum is frozen)."""
    return [DIAGNOSIS_LAYER] if has_diagnoses(model) else [HEAD_LAYER]


def head_weights(model: keras.Model) -> list[np.ndarray]:
    return [array for name in head_layers(model) for array in model.get_layer(name).get_weights()]


def validation_auc(model: keras.Model, prepared: PreparedData) -> float:
    """AUC of the full model on the validation images, however its head was trained."""
    rows = prepared.indices("val")
    raw, *_ = forward_in_batches(make_forward(model, False), prepared.arrays[rows])
    return float(roc_auc_score(prepared.labels[rows], raw))


def compare_head_training(settings: Settings, prepared: PreparedData, epochs: int) -> dict:
    """Train the same head (same init, seed, epochs) on cached features and end to end."""
    train = train_config(settings, head_epochs=epochs)
    train_rows = prepared.indices("train")
    targets = prepared_targets(prepared, train).rows(train_rows)
    cached_model, full_model = fresh_model(settings, train), fresh_model(settings, train)
    initial = head_weights(cached_model)
    for name in head_layers(cached_model):
        full_model.get_layer(name).set_weights(cached_model.get_layer(name).get_weights())
    features = head_features(cached_model, train, prepared, train_rows, ignore_progress)
    cached_seconds, _ = timed(
        lambda: fit_head(build_head(cached_model), features, targets, train, epochs)
    )
    full_model.get_layer(BACKBONE_LAYER).trainable = False
    full_seconds, _ = timed(
        lambda: fit_head(
            # Strength 0: the wrapper only casts the uint8 batches, as fine-tuning does.
            pipeline.augmented(named_outputs(full_model), 0.0, train.seed),
            prepared.arrays[train_rows],
            targets,
            train,
            epochs,
        )
    )
    cached_head, full_head = head_weights(cached_model), head_weights(full_model)
    return {
        "epochs": epochs,
        "cached_auc": validation_auc(cached_model, prepared),
        "full_auc": validation_auc(full_model, prepared),
        "cached_training_seconds": cached_seconds,
        "full_model_training_seconds": full_seconds,
        # Shows that both heads trained (moved from the shared start) and how far apart they end.
        "head_weights_max_change": max_difference(cached_head, initial),
        "head_weights_max_difference": max_difference(cached_head, full_head),
    }


def max_difference(first: list[np.ndarray], second: list[np.ndarray]) -> float:
    return max(float(np.max(np.abs(a - b))) for a, b in zip(first, second, strict=True))


def fine_tune_model(settings: Settings, train: TrainConfig, targets: Targets) -> keras.Model:
    """A model set up as `core.train.recipe.fine_tune` sets it up: top layers open, augmentation
    in the train step, compiled."""
    model = fresh_model(settings, train)
    set_fine_tune_layers(model, train.fine_tune_layers)
    strength = AUGMENTATION_STRENGTHS[train.augmentation]
    trainable = pipeline.augmented(named_outputs(model), strength, train.seed)
    compile_named(trainable, keras.optimizers.Adam(train.fine_tune_learning_rate), targets)
    return trainable


def stored_copy(arrays: np.ndarray, root: Path) -> pipeline.StoredImages:
    """The decoded images written to a decoded-image cache, as `store_images` leaves them."""
    folder = image_cache.cache_folder(arrays.shape[1], "bilinear", root)
    paths = [image_cache.image_path(folder, f"{index:064x}") for index in range(len(arrays))]
    for path, array in zip(paths, arrays, strict=True):
        image_cache.write_image(path, array)
    return pipeline.StoredImages([str(path) for path in paths], arrays.shape[1])


def images_per_second(model, dataset, steps: int, batch_size: int) -> float:
    """One short fit to trace, then `steps` batches timed."""
    model.fit(dataset, steps_per_epoch=2, epochs=1, verbose=0)
    seconds, _ = timed(lambda: model.fit(dataset, steps_per_epoch=steps, verbose=0))
    return steps * batch_size / seconds


def fine_tune_pipeline(settings: Settings) -> list[Figure]:
    """Images per second of each input pipeline feeding the train step, vs the step alone."""
    prepared, _ = prepared_for(settings)
    train = train_config(settings)
    steps = settings.size(40, 4)
    rows = prepared.indices("train")
    targets = prepared_targets(prepared, train).rows(rows)
    model = fine_tune_model(settings, train, targets)
    sources = {"in memory": prepared.arrays[rows]}
    with tempfile.TemporaryDirectory(dir=settings.work_dir) as folder:
        sources["streaming"] = stored_copy(prepared.arrays[rows], Path(folder))
        speeds = {
            name: images_per_second(
                model,
                pipeline.training_dataset(
                    source, targets.targets, targets.weights, train.batch_size, train.seed
                ),
                steps,
                train.batch_size,
            )
            for name, source in sources.items()
        }
    step_speed = train_step_speed(model, prepared.arrays[rows], targets, train, steps)
    return [
        Figure(
            group="fine_tune",
            name=f"fine-tune input pipeline ({name}) + train step ({steps} batches)",
            value=speed,
            baseline=step_speed,
            unit="img/s",
            baseline_name="train step alone on one in-memory batch",
            goal=Goal("ratio", ">=", 0.9),
            details={"batch_size": train.batch_size, "layers": train.fine_tune_layers},
        )
        for name, speed in speeds.items()
    ]


def train_step_speed(model, arrays, targets: Targets, train: TrainConfig, steps: int) -> float:
    """Images per second of the train step (augmentation included) on one uint8 batch."""
    batch = arrays[: train.batch_size]
    first = targets.rows(np.arange(train.batch_size))
    model.train_on_batch(batch, first.targets, sample_weight=first.weights)
    seconds, _ = timed(
        lambda: [
            model.train_on_batch(batch, first.targets, sample_weight=first.weights)
            for _ in range(steps)
        ]
    )
    return steps * train.batch_size / seconds
