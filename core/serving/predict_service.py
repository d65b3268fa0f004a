"""What the Predict page does: uploads in, stored and explained predictions out.

Uploaded ZIP archives are opened with the same safety rules as dataset archives; files over
`config.MAX_UPLOAD_BYTES` are refused before any decoding; every good prediction is stored in
the database; bad files come back with a message and are never stored. No image bytes are
stored unless `config.STORE_THUMBNAILS` is on, and then only a small JPEG re-encoded from the
pixels (no EXIF or other metadata). Imports TensorFlow (through `core.serving.inference`): only the
Predict page uses it.
"""

import io
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from core import config
from core.inputs import images
from core.serving import gradcam
from core.serving.inference import Prediction, Predictor, decode_for_model
from core.storage import prediction_csv, spreadsheet
from core.storage.db import Database, PredictionRecord

THUMBNAIL_PIXELS = 96
DISPLAY_PIXELS = 512
ZIP_SUFFIX = ".zip"
# An archive of images for prediction is smaller than a training set; these keep it so.
MAX_ZIP_IMAGES = 2_000
MAX_ZIP_BYTES = 1024**3

ProgressCallback = Callable[[int, int], None]


@dataclass(frozen=True)
class Upload:
    """One image to predict: its display name and its bytes."""

    name: str
    data: bytes


@dataclass(frozen=True)
class PredictionResult:
    """A prediction, its database id (None when it was not stored) and a JPEG thumbnail.

    `repeated`: this session had stored the same prediction before, so it was not stored again.
    """

    prediction: Prediction
    prediction_id: int | None
    thumbnail: bytes | None
    repeated: bool = False

    @property
    def ok(self) -> bool:
        return not self.prediction.error

    @property
    def distance(self) -> float | None:
        """Signed distance of the probability from the threshold (positive: malignant side)."""
        if self.prediction.probability is None:
            return None
        return self.prediction.probability - self.prediction.threshold


@dataclass(frozen=True)
class Explanation:
    """Display-sized image, coloured heat map and overlay, all uint8 RGB of the same size."""

    image: np.ndarray
    heatmap: np.ndarray
    overlay: np.ndarray
    # ", mean of the 2 ensemble members' maps" when the map is not one model's own.
    note: str = ""


def expand_uploads(files: Sequence[tuple[str, bytes]]) -> tuple[list[Upload], list[str]]:
    """Images as uploaded, with ZIP archives replaced by the images inside them.

    Returns the uploads and one message per archive or member that was refused or skipped.
    """
    uploads: list[Upload] = []
    problems: list[str] = []
    for name, data in files:
        if too_large := size_problem(len(data)):
            problems.append(f"{name}: {too_large}; not decoded")
        elif not name.lower().endswith(ZIP_SUFFIX):
            uploads.append(Upload(name, data))
        else:
            try:
                inside, skipped = _images_in_zip(name, data)
            except images.ArchiveError as error:
                problems.append(f"{name}: {error}")
                continue
            uploads.extend(inside)
            problems.extend(f"{name}/{member}: skipped ({reason})" for member, reason in skipped)
    return uploads, problems


def size_problem(size: int) -> str | None:
    """Why a file of `size` bytes is refused, or None when it is within the upload limit."""
    limit = config.MAX_UPLOAD_BYTES
    if size <= limit:
        return None
    return f"file is {size / 1024**2:,.1f} MB, over the {limit / 1024**2:,.1f} MB upload limit"


def _images_in_zip(name: str, data: bytes) -> tuple[list[Upload], list[tuple[str, str]]]:
    with tempfile.TemporaryDirectory() as folder:
        result = images.safe_extract_zip(
            data, Path(folder), max_members=MAX_ZIP_IMAGES, max_total_bytes=MAX_ZIP_BYTES
        )
        paths = sorted(path for path in result.extracted if path.suffix.lower() != ".csv")
        uploads, skipped = [], list(result.skipped)
        for path in paths:
            member = path.relative_to(folder).as_posix()
            if too_large := size_problem(path.stat().st_size):
                skipped.append((member, too_large))
            else:
                uploads.append(Upload(f"{name}/{member}", path.read_bytes()))
    return uploads, skipped


