"""Grouping and splitting: no patient, lesion or near-duplicate crosses splits; stratified."""

import io
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from core.inputs import data, images, splits


def synthetic_frame(n_rows: int = 600, malignant_rate: float = 0.2, seed: int = 0) -> pd.DataFrame:
    """Rows with patients (some), lesions (some, overlapping patients) and no ids (rest)."""
    rng = np.random.default_rng(seed)
    patient = np.where(rng.random(n_rows) < 0.5, rng.integers(0, 60, n_rows).astype(str), "")
    lesion = np.where(rng.random(n_rows) < 0.4, rng.integers(0, 150, n_rows).astype(str), "")
    return pd.DataFrame(
        {
            "image_name": [f"img_{index}" for index in range(n_rows)],
            "label": (rng.random(n_rows) < malignant_rate).astype(int),
            "patient_id": np.char.add("P", patient).astype(object),
            "lesion_id": np.char.add("L", lesion).astype(object),
        }
    ).replace({"patient_id": {"P": ""}, "lesion_id": {"L": ""}})


def assert_no_leak(frame: pd.DataFrame, split: np.ndarray, pairs) -> None:
    for column in ("patient_id", "lesion_id"):
        with_id = frame[column] != ""
        spread = pd.Series(split[with_id]).groupby(frame[column][with_id].to_numpy()).nunique()
        assert (spread == 1).all(), f"{column} crosses splits: {spread[spread > 1].index[:5]}"
    assert all(split[first] == split[second] for first, second in pairs)


def test_perceptual_hash_is_stable_under_reencoding_and_differs_between_images(
    make_photo,
) -> None:
    photo = make_photo(seed=3, size=200)
    reference = splits.hash_words(splits.perceptual_hash(photo))
    buffer = io.BytesIO()
    photo.resize((120, 120)).save(buffer, "JPEG", quality=70)
    copy = splits.hash_words(splits.perceptual_hash(images.decode_image(buffer.getvalue())))
    other = splits.hash_words(splits.perceptual_hash(make_photo(seed=4, size=200)))
    assert splits.hamming_distances(reference, copy[None])[0] <= 8
    assert splits.hamming_distances(reference, other[None])[0] > 64
    assert splits.perceptual_hash(photo) < 2**256


def test_hash_files_reads_files_in_order(tmp_path: Path, make_photo) -> None:
    paths = []
    for seed in range(3):
        paths.append(tmp_path / f"{seed}.png")
        make_photo(seed=seed).save(paths[-1])
    hashes = splits.hash_files(paths, workers=2)
    assert hashes.shape == (3, 4) and hashes.dtype == np.uint64
    expected = splits.hash_words(splits.perceptual_hash(Image.open(paths[1])))
    assert (hashes[1] == expected).all()
    (tmp_path / "bad.jpg").write_bytes(b"nope")
    with pytest.raises(images.ImageError, match="bad.jpg"):
        splits.hash_files([*paths, tmp_path / "bad.jpg"])


def test_near_duplicate_pairs_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    hashes = rng.integers(0, 2**63, size=(300, 4), dtype=np.uint64)
    hashes[150] = hashes[10]
    hashes[150, 2] ^= np.uint64(0b1011)  # 3 bits apart
    hashes[299] = hashes[0]
    found = splits.near_duplicate_pairs(hashes, max_distance=3)
    distances = np.bitwise_count(hashes[:, None] ^ hashes[None]).sum(-1)
    expected = [(i, j) for i, j in zip(*np.nonzero(distances <= 3), strict=True) if i < j]
    assert sorted(found) == sorted(expected) == [(0, 299), (10, 150)]
    one_word = splits.near_duplicate_pairs(hashes[:, 0], max_distance=3)
    assert (10, 150) in one_word and (0, 299) in one_word


def test_near_duplicate_pairs_is_fast_enough_for_ten_thousand_hashes() -> None:
    hashes = np.random.default_rng(1).integers(0, 2**63, size=(9419, 4), dtype=np.uint64)
    started = time.perf_counter()
    splits.near_duplicate_pairs(hashes)
    assert time.perf_counter() - started < 10


