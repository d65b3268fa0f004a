"""A one-page case report of one stored prediction, as printable HTML and as PDF.

The report is assembled from the database row, the run's card and its held-out-source
cross-validation; the image is the upload itself when the caller still has it, else the stored
thumbnail. No TensorFlow here: a Grad-CAM overlay, when wanted, is computed by the caller and
handed in as pixels, so History can offer reports without loading a model.
"""

import base64
import dataclasses
import datetime
import html
import io
import unicodedata
from pathlib import Path
from typing import Any

import numpy as np
from fpdf import FPDF
from fpdf.fonts import TTFFont
from PIL import Image

from core import config
from core.analysis import operating_point, reports
from core.inputs import images
from core.storage import db, runs

# Longest side of the report's pictures: enough for print, small enough for a download.
PICTURE_PIXELS = 512
# DejaVu Sans, shipped beside this module (licence in fonts/LICENSE), covers Latin, Greek,
# Cyrillic, Hebrew, Arabic and many symbols; without its files the PDF falls back to the core
# font, whose Latin-1 is all that `pdf_safe` keeps.
FONTS_DIR = Path(__file__).parent / "fonts"
UNICODE_FONT = "dejavu"
UNICODE_FONT_FILES = {"": "DejaVuSans.ttf", "B": "DejaVuSans-Bold.ttf"}
CORE_FONT = "helvetica"
# Stands for a character the font has no glyph for (CJK in DejaVu Sans): visibly not text.
MISSING_GLYPH = "\ufffd"
# Typographic characters that the PDF core fonts lack, written as their plain equivalents.
_PLAIN_PUNCTUATION = str.maketrans(
    {"\u2013": "-", "\u2014": "-", "\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"'}
)


@dataclasses.dataclass(frozen=True)
class ModelFigures:
    """What the run's card and crossval.json say about the model that made the prediction."""

    run_id: str
    backbone: str | None
    test: dict[str, Any]
    crossval_summary: dict[str, Any] | None = None
    n_sources: int = 0


@dataclasses.dataclass(frozen=True)
class CaseReport:
    """One stored prediction with everything its report shows; pictures are JPEG bytes."""

    prediction_id: int
    file_name: str
    predicted_at: datetime.datetime
    run_id: str
    probability: float
    label: str
    threshold: float
    tta: bool
    width: int
    height: int
    sha256: str
    ood_score: float | None
    ood_flag: bool | None
    ood_threshold: float | None
    confirmed_label: str | None
    confirmed_diagnosis: str | None
    confirmed_at: datetime.datetime | None
    model: ModelFigures | None
    made_at: datetime.datetime
    picture: bytes | None = None
    picture_caption: str = ""
    overlay: bytes | None = None
    overlay_caption: str = ""
    diagnoses: tuple[tuple[str, float], ...] = ()
    threshold_source: str = operating_point.CARD

    @property
    def distance(self) -> float:
        """Signed distance of the probability from the threshold (positive: malignant side)."""
        return self.probability - self.threshold


def build_report(
    database: db.Database,
    prediction_id: int,
    session_id: str | None = None,
    image: bytes | None = None,
    overlay: np.ndarray | None = None,
    overlay_caption: str = "",
    models_dir: Path | None = None,
) -> CaseReport:
    """The report of a stored prediction (only `session_id`'s when given).

    `image` is the uploaded file, re-encoded small and without metadata; without it the stored
    thumbnail is shown, if any. `overlay` is a Grad-CAM overlay as uint8 RGB. The report lists
    the reports.TOP_DIAGNOSES most likely of the stored diagnoses. ValueError when the prediction
    is unknown (or another session's) or the image cannot be decoded.
    """
    row = database.prediction(prediction_id, session_id)
    if row is None:
        raise ValueError(f"no stored prediction {prediction_id}")
    picture, caption = _picture(image, row["thumbnail"])
    run = _run(row["run_id"], models_dir)
    return CaseReport(
        prediction_id=int(row["id"]),
        file_name=row["file_name"],
        predicted_at=row["created_at"],
        run_id=row["run_id"],
        probability=float(row["probability"]),
        label=row["label"],
        threshold=float(row["threshold"]),
        tta=bool(row["tta"]),
        width=int(row["width"]),
        height=int(row["height"]),
        sha256=row["sha256"],
        ood_score=row["ood_score"],
        ood_flag=row["ood_flag"],
        ood_threshold=run.card.ood_threshold if run else None,
        threshold_source=row["threshold_source"],
        confirmed_label=row["confirmed_label"],
        confirmed_diagnosis=row["confirmed_diagnosis"],
        confirmed_at=row["confirmed_at"],
        model=_model_figures(run) if run else None,
        made_at=datetime.datetime.now(datetime.UTC).replace(tzinfo=None),
        picture=picture,
        picture_caption=caption,
        overlay=None if overlay is None else _jpeg(Image.fromarray(overlay)),
        overlay_caption=overlay_caption,
        diagnoses=db.stored_diagnoses(row["diagnoses"])[: reports.TOP_DIAGNOSES],
    )


def _picture(image: bytes | None, thumbnail) -> tuple[bytes | None, str]:
    if image is not None:
        try:
            decoded = images.decode_image(image, reduce_to=PICTURE_PIXELS)
        except images.ImageError as error:
            raise ValueError(f"the image cannot be shown in a report: {error}") from None
        return _jpeg(decoded), "The uploaded image"
    if thumbnail is None or len(thumbnail) == 0:
        return None, ""
    return bytes(thumbnail), "The stored thumbnail"


def _jpeg(picture: Image.Image) -> bytes:
    """A JPEG of the pixels alone (no EXIF or other metadata), longest side PICTURE_PIXELS."""
    copy = picture.convert("RGB")
    copy.thumbnail((PICTURE_PIXELS, PICTURE_PIXELS))
    buffer = io.BytesIO()
    copy.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def _run(run_id: str, models_dir: Path | None) -> runs.Run | None:
    # A deleted run leaves its predictions behind; their reports say the model is gone.
    try:
        return runs.load_run(runs.models_dir(models_dir) / run_id)
    except runs.RunError:
        return None


def _model_figures(run: runs.Run) -> ModelFigures:
    crossval = runs.load_crossval(run)
    return ModelFigures(
        run_id=run.run_id,
        backbone=run.card.architecture,
        test=run.card.test_metrics,
        crossval_summary=(crossval.get("summary") or {}) if crossval else None,
        n_sources=len(crossval["folds"]) if crossval else 0,
    )


def _percent(value: float | None) -> str:
    return reports.MISSING if value is None else f"{value:.1%}"


def _with_interval(evaluation: dict, key: str) -> str:
    """ "0.871 (95% CI 0.820-0.915)", or the value alone when no interval was computed."""
    interval = (evaluation.get("intervals") or {}).get(key)
    text = reports.format_number(evaluation.get(key))
    return f"{text} (95% CI {interval[0]:.3f}-{interval[1]:.3f})" if interval else text


def _utc(moment: datetime.datetime | None) -> str:
    # Timestamps in the database are naive UTC.
    return reports.MISSING if moment is None else f"{moment:%Y-%m-%d %H:%M} UTC"


def _ood_text(report: CaseReport) -> str:
    if report.ood_score is None:
        return "not scored (the run has no OOD detector)"
    verdict = "flagged: unlike the training images" if report.ood_flag else "not flagged"
    limit = f", limit {report.ood_threshold:.1f}" if report.ood_threshold is not None else ""
    return f"{report.ood_score:.1f} ({verdict}{limit})"


def _result_text(report: CaseReport) -> str:
    shown = reports.shown_label(report.label, report.ood_flag)
    whose = reports.whose_threshold(report.threshold_source)
    return f"{shown} (at {whose} threshold {report.threshold:.1%})"


def _prediction_rows(report: CaseReport) -> list[tuple[str, str]]:
    return [
        ("Malignant probability (calibrated)", _percent(report.probability)),
        ("Result", _result_text(report)),
        (
            "Distance to the threshold",
            reports.threshold_distance(report.distance, report.threshold),
        ),
        ("Out-of-distribution score", _ood_text(report)),
        ("Test-time augmentation", "on" if report.tta else "off"),
        ("Image", f"{report.width} x {report.height} px, sha256 {report.sha256[:16]}..."),
        ("Predicted at", _utc(report.predicted_at)),
    ]


def _model_rows(report: CaseReport) -> list[tuple[str, str]]:
    if report.model is None:
        return [("Model", f"{report.run_id} (its run folder no longer exists)")]
    model, test = report.model, report.model.test
    rows = [
        ("Model", f"{model.run_id} ({model.backbone or 'unknown backbone'})"),
        ("Test ROC AUC", _with_interval(test, "roc_auc")),
        (
            f"Test sensitivity at threshold {_percent(test.get('threshold'))}",
            _with_interval(test, "sensitivity"),
        ),
        (
            f"Test specificity at threshold {_percent(test.get('threshold'))}",
            _with_interval(test, "specificity"),
        ),
        ("Test images", f"{test.get('n', 'n/a')} ({test.get('n_positive', 'n/a')} malignant)"),
    ]
    return rows + _held_out_rows(model)


def _held_out_rows(model: ModelFigures) -> list[tuple[str, str]]:
    if model.crossval_summary is None:
        return [("Held-out sources", "not cross-validated by source")]
    mean = model.crossval_summary.get("mean") or {}
    worst = model.crossval_summary.get("worst") or {}
    source = worst.get("roc_auc_source") or reports.MISSING
    return [
        (
            f"Held-out-source ROC AUC, mean of {model.n_sources}",
            reports.format_number(mean.get("roc_auc")),
        ),
        (
            "Held-out-source ROC AUC, worst",
            f"{reports.format_number(worst.get('roc_auc'))} ({source})",
        ),
    ]


def _outcome_rows(report: CaseReport) -> list[tuple[str, str]]:
    if report.confirmed_label is None:
        return [("Confirmed outcome", "not recorded")]
    diagnosis = f", {report.confirmed_diagnosis}" if report.confirmed_diagnosis else ""
    return [
        ("Confirmed outcome", f"{report.confirmed_label}{diagnosis}"),
        ("Confirmed at", _utc(report.confirmed_at)),
    ]


def sections(report: CaseReport) -> list[tuple[str, list[tuple[str, str]]]]:
    """The report's text as (heading, [(name, value), ...]), shared by both renderers."""
    parts = [("Prediction", _prediction_rows(report))]
    if report.diagnoses:
        rows = [(name, _percent(probability)) for name, probability in report.diagnoses]
        parts.append(("Most likely diagnoses (model estimates)", rows))
    parts.append(("Model", _model_rows(report)))
    parts.append(("Outcome", _outcome_rows(report)))
    return parts


def title(report: CaseReport) -> str:
    return f"Case report: prediction {report.prediction_id}"


def footer(report: CaseReport) -> str:
    return f"Report made {_utc(report.made_at)}."


def file_stem(report: CaseReport) -> str:
    """A download name without the user's file name, which may hold any character."""
    return f"case-report-{report.prediction_id}"


_HTML_STYLE = """
body { font-family: Helvetica, Arial, sans-serif; color: #111; max-width: 190mm;
       margin: 12mm auto; font-size: 11pt; }
h1 { font-size: 17pt; margin: 0 0 2mm; }
h2 { font-size: 12pt; margin: 5mm 0 1mm; border-bottom: 1px solid #999; }
.file { font-size: 12pt; margin: 0 0 3mm; overflow-wrap: anywhere; }
.notice { border: 2px solid #b26a00; background: #fff4e0; padding: 2mm 3mm; }
.pictures { display: flex; gap: 4mm; margin-top: 4mm; }
figure { margin: 0; flex: 1; }
figure img { width: 100%; height: 75mm; object-fit: contain; }
figcaption { font-size: 9pt; color: #444; }
table { border-collapse: collapse; width: 100%; }
td { padding: 1mm 2mm; vertical-align: top; border-bottom: 1px solid #ddd; }
td:first-child { width: 45%; color: #333; }
footer { margin-top: 5mm; font-size: 9pt; color: #444; }
@page { size: A4; margin: 12mm; }
@media print { body { margin: 0; max-width: none; } .pictures, table { break-inside: avoid; } }
"""


def _html_figure(jpeg: bytes | None, caption: str) -> str:
    if jpeg is None:
        return ""
    source = "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")
    text = html.escape(caption)
    return f'<figure><img src="{source}" alt="{text}"><figcaption>{text}</figcaption></figure>'


