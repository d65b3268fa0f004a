"""The diagnosis vocabulary: every source's spelling maps to one class, labels win conflicts."""

import numpy as np
import pandas as pd
import pytest

from core import diagnoses


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("mel", "melanoma"),
        ("MEL", "melanoma"),
        (" Melanoma ", "melanoma"),
        ("nv", "nevus"),
        ("nevus", "nevus"),
        ("df", "dermatofibroma"),
        ("dermatofibroma", "dermatofibroma"),
        ("bkl", "benign keratosis"),
        ("seborrheic keratosis", "benign keratosis"),
        ("lentigo NOS", "benign keratosis"),
        ("akiec", "actinic keratosis / intraepithelial carcinoma"),
        ("bcc", "basal cell carcinoma"),
        ("squamous cell carcinoma", "squamous cell carcinoma"),
        ("vasc", "vascular lesion"),
        ("other benign", "other benign"),
        ("unknown", None),
        ("", None),
        (None, None),
    ],
)
def test_spellings_map_to_one_vocabulary(raw, expected) -> None:
    assert diagnoses.normalise_diagnosis(raw) == expected


def test_missing_or_contradicting_diagnoses_follow_the_label() -> None:
    assert diagnoses.diagnosis_for_label("unknown", 0) == "other benign"
    assert diagnoses.diagnosis_for_label("", 1) == "other malignant"
    assert diagnoses.diagnosis_for_label("nevus", 1) == "other malignant"
    assert diagnoses.diagnosis_for_label("mel", 1) == "melanoma"
    with pytest.raises(ValueError, match="label"):
        diagnoses.diagnosis_for_label("mel", 2)


def test_malignant_mask_matches_the_classes() -> None:
    mask = diagnoses.malignant_mask()
    assert mask.shape == (len(diagnoses.DIAGNOSIS_NAMES),)
    malignant = [name for name, flag in zip(diagnoses.DIAGNOSIS_NAMES, mask, strict=True) if flag]
    assert set(malignant) == {
        "melanoma",
        "basal cell carcinoma",
        "actinic keratosis / intraepithelial carcinoma",
        "squamous cell carcinoma",
        "other malignant",
    }


def test_contradictions_are_named() -> None:
    assert diagnoses.contradiction("benign", "melanoma") is not None
    assert diagnoses.contradiction("malignant", "mel") is None
    assert diagnoses.contradiction("benign", None) is None
    assert diagnoses.contradiction("benign", "something new") is None


def test_every_shared_diagnosis_is_known(shared_data) -> None:
    frame = pd.read_csv(shared_data / "metadata.csv", dtype=str, keep_default_na=False)
    known = frame["diagnosis"].map(diagnoses.normalise_diagnosis)
    assert set(frame.loc[known.isna(), "diagnosis"]) <= {"unknown"}
    classes = diagnoses.class_indices(frame["diagnosis"], frame["target"].astype(int))
    malignant = diagnoses.malignant_mask()[classes] == 1
    assert np.array_equal(malignant, frame["target"].astype(int).to_numpy() == 1)
