"""A tiny untrained run, so the benchmark's smoke test needs no trained model."""

from pathlib import Path

import numpy as np
import pandas as pd

from core import config
from core.analysis.calibration import Calibration
from core.modelling.model import build_model
from core.storage.card import Card
from core.storage.runs import MODEL_FILE, Run, load_run, write_card

TINY_IMAGE_SIZE = 32
TINY_RUN_ID = "tiny-untrained"


def tiny_card(image_size: int) -> Card:
    return Card.minimal(
        TINY_RUN_ID,
        image_size,
        0.5,
        weights="none",
        calibration=Calibration("none", 1.0, 0.0).to_dict(),
        config={"fine_tune_layers": 20, "batch_size": 32, "seed": 42},
    )


def make_tiny_run(models_dir: Path, image_size: int = TINY_IMAGE_SIZE, seed: int = 42) -> Run:
    """An untrained MobileNetV2 run at `image_size` px with a card and test predictions."""
    import keras

    keras.utils.set_random_seed(seed)
    folder = Path(models_dir) / TINY_RUN_ID
    folder.mkdir(parents=True, exist_ok=True)
    build_model(config.DEFAULT_BACKBONE, image_size, weights="none").save(folder / MODEL_FILE)
    write_card(folder, tiny_card(image_size))
    generator = np.random.default_rng(seed)
    labels = generator.integers(0, 2, 1000)
    probabilities = np.clip(0.3 * labels + 0.7 * generator.random(1000), 0, 1)
    test = pd.DataFrame({"image_name": [f"tiny_{i}" for i in range(1000)], "label": labels})
    test["probability"] = probabilities.round(6)
    test.to_csv(folder / "test_predictions.csv", index=False)
    return load_run(folder)
