"""Safe image decoding, resizing and zip extraction (Pillow + numpy, no TensorFlow).

Every image the app touches, uploaded or from a dataset, goes through `decode_image`, so one set
of rules applies everywhere:

- the pixel count is read from the header and checked before any pixel is decoded;
- the image is decoded fully, so a truncated file fails here and not inside a training step;
- EXIF orientation is applied, as a viewer would show the photo;
- animated GIFs and multi-page TIFFs use their first frame (dermoscopy is one still photo);
- every colour mode becomes 8-bit RGB; transparency is composited on white;
- tiny images (even 1x1) are accepted: the model input is resized anyway.
- model inputs of large images are reduced while decoding, before any conversion to RGB.
"""

import concurrent.futures
import contextlib
import hashlib
import io
import os
import re
import stat
import threading
import warnings
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import ExifTags, Image, ImageOps

from core import config

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif")
RESAMPLE_FILTERS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}

# Pillow's own guard protects every Pillow call in the process (not only ours). It only warns
# between 1x and 2x its limit, so that warning is made an error: an oversized image is refused,
# never decoded with a warning in a log nobody reads.
Image.MAX_IMAGE_PIXELS = config.MAX_IMAGE_PIXELS
warnings.filterwarnings("error", category=Image.DecompressionBombWarning)

_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_TRANSPARENT_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
_PALETTE_MODES = ("1", "P", "PA")
# EXIF orientations that turn the picture a quarter: transpose, 270, transverse, 90 degrees.
_QUARTER_TURNS = (5, 6, 7, 8)
_COPY_CHUNK_BYTES = 1024 * 1024
# Model inputs are reduced while decoding only while both sides stay at least this many times
# the input size: past Pillow's own 3.0 `reducing_gap`, from which it finds a reduce-then-resize
# indistinguishable from one resize, and enough for a 512 px display copy of a 160 px model.
REDUCING_GAP = 4
# Part of the decoded-image and feature caches' folder names: raise it whenever
# `decode_for_model` gives other pixels for the same bytes, so no cache serves the old ones.
# 2: large images are reduced while decoding.
DECODE_VERSION = 2
# Small members (a CSV of repeated values, a flat PNG) can compress very well without being a
# bomb, so the per-member ratio check only applies above this size.
_RATIO_CHECK_MIN_BYTES = 1024 * 1024
# Operating-system litter and documents (a dataset's read-me or licence) inside archives.
_HARMLESS_NAMES = ("thumbs.db", "desktop.ini")
_DOCUMENT_SUFFIXES = (".txt", ".md", ".rst", ".pdf")


class ImageError(ValueError):
    """An input that is not a usable image; the message says why."""


class ArchiveError(ValueError):
    """A zip archive that is refused as a whole (unsafe paths, zip bomb, not a zip)."""


@dataclass
class ExtractResult:
    """What `safe_extract_zip` wrote, which members it left out with the reason, and which
    harmless ones (macOS metadata, hidden files, read-me documents) it left out silently."""

    extracted: list[Path] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _megapixels(pixels: int) -> str:
    return f"{pixels / 1_000_000:,.1f} MP" if pixels >= 100_000 else f"{pixels:,} pixels"


def _bomb_error(error: Exception, max_pixels: int) -> ImageError:
    """Pillow's own guard fired before our check; keep its pixel count in our wording."""
    counted = re.search(r"\((\d+) pixels\)", str(error))
    size = f"{_megapixels(int(counted[1]))}, " if counted else ""
    return ImageError(f"image is {size}over the {_megapixels(max_pixels)} limit")


def _describe_non_image(data: bytes) -> str:
    head = data[:512]
    if head.startswith(b"%PDF"):
        return "not an image (looks like a PDF document)"
    if head.startswith(b"PK\x03\x04"):
        return "not an image (looks like a zip archive)"
    if head.lstrip().lower().startswith((b"<!doctype html", b"<html")):
        return "not an image (looks like an HTML page)"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return "not an image (unrecognised file format)"
    return "not an image (looks like text)"


