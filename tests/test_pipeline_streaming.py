"""The streaming input pipeline: the decoded-image cache, its datasets and a streamed run."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from app_fixtures import tiny_train_config
from conftest import synthetic_image, write_image

from core import config
from core.__main__ import build_parser
from core.commands import training_config
from core.inputs import data, images
from core.storage import runs
from core.train import image_cache, pipeline
from core.train.training import train

SIZE = 16


@pytest.fixture
def image_files(tmp_path):
    """Ten small synthetic PNGs with their content keys, as `prepare_data` has them."""
    rng = np.random.default_rng(0)
    paths = [
        str(write_image(synthetic_image(rng, 24), tmp_path / "images" / f"{index}.png"))
        for index in range(10)
    ]
    keys = [hashlib.sha256(Path(path).read_bytes()).hexdigest() for path in paths]
    return paths, keys


def collect(dataset) -> list[list[np.ndarray]]:
    """Every batch of a dataset as numpy, each element structure flattened."""
    import tensorflow as tf

    return [[np.asarray(part) for part in tf.nest.flatten(batch)] for batch in dataset]


def test_stored_images_read_back_as_the_decoded_arrays(image_files, tmp_path):
    paths, keys = image_files
    arrays = pipeline.decode_all(paths, SIZE, "bilinear")
    stored = pipeline.store_images(paths, keys, SIZE, "bilinear", root=tmp_path / "cache")
    assert len(stored) == len(arrays)
    np.testing.assert_array_equal(np.asarray(stored), arrays)
    rows = np.array([7, 2, 5])
    np.testing.assert_array_equal(np.asarray(stored[rows]), arrays[rows])
    np.testing.assert_array_equal(np.asarray(stored[rows][1:]), arrays[rows][1:])


def test_streamed_batches_equal_in_memory_batches(image_files, tmp_path):
    paths, keys = image_files
    arrays = pipeline.decode_all(paths, SIZE, "bilinear")
    stored = pipeline.store_images(paths, keys, SIZE, "bilinear", root=tmp_path / "cache")
    targets = {"malignant": np.arange(10, dtype="float32") % 2}
    weights = {"malignant": np.linspace(0.5, 1.5, 10).astype("float32")}
    for _ in range(2):  # Two epochs: the reshuffled order must match as well.
        in_memory = collect(pipeline.training_dataset(arrays, targets, weights, 4, seed=3))
        streamed = collect(pipeline.training_dataset(stored, targets, weights, 4, seed=3))
        assert len(in_memory) == len(streamed) == 3
        for memory_batch, stream_batch in zip(in_memory, streamed, strict=True):
            assert stream_batch[0].dtype == np.uint8
            for memory_part, stream_part in zip(memory_batch, stream_batch, strict=True):
                np.testing.assert_array_equal(memory_part, stream_part)
    first = collect(pipeline.training_dataset(stored, targets, weights, 10, seed=3))
    assert sorted(first[0][1].tolist()) == sorted(targets["malignant"].tolist())
    validation = collect(pipeline.validation_dataset(stored, targets, 4))
    np.testing.assert_array_equal(np.concatenate([batch[0] for batch in validation]), arrays)


def test_cached_images_are_reused_and_keyed_by_size(image_files, tmp_path, monkeypatch):
    paths, keys = image_files
    root = tmp_path / "cache"
    pipeline.store_images(paths, keys, SIZE, "bilinear", root=root)
    size_one = image_cache.cache_size(root)
    assert size_one == len(paths) * SIZE * SIZE * 3

    def no_decoding(*arguments, **options):
        raise AssertionError("a cached image was decoded again")

    monkeypatch.setattr(images, "decode_many", no_decoding)
    again = pipeline.store_images(paths, keys, SIZE, "bilinear", root=root)
    assert len(again) == len(paths)
    monkeypatch.undo()
    pipeline.store_images(paths, keys, SIZE * 2, "bilinear", root=root)
    assert image_cache.cache_size(root) == size_one * 5  # 32 px images beside the 16 px ones.


def test_size_limit_evicts_other_images_never_the_current_ones(image_files, tmp_path):
    paths, keys = image_files
    root = tmp_path / "cache"
    one_image = SIZE * SIZE * 3
    first = pipeline.store_images(paths[:5], keys[:5], SIZE, "bilinear", root=root)
    second = pipeline.store_images(
        paths[5:], keys[5:], SIZE, "bilinear", root=root, limit_bytes=6 * one_image
    )
    kept = {str(path) for path in image_cache.cached_files(root)}
    assert set(second.files) <= kept
    assert len(kept) == 6 and len(set(first.files) & kept) == 1
    # The images of the current call stay even when they alone exceed the limit.
    pipeline.store_images(paths, keys, SIZE, "bilinear", root=root, limit_bytes=one_image)
    assert len(image_cache.cached_files(root)) == len(paths)


def test_clear_cache_frees_every_image(image_files, tmp_path):
    paths, keys = image_files
    root = tmp_path / "cache"
    pipeline.store_images(paths, keys, SIZE, "bilinear", root=root)
    assert image_cache.clear_cache(root) == len(paths) * SIZE * SIZE * 3
    assert image_cache.cache_size(root) == 0 and image_cache.cached_files(root) == []


def test_unreadable_image_is_named_and_the_others_are_kept(image_files, tmp_path):
    paths, keys = image_files
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image at all")
    root = tmp_path / "cache"
    with pytest.raises(data.DatasetError, match="broken.jpg"):
        pipeline.store_images([*paths, str(broken)], [*keys, "f" * 64], SIZE, "bilinear", root)
    assert len(image_cache.cached_files(root)) == len(paths)


def test_auto_keeps_small_datasets_in_memory_and_streams_large_ones():
    assert pipeline.choose_pipeline("auto", 9419, 160) == "memory"
    assert pipeline.choose_pipeline("auto", 40_000, 384) == "stream"
    assert pipeline.choose_pipeline("stream", 10, 64) == "stream"
    with pytest.raises(ValueError, match="input_pipeline"):
        pipeline.choose_pipeline("disk", 10, 64)


def test_augmentation_runs_only_in_training():
    batch = np.random.default_rng(1).integers(0, 256, (4, SIZE, SIZE, 3), dtype=np.uint8)
    layer = pipeline.Augmentation(1.0, seed=5)
    inference = np.asarray(layer(batch, training=False))
    np.testing.assert_array_equal(inference, batch.astype("float32"))
    augmented = np.asarray(layer(batch, training=True))
    assert augmented.dtype == np.float32 and augmented.shape == batch.shape
    assert not np.array_equal(augmented, inference)
    assert augmented.min() >= 0 and augmented.max() <= 255


def test_input_pipeline_flag_reaches_the_config():
    arguments = build_parser().parse_args(
        ["train", "--data", "x", "--input-pipeline", "stream", "--preset", "quick"]
    )
    assert training_config(arguments, data_dir="x").input_pipeline == "stream"
    with pytest.raises(ValueError, match="input_pipeline"):
        tiny_train_config(input_pipeline="disk").validate()


@pytest.mark.slow
def test_tiny_streamed_training_completes_and_its_card_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(config, "CACHE_DIR", tmp_path / "cache")
    settings = tiny_train_config(fine_tune_epochs=1, input_pipeline="stream", tta=False)
    result = train(settings, models_directory=tmp_path / "models")
    card = json.loads((Path(result.folder) / runs.CARD_FILE).read_text())
    assert card["input_pipeline"] == "stream"
    assert card["config"]["input_pipeline"] == "stream"
    assert card["data"]["n_images"] == len(image_cache.cached_files(tmp_path / "cache"))
    history = (Path(result.folder) / runs.HISTORY_FILE).read_text()
    assert "fine_tune" in history