def _html_section(heading: str, rows: list[tuple[str, str]]) -> str:
    cells = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{html.escape(value)}</td></tr>"
        for name, value in rows
    )
    return f"<h2>{html.escape(heading)}</h2><table>{cells}</table>"


def to_html(report: CaseReport) -> str:
    """A self-contained printable page: pictures inline as data URIs, print CSS, no scripts."""
    figures = _html_figure(report.picture, report.picture_caption) + _html_figure(
        report.overlay, report.overlay_caption
    )
    body = "".join(_html_section(heading, rows) for heading, rows in sections(report))
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title(report))}</title><style>{_HTML_STYLE}</style></head><body>"
        f"<h1>{html.escape(title(report))}</h1>"
        f'<p class="file">{html.escape(reports.display_name(report.file_name))}</p>'
        f'<p class="notice">{html.escape(config.RESEARCH_NOTICE)}</p>'
        + (f'<div class="pictures">{figures}</div>' if figures else "")
        + f"{body}<footer>{html.escape(footer(report))}</footer></body></html>"
    )


def pdf_safe(text: str) -> str:
    """`text` in the Latin-1 range of the PDF core fonts: accents dropped where needed, "?"
    for what has no Latin-1 form, so that no file name can make the PDF fail."""
    plain = text.translate(_PLAIN_PUNCTUATION)
    return "".join(_latin1(character) for character in plain)