def upload_bytes(files: Iterable[tuple[str, bytes]], upload: str, sha256: str) -> bytes | None:
    """The bytes of the upload that `expand_uploads` named `upload`, read again from the files.

    A page can then keep names and hashes between reruns instead of image bytes. `sha256`
    tells apart two files of the same name; None when no file holds those bytes.
    """
    for name, data in files:
        member = upload[len(name) + 1 :] if upload.startswith(f"{name}/") else None
        if upload == name:
            content = data
        elif member and name.lower().endswith(ZIP_SUFFIX):
            try:
                content = images.read_zip_member(data, member, config.MAX_UPLOAD_BYTES)
            except images.ArchiveError:
                continue
        else:
            continue
        if images.sha256_bytes(content) == sha256:
            return content
    return None


def thumbnail_jpeg(picture: Image.Image) -> bytes:
    """A JPEG of a decoded upload's preview, for tables and the history.

    It is encoded from the pixels alone, so no EXIF (camera, GPS, dates), ICC profile or
    comment of the upload survives in it.
    """
    pixels_only = Image.fromarray(np.asarray(picture, dtype=np.uint8))
    buffer = io.BytesIO()
    pixels_only.save(buffer, format="JPEG", quality=80)
    return buffer.getvalue()


def _record(prediction: Prediction, session_id: str, tta: bool, thumbnail) -> PredictionRecord:
    if prediction.probability is None or prediction.label is None:
        raise ValueError(f"{prediction.file}: a failed prediction is never stored")
    return PredictionRecord(
        session_id=session_id,
        run_id=prediction.model,
        file_name=prediction.file,
        sha256=prediction.sha256,
        width=prediction.width or 0,
        height=prediction.height or 0,
        probability=prediction.probability,
        label=prediction.label,
        threshold=prediction.threshold,
        threshold_source=prediction.threshold_source,
        latency_ms=prediction.latency_ms or 0.0,
        tta=tta,
        ood_score=prediction.ood_score,
        ood_flag=prediction.ood_flag,
        thumbnail=thumbnail,
        diagnoses=prediction.diagnoses,
    )


def _predictions_in_order(
    predictor: Predictor, uploads: Sequence[Upload], tta: bool
) -> Iterator[tuple[Prediction, Image.Image | None]]:
    """One prediction and thumbnail-sized preview per upload, in order; uploads over the
    size limit are never decoded."""
    refused = {i: problem for i, u in enumerate(uploads) if (problem := size_problem(len(u.data)))}
    accepted = [(u.name, u.data) for i, u in enumerate(uploads) if i not in refused]
    # The yield is in input order, so the n-th prediction belongs to the n-th item.
    predicted = predictor.predict_with_previews(accepted, THUMBNAIL_PIXELS, tta=tta)
    for index, upload in enumerate(uploads):
        if index in refused:
            yield predictor.error_result(upload.name, refused[index]), None
        else:
            yield next(predicted)


def predict_uploads(
    predictor: Predictor,
    database: Database | None,
    uploads: Sequence[Upload],
    session_id: str,
    tta: bool | None = None,
    progress_callback: ProgressCallback | None = None,
    store_thumbnails: bool | None = None,
) -> list[PredictionResult]:
    """Predict every upload in order, store the new good ones in one transaction.

    The same image bytes with the same run and TTA setting are one prediction per session: a
    repeat (uploaded again, or twice in one batch) gets the stored row's id and is not stored
    again. Uploads over the size limit get an error without being decoded. Every result
    carries a thumbnail for this session's table; the stored row gets it only with
    `store_thumbnails` (default `config.STORE_THUMBNAILS`). `progress_callback(done, total)`
    follows each image. Without a database (it cannot be opened) nothing is stored.
    """
    use_tta = predictor.default_tta if tta is None else tta
    keep_thumbnails = config.STORE_THUMBNAILS if store_thumbnails is None else store_thumbnails
    predictions, thumbnails = [], []
    for prediction, preview in _predictions_in_order(predictor, uploads, use_tta):
        predictions.append(prediction)
        thumbnails.append(None if preview is None else thumbnail_jpeg(preview))
        if progress_callback is not None:
            progress_callback(len(predictions), len(uploads))
    stored = thumbnails if keep_thumbnails else [None] * len(thumbnails)
    ids, repeated = (
        _store_new(database, predictions, stored, session_id, use_tta)
        if database is not None
        else ({}, set())
    )
    return [
        PredictionResult(prediction, ids.get(index), thumbnails[index], index in repeated)
        for index, prediction in enumerate(predictions)
    ]


