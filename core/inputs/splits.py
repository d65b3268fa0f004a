"""Leak-free train/validation/test splits: patients, lesions and near-duplicate images are grouped.

Several photos of one lesion (HAM10000) or one patient (ISIC 2020) on both sides of a split let a
model score well by recognising the lesion instead of judging it. So rows are joined into groups
(shared patient id, shared lesion id, or perceptual hashes within a few bits: the same photo
re-encoded, resized or copied under another name), and whole groups are assigned to splits,
balancing the benign/malignant ratio of each split.
"""

import concurrent.futures
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from core.inputs import images
from core.inputs.labels import CLASS_NAMES

SPLIT_NAMES = ("train", "val", "test")
DEFAULT_FRACTIONS = (0.70, 0.15, 0.15)
# The hash is pHash with 16x16 = 256 bits (as imagehash.phash(hash_size=16)). The common 64-bit
# pHash cannot tell dermoscopy photos apart: they are all a dark blob on pale skin, so on the
# 9,419 shared images unrelated photos collide even at distance 0, and grouping at distance 4
# chains 659 images of many patients into one group. Measured with 256 bits on those images:
# - copies (JPEG q50-q90 re-encodes, resized to 35-100%; 800 copies of 200 images) are 6 bits
#   from the original at the median, 99% within 24, all within 32;
# - different photos of one HAM10000 lesion are 104 bits or more apart (median 126);
# - of the 44 million pairs of distinct images, the 10 closest were checked by eye: those at
#   14-34 bits are one photo with different colour processing (true duplicates under two
#   names); from 38 bits on, pairs of different lesions appear.
# 36 keeps every copy and those duplicates together while joining no unrelated images.
DEFAULT_MAX_DISTANCE = 36
_HASH_BLOCK = 16
_HASH_SIDE = 4 * _HASH_BLOCK
_HASH_WORDS = _HASH_BLOCK * _HASH_BLOCK // 64
_PAIR_CHUNK_ROWS = 128


def _dct_matrix(size: int) -> np.ndarray:
    """Orthonormal DCT-II matrix: `matrix @ x @ matrix.T` is the 2-D DCT of x."""
    k = np.arange(size)[:, None]
    n = np.arange(size)[None, :]
    matrix = np.cos(np.pi * (2 * n + 1) * k / (2 * size)) * np.sqrt(2 / size)
    matrix[0] /= np.sqrt(2)
    return matrix


_DCT = _dct_matrix(_HASH_SIDE)


def perceptual_hash(image: Image.Image) -> int:
    """256-bit pHash: low-frequency 16x16 DCT of a 64x64 grey image, each bit above the median.

    The median ignores the DC term (overall brightness, far larger than the rest); its bit is
    kept so the hash stays 256 bits, and is the same for almost every image.
    """
    grey = image.convert("L").resize((_HASH_SIDE, _HASH_SIDE), Image.Resampling.LANCZOS)
    pixels = np.asarray(grey, dtype=np.float64)
    low = (_DCT @ pixels @ _DCT.T)[:_HASH_BLOCK, :_HASH_BLOCK].ravel()
    bits = low > np.median(low[1:])
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


def _hash_file(path: str | os.PathLike) -> int:
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise images.ImageError(f"{path}: cannot read file ({error.strerror or error})") from None
    try:
        return perceptual_hash(images.decode_image(data, reduce_to=_HASH_SIDE * 2))
    except images.ImageError as error:
        raise images.ImageError(f"{path}: {error}") from None


def hash_words(hash_value: int) -> np.ndarray:
    """A 256-bit hash as 4 uint64 words, most significant first (a row of `hash_files`)."""
    return np.frombuffer(hash_value.to_bytes(_HASH_WORDS * 8, "big"), dtype=">u8").astype(
        np.uint64
    )