def _latin1(character: str) -> str:
    if ord(character) < 256:
        return character
    decomposed = unicodedata.normalize("NFKD", character)
    kept = "".join(
        part for part in decomposed if ord(part) < 256 and not unicodedata.combining(part)
    )
    return kept or "?"


# Longer text is cut with an ellipsis in the PDF (the HTML shows it whole), so that no file
# name, typed diagnosis or source name can push the report onto a second page: the file name
# and a field's name to one line, a field's value to under two lines of its column.
_VALUE_LINES = 1.7
_PAGE_WIDTH_MM = 180
_PICTURE_MM = 60
_NAME_MM = 80
# The space fpdf2 keeps either side of a cell's text.
_CELL_MARGINS_MM = 2.5


def to_pdf(report: CaseReport) -> bytes:
    """The report as a one-page A4 PDF, in DejaVu Sans, else the core font."""
    pdf = _new_pdf()
    pdf.set_margins(15, 12)
    pdf.set_auto_page_break(auto=True, margin=12)
    pdf.set_title(title(report))
    pdf.add_page()
    _set_font(pdf, "B", 16)
    pdf.cell(0, 9, _pdf_text(pdf, title(report)), new_x="LMARGIN", new_y="NEXT")
    _set_font(pdf, "", 11)
    name = _pdf_text(pdf, reports.display_name(report.file_name))
    name = _fitted(pdf, name, _PAGE_WIDTH_MM - _CELL_MARGINS_MM)
    pdf.multi_cell(0, 6, name, new_x="LMARGIN", new_y="NEXT")
    pdf.ln(1)
    pdf.set_fill_color(255, 244, 224)
    notice = _pdf_text(pdf, config.RESEARCH_NOTICE)
    pdf.multi_cell(0, 5, notice, border=1, fill=True, new_x="LMARGIN", new_y="NEXT")
    _pdf_pictures(pdf, report)
    for heading, rows in sections(report):
        _pdf_section(pdf, heading, rows)
    pdf.ln(3)
    _set_font(pdf, "", 9)
    pdf.set_text_color(68)
    pdf.cell(0, 5, _pdf_text(pdf, footer(report)), new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())


