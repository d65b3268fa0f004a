"""The diagnosis vocabulary: every source's spelling maps to one class, labels win conflicts."""

import numpy as np
import pandas as pd
import pytest

from core.inputs import diagnoses


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


def test_coherent_distribution_agrees_with_the_calibrated_probability():
    # The model's own classes: melanoma 0.636 alone, malignant 0.70 in all.
    raw = np.array([[0.636, 0.2, 0.04, 0.02, 0.004, 0.05, 0.01, 0.01, 0.03, 0.0]])
    coherent = diagnoses.coherent_distribution(raw, np.array([0.46]))
    malignant = diagnoses.malignant_mask().astype(bool)
    assert coherent[0, malignant].sum() == pytest.approx(0.46)
    assert coherent.sum() == pytest.approx(1.0)
    # Each side keeps its proportions: melanoma stays 0.636 / 0.70 of the malignant mass.
    assert coherent[0, 0] == pytest.approx(0.46 * 0.636 / 0.70)
    assert coherent[0, 1] / coherent[0, 5] == pytest.approx(0.2 / 0.05)


def test_coherent_distribution_shares_a_side_the_model_gave_nothing():
    raw = np.zeros((1, len(diagnoses.DIAGNOSIS_NAMES)))
    raw[0, 1] = 1.0
    coherent = diagnoses.coherent_distribution(raw, np.array([0.2]))
    malignant = diagnoses.malignant_mask().astype(bool)
    assert np.allclose(coherent[0, malignant], 0.2 / malignant.sum())
    assert coherent[0, 1] == pytest.approx(0.8)


def test_column_names():
    names = [diagnoses.column_name(name) for name in diagnoses.DIAGNOSIS_NAMES]
    assert names[0] == "dx_melanoma" and names[2] == "dx_basal_cell_carcinoma"
    assert names[3] == "dx_actinic_keratosis_intraepithelial_carcinoma"
    assert len(set(names)) == len(names)
