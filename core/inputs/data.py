"""Find, check and load a labelled dermoscopy dataset (pandas + numpy, no TensorFlow).

Two layouts are understood:

- folders: `<dir>/benign/` and `<dir>/malignant/`, images found recursively;
- ISIC 2020: a ground-truth CSV (`image_name` plus `target` or `benign_malignant`, optionally
  `patient_id`, `lesion_id`, `anatom_site_general_challenge`, `sex`, `age_approx`, `diagnosis`,
  `source`) and an image folder holding `<image_name>.jpg` (or any other image extension). The
  data folder is either the image folder itself or its parent with `images/` beside the CSV.

`validate_dataset` never raises for bad data: every problem becomes a `Problem` in the report.
Rows that cannot be used (missing or unreadable image, unknown label, repeated name or bytes) are
dropped with a warning; anything that makes training meaningless is an error.
"""

import concurrent.futures
import hashlib
import io
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from core import config
from core.inputs import images
from core.inputs.labels import CLASS_NAMES, LABEL_VALUES

ISIC_SITES = (
    "head/neck",
    "upper extremity",
    "lower extremity",
    "torso",
    "palms/soles",
    "oral/genital",
)
UNKNOWN_SITE = "unknown"
# Upper bounds (exclusive) of the age bands of `age_approx`, youngest first; older is
# OLDEST_BAND. Here, not in `evaluation`, so that tables can sort by them without TensorFlow.
AGE_BANDS = ((30, "<30"), (45, "30-44"), (60, "45-59"), (75, "60-74"))
OLDEST_BAND = "75+"
ALL_SITES = "all"
SITE_CHOICES = (ALL_SITES, *ISIC_SITES, UNKNOWN_SITE)
# ISIC 2019 and older metadata split the torso; the 2020 vocabulary does not.
_SITE_ALIASES = {
    "anterior torso": "torso",
    "posterior torso": "torso",
    "lateral torso": "torso",
    "head neck": "head/neck",
    "oral genital": "oral/genital",
    "palms soles": "palms/soles",
}
TEXT_COLUMNS = (
    "image_name",
    "path",
    "patient_id",
    "lesion_id",
    "site",
    "sex",
    "diagnosis",
    "source",
)
STANDARD_COLUMNS = (
    "image_name",
    "path",
    "label",
    "patient_id",
    "lesion_id",
    "site",
    "sex",
    "age_approx",
    "diagnosis",
    "source",
    "sha256",
)
_CSV_COLUMNS = {
    "patient_id": "patient_id",
    "lesion_id": "lesion_id",
    "anatom_site_general_challenge": "site",
    "sex": "sex",
    "diagnosis": "diagnosis",
    "source": "source",
}
# A CSV target is a class name or its number, written as an integer or a float.
_LABEL_VALUES = {"0": 0, "1": 1, "0.0": 0, "1.0": 1, **LABEL_VALUES}
_LAYOUT_FOLDERS = "folders"
_LAYOUT_CSV = "isic_csv"
_MAX_FILES_LISTED = 20


class DatasetError(ValueError):
    """A dataset that cannot be trained on; the message lists every error found."""


# The kinds of rows a dataset drops: evaluation counts them instead of reading the messages.
INVALID_TARGET = "invalid_target"
UNMATCHED_NAME = "unmatched_name"
DUPLICATE_NAME = "duplicate_name"
DUPLICATE_IMAGE = "duplicate_image"


@dataclass
class Problem:
    level: str  # "error" or "warning"
    message: str
    files: list[str] = field(default_factory=list)
    kind: str = ""  # one of the kinds above for dropped rows, else empty


@dataclass
class Dataset:
    """A usable dataset: one row per image, columns `STANDARD_COLUMNS`, text never NA."""

    frame: pd.DataFrame
    root: Path
    csv_path: Path | None
    layout: str
    sites: tuple[str, ...]

    def class_counts(self) -> dict[str, int]:
        counts = self.frame["label"].value_counts()
        return {name: int(counts.get(label, 0)) for label, name in enumerate(CLASS_NAMES)}