def _new_pdf() -> FPDF:
    """An A4 document with DejaVu Sans added, when its files are there."""
    pdf = FPDF(format="A4")
    files = {style: FONTS_DIR / name for style, name in UNICODE_FONT_FILES.items()}
    # Both faces or neither: a regular face without its bold would fail on the first heading.
    if all(path.is_file() for path in files.values()):
        for style, path in files.items():
            pdf.add_font(UNICODE_FONT, style, path)
        # Shaping (uharfbuzz) joins Arabic letters and lays right-to-left text out in order.
        pdf.set_text_shaping(True)
    return pdf


def _set_font(pdf: FPDF, style: str, size: float) -> None:
    family = UNICODE_FONT if UNICODE_FONT in pdf.fonts else CORE_FONT
    pdf.set_font(family, style, size)


def _pdf_text(pdf: FPDF, text: str) -> str:
    """`text` as the current font can draw it: a TrueType font's missing glyphs become
    MISSING_GLYPH (it would leave them out, unseen); the core font keeps `pdf_safe` text."""
    font = pdf.current_font
    if not isinstance(font, TTFFont):
        return pdf_safe(text)
    return "".join(
        character if ord(character) in font.cmap else MISSING_GLYPH for character in text
    )


def _fitted(pdf: FPDF, text: str, width: float) -> str:
    """`text`, cut with an ellipsis where it is wider than `width` mm in the current font."""
    if pdf.get_string_width(text) <= width:
        return text
    # The longest start that fits with its ellipsis, by bisection: 3,000 characters take
    # a dozen measurements instead of 3,000.
    low, high = 0, len(text)
    while low < high:
        middle = (low + high + 1) // 2
        if pdf.get_string_width(text[:middle] + "...") <= width:
            low = middle
        else:
            high = middle - 1
    return text[:low] + "..."


