"""Dataset discovery and validation: both layouts, and every kind of bad data."""

import shutil
from pathlib import Path

import pandas as pd
import pytest

from core.inputs import data


def problems_text(report: data.ValidationReport) -> str:
    return "\n".join(f"{problem.level}: {problem.message}" for problem in report.problems)


def test_folder_layout_loads_with_standard_columns(make_dataset) -> None:
    dataset = data.load_dataset(make_dataset("folders", n_benign=12, n_malignant=11))
    assert dataset.layout == "folders" and dataset.csv_path is None
    assert dataset.class_counts() == {"benign": 12, "malignant": 11}
    assert list(dataset.frame.columns) == list(data.STANDARD_COLUMNS)
    assert dataset.frame["path"].map(lambda path: Path(path).is_absolute()).all()
    assert (dataset.frame[list(data.TEXT_COLUMNS)].notna()).all().all()


def test_csv_layout_is_detected_from_the_parent_or_the_images_folder(make_dataset) -> None:
    root = make_dataset("csv")
    from_parent = data.load_dataset(root)
    assert from_parent.layout == "isic_csv"
    assert from_parent.csv_path == (root / "metadata.csv").resolve()
    assert from_parent.frame["patient_id"].str.startswith("IP_").all()
    from_images = data.load_dataset(root / "images", root / "metadata.csv")
    assert from_images.frame["image_name"].tolist() == from_parent.frame["image_name"].tolist()


def test_labels_come_from_benign_malignant_when_target_is_absent(make_dataset) -> None:
    root = make_dataset("csv")
    table = pd.read_csv(root / "metadata.csv", dtype=str, keep_default_na=False)
    table.drop(columns=["target"]).to_csv(root / "metadata.csv", index=False)
    assert data.load_dataset(root).class_counts() == {"benign": 12, "malignant": 12}


def test_image_names_may_carry_an_extension_or_another_format(make_dataset) -> None:
    root = make_dataset("csv")
    table = pd.read_csv(root / "metadata.csv", dtype=str, keep_default_na=False)
    first = table.loc[0, "image_name"]
    (root / "images" / f"{first}.jpg").rename(root / "images" / f"{first}.png")
    table.loc[1, "image_name"] += ".jpg"
    table.to_csv(root / "metadata.csv", index=False)
    frame = data.load_dataset(root).frame
    assert len(frame) == 24
    assert frame["path"].iloc[0].endswith(".png")


def test_missing_and_empty_folders_are_errors(tmp_path: Path) -> None:
    assert "not found" in problems_text(data.validate_dataset(tmp_path / "nowhere"))
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no dataset layout" in problems_text(data.validate_dataset(empty))
    (empty / "benign").mkdir()
    (empty / "malignant").mkdir()
    report = data.validate_dataset(empty)
    assert not report.ok and "none of its files ends in .jpg, .jpeg" in problems_text(report)
    with pytest.raises(data.DatasetError, match="no images in"):
        data.load_dataset(empty)


def test_one_class_only_is_an_error(make_dataset) -> None:
    root = make_dataset("folders", n_benign=12, n_malignant=0)
    report = data.validate_dataset(root)
    assert not report.ok
    assert "no malignant images" in problems_text(report)


def test_too_few_of_a_class_is_an_error(make_dataset) -> None:
    report = data.validate_dataset(make_dataset("folders", n_malignant=3), min_per_class=10)
    assert "only 3 malignant images" in problems_text(report)


def test_csv_missing_columns_names_the_columns_present(make_dataset) -> None:
    root = make_dataset("csv")
    table = pd.read_csv(root / "metadata.csv", dtype=str, keep_default_na=False)
    table.drop(columns=["target", "benign_malignant"]).to_csv(root / "metadata.csv", index=False)
    report = data.validate_dataset(root)
    assert not report.ok
    assert "'target' or 'benign_malignant'" in problems_text(report)
    assert "'patient_id'" in problems_text(report)


def test_rows_naming_missing_images_are_dropped_and_reported(make_dataset) -> None:
    root = make_dataset("csv")
    (root / "images" / "ISIC_0000003.jpg").unlink()
    report = data.validate_dataset(root)
    assert report.ok and report.n_images == 23
    missing = [problem for problem in report.problems if "not in" in problem.message]
    assert missing[0].level == "warning" and missing[0].files == ["ISIC_0000003"]


def test_unknown_labels_are_dropped_and_reported(make_dataset) -> None:
    root = make_dataset("csv")
    table = pd.read_csv(root / "metadata.csv", dtype=str, keep_default_na=False)
    table.loc[0, ["target", "benign_malignant"]] = ["", "indeterminate"]
    table.to_csv(root / "metadata.csv", index=False)
    report = data.validate_dataset(root)
    assert report.n_images == 23
    assert "'indeterminate'" in problems_text(report)


