"""Datasets the Train page may use: found inside the data root, or unpacked into it.

The app reads training data only below `config.DATA_ROOT`; every path that comes from the user
(a chosen folder, the name of an uploaded archive) is resolved and checked to stay inside it.
"""

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from core import config
from core.inputs import images
from core.inputs.labels import CLASS_NAMES

UPLOADS_FOLDER = "uploads"
MAX_DEPTH = 3
_SKIPPED_FOLDERS = {"images", *CLASS_NAMES, "__MACOSX"}


class DatasetPathError(ValueError):
    """A dataset path or name that would lead outside the data root."""


class DatasetLayoutError(ValueError):
    """An uploaded archive in which no dataset layout was recognised."""


@dataclass(frozen=True)
class DatasetChoice:
    """A dataset folder, its ground-truth CSV (None for benign/ + malignant/ folders)."""

    label: str
    data_dir: Path
    csv: Path | None


@dataclass(frozen=True)
class UnpackResult:
    folder: Path
    extracted: int
    skipped: list[tuple[str, str]]


def data_root(root: Path | None = None) -> Path:
    return Path(root if root is not None else config.DATA_ROOT).resolve()


def confine(path: str | Path, root: Path | None = None) -> Path:
    """`path` (relative to the root, or absolute) resolved, if it lies inside the data root."""
    base = data_root(root)
    resolved = (base / path).resolve()
    if not resolved.is_relative_to(base):
        raise DatasetPathError(f"{path} is outside the data folder {base}")
    return resolved


def _ground_truth_csv(folder: Path) -> Path | None:
    """The folder's CSV whose header names image_name and a label column, if exactly one."""
    found = []
    for csv_path in sorted(folder.glob("*.csv")):
        try:
            with open(csv_path, encoding="utf-8", errors="replace") as handle:
                header = {column.strip() for column in handle.readline().split(",")}
        except OSError:
            continue
        if "image_name" in header and header & {"target", "benign_malignant"}:
            found.append(csv_path)
    if len(found) > 1 and folder / "metadata.csv" in found:
        return folder / "metadata.csv"
    return found[0] if len(found) == 1 else None


def _describe(folder: Path, csv_path: Path | None, base: Path) -> DatasetChoice:
    relative = folder.relative_to(base).as_posix() or "."
    kind = f"CSV {csv_path.name}" if csv_path else "benign/ + malignant/ folders"
    return DatasetChoice(f"{relative} ({kind})", folder, csv_path)


def discover_datasets(root: Path | None = None, max_depth: int = MAX_DEPTH) -> list[DatasetChoice]:
    """Folders under the data root in ISIC layout (CSV) or with benign/ and malignant/."""
    base = data_root(root)
    choices: list[DatasetChoice] = []
    pending = [(base, 0)] if base.is_dir() else []
    while pending:
        folder, depth = pending.pop(0)
        csv_path = _ground_truth_csv(folder)
        if csv_path is not None:
            choices.append(_describe(folder, csv_path, base))
        elif all((folder / name).is_dir() for name in CLASS_NAMES):
            choices.append(_describe(folder, None, base))
        if depth < max_depth:
            pending.extend(
                (child, depth + 1)
                for child in sorted(folder.iterdir())
                if child.is_dir()
                and not child.is_symlink()
                and not child.name.startswith(".")
                and child.name not in _SKIPPED_FOLDERS
            )
    return choices


def describe_location(path: str | Path, root: Path | None = None) -> str:
    """Where a dataset or file is, for people: relative to the data root, else its name.

    Server paths ("/srv/app/data/uploads/x", "../shared/data/...") say nothing to a user and
    reveal the server's layout. Relative paths are read from the app folder, as training does.
    """
    base = data_root(root)
    resolved = (config.REPO_ROOT / path).resolve()
    if resolved == base:
        return "the data folder"
    if resolved.is_relative_to(base):
        return f"{resolved.relative_to(base).as_posix()} in the data folder"
    if resolved.is_relative_to(config.REPO_ROOT):
        return resolved.relative_to(config.REPO_ROOT).as_posix()
    return _name(resolved)


# Folder names that say nothing without their parent's: "isic2020/train", not "train".
_GENERIC_NAMES = {"images", "image", "img", "jpeg", "jpg", "train", "test", "data", "dataset"}


def _name(path: Path) -> str:
    if path.name.lower() in _GENERIC_NAMES and path.parent.name:
        return f"{path.parent.name}/{path.name}"
    return path.name


# An absolute path: "/" not preceded by a word character, "." or ":" (which would make it part
# of a relative path or a URL), then at least one more path segment.
_ABSOLUTE_PATH = re.compile(r"(?<![\w.:/])/(?:[\w.@+-]+/)*[\w.@+-]+")


def without_paths(text: str, root: Path | None = None) -> str:
    """`text` (an error message) with each absolute server path replaced by its description."""
    return _ABSOLUTE_PATH.sub(lambda match: describe_location(match.group(0), root), text)


def safe_folder_name(name: str) -> str:
    """A folder name from an archive's file name: letters, digits, '-', '_' and '.' only."""
    stem = re.sub(r"\.zip$", "", Path(name).name, flags=re.IGNORECASE)
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._")
    if not cleaned:
        raise DatasetPathError(f"cannot make a folder name from {name!r}")
    return cleaned[:80]


def unpack_dataset_zip(
    name: str, data: bytes, root: Path | None = None, replace: bool = False
) -> UnpackResult:
    """Unpack an uploaded ZIP into <data root>/uploads/<name> with the archive safety checks.

    An existing folder of that name is refused unless `replace`.
    """
    folder = confine(Path(UPLOADS_FOLDER) / safe_folder_name(name), root)
    if folder.exists():
        if not replace:
            raise DatasetPathError(f"{folder.name} already exists in {folder.parent}")
        shutil.rmtree(folder)
    try:
        result = images.safe_extract_zip(data, folder)
    except images.ArchiveError:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return UnpackResult(folder, len(result.extracted), result.skipped)


def unpack_dataset(
    name: str, data: bytes, root: Path | None = None
) -> tuple[UnpackResult, DatasetChoice]:
    """Unpack an uploaded dataset ZIP and return it with the dataset found inside.

    An archive without a recognised layout is refused with DatasetLayoutError and nothing of
    it is left in the data root.
    """
    unpacked = unpack_dataset_zip(name, data, root)
    found = datasets_in(unpacked.folder, root)
    if not found:
        shutil.rmtree(unpacked.folder, ignore_errors=True)
        raise DatasetLayoutError(
            "no dataset layout in the archive, so nothing was kept: it needs a CSV with "
            "image_name and target (or benign_malignant) columns beside the images, or "
            "benign/ and malignant/ folders"
        )
    return unpacked, found[0]


def datasets_in(folder: Path, root: Path | None = None) -> list[DatasetChoice]:
    """The datasets found inside `folder` (say, a freshly unpacked archive)."""
    return [choice for choice in discover_datasets(root) if choice.data_dir.is_relative_to(folder)]
