"""The decoded-image cache of the streaming input pipeline: where images live, its size, clearing.

Each image is one file of raw uint8 pixels at the training size, under a folder per (input
size, resampling filter, decoding version), named by the SHA-256 of the image bytes. Kept
apart from `core.train.pipeline` and free of TensorFlow, so the Train page can show and clear
the cache without loading it.
"""

import os
from pathlib import Path

import numpy as np

from core import config
from core.inputs import images
from core.train import features

DEFAULT_LIMIT_BYTES = 32 * 1024**3
SUFFIX = ".u8"


def cache_root(directory: Path | None = None) -> Path:
    return (Path(directory) if directory else config.CACHE_DIR) / "images"


def cache_folder(image_size: int, resample: str, root: Path | None = None) -> Path:
    return cache_root(root) / f"{image_size}-{resample}-d{images.DECODE_VERSION}"


def image_path(folder: Path, key: str) -> Path:
    return folder / key[:2] / f"{key}{SUFFIX}"


def write_image(path: Path, array: np.ndarray) -> None:
    """Write through a temporary name, so a reader never sees half an image."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    array.astype(np.uint8).tofile(temporary)
    os.replace(temporary, path)


def cached_files(root: Path | None = None) -> list[Path]:
    folder = cache_root(root)
    return list(folder.rglob(f"*{SUFFIX}")) if folder.is_dir() else []


def cache_size(root: Path | None = None) -> int:
    return sum(path.stat().st_size for path in cached_files(root))


def enforce_limit(images_root: Path, limit_bytes: int, keep: set[Path]) -> None:
    """Delete least recently used images until the cache fits, never those in `keep`.

    The images of the run in progress stay even when they alone exceed the limit: deleting
    them would only make it decode them again.
    """
    features.evict_least_recent(images_root.rglob(f"*{SUFFIX}"), limit_bytes, keep)


def clear_cache(root: Path | None = None) -> int:
    """Remove every cached decoded image; returns the bytes freed."""
    freed = cache_size(root)
    for path in cached_files(root):
        path.unlink()
    return freed