def _pdf_pictures(pdf: FPDF, report: CaseReport) -> None:
    """The picture and the overlay side by side, each fitted into a square with its caption."""
    shown = [
        (jpeg, caption)
        for jpeg, caption in (
            (report.picture, report.picture_caption),
            (report.overlay, report.overlay_caption),
        )
        if jpeg is not None
    ]
    if not shown:
        return
    top = pdf.get_y() + 3
    _set_font(pdf, "", 8)
    for index, (jpeg, caption) in enumerate(shown):
        left = pdf.l_margin + index * (_PICTURE_MM + 10)
        pdf.image(
            io.BytesIO(jpeg), x=left, y=top, w=_PICTURE_MM, h=_PICTURE_MM, keep_aspect_ratio=True
        )
        pdf.set_xy(left, top + _PICTURE_MM + 1)
        pdf.cell(_PICTURE_MM, 4, _pdf_text(pdf, caption), align="C")
    pdf.set_xy(pdf.l_margin, top + _PICTURE_MM + 5)


def _pdf_section(pdf: FPDF, heading: str, rows: list[tuple[str, str]]) -> None:
    pdf.ln(2)
    _set_font(pdf, "B", 12)
    pdf.cell(0, 7, _pdf_text(pdf, heading), border="B", new_x="LMARGIN", new_y="NEXT")
    _set_font(pdf, "", 10)
    value_mm = _PAGE_WIDTH_MM - _NAME_MM
    for name, value in rows:
        pdf.cell(_NAME_MM, 5.5, _fitted(pdf, _pdf_text(pdf, name), _NAME_MM - _CELL_MARGINS_MM))
        shown = _fitted(pdf, _pdf_text(pdf, value), _VALUE_LINES * (value_mm - _CELL_MARGINS_MM))
        pdf.multi_cell(value_mm, 5.5, shown, new_x="LMARGIN", new_y="NEXT")