def _open_checked(data: bytes, max_pixels: int) -> Image.Image:
    """Open lazily (header only) and refuse oversized images before decoding any pixel."""
    if not data:
        raise ImageError("empty file (0 bytes)")
    try:
        image = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise _bomb_error(error, max_pixels) from None
    except Image.UnidentifiedImageError:
        raise ImageError(_describe_non_image(data)) from None
    # Pillow plugins report malformed headers with many exception types (SyntaxError,
    # struct.error, OSError, EOFError...); for untrusted bytes they all mean "corrupt".
    except Exception as error:  # noqa: BLE001
        raise ImageError(f"corrupt image header ({type(error).__name__}: {error})") from None
    width, height = image.size
    if width * height > max_pixels:
        raise ImageError(
            f"image is {width}x{height} = {_megapixels(width * height)}, "
            f"over the {_megapixels(max_pixels)} limit"
        )
    return image


def _sixteen_bit_to_rgb(image: Image.Image) -> Image.Image:
    # 16-bit (and 32-bit integer) grey levels are treated as 0..65535 and scaled, not clipped:
    # clipping would turn almost every pixel of a 16-bit scan white. (v + 128) // 257 is
    # round(v / 257), computed in place in one int32 array: a 49-megapixel scan then needs
    # 196 MB here, not the gigabyte float64 arrays took.
    values = np.array(image, dtype=np.int32)
    np.clip(values, 0, 65535, out=values)
    values += 128
    values //= 257
    grey = Image.fromarray(values.astype(np.uint8), mode="L")
    del values
    return Image.merge("RGB", [grey] * 3)


class PixelBudget:
    """Pixels being decoded at once, across every thread of the process.

    Each decode holds its image's pixels until its RGB image exists, so that parallel decodes
    of large images (a ZIP of four 49-megapixel PNGs) wait for each other instead of adding
    up; an image larger than the whole budget decodes alone.
    """

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.in_use = 0
        self._condition = threading.Condition()

    @contextlib.contextmanager
    def hold(self, pixels: int):
        pixels = min(pixels, self.capacity)
        with self._condition:
            self._condition.wait_for(lambda: self.in_use + pixels <= self.capacity)
            self.in_use += pixels
        try:
            yield
        finally:
            with self._condition:
                self.in_use -= pixels
                self._condition.notify_all()


