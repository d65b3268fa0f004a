"""The non-dermoscopy test set, and the OOD flag of the committed default model on it."""

import collections
import hashlib

import numpy as np
import pandas as pd
import pytest

from core import config
from core.inputs import images
from core.modelling.ood import evaluate_detector, fit_ood
from core.modelling.ood_set import SCREENSHOT_FOLDER, kind_of, non_dermoscopy_images

DEFAULT_RUN = config.REPO_ROOT / "models" / "20261128-065433-mobilenet-v2-c0e8"
SAMPLE = config.REPO_ROOT / "data" / "sample"
KINDS = {"photo", "text", "drawing", "chart", "blank", "noise", "gradient", "checkerboard"}


@pytest.fixture(scope="module")
def ood_images():
    return non_dermoscopy_images()


def test_many_distinct_rgb_images_of_many_kinds(ood_images):
    assert 150 <= len(ood_images) <= 300
    names = [name for name, _ in ood_images]
    assert len(set(names)) == len(names)
    assert all(image.mode == "RGB" and min(image.size) >= 64 for _, image in ood_images)
    digests = {hashlib.sha256(image.tobytes()).hexdigest() for _, image in ood_images}
    assert len(digests) == len(ood_images)
    counts = collections.Counter(kind_of(name) for name in names)
    assert KINDS | {"screenshot", "ui", "hard"} <= set(counts)
    assert max(counts.values()) <= 0.2 * len(ood_images)


def test_set_is_deterministic(ood_images):
    again = non_dermoscopy_images()
    assert [name for name, _ in again] == [name for name, _ in ood_images]
    for (_, first), (_, second) in zip(again[::17], ood_images[::17], strict=True):
        assert first.tobytes() == second.tobytes()


def test_committed_screenshots_are_small_and_all_used(ood_images):
    files = sorted(SCREENSHOT_FOLDER.glob("*.jpg"))
    assert 20 <= len(files) <= 40
    assert sum(path.stat().st_size for path in files) < 1.5 * 1024 * 1024
    screenshots = [name for name, _ in ood_images if kind_of(name) == "screenshot"]
    assert len(screenshots) == len(files)


def sample_features(forward, size: int) -> np.ndarray:
    from core.serving.inference import forward_in_batches

    metadata = pd.read_csv(SAMPLE / "metadata.csv")
    paths = [SAMPLE / "images" / f"{name}.jpg" for name in metadata.image_name]
    arrays = np.stack(images.decode_many(paths, size))
    return forward_in_batches(forward, arrays)[1]


@pytest.mark.slow
def test_default_model_flags_non_dermoscopy_but_not_held_out_sample(ood_images):
    """Fit on 200 sample images, threshold on 50, measure on the other 50 and the set."""
    import keras

    from core.serving.inference import forward_in_batches, make_forward

    model = keras.saving.load_model(DEFAULT_RUN / "model.keras")
    size = model.input_shape[1]
    forward = make_forward(model, tta=False)
    dermoscopy = np.random.default_rng(0).permutation(sample_features(forward, size))
    other = np.stack([images.resize_for_model(image, size) for _, image in ood_images])
    other_features = forward_in_batches(forward, other)[1]
    detector = fit_ood(dermoscopy[:200], dermoscopy[200:250])
    report = evaluate_detector(detector, dermoscopy[250:], other_features)
    # Fine-tuned features of smooth images (blanks, gradients, skin-like fields) overlap real
    # dermoscopy, so far from all are flagged; on 2/3 of the set it does fire.
    assert report["dermoscopy_flagged"] <= 0.1
    assert report["non_dermoscopy_flagged"] >= 0.7
    assert report["auroc"] >= 0.95
