"""Shared fixtures: tiny synthetic datasets in both layouts (one with rows that cannot be
scored), and the shared real dataset.

The app fixtures (`app_paths`, `fresh_app`, `trained_run`) load from `app_fixtures` as a
plugin; test modules import only its helpers.
"""

import csv
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core import config
from core.inputs.data import ISIC_SITES

pytest_plugins = ["app_fixtures"]

SHARED_DATA = config.REPO_ROOT.parent / "shared" / "data" / "dermoscopy"
# Fixtures that train a run: `trained_run` (app_fixtures), `trained` (test_pipeline) and
# `member_runs` (test_ensemble).
TRAINING_FIXTURES = {"trained_run", "trained", "member_runs"}


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark slow every test that needs a training fixture, directly or through another.

    First, so that `-m "not slow"` sees the mark when it deselects.
    """
    for item in items:
        if TRAINING_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


def synthetic_image(rng: np.random.Generator, size: int = 32) -> Image.Image:
    """Random colour detail at three scales, like a photo: cheap, each hashes differently."""
    layers = [
        np.asarray(
            Image.fromarray(rng.integers(0, 256, size=(cells, cells, 3), dtype=np.uint8)).resize(
                (size, size), Image.Resampling.BICUBIC
            ),
            dtype=np.float64,
        )
        for cells in (4, 16, 64)
        if cells <= size
    ]
    return Image.fromarray(np.clip(sum(layers) / len(layers), 0, 255).astype(np.uint8))


def write_image(image: Image.Image, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def _csv_rows(names: list[str], labels: list[int]) -> list[dict[str, str]]:
    sites = (*ISIC_SITES, "")
    return [
        {
            "image_name": name,
            "patient_id": f"IP_{index // 2:04d}",  # two images per patient
            "lesion_id": "",
            "sex": "female" if index % 2 else "male",
            "age_approx": str(30 + index % 40),
            "anatom_site_general_challenge": sites[index % len(sites)],
            "diagnosis": "melanoma" if label else "nevus",
            "benign_malignant": "malignant" if label else "benign",
            "target": str(label),
            "source": "synthetic",
        }
        for index, (name, label) in enumerate(zip(names, labels, strict=True))
    ]


@pytest.fixture
def make_dataset(tmp_path: Path) -> Callable[..., Path]:
    """Factory: make_dataset(layout="folders"|"csv", n_benign=12, n_malignant=12) -> data dir.

    "folders" writes <dir>/benign/*.jpg and <dir>/malignant/*.jpg; "csv" writes the ISIC 2020
    layout <dir>/images/<image_name>.jpg + <dir>/metadata.csv (two images per patient, sites
    cycling through the ISIC vocabulary and missing).
    """

    def factory(
        layout: str = "folders", n_benign: int = 12, n_malignant: int = 12, seed: int = 0
    ) -> Path:
        rng = np.random.default_rng(seed)
        root = tmp_path / f"{layout}_{seed}"
        labels = [0] * n_benign + [1] * n_malignant
        names = [f"ISIC_{index:07d}" for index in range(len(labels))]
        for folder in ("images",) if layout == "csv" else ("benign", "malignant"):
            (root / folder).mkdir(parents=True, exist_ok=True)
        for name, label in zip(names, labels, strict=True):
            folder = root / ("images" if layout == "csv" else ("benign", "malignant")[label])
            write_image(synthetic_image(rng), folder / f"{name}.jpg")
        if layout == "csv":
            rows = _csv_rows(names, labels)
            with open(root / "metadata.csv", "w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
                writer.writeheader()
                writer.writerows(rows)
        return root

    return factory


@pytest.fixture
def make_photo() -> Callable[..., Image.Image]:
    """Factory: make_photo(seed=0, size=32) -> a smooth random RGB image."""
    return lambda seed=0, size=32: synthetic_image(np.random.default_rng(seed), size)


HOSTILE_TARGETS = ("maybe", "2", "-1")


def add_bad_rows(data_dir) -> None:
    """Three invalid targets, a name that matches no image and a repeated name."""
    csv_path = data_dir / "metadata.csv"
    with open(csv_path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    first = rows[0]
    bad = [{**first, "image_name": f"bad_{t}", "target": t} for t in HOSTILE_TARGETS]
    bad += [{**first, "image_name": "ISIC_9999999"}, dict(first)]
    with open(csv_path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(first))
        writer.writeheader()
        writer.writerows(rows + bad)


@pytest.fixture
def hostile_dataset(make_dataset):
    """12 good rows and 5 that cannot be scored, in the ISIC layout."""
    data_dir = make_dataset("csv", n_benign=6, n_malignant=6)
    add_bad_rows(data_dir)
    return data_dir


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared real dermoscopy folder (ISIC 2020 layout), or skip the test."""
    if not (SHARED_DATA / "metadata.csv").is_file():
        pytest.skip("needs ../shared/data/dermoscopy, absent on a fresh clone")
    return SHARED_DATA