DECODE_BUDGET = PixelBudget(config.MAX_IMAGE_PIXELS)


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB (transparency composited on white)."""
    if image.mode == "RGB":
        return image
    if image.mode in _SIXTEEN_BIT_MODES:
        return _sixteen_bit_to_rgb(image)
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in _TRANSPARENT_MODES:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _apply_exif_orientation(image: Image.Image) -> bool:
    """Turn the image in place as a viewer would; True when that swapped its sides.

    In place, because without an orientation tag exif_transpose would copy the image.
    """
    # A malformed EXIF block is metadata damage, not image damage: keep the pixels as stored.
    try:
        orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
        ImageOps.exif_transpose(image, in_place=True)
    except Exception:  # noqa: BLE001
        return False
    return orientation in _QUARTER_TURNS


def decode_image(
    data: bytes, *, max_pixels: int = config.MAX_IMAGE_PIXELS, reduce_to: int | None = None
) -> Image.Image:
    """Decode untrusted bytes into an RGB image, or raise `ImageError` saying why not.

    `reduce_to` lets JPEG decoding run at 1/2, 1/4 or 1/8 scale while both sides stay at least
    `reduce_to` pixels: a large speed-up for full-size photos when only a thumbnail is needed
    (perceptual hashing). Other formats ignore it. Model inputs come from `decode_for_model`.
    """
    image = _open_checked(data, max_pixels)
    with DECODE_BUDGET.hold(image.width * image.height):
        return _decoded(image, max_pixels, reduce_to)[0]


@dataclass(frozen=True)
class ModelInput:
    """What one decode gives: the model input, the size as shown (EXIF turns applied), a preview."""

    array: np.ndarray
    width: int
    height: int
    # RGB, the longest side at most the `preview` pixels asked for; None when none was.
    preview: Image.Image | None = None


def decode_for_model(
    data: bytes, size: int, resample: str = "bilinear", preview: int = 0
) -> ModelInput:
    """Model input (size, size, 3) of untrusted bytes and, with `preview`, a small copy.

    A large image is reduced while it is decoded (JPEG at 1/2, 1/4 or 1/8 scale, then a box
    average, both sides kept at least `REDUCING_GAP` x `size`) and only then converted to RGB,
    so a 49-megapixel scan never exists as a full-size RGB image; the model input and the
    preview both come from that one reduced picture. The decode budget is held until they
    exist, so that large images in flight never add up.
    """
    image = _open_checked(data, config.MAX_IMAGE_PIXELS)
    width, height = image.size
    keep = REDUCING_GAP * size
    with DECODE_BUDGET.hold(width * height):
        picture, turned = _decoded(image, config.MAX_IMAGE_PIXELS, keep, shrink_to=keep)
        # The full-size pixels go now, not when this function returns.
        del image
        return ModelInput(
            resize_for_model(picture, size, resample),
            *((height, width) if turned else (width, height)),
            _preview(picture, preview) if preview else None,
        )


def _preview(picture: Image.Image, pixels: int) -> Image.Image:
    small = picture.copy()
    small.thumbnail((pixels, pixels))
    return small


def _shrunk(image: Image.Image, keep: int) -> Image.Image:
    """Box-average a loaded image by the largest whole factor that keeps both sides >= keep."""
    factor = min(image.size) // keep
    if factor < 2:
        return image
    # Averaging palette indices would mix unrelated colours: those modes become RGB first.
    if image.mode in _PALETTE_MODES:
        image = to_rgb(image)
    # A box resize rather than Image.reduce, which has no 16-bit grey modes.
    reduced_size = (image.width // factor, image.height // factor)
    return image.resize(reduced_size, Image.Resampling.BOX)


def _decoded(
    image: Image.Image, max_pixels: int, reduce_to: int | None, shrink_to: int | None = None
) -> tuple[Image.Image, bool]:
    """The RGB picture, and whether its EXIF orientation swapped its sides."""
    try:
        if reduce_to:
            image.draft(None, (reduce_to, reduce_to))
        image.load()  # the first frame only, fully: truncated data fails here
        if shrink_to:
            image = _shrunk(image, shrink_to)
        turned = _apply_exif_orientation(image)
        return to_rgb(image), turned
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise _bomb_error(error, max_pixels) from None
    except Exception as error:  # noqa: BLE001 - any decoder failure means a corrupt file
        raise ImageError(f"truncated or corrupt image ({type(error).__name__}: {error})") from None


def resize_for_model(image: Image.Image, size: int, resample: str = "bilinear") -> np.ndarray:
    """Resize the whole image (no crop) to size x size; returns uint8 (size, size, 3)."""
    if resample not in RESAMPLE_FILTERS:
        raise ValueError(
            f"unknown resample filter {resample!r}; use one of {list(RESAMPLE_FILTERS)}"
        )
    if size < 1:
        raise ValueError(f"size must be a positive number of pixels, got {size}")
    resized = to_rgb(image).resize((size, size), RESAMPLE_FILTERS[resample])
    return np.asarray(resized, dtype=np.uint8)


def prepare_image(data: bytes, size: int, resample: str = "bilinear") -> np.ndarray:
    """Bytes to model input (decode, then resize): the one path for training and inference."""
    return decode_for_model(data, size, resample).array


def load_image_file(path: str | os.PathLike, size: int, resample: str = "bilinear") -> np.ndarray:
    """Read, decode and resize one image file; errors name the file."""
    try:
        data = Path(path).read_bytes()
        return prepare_image(data, size, resample)
    except OSError as error:
        raise ImageError(f"{path}: cannot read file ({error.strerror or error})") from None
    except ImageError as error:
        raise ImageError(f"{path}: {error}") from None


def decode_many(
    paths_or_bytes: Sequence[str | os.PathLike | bytes],
    size: int,
    resample: str = "bilinear",
    workers: int | None = None,
) -> list[np.ndarray | ImageError]:
    """Prepare many images in threads (Pillow releases the GIL while decoding).

    Results are in input order; an input that fails yields its `ImageError` instead of an array.
    """

    def prepare_one(item: str | os.PathLike | bytes) -> np.ndarray | ImageError:
        try:
            if isinstance(item, bytes | bytearray):
                return prepare_image(bytes(item), size, resample)
            return load_image_file(item, size, resample)
        except ImageError as error:
            return error

    with concurrent.futures.ThreadPoolExecutor(max_workers=workers or os.cpu_count()) as pool:
        return list(pool.map(prepare_one, paths_or_bytes))


def _unsafe_member_reason(info: zipfile.ZipInfo) -> str | None:
    name = info.filename
    parts = re.split(r"[\\/]", name)
    if name.startswith(("/", "\\")):
        return "absolute path"
    if re.match(r"^[A-Za-z]:", name):
        return "drive letter in path"
    if ".." in parts:
        return "path traversal ('..')"
    if stat.S_ISLNK(info.external_attr >> 16):
        return "symbolic link"
    return None


def _harmless(info: zipfile.ZipInfo) -> bool:
    """Members that travel with archives and mean nothing to a dataset: no warning needed."""
    path = PurePosixPath(info.filename.replace("\\", "/"))
    return (
        path.parts[0] == "__MACOSX"
        or path.name.startswith(".")
        or path.name.lower() in _HARMLESS_NAMES
        or path.suffix.lower() in _DOCUMENT_SUFFIXES
    )


def _skip_reason(info: zipfile.ZipInfo) -> str | None:
    suffix = PurePosixPath(info.filename.replace("\\", "/")).suffix.lower()
    if info.flag_bits & 0x1:
        return "encrypted member"
    if suffix in (".zip", ".tar", ".gz", ".tgz", ".7z", ".rar"):
        return "nested archive (not extracted)"
    if suffix not in IMAGE_EXTENSIONS and suffix != ".csv":
        return "not an image or CSV file"
    return None


@dataclass
class _ExtractLimits:
    max_total_bytes: int
    max_ratio: float
    written_total: int = 0


def _copy_member(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, limits: _ExtractLimits
) -> None:
    """Stream one member, counting real bytes: header sizes can lie."""
    written = 0
    with archive.open(info) as source, open(target, "wb") as sink:
        while chunk := source.read(_COPY_CHUNK_BYTES):
            written += len(chunk)
            limits.written_total += len(chunk)
            if written > info.file_size:
                raise ArchiveError(f"{info.filename}: more data than its header declares")
            if limits.written_total > limits.max_total_bytes:
                raise ArchiveError(
                    f"archive expands beyond {limits.max_total_bytes:,} bytes (zip bomb?)"
                )
            ratio = written / max(info.compress_size, 1)
            if written > _RATIO_CHECK_MIN_BYTES and ratio > limits.max_ratio:
                raise ArchiveError(
                    f"{info.filename}: compression ratio over {limits.max_ratio:g} (zip bomb?)"
                )
            sink.write(chunk)


def _check_archive_headers(
    members: list[zipfile.ZipInfo], max_members: int, limits: _ExtractLimits
) -> None:
    if len(members) > max_members:
        raise ArchiveError(f"archive has {len(members):,} members, over the {max_members:,} limit")
    for info in members:
        reason = _unsafe_member_reason(info)
        if reason:
            raise ArchiveError(f"unsafe member {info.filename!r}: {reason}")
    declared = sum(info.file_size for info in members)
    if declared > limits.max_total_bytes:
        raise ArchiveError(
            f"archive declares {declared:,} bytes uncompressed, over the "
            f"{limits.max_total_bytes:,} limit (zip bomb?)"
        )


def _open_archive(zip_path_or_bytes: str | os.PathLike | bytes) -> zipfile.ZipFile:
    source = (
        io.BytesIO(zip_path_or_bytes)
        if isinstance(zip_path_or_bytes, bytes | bytearray)
        else zip_path_or_bytes
    )
    try:
        return zipfile.ZipFile(source)
    except (zipfile.BadZipFile, EOFError) as error:
        raise ArchiveError(f"not a readable zip archive ({error})") from None


def safe_extract_zip(
    zip_path_or_bytes: str | os.PathLike | bytes,
    destination: Path,
    *,
    max_members: int = 20_000,
    max_total_bytes: int = 2 * 1024**3,
    max_ratio: float = 200,
) -> ExtractResult:
    """Extract the images and CSV files of a zip into `destination`, refusing unsafe archives.

    The whole archive is refused (`ArchiveError`, and nothing is left extracted) for unsafe
    member paths (absolute, drive letter, '..', symbolic link), too many members, or bomb-like
    sizes. Harmless members (macOS metadata, hidden files, documents) are left out silently;
    others (nested archives, other non-image files) are skipped and listed with the reason.
    """
    limits = _ExtractLimits(max_total_bytes=max_total_bytes, max_ratio=max_ratio)
    result = ExtractResult()
    root = Path(destination).resolve()
    with _open_archive(zip_path_or_bytes) as archive:
        members = [info for info in archive.infolist() if not info.is_dir()]
        _check_archive_headers(members, max_members, limits)
        root.mkdir(parents=True, exist_ok=True)
        try:
            _extract_members(archive, members, root, limits, result)
        except (ArchiveError, zipfile.BadZipFile, OSError, EOFError) as error:
            for path in result.extracted:
                path.unlink(missing_ok=True)
            if isinstance(error, ArchiveError):
                raise
            raise ArchiveError(f"archive could not be extracted ({error})") from None
    return result


def _extract_members(
    archive: zipfile.ZipFile,
    members: list[zipfile.ZipInfo],
    root: Path,
    limits: _ExtractLimits,
    result: ExtractResult,
) -> None:
    seen: set[Path] = set()
    for info in members:
        if _harmless(info):
            result.ignored.append(info.filename)
            continue
        reason = _skip_reason(info)
        target = root.joinpath(*PurePosixPath(info.filename.replace("\\", "/")).parts)
        if reason is None and target in seen:
            reason = "duplicate member name"
        if reason is None and not target.resolve().is_relative_to(root):
            raise ArchiveError(f"unsafe member {info.filename!r}: resolves outside the folder")
        if reason:
            result.skipped.append((info.filename, reason))
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        seen.add(target)
        result.extracted.append(target)
        _copy_member(archive, info, target, limits)


def read_zip_member(data: bytes, member: str, max_bytes: int) -> bytes:
    """One image member of an in-memory ZIP archive, with the extraction's checks.

    ArchiveError when the member is missing, unsafe, not an image or larger than `max_bytes`
    (by its header or by the bytes it really holds).
    """
    with _open_archive(data) as archive:
        try:
            info = archive.getinfo(member)
        except KeyError:
            raise ArchiveError(f"the archive has no member {member!r}") from None
        if reason := _unsafe_member_reason(info) or _skip_reason(info):
            raise ArchiveError(f"{member}: {reason}")
        if info.file_size > max_bytes:
            raise ArchiveError(f"{member}: {info.file_size:,} bytes, over {max_bytes:,}")
        try:
            with archive.open(info) as source:
                content = source.read(max_bytes + 1)
        except (zipfile.BadZipFile, OSError, EOFError) as error:
            raise ArchiveError(f"{member}: could not be read ({error})") from None
    if len(content) > info.file_size:
        raise ArchiveError(f"{member}: more data than its header declares")
    return content