def hash_files(paths: Sequence[str | os.PathLike], workers: int | None = None) -> np.ndarray:
    """pHashes of image files as uint64 (n, 4), input order, in threads; ImageError names a
    bad file."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers or os.cpu_count()) as pool:
        words = [hash_words(value) for value in pool.map(_hash_file, paths)]
    return np.stack(words) if words else np.empty((0, _HASH_WORDS), dtype=np.uint64)


def hamming_distances(hash_row: np.ndarray, hashes: np.ndarray) -> np.ndarray:
    """Bits differing between one hash (a row of words) and each row of `hashes`."""
    row = np.asarray(hash_row, dtype=np.uint64)
    return np.bitwise_count(_as_words(hashes) ^ row).sum(axis=-1)


def _as_words(hashes: np.ndarray) -> np.ndarray:
    """uint64 words with a trailing word axis, so 64-bit and longer hashes share one code path."""
    words = np.asarray(hashes, dtype=np.uint64)
    return words[..., None] if words.ndim < 2 else words


def near_duplicate_pairs(
    hashes: np.ndarray, max_distance: int = DEFAULT_MAX_DISTANCE
) -> list[tuple[int, int]]:
    """Index pairs (i < j) whose hashes (rows of `hash_files`) differ in <= `max_distance` bits."""
    hashes = _as_words(hashes)
    pairs: list[tuple[int, int]] = []
    for start in range(0, len(hashes), _PAIR_CHUNK_ROWS):
        chunk = hashes[start : start + _PAIR_CHUNK_ROWS]
        # Compare the chunk with itself and everything after it; keep the upper triangle only.
        distances = np.bitwise_count(chunk[:, None] ^ hashes[None, start:]).sum(axis=-1)
        rows, columns = np.nonzero(distances <= max_distance)
        above_diagonal = columns > rows
        first = rows[above_diagonal] + start
        second = columns[above_diagonal] + start
        pairs.extend(zip(first.tolist(), second.tolist(), strict=True))
    return pairs


def _text_column(frame: pd.DataFrame, column: str) -> np.ndarray:
    if column not in frame:
        return np.full(len(frame), "", dtype=object)
    return frame[column].fillna("").astype(str).str.strip().to_numpy(dtype=object)


def _component_labels(frame: pd.DataFrame, pairs: list[tuple[int, int]]) -> np.ndarray:
    """Connected components of rows linked by a shared id or a near-duplicate pair."""
    n_rows = len(frame)
    edges = [np.array(pairs, dtype=np.int64).reshape(-1, 2)]
    next_node = n_rows
    for column in ("patient_id", "lesion_id"):
        ids = _text_column(frame, column)
        rows = np.flatnonzero(ids != "")
        codes, _ = pd.factorize(ids[rows])
        # Each distinct id becomes an extra node joined to every row carrying it.
        edges.append(np.column_stack([rows, codes + next_node]))
        next_node += int(codes.max(initial=-1)) + 1
    edge_array = np.concatenate(edges)
    graph = coo_matrix(
        (np.ones(len(edge_array)), (edge_array[:, 0], edge_array[:, 1])),
        shape=(next_node, next_node),
    )
    _, labels = connected_components(graph, directed=False)
    return labels[:n_rows]


def assign_groups(frame: pd.DataFrame, hashes: np.ndarray | None = None) -> np.ndarray:
    """A group name per row: rows sharing a patient, a lesion or a near-duplicate hash join.

    Names are readable: "patient:<id>", else "lesion:<id>", else "image:<image_name>", taken
    from the smallest id in the group.
    """
    if hashes is not None and len(hashes) != len(frame):
        raise ValueError(f"{len(hashes)} hashes for {len(frame)} rows")
    pairs = near_duplicate_pairs(hashes) if hashes is not None else []
    components = _component_labels(frame, pairs)
    names = pd.DataFrame(
        {
            "component": components,
            "patient": "patient:" + pd.Series(_text_column(frame, "patient_id")),
            "lesion": "lesion:" + pd.Series(_text_column(frame, "lesion_id")),
            "image": "image:" + pd.Series(_text_column(frame, "image_name")),
        }
    )
    for column, empty in (("patient", "patient:"), ("lesion", "lesion:")):
        names[column] = names[column].where(names[column] != empty)
    first = names.groupby("component").min()
    chosen = first["patient"].fillna(first["lesion"]).fillna(first["image"])
    return chosen.loc[components].to_numpy(dtype=object)


def _check_fractions(fractions: Sequence[float]) -> np.ndarray:
    values = np.asarray(fractions, dtype=np.float64)
    if values.shape != (3,) or (values <= 0).any() or abs(values.sum() - 1) > 1e-6:
        raise ValueError(
            f"fractions must be three positive numbers (train, val, test) summing to 1, "
            f"got {tuple(fractions)}"
        )
    return values


def _strata(frame: pd.DataFrame, labels: np.ndarray) -> np.ndarray:
    """Class crossed with source, so every source is represented in each split.

    Balancing the classes alone let the large multi-image patients of one source fill the
    training split and left the test split with almost none of that source's images.
    """
    sources = _text_column(frame, "source") if "source" in frame else np.full(len(frame), "")
    return np.array([f"{label}|{source}" for label, source in zip(labels, sources, strict=True)])


def _group_table(strata: np.ndarray, groups: np.ndarray, seed: int) -> pd.DataFrame:
    """Per group: image counts by stratum, in a seeded shuffle, largest groups first."""
    table = pd.crosstab(groups, strata)
    order = np.random.default_rng(seed).permutation(len(table))
    table = table.iloc[order]
    sizes = table.sum(axis=1).to_numpy()
    # Big groups are hardest to place, so they go first; the shuffle breaks ties by seed.
    return table.iloc[np.argsort(-sizes, kind="stable")]


def _greedy_assign(table: pd.DataFrame, fractions: np.ndarray) -> np.ndarray:
    """Put each group where it most reduces the gap to the target count of each class."""
    counts = table.to_numpy(dtype=np.float64)
    totals = np.maximum(counts.sum(axis=0), 1)
    targets = fractions[:, None] * totals[None, :]
    filled = np.zeros_like(targets)
    assignment = np.empty(len(counts), dtype=np.int64)
    for index, group_counts in enumerate(counts):
        before = (((filled - targets) / totals) ** 2).sum(axis=1)
        after = (((filled + group_counts - targets) / totals) ** 2).sum(axis=1)
        chosen = int(np.argmin(after - before))
        assignment[index] = chosen
        filled[chosen] += group_counts
    return assignment


def _ensure_both_classes(table: pd.DataFrame, assignment: np.ndarray) -> None:
    """Move the smallest fitting group into any split that lacks a class, when one can move."""
    for column in CLASS_NAMES:
        has_class = table[column].to_numpy() > 0
        for split_index, split_name in enumerate(SPLIT_NAMES):
            if (has_class & (assignment == split_index)).any():
                continue
            donors = [
                index
                for index in np.flatnonzero(has_class)
                if (has_class & (assignment == assignment[index])).sum() > 1
            ]
            if not donors:
                raise ValueError(f"cannot place a {column} group in {split_name}")
            smallest = min(donors, key=lambda index: table.iloc[index].sum())
            assignment[smallest] = split_index


def grouped_split(
    frame: pd.DataFrame,
    groups: np.ndarray,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    seed: int = 42,
) -> np.ndarray:
    """ "train"/"val"/"test" per row; whole groups only, each split near the overall mix.

    Each split gets close to its fraction of every class-and-source stratum.

    Deterministic for a seed. Raises ValueError when a class has fewer than three groups (one is
    needed in each split).
    """
    fraction_values = _check_fractions(fractions)
    labels = frame["label"].to_numpy(dtype=np.int64)
    groups = np.asarray(groups, dtype=object)
    if len(groups) != len(labels):
        raise ValueError(f"{len(groups)} groups for {len(labels)} rows")
    table = _group_table(_strata(frame, labels), groups, seed)
    class_table = pd.crosstab(groups, labels).reindex(index=table.index, columns=[0, 1])
    class_table = class_table.fillna(0).set_axis(list(CLASS_NAMES), axis=1)
    for column in CLASS_NAMES:
        n_groups = int((class_table[column] > 0).sum())
        if n_groups < len(SPLIT_NAMES):
            raise ValueError(
                f"only {n_groups} independent {column} groups (patients/lesions/images); at "
                f"least {len(SPLIT_NAMES)} are needed to put {column} cases in train, val and test"
            )
    assignment = _greedy_assign(table, fraction_values)
    _ensure_both_classes(class_table, assignment)
    split_of_group = pd.Series(np.array(SPLIT_NAMES, dtype=object)[assignment], index=table.index)
    return split_of_group.loc[groups].to_numpy(dtype=object)


@dataclass
class SplitResult:
    """A split per row of the frame it was made from, with the groups behind it."""

    split: np.ndarray
    groups: np.ndarray
    labels: np.ndarray
    image_names: np.ndarray
    seed: int
    fractions: tuple[float, float, float]
    group_by: tuple[str, ...] = field(default=("patient_id", "lesion_id"))
    # Content hashes of the images (empty when the frame had none): an evaluation or a
    # clinic's threshold set is checked against them for images the run trained on.
    sha256s: np.ndarray = field(default_factory=lambda: np.array([], dtype=object))

    def sizes(self) -> dict[str, dict[str, int]]:
        return {
            name: {
                class_name: int(((self.split == name) & (self.labels == label)).sum())
                for label, class_name in enumerate(CLASS_NAMES)
            }
            for name in SPLIT_NAMES
        }

    def to_frame(self) -> pd.DataFrame:
        """The split.csv table: image_name, group, split and, when known, sha256."""
        table = {"image_name": self.image_names, "group": self.groups, "split": self.split}
        if len(self.sha256s):
            table["sha256"] = self.sha256s
        return pd.DataFrame(table)


def split_dataset(
    frame: pd.DataFrame,
    seed: int = 42,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    hashes: np.ndarray | None = None,
) -> SplitResult:
    """Group the rows (ids, and near-duplicate hashes when given) and split whole groups."""
    groups = assign_groups(frame, hashes)
    split = grouped_split(frame, groups, fractions, seed)
    group_by = ("patient_id", "lesion_id") + (
        (f"phash256<={DEFAULT_MAX_DISTANCE}",) if hashes is not None else ()
    )
    return SplitResult(
        split=split,
        groups=groups,
        labels=frame["label"].to_numpy(dtype=np.int64),
        image_names=frame["image_name"].to_numpy(dtype=object),
        sha256s=frame["sha256"].to_numpy(dtype=object) if "sha256" in frame else np.array([]),
        seed=seed,
        fractions=(float(fractions[0]), float(fractions[1]), float(fractions[2])),
        group_by=group_by,
    )
