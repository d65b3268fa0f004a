"""One diagnosis vocabulary for every source: `mel`, `MEL` and `melanoma` are one class.

The classes follow the ISIC 2019 challenge's eight plus two catch-alls. The malignant
probability of a diagnosis model is the sum of the malignant classes' probabilities, so the
binary label and the diagnosis can never disagree. Rows whose diagnosis is missing or unknown
fall into "other benign" or "other malignant" by their benign/malignant label.
"""

import re
from dataclasses import dataclass

import numpy as np

from core.inputs.labels import BENIGN, CLASS_NAMES, MALIGNANT


@dataclass(frozen=True)
class Diagnosis:
    name: str
    malignant: bool


DIAGNOSES = (
    Diagnosis("melanoma", True),
    Diagnosis("nevus", False),
    Diagnosis("basal cell carcinoma", True),
    Diagnosis("actinic keratosis / intraepithelial carcinoma", True),
    Diagnosis("squamous cell carcinoma", True),
    Diagnosis("benign keratosis", False),
    Diagnosis("dermatofibroma", False),
    Diagnosis("vascular lesion", False),
    Diagnosis("other benign", False),
    Diagnosis("other malignant", True),
)
DIAGNOSIS_NAMES = tuple(diagnosis.name for diagnosis in DIAGNOSES)
MALIGNANT_NAMES = tuple(diagnosis.name for diagnosis in DIAGNOSES if diagnosis.malignant)
OTHER_BENIGN, OTHER_MALIGNANT = "other benign", "other malignant"

# Spellings seen in ISIC 2016-2020, HAM10000 and the ISIC Archive, lower-cased, with "_" and
# "-" read as spaces. Anything not listed here is unknown, never guessed.
_ALIASES = {
    "mel": "melanoma",
    "melanoma": "melanoma",
    "melanoma metastasis": "melanoma",
    "nv": "nevus",
    "nevus": "nevus",
    "naevus": "nevus",
    "melanocytic nevus": "nevus",
    "bcc": "basal cell carcinoma",
    "basal cell carcinoma": "basal cell carcinoma",
    "akiec": "actinic keratosis / intraepithelial carcinoma",
    "ak": "actinic keratosis / intraepithelial carcinoma",
    "actinic keratosis": "actinic keratosis / intraepithelial carcinoma",
    "actinic keratoses": "actinic keratosis / intraepithelial carcinoma",
    "bowen's disease": "actinic keratosis / intraepithelial carcinoma",
    "intraepithelial carcinoma": "actinic keratosis / intraepithelial carcinoma",
    "scc": "squamous cell carcinoma",
    "squamous cell carcinoma": "squamous cell carcinoma",
    "bkl": "benign keratosis",
    "benign keratosis": "benign keratosis",
    "benign keratosis like lesions": "benign keratosis",
    "pigmented benign keratosis": "benign keratosis",
    "seborrheic keratosis": "benign keratosis",
    "seborrhoeic keratosis": "benign keratosis",
    "solar lentigo": "benign keratosis",
    "lentigo nos": "benign keratosis",
    "lichenoid keratosis": "benign keratosis",
    "lichen planus like keratosis": "benign keratosis",
    "df": "dermatofibroma",
    "dermatofibroma": "dermatofibroma",
    "vasc": "vascular lesion",
    "vascular": "vascular lesion",
    "vascular lesion": "vascular lesion",
    "vascular lesions": "vascular lesion",
    "angioma": "vascular lesion",
    "angiokeratoma": "vascular lesion",
    "pyogenic granuloma": "vascular lesion",
    "hemangioma": "vascular lesion",
    "cafe au lait macule": "other benign",
    "atypical melanocytic proliferation": "other benign",
    # The vocabulary's own names read as themselves.
    **{name: name for name in DIAGNOSIS_NAMES},
}


