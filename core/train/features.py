"""On-disk cache of frozen-backbone features, so head epochs do not rerun the backbone.

Features are keyed by the SHA-256 of the image bytes inside a folder per (backbone, input
size, resampling filter, backbone weights). The weights enter as a digest of their values,
so `weights="none"` with another seed, or another weights file, never reuses stale features.
"""

import hashlib
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from pathlib import Path

import numpy as np

from core import config
from core.inputs import images

DEFAULT_LIMIT_BYTES = 2 * 1024**3


def cache_root(directory: Path | None = None) -> Path:
    return (Path(directory) if directory else config.CACHE_DIR) / "features"


def weights_digest(weights: Sequence[np.ndarray]) -> str:
    digest = hashlib.sha256()
    for array in weights:
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]


def cache_folder(backbone: str, image_size: int, resample: str, digest: str, root=None) -> Path:
    decoding = f"d{images.DECODE_VERSION}"
    return cache_root(root) / f"{backbone}-{image_size}-{resample}-{decoding}-{digest}"


def load_features(folder: Path, keys: Sequence[str]) -> dict[str, np.ndarray]:
    """The cached feature vectors for those of `keys` that have one."""
    wanted = set(keys)
    found: dict[str, np.ndarray] = {}
    for shard in sorted(folder.glob("*.npz")):
        with np.load(shard) as stored:
            for key, vector in zip(stored["keys"], stored["features"], strict=True):
                if key in wanted:
                    found[str(key)] = vector
        shard.touch()  # Marks the shard as recently used for the size limit.
    return found


def save_features(folder: Path, keys: Sequence[str], features: np.ndarray) -> None:
    if len(keys) == 0:
        return
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{time.time_ns()}.npz"
    temporary = folder / f".{name}"
    with open(temporary, "wb") as handle:
        np.savez(handle, keys=np.asarray(keys), features=features.astype(np.float32))
    temporary.rename(folder / name)


def cached_features(
    folder: Path,
    keys: Sequence[str],
    compute: Callable[[list[int]], np.ndarray],
    limit_bytes: int = DEFAULT_LIMIT_BYTES,
) -> tuple[np.ndarray, int]:
    """Features for every key in order, computing (by row index) only the missing ones.

    Returns the features and how many rows had to be computed.
    """
    found = load_features(folder, keys) if folder.is_dir() else {}
    missing = [index for index, key in enumerate(keys) if key not in found]
    if missing:
        computed = compute(missing)
        save_features(folder, [keys[index] for index in missing], computed)
        found.update(zip((keys[index] for index in missing), computed, strict=True))
        enforce_limit(folder.parent, limit_bytes)
    return np.stack([found[key] for key in keys]), len(missing)


def cache_size(root: Path | None = None) -> int:
    folder = cache_root(root)
    return sum(path.stat().st_size for path in folder.rglob("*.npz")) if folder.is_dir() else 0


def enforce_limit(features_root: Path, limit_bytes: int) -> None:
    """Delete least recently used shards until the cache fits its size limit."""
    evict_least_recent(features_root.rglob("*.npz"), limit_bytes)


def evict_least_recent(
    files: Iterable[Path], limit_bytes: int, keep: Collection[Path] = ()
) -> None:
    """Delete the least recently used `files` until they fit in `limit_bytes`, never `keep`.

    The feature cache and the decoded-image cache share this rule.
    """
    ordered = sorted(files, key=lambda path: path.stat().st_mtime)
    total = sum(path.stat().st_size for path in ordered)
    for path in ordered:
        if total <= limit_bytes:
            break
        if path not in keep:
            total -= path.stat().st_size
            path.unlink()


def clear_cache(root: Path | None = None) -> int:
    """Remove every cached feature; returns the bytes freed."""
    freed = cache_size(root)
    for shard in cache_root(root).rglob("*.npz"):
        shard.unlink()
    return freed