def test_assign_groups_joins_shared_ids_transitively() -> None:
    frame = pd.DataFrame(
        {
            "image_name": ["a", "b", "c", "d", "e", "f"],
            "label": [0, 0, 1, 1, 0, 1],
            "patient_id": ["P1", "", "P1", "", "", ""],
            "lesion_id": ["", "L7", "L7", "L9", "", ""],
        }
    )
    hashes = np.random.default_rng(0).integers(0, 2**63, size=(6, 4), dtype=np.uint64)
    hashes[5] = hashes[4] ^ np.uint64(1)
    groups = splits.assign_groups(frame, hashes)
    # a-c share a patient, b-c a lesion; e-f are near-duplicate hashes (1 bit apart).
    assert groups[0] == groups[1] == groups[2] == "patient:P1"
    assert groups[3] == "lesion:L9"
    assert groups[4] == groups[5] == "image:e"
    assert splits.assign_groups(frame)[4] == "image:e"


def test_grouped_split_has_no_leak_and_is_stratified() -> None:
    frame = synthetic_frame(n_rows=2000)
    result = splits.split_dataset(frame, seed=3)
    assert_no_leak(frame, result.split, [])
    overall = frame["label"].mean()
    for name, fraction in zip(splits.SPLIT_NAMES, splits.DEFAULT_FRACTIONS, strict=True):
        in_split = result.split == name
        assert abs(in_split.mean() - fraction) < 0.03
        assert abs(frame["label"][in_split].mean() - overall) < 0.03
    sizes = result.sizes()
    assert sum(size["malignant"] for size in sizes.values()) == frame["label"].sum()
    assert list(result.to_frame().columns) == ["image_name", "group", "split"]


def test_split_is_deterministic_for_a_seed() -> None:
    frame = synthetic_frame()
    first = splits.split_dataset(frame, seed=42).split
    assert (first == splits.split_dataset(frame, seed=42).split).all()
    assert (first != splits.split_dataset(frame, seed=7).split).any()


def test_near_duplicates_never_cross_splits() -> None:
    frame = synthetic_frame(n_rows=400)
    rng = np.random.default_rng(5)
    hashes = rng.integers(0, 2**63, size=(400, 4), dtype=np.uint64)
    hashes[1::40] = hashes[0::40]  # ten pairs of copies
    result = splits.split_dataset(frame, hashes=hashes)
    assert_no_leak(frame, result.split, splits.near_duplicate_pairs(hashes))
    assert "phash" in result.group_by[-1]


def test_small_classes_get_a_place_in_every_split() -> None:
    frame = pd.DataFrame({"image_name": [f"i{n}" for n in range(40)], "label": [0] * 37 + [1] * 3})
    split = splits.grouped_split(frame, splits.assign_groups(frame))
    assert sorted(split[frame["label"] == 1]) == ["test", "train", "val"]


@pytest.mark.parametrize(
    ("labels", "fractions", "message"),
    [
        ([0] * 20 + [1] * 2, (0.7, 0.15, 0.15), "only 2 independent malignant groups"),
        ([0] * 20 + [1] * 20, (0.7, 0.2, 0.2), "fractions"),
        ([0] * 20 + [1] * 20, (1.0, 0.0, 0.0), "fractions"),
    ],
)
def test_split_errors(labels: list[int], fractions, message: str) -> None:
    frame = pd.DataFrame({"image_name": [f"i{n}" for n in range(len(labels))], "label": labels})
    with pytest.raises(ValueError, match=message):
        splits.split_dataset(frame, fractions=fractions)


def test_real_metadata_split_has_no_leak(shared_data: Path) -> None:
    full = data.load_dataset(shared_data).frame
    # Hashing all 9,419 images takes about 10 s on two cores; a seeded third keeps the test
    # quick and still holds whole patients and lesions, and the known duplicate pairs.
    frame = full.sample(frac=1 / 3, random_state=0).reset_index(drop=True)
    hashes = splits.hash_files(frame["path"].tolist())
    result = splits.split_dataset(frame, hashes=hashes)
    assert_no_leak(frame, result.split, splits.near_duplicate_pairs(hashes))
    overall = frame["label"].mean()
    for name in splits.SPLIT_NAMES:
        assert abs(frame["label"][result.split == name].mean() - overall) < 0.02
    assert pd.Series(result.groups).value_counts().iloc[0] < 100  # no chained giant group