def _store_new(
    database: Database,
    predictions: Sequence[Prediction],
    thumbnails: Sequence[bytes | None],
    session_id: str,
    tta: bool,
) -> tuple[dict[int, int], set[int]]:
    """Store each good prediction that this session has not stored yet, once.

    Returns the database id of every good prediction by position, and the positions that this
    session had stored before this call.
    """
    good = [index for index, prediction in enumerate(predictions) if not prediction.error]
    keys = {index: _key(predictions[index], tta) for index in good}
    known = database.session_prediction_ids(session_id, [key[1] for key in keys.values()])
    repeated = {index for index in good if keys[index] in known}
    first_of_key: dict[tuple[str, str, bool], int] = {}
    for index in good:
        if keys[index] not in known:
            first_of_key.setdefault(keys[index], index)
    records = [
        _record(predictions[i], session_id, tta, thumbnails[i]) for i in first_of_key.values()
    ]
    known.update(zip(first_of_key, database.insert_predictions(records), strict=True))
    return {index: known[keys[index]] for index in good}, repeated


def _key(prediction: Prediction, tta: bool) -> tuple[str, str, bool]:
    """What makes two predictions one: the image bytes, the run and the TTA setting."""
    return prediction.model, prediction.sha256, tta


def results_frame(results: Sequence[PredictionResult]) -> pd.DataFrame:
    """One row per image for the results table: a JPEG thumbnail, then the CSV's columns."""
    rows = [[result.thumbnail, *prediction_csv.page_row(result)] for result in results]
    return pd.DataFrame(rows, columns=["thumbnail", *prediction_csv.PAGE_COLUMNS])


def results_csv(results: Sequence[PredictionResult]) -> bytes:
    """The Predict page's download: `prediction_csv.PAGE_COLUMNS`, one row per image."""
    frame = results_frame(results)[list(prediction_csv.PAGE_COLUMNS)]
    return spreadsheet.to_csv(frame, index=False).encode("utf-8")


def explain(predictor: Predictor, data: bytes, toward: str = "malignant") -> Explanation:
    """Grad-CAM of one image, drawn over a display-sized copy of the whole image."""
    decoded = decode_for_model(data, predictor.image_size, predictor.resample, DISPLAY_PIXELS)
    heatmap = gradcam.grad_cam(predictor.model, decoded.array, toward)
    display = np.asarray(decoded.preview, dtype=np.uint8)
    resized = gradcam.resize_heatmap(heatmap, display.shape[1], display.shape[0])
    return Explanation(
        image=display,
        heatmap=gradcam.colorize(resized),
        overlay=gradcam.overlay(display, resized),
        note=f", {note}" if (note := gradcam.source_note(predictor.model)) else "",
    )


def with_colour_scale(picture: np.ndarray) -> np.ndarray:
    """The picture (RGB uint8) with the heat map's colour scale below it, as wide as it.

    One image, so that the scale shrinks with the picture in a narrow column instead of
    running into the next one. The scale goes from no influence (left) to the most (right).
    """
    width = picture.shape[1]
    bar_height = max(8, width // 40)
    scale = gradcam.colorize(np.tile(np.linspace(0.0, 1.0, width), (bar_height, 1)))
    gap = np.full((bar_height // 2, width, 3), 255, dtype=np.uint8)
    return np.concatenate([picture, gap, scale])


def earlier_predictions(
    database: Database,
    result: PredictionResult,
    batch_ids: Sequence[int],
    session_id: str | None = None,
) -> pd.DataFrame:
    """Predictions of the same image content stored before this batch, newest first.

    With `session_id`, only that session's: a public visitor never sees other sessions' rows.
    """
    if not result.ok:
        return pd.DataFrame()
    frame = database.predictions_for_hash(
        result.prediction.sha256, exclude_ids=list(batch_ids), session_id=session_id
    )
    # The OOD flag goes with the label: a flagged image's label is shown as not assessed.
    columns = ["created_at", "run_id", "file_name", "probability", "label", "ood_flag", "tta"]
    return frame[[*columns, "confirmed_label", "confirmed_diagnosis"]].reset_index(drop=True)