@dataclass
class ValidationReport:
    n_images: int = 0
    class_counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CLASS_NAMES, 0))
    site_counts: pd.DataFrame = field(default_factory=pd.DataFrame)
    problems: list[Problem] = field(default_factory=list)
    dataset: Dataset | None = None

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def errors(self) -> list[Problem]:
        return [problem for problem in self.problems if problem.level == "error"]

    def add(
        self, level: str, message: str, files: list[str] | None = None, kind: str = ""
    ) -> None:
        self.problems.append(Problem(level, message, list(files or []), kind))

    def to_text(self) -> str:
        counts = ", ".join(f"{count} {name}" for name, count in self.class_counts.items())
        lines = [f"{self.n_images} usable images ({counts})"]
        if not self.site_counts.empty:
            lines.append("By site:\n" + self.site_counts.to_string())
        for problem in self.problems:
            lines.append(f"{problem.level.upper()}: {problem.message}")
            shown = problem.files[:_MAX_FILES_LISTED]
            lines.extend(f"    {name}" for name in shown)
            if len(problem.files) > len(shown):
                lines.append(f"    ... and {len(problem.files) - len(shown)} more")
        return "\n".join(lines)


def normalise_sites(sites: str | list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
    """The site filter as a tuple; `("all",)` means no filter.

    Unknown names raise ValueError, and so does "all" beside named sites: which one was
    meant cannot be known, so neither silently wins.
    """
    if sites is None or isinstance(sites, str) and sites == ALL_SITES:
        return (ALL_SITES,)
    chosen = (sites,) if isinstance(sites, str) else tuple(sites)
    unknown = [site for site in chosen if site not in SITE_CHOICES]
    if unknown:
        raise ValueError(f"unknown site(s) {unknown}; choose from {list(SITE_CHOICES)}")
    named = [site for site in chosen if site != ALL_SITES]
    if named and ALL_SITES in chosen:
        raise ValueError(f"choose {ALL_SITES!r} or named sites, not both (got {list(chosen)})")
    return tuple(named) or (ALL_SITES,)


def _normalise_site(value: str) -> str:
    site = " ".join(value.strip().lower().replace("_", " ").split())
    return _SITE_ALIASES.get(site, site)


def _standard_frame(rows: dict[str, object]) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    for column in TEXT_COLUMNS:
        frame[column] = frame[column].astype(str) if column in frame else ""
    frame["label"] = frame["label"].astype("int64")
    ages = frame["age_approx"] if "age_approx" in frame else pd.Series(np.nan, index=frame.index)
    frame["age_approx"] = pd.to_numeric(ages, errors="coerce").astype("float64")
    frame["sha256"] = ""
    return frame[list(STANDARD_COLUMNS)].reset_index(drop=True)


def _find_layout(
    data_dir: Path, csv_path: Path | None, report: ValidationReport
) -> tuple[str, Path, Path | None] | None:
    """Return (layout, image folder, csv path) or None after recording the error."""
    if csv_path is not None:
        if not csv_path.is_file():
            report.add("error", f"CSV file not found: {csv_path}")
            return None
        images_dir = data_dir / "images" if (data_dir / "images").is_dir() else data_dir
        return _LAYOUT_CSV, images_dir, csv_path
    if all((data_dir / name).is_dir() for name in CLASS_NAMES):
        return _LAYOUT_FOLDERS, data_dir, None
    csv_files = sorted(data_dir.glob("*.csv"))
    if len(csv_files) > 1 and (data_dir / "metadata.csv").is_file():
        csv_files = [data_dir / "metadata.csv"]
    if len(csv_files) == 1:
        return _find_layout(data_dir, csv_files[0], report)
    found = f"{len(csv_files)} CSV files" if csv_files else "no CSV file"
    report.add(
        "error",
        f"{data_dir}: no dataset layout recognised ({found}). Expected benign/ and malignant/ "
        "subfolders, or images with one ground-truth CSV (or name the CSV).",
    )
    return None


def _image_files(folder: Path) -> list[Path]:
    return sorted(
        path
        for path in folder.rglob("*")
        if path.suffix.lower() in images.IMAGE_EXTENSIONS
        and not path.name.startswith(".")
        and path.is_file()
    )


def _read_folders(data_dir: Path) -> pd.DataFrame:
    names, paths, labels = [], [], []
    for label, class_name in enumerate(CLASS_NAMES):
        for path in _image_files(data_dir / class_name):
            names.append(path.stem)
            paths.append(str(path.resolve()))
            labels.append(label)
    return _standard_frame({"image_name": names, "path": paths, "label": labels})


def _read_csv(csv_path: Path, report: ValidationReport) -> pd.DataFrame | None:
    try:
        table = pd.read_csv(csv_path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        report.add("error", f"{csv_path.name}: cannot read the CSV ({error})")
        return None
    table.columns = [str(column).strip() for column in table.columns]
    has_label = "target" in table.columns or "benign_malignant" in table.columns
    if "image_name" not in table.columns or not has_label:
        report.add(
            "error",
            f"{csv_path.name}: needs columns 'image_name' and 'target' or 'benign_malignant'; "
            f"it has {list(table.columns)}",
        )
        return None
    return table.apply(lambda column: column.str.strip())


def _labels_from_csv(table: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """(0/1 per row, the raw value) from `target`, else `benign_malignant`; -1 if not understood."""
    empty = pd.Series("", index=table.index)
    target = table.get("target", empty).str.lower()
    named = table.get("benign_malignant", empty).str.lower()
    raw = target.where(target != "", named)
    return raw.map(_LABEL_VALUES).fillna(-1).astype("int64"), raw


def _index_image_folder(images_dir: Path) -> dict[str, Path]:
    """Map both 'name.ext' and 'name' to the file; for a bare name, .jpg wins over others."""
    index: dict[str, Path] = {}
    preference = {suffix: rank for rank, suffix in enumerate(images.IMAGE_EXTENSIONS)}
    files = [
        entry
        for entry in os.scandir(images_dir)
        if entry.is_file() and Path(entry.name).suffix.lower() in preference
    ]
    files.sort(key=lambda entry: (preference[Path(entry.name).suffix.lower()], entry.name))
    for entry in files:
        path = Path(entry.path).resolve()
        index.setdefault(entry.name, path)
        index.setdefault(Path(entry.name).stem, path)
    return index


def _frame_from_csv(
    table: pd.DataFrame, images_dir: Path, report: ValidationReport
) -> pd.DataFrame:
    labels, raw_labels = _labels_from_csv(table)
    unknown = labels < 0
    if unknown.any():
        values = sorted(set(raw_labels[unknown]))[:10]
        report.add(
            "warning",
            f"{int(unknown.sum())} rows with an unknown label were dropped (values: {values}); "
            "labels must be target 0/1 or benign_malignant benign/malignant",
            table["image_name"][unknown].tolist(),
            INVALID_TARGET,
        )
    index = _index_image_folder(images_dir)
    paths = table["image_name"].map(lambda name: str(index.get(name, "")))
    missing = (paths == "") & ~unknown
    if missing.any():
        report.add(
            "warning",
            f"{int(missing.sum())} rows name images that are not in {images_dir}; dropped",
            table["image_name"][missing].tolist(),
            UNMATCHED_NAME,
        )
    keep = ~unknown & ~missing
    rows = {"image_name": table["image_name"], "path": paths, "label": labels}
    rows |= {ours: table[theirs] for theirs, ours in _CSV_COLUMNS.items() if theirs in table}
    rows["age_approx"] = table.get("age_approx", pd.Series("", index=table.index))
    frame = _standard_frame({key: column[keep] for key, column in rows.items()})
    frame["site"] = frame["site"].map(_normalise_site)
    return frame


def _report_unknown_sites(frame: pd.DataFrame, report: ValidationReport) -> None:
    odd = sorted(set(frame["site"]) - set(ISIC_SITES) - {""})
    if odd:
        report.add(
            "warning",
            f"site values outside the ISIC 2020 vocabulary (only the 'all' filter keeps them): "
            f"{odd[:10]}",
        )


def _filter_sites(
    frame: pd.DataFrame, sites: tuple[str, ...], report: ValidationReport
) -> pd.DataFrame:
    if sites == (ALL_SITES,):
        return frame
    wanted = {"" if site == UNKNOWN_SITE else site for site in sites}
    kept = frame[frame["site"].isin(wanted)].reset_index(drop=True)
    if kept.empty and not frame.empty:
        report.add("error", f"the site filter {list(sites)} leaves no images")
    return kept


def _drop_repeated_names(frame: pd.DataFrame, report: ValidationReport) -> pd.DataFrame:
    repeated = frame["image_name"].duplicated(keep=False)
    if not repeated.any():
        return frame
    conflicting = frame[repeated].groupby("image_name")["label"].nunique()
    conflicting = conflicting[conflicting > 1].index.tolist()
    if conflicting:
        report.add("error", "image names listed with both labels", conflicting)
    report.add(
        "warning",
        f"{int(repeated.sum())} rows repeat an image name; the first of each is kept",
        frame["path"][repeated].tolist(),
        DUPLICATE_NAME,
    )
    return frame[~frame["image_name"].duplicated()].reset_index(drop=True)


def _check_file(path: str, full_decode: bool) -> tuple[str, str]:
    """(sha256, problem or '') for one file: header check, or a full decode when asked."""
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        return "", f"cannot read file ({error.strerror or error})"
    digest = hashlib.sha256(data).hexdigest()
    try:
        if full_decode:
            images.decode_image(data)
        else:
            _check_header(data)
    except images.ImageError as error:
        return digest, str(error)
    return digest, ""


def _check_header(data: bytes) -> None:
    # Image.open reads only the header; verify() walks the chunk structure where the format
    # supports it (PNG CRCs) without decoding pixels. Truncated JPEGs need full_decode.
    if not data:
        raise images.ImageError("empty file (0 bytes)")
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.width * image.height > config.MAX_IMAGE_PIXELS:
                raise images.ImageError(f"image is {image.width}x{image.height}, too large")
            image.verify()
    except images.ImageError:
        raise
    except Exception as error:  # noqa: BLE001 - any failure of untrusted bytes means corrupt
        raise images.ImageError(
            f"not a readable image ({type(error).__name__}: {error})"
        ) from None


def _check_files(frame: pd.DataFrame, full_decode: bool, report: ValidationReport) -> pd.DataFrame:
    with concurrent.futures.ThreadPoolExecutor(max_workers=(os.cpu_count() or 1) * 2) as pool:
        results = list(pool.map(lambda path: _check_file(path, full_decode), frame["path"]))
    frame = frame.assign(sha256=[digest for digest, _ in results])
    bad = np.array([bool(problem) for _, problem in results], dtype=bool)
    if bad.any():
        details = [
            f"{path}: {problem}" for path, (_, problem) in zip(frame["path"], results, strict=True)
        ]
        report.add(
            "warning",
            f"{int(bad.sum())} unreadable or corrupt images were dropped",
            [detail for detail, is_bad in zip(details, bad, strict=True) if is_bad],
        )
    return frame[~bad].reset_index(drop=True)


def _drop_repeated_bytes(frame: pd.DataFrame, report: ValidationReport) -> pd.DataFrame:
    repeated = frame["sha256"].duplicated(keep=False)
    if not repeated.any():
        return frame
    conflicting = frame[repeated].groupby("sha256")["label"].nunique()
    if (conflicting > 1).any():
        clash = frame[repeated & frame["sha256"].isin(conflicting[conflicting > 1].index)]
        report.add("error", "identical image files carry both labels", clash["path"].tolist())
    report.add(
        "warning",
        f"{int(repeated.sum())} files are byte-identical copies; one of each is kept",
        frame["path"][repeated].tolist(),
        DUPLICATE_IMAGE,
    )
    return frame[~frame["sha256"].duplicated()].reset_index(drop=True)


def _check_class_counts(frame: pd.DataFrame, min_per_class: int, report: ValidationReport) -> None:
    for label, name in enumerate(CLASS_NAMES):
        count = int((frame["label"] == label).sum())
        if count == 0:
            report.add("error", f"no {name} images: both classes are needed")
        elif count < min_per_class:
            report.add("error", f"only {count} {name} images; at least {min_per_class} are needed")


def _site_counts(frame: pd.DataFrame) -> pd.DataFrame:
    if frame.empty:
        return pd.DataFrame()
    sites = frame["site"].replace("", UNKNOWN_SITE)
    classes = frame["label"].map(dict(enumerate(CLASS_NAMES)))
    table = pd.crosstab(sites, classes).reindex(columns=list(CLASS_NAMES), fill_value=0)
    order = [site for site in (*ISIC_SITES, UNKNOWN_SITE) if site in table.index]
    table = table.reindex(order + sorted(set(table.index) - set(order)))
    table.index.name, table.columns.name = "site", None
    return table


def _read_rows(
    data_dir: Path, csv_path: Path | None, report: ValidationReport
) -> tuple[str, Path, Path | None, pd.DataFrame] | None:
    if not data_dir.is_dir():
        report.add("error", f"data folder not found: {data_dir}")
        return None
    found = _find_layout(data_dir, csv_path, report)
    if found is None:
        return None
    layout, images_dir, csv_path = found
    if layout == _LAYOUT_FOLDERS:
        return layout, images_dir, None, _read_folders(images_dir)
    table = _read_csv(csv_path, report) if csv_path is not None else None
    if table is None:
        return None
    return layout, images_dir, csv_path, _frame_from_csv(table, images_dir, report)


def _nothing_usable(images_dir: Path, csv_file: Path | None, report: ValidationReport) -> str:
    """Why no row is left, in words: no image at all, no CSV row naming one, or the rows
    dropped for other reasons."""
    n_images = len(set(_index_image_folder(images_dir).values()))
    dropped = [problem for problem in report.problems if problem.kind]
    if csv_file is None or n_images == 0:
        kinds = ", ".join(images.IMAGE_EXTENSIONS[:-1]) + f" or {images.IMAGE_EXTENSIONS[-1]}"
        return f"no images in {images_dir}: none of its files ends in {kinds}"
    if [problem.kind for problem in dropped] == [UNMATCHED_NAME]:
        n_rows = len(dropped[0].files)
        return (
            f"no row of {csv_file.name} matches an image: {_count(n_rows, 'row')} name images "
            f"that are not among the {_count(n_images, 'image')} in {images_dir}. Its "
            "image_name column must hold the images' file names, with or without the extension"
        )
    reasons = "; ".join(problem.message for problem in dropped) or "it has no rows"
    return f"no row of {csv_file.name} can be used: {reasons}"


def _count(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def validate_dataset(
    data_dir: str | os.PathLike,
    csv_path: str | os.PathLike | None = None,
    sites: str | list[str] | tuple[str, ...] | None = None,
    min_per_class: int = 10,
    *,
    full_decode: bool = False,
) -> ValidationReport:
    """Check a dataset and say what is wrong; `report.dataset` holds what is usable.

    `full_decode` decodes every image (catching truncated JPEGs) instead of the fast header
    check; about 1 ms per small image.
    """
    chosen_sites = normalise_sites(sites)
    report = ValidationReport()
    data_dir = Path(data_dir).expanduser().resolve()
    rows = _read_rows(
        data_dir, Path(csv_path).expanduser().resolve() if csv_path else None, report
    )
    if rows is None:
        return report
    layout, images_dir, csv_file, frame = rows
    if frame.empty and not report.errors:
        report.add("error", _nothing_usable(images_dir, csv_file, report))
        return report
    _report_unknown_sites(frame, report)
    frame = _filter_sites(frame, chosen_sites, report)
    frame = _drop_repeated_names(frame, report)
    frame = _check_files(frame, full_decode, report)
    frame = _drop_repeated_bytes(frame, report)
    if not frame.empty or not report.errors:
        _check_class_counts(frame, min_per_class, report)
    report.n_images = len(frame)
    report.class_counts = {
        name: int((frame["label"] == label).sum()) for label, name in enumerate(CLASS_NAMES)
    }
    report.site_counts = _site_counts(frame)
    report.dataset = Dataset(frame, images_dir, csv_file, layout, chosen_sites)
    return report


def load_dataset(
    data_dir: str | os.PathLike,
    csv_path: str | os.PathLike | None = None,
    sites: str | list[str] | tuple[str, ...] | None = None,
    *,
    min_per_class: int = 10,
    full_decode: bool = False,
) -> Dataset:
    """The usable rows of a dataset; raises `DatasetError` listing every error found."""
    report = validate_dataset(
        data_dir, csv_path, sites, min_per_class=min_per_class, full_decode=full_decode
    )
    if not report.ok or report.dataset is None:
        raise DatasetError("; ".join(problem.message for problem in report.errors))
    return report.dataset


def dataset_fingerprint(frame: pd.DataFrame) -> str:
    """sha256 over sorted (image_name, label, file size): cheap, and changes with the data."""
    rows = sorted(
        f"{name}\t{int(label)}\t{os.path.getsize(path)}"
        for name, label, path in zip(
            frame["image_name"], frame["label"], frame["path"], strict=True
        )
    )
    return hashlib.sha256("\n".join(rows).encode("utf-8")).hexdigest()