@pytest.mark.parametrize("full_decode", [False, True])
def test_a_corrupt_image_is_named_and_the_others_load(
    make_dataset, make_photo, full_decode: bool
) -> None:
    root = make_dataset("folders")
    garbage = root / "benign" / "ISIC_0000000.jpg"
    garbage.write_bytes(b"this is not an image")
    truncated = root / "benign" / "ISIC_0000001.jpg"
    make_photo(size=256).save(truncated, "JPEG")
    content = truncated.read_bytes()
    truncated.write_bytes(content[: len(content) // 2])  # the header survives
    report = data.validate_dataset(root, min_per_class=5, full_decode=full_decode)
    corrupt = [problem for problem in report.problems if "corrupt" in problem.message]
    named = " ".join(corrupt[0].files)
    assert "ISIC_0000000.jpg" in named
    assert ("ISIC_0000001.jpg" in named) == full_decode  # only a full decode sees truncation
    assert report.ok and report.dataset.class_counts()["malignant"] == 12


def test_byte_identical_copies_keep_one(make_dataset) -> None:
    root = make_dataset("folders")
    shutil.copy(root / "benign" / "ISIC_0000000.jpg", root / "benign" / "copy.jpg")
    report = data.validate_dataset(root)
    assert report.ok and report.n_images == 24
    assert "byte-identical" in problems_text(report)


def test_identical_bytes_with_both_labels_are_an_error(make_dataset) -> None:
    root = make_dataset("folders")
    shutil.copy(root / "benign" / "ISIC_0000000.jpg", root / "malignant" / "copy.jpg")
    report = data.validate_dataset(root)
    assert not report.ok and "both labels" in problems_text(report)


def test_repeated_image_names_keep_the_first(make_dataset) -> None:
    root = make_dataset("folders")
    (root / "benign" / "sub").mkdir()
    shutil.copy(root / "benign" / "ISIC_0000001.jpg", root / "benign" / "sub" / "ISIC_0000000.jpg")
    report = data.validate_dataset(root)
    assert report.n_images == 24 and "repeat an image name" in problems_text(report)


def test_site_filter(make_dataset) -> None:
    root = make_dataset("csv", n_benign=30, n_malignant=30)
    everything = data.load_dataset(root)
    torso = data.load_dataset(root, sites=["torso"], min_per_class=1)
    assert set(torso.frame["site"]) == {"torso"} and torso.sites == ("torso",)
    unknown = data.load_dataset(root, sites=["unknown", "torso"], min_per_class=1)
    assert set(unknown.frame["site"]) == {"", "torso"}
    assert data.load_dataset(root, sites="all").frame.shape == everything.frame.shape
    with pytest.raises(ValueError, match="unknown site"):
        data.load_dataset(root, sites=["elbow"])


def test_all_sites_and_named_sites_are_exclusive() -> None:
    assert data.normalise_sites(["torso", "head/neck"]) == ("torso", "head/neck")
    assert data.normalise_sites([]) == data.normalise_sites(None) == ("all",)
    with pytest.raises(ValueError, match="'all' or named sites, not both"):
        data.normalise_sites(["all", "torso"])


def test_site_filter_leaving_nothing_is_an_error(make_dataset) -> None:
    report = data.validate_dataset(make_dataset("folders"), sites=["torso"])
    assert not report.ok and "leaves no images" in problems_text(report)


def test_report_text_and_site_counts(make_dataset) -> None:
    report = data.validate_dataset(make_dataset("csv", n_benign=14, n_malignant=14))
    assert report.site_counts.loc["torso"].sum() == 4
    assert report.to_text().startswith("28 usable images (14 benign, 14 malignant)")


def test_fingerprint_changes_with_the_data(make_dataset) -> None:
    frame = data.load_dataset(make_dataset("folders")).frame
    fingerprint = data.dataset_fingerprint(frame)
    assert fingerprint == data.dataset_fingerprint(frame.iloc[::-1])
    assert fingerprint != data.dataset_fingerprint(frame.iloc[1:])
    flipped = frame.assign(label=1 - frame["label"])
    assert fingerprint != data.dataset_fingerprint(flipped)


def test_shared_dataset_loads_completely(shared_data: Path) -> None:
    report = data.validate_dataset(shared_data)
    assert report.ok, report.to_text()
    assert report.class_counts == {"benign": 8799, "malignant": 1835}
    assert report.site_counts.loc["palms/soles", "malignant"] == 1