def normalise_diagnosis(raw: str | None) -> str | None:
    """The vocabulary name of a source's spelling, or None when it is missing or unknown."""
    if raw is None:
        return None
    key = " ".join(str(raw).strip().lower().replace("_", " ").replace("-", " ").split())
    return _ALIASES.get(key)


def is_malignant(name: str) -> bool:
    if name not in DIAGNOSIS_NAMES:
        raise ValueError(f"unknown diagnosis {name!r}; choose one of {list(DIAGNOSIS_NAMES)}")
    return name in MALIGNANT_NAMES


def diagnosis_for_label(raw: str | None, label: int) -> str:
    """The training class of one row: its diagnosis, or the catch-all of its label.

    A diagnosis that contradicts the benign/malignant label (a "nevus" marked malignant) is
    not trusted: the label wins, as it does for the binary model.
    """
    if label not in (0, 1):
        raise ValueError(f"label must be 0 or 1, got {label!r}")
    name = normalise_diagnosis(raw)
    if name is None or is_malignant(name) != bool(label):
        return OTHER_MALIGNANT if label else OTHER_BENIGN
    return name


def vocabulary_names(raw_diagnoses, labels) -> list[str]:
    """Each row's diagnosis in the vocabulary: subgroups of `mel` and `MEL` are one group."""
    return [
        diagnosis_for_label(raw, int(label))
        for raw, label in zip(raw_diagnoses, labels, strict=True)
    ]


def class_indices(raw_diagnoses, labels) -> np.ndarray:
    """Class index per row in `DIAGNOSIS_NAMES` order."""
    names = vocabulary_names(raw_diagnoses, labels)
    return np.array([DIAGNOSIS_NAMES.index(name) for name in names], dtype=np.int64)


def malignant_mask() -> np.ndarray:
    """1.0 for the malignant classes, 0.0 otherwise: the malignant probability's weights."""
    return np.array([float(diagnosis.malignant) for diagnosis in DIAGNOSES], dtype=np.float32)


def coherent_distribution(
    class_probabilities: np.ndarray, malignant_probability: np.ndarray, names=DIAGNOSIS_NAMES
) -> np.ndarray:
    """Class probabilities (N, C) rescaled to agree with the calibrated malignant probability.

    Calibration moves the malignant probability only; the model's raw class probabilities
    would then contradict it (melanoma alone above every malignant class together). The
    malignant classes are scaled to sum to the calibrated probability and the benign ones to
    its complement, keeping each side's proportions; a side the model gave nothing is shared
    equally. The rows then sum to 1.
    """
    rows = np.asarray(class_probabilities, dtype=np.float64)
    malignant = np.asarray(malignant_probability, dtype=np.float64)[:, None]
    is_malignant = np.array([name in MALIGNANT_NAMES for name in names])
    result = np.empty_like(rows)
    for side, total in ((is_malignant, malignant), (~is_malignant, 1.0 - malignant)):
        part = rows[:, side]
        sums = part.sum(axis=1, keepdims=True)
        shares = np.where(sums > 0, part / np.where(sums > 0, sums, 1.0), 1.0 / side.sum())
        result[:, side] = shares * total
    return result


def column_name(name: str) -> str:
    """The CSV column of one class: `dx_` + the name lower-cased, non-alphanumerics as `_`."""
    return "dx_" + re.sub(r"[^0-9a-z]+", "_", name.lower()).strip("_")


def contradiction(outcome: str, diagnosis: str | None) -> str | None:
    """Why a confirmed benign/malignant outcome and a diagnosis disagree, or None if they agree."""
    if outcome not in CLASS_NAMES:
        raise ValueError(f"outcome must be one of {CLASS_NAMES}, got {outcome!r}")
    name = normalise_diagnosis(diagnosis) if diagnosis else None
    if name is None or is_malignant(name) == (outcome == MALIGNANT):
        return None
    kind = MALIGNANT if is_malignant(name) else BENIGN
    return f"{name} is a {kind} diagnosis, but the outcome is {outcome}"
