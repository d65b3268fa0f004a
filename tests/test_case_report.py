"""Case reports: assembled from a stored prediction and its run, rendered as HTML and PDF."""

import dataclasses
import io
import json

import numpy as np
import pandas as pd
import pypdf
import pytest
from app_fixtures import crossval_payload
from PIL import Image

from core import config
from core.analysis import reports
from core.serving import case_report
from core.storage import db, runs
from core.storage.card import Card

RUN_ID = "20260101-000000-report-test"
TEST_METRICS = {
    "n": 400,
    "n_positive": 80,
    "threshold": 0.3,
    "roc_auc": 0.912,
    "sensitivity": 0.875,
    "specificity": 0.701,
    "intervals": {
        "roc_auc": [0.881, 0.94],
        "sensitivity": [0.8, 0.94],
        "specificity": [0.65, 0.75],
    },
}
DIAGNOSES = (("melanoma", 0.52), ("nevus", 0.3), ("basal cell carcinoma", 0.1))
# What the Predictor stores: every class, most likely first; a report lists the top three.
ALL_DIAGNOSES = (*DIAGNOSES, ("dermatofibroma", 0.05), ("vascular lesion", 0.03))


def write_run(models_dir, crossval: dict | None = None) -> None:
    """A run folder as the report reads it: the card, a model file, maybe crossval.json."""
    folder = models_dir / RUN_ID
    folder.mkdir(parents=True)
    card = Card.minimal(RUN_ID, 64, 0.3, metrics={"test": TEST_METRICS}, ood={"threshold": 40.0})
    runs.write_card(folder, card)
    (folder / runs.MODEL_FILE).write_bytes(b"not read by the report")
    if crossval is not None:
        (folder / runs.CROSSVAL_FILE).write_text(json.dumps(crossval))


def jpeg(size=(40, 30), seed=0, **save_options) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", **save_options)
    return buffer.getvalue()


@pytest.fixture
def database(tmp_path):
    opened = db.open_database(tmp_path / "reports.duckdb")
    yield opened
    opened.close()


def store(
    database,
    file_name="lesion.jpg",
    thumbnail=None,
    ood=(12.5, False),
    session="me",
    threshold_source="card",
    diagnoses=(),
):
    record = db.PredictionRecord(
        diagnoses=diagnoses,
        threshold_source=threshold_source,
        session_id=session,
        run_id=RUN_ID,
        file_name=file_name,
        sha256="ab" * 32,
        width=600,
        height=450,
        probability=0.4321,
        label="malignant",
        threshold=0.3,
        latency_ms=20.0,
        tta=True,
        ood_score=ood[0],
        ood_flag=ood[1],
        thumbnail=thumbnail,
    )
    return database.insert_predictions([record])[0]


def rows(report) -> dict[str, str]:
    return {name: value for _, section in case_report.sections(report) for name, value in section}


def pdf_text(data: bytes) -> tuple[int, str]:
    reader = pypdf.PdfReader(io.BytesIO(data))
    return len(reader.pages), "\n".join(page.extract_text() for page in reader.pages)


def test_a_full_report_holds_picture_crossval_diagnoses_and_outcome(database, tmp_path):
    write_run(tmp_path, crossval_payload())
    thumbnail = jpeg()
    prediction_id = store(database, thumbnail=thumbnail, diagnoses=ALL_DIAGNOSES)
    database.set_confirmed([prediction_id], "malignant", "melanoma")
    report = case_report.build_report(database, prediction_id, "me", models_dir=tmp_path)
    assert report.picture == thumbnail and report.picture_caption == "The stored thumbnail"
    assert report.diagnoses == DIAGNOSES
    assert report.distance == pytest.approx(0.1321)
    shown = rows(report)
    assert shown["Malignant probability (calibrated)"] == "43.2%"
    assert shown["Result"] == "refer (suspicious) (at the model's threshold 30.0%)"
    assert (
        shown["Distance to the threshold"] == "+13.2 percentage points above the threshold 30.0%"
    )
    assert shown["Out-of-distribution score"] == "12.5 (not flagged, limit 40.0)"
    assert shown["Test ROC AUC"] == "0.912 (95% CI 0.881-0.940)"
    assert shown["Test sensitivity at threshold 30.0%"] == "0.875 (95% CI 0.800-0.940)"
    worst = crossval_payload()["summary"]["worst"]
    assert shown["Held-out-source ROC AUC, worst"] == (
        f"{worst['roc_auc']:.3f} ({worst['roc_auc_source']})"
    )
    assert "Held-out-source ROC AUC, mean of 2" in shown
    assert shown["melanoma"] == "52.0%" and shown["basal cell carcinoma"] == "10.0%"
    assert shown["Confirmed outcome"] == "malignant, melanoma"


def test_a_bare_report_says_what_is_missing(database, tmp_path):
    write_run(tmp_path)
    prediction_id = store(database, ood=(None, None))
    report = case_report.build_report(database, prediction_id, models_dir=tmp_path)
    assert report.picture is None and report.overlay is None and report.diagnoses == ()
    shown = rows(report)
    assert shown["Held-out sources"] == "not cross-validated by source"
    assert shown["Confirmed outcome"] == "not recorded"
    assert shown["Out-of-distribution score"].startswith("not scored")
    headings = [heading for heading, _ in case_report.sections(report)]
    assert headings == ["Prediction", "Model", "Outcome"]


def test_a_report_outlives_its_run_folder(database, tmp_path):
    prediction_id = store(database)
    report = case_report.build_report(database, prediction_id, models_dir=tmp_path)
    assert report.model is None and report.ood_threshold is None
    assert rows(report)["Model"] == f"{RUN_ID} (its run folder no longer exists)"


def test_another_sessions_or_an_unknown_prediction_has_no_report(database, tmp_path):
    prediction_id = store(database, session="someone else")
    with pytest.raises(ValueError, match="no stored prediction"):
        case_report.build_report(database, prediction_id, "me", models_dir=tmp_path)
    with pytest.raises(ValueError, match="no stored prediction"):
        case_report.build_report(database, prediction_id + 1, models_dir=tmp_path)


def test_uploaded_bytes_are_shown_small_and_without_metadata(database, tmp_path):
    write_run(tmp_path)
    prediction_id = store(database, thumbnail=jpeg(seed=1))
    exif = Image.Exif()
    exif[0x010F] = "Camera maker"
    upload = jpeg(size=(1200, 900), exif=exif)
    report = case_report.build_report(database, prediction_id, image=upload, models_dir=tmp_path)
    picture = Image.open(io.BytesIO(report.picture))
    assert max(picture.size) == case_report.PICTURE_PIXELS
    assert not picture.getexif() and report.picture_caption == "The uploaded image"
    with pytest.raises(ValueError, match="cannot be shown"):
        case_report.build_report(database, prediction_id, image=b"not an image")


def test_html_escapes_the_file_name_and_inlines_the_pictures(database, tmp_path):
    write_run(tmp_path)
    prediction_id = store(database, "<script>alert(1)</script>.jpg", thumbnail=jpeg())
    overlay = np.zeros((50, 60, 3), dtype=np.uint8)
    report = case_report.build_report(
        database, prediction_id, overlay=overlay, overlay_caption="Grad-CAM", models_dir=tmp_path
    )
    page = case_report.to_html(report)
    assert "<script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;.jpg" in page
    assert page.count('src="data:image/jpeg;base64,') == 2
    assert "http" not in page
    assert config.RESEARCH_NOTICE in page and "@media print" in page


def test_the_pdf_is_one_page_with_the_key_figures(database, tmp_path):
    write_run(tmp_path, crossval_payload())
    prediction_id = store(database, "Läsion_42.jpg", thumbnail=jpeg(), diagnoses=DIAGNOSES)
    database.set_confirmed([prediction_id], "benign")
    report = case_report.build_report(
        database,
        prediction_id,
        overlay=np.zeros((64, 64, 3), dtype=np.uint8),
        overlay_caption="Grad-CAM toward malignant",
        models_dir=tmp_path,
    )
    data = case_report.to_pdf(report)
    pages, text = pdf_text(data)
    assert pages == 1
    for expected in (
        "Läsion_42.jpg",
        "43.2%",
        RUN_ID,
        "0.912 (95% CI 0.881-0.940)",
        "ISIC 2017 challenge",
        "melanoma 52.0%",
        "Confirmed outcome benign",
        "not a diagnostic device",
        "Report made",
    ):
        assert expected in text, expected
    assert len(pypdf.PdfReader(io.BytesIO(data)).pages[0].images) == 2


# Names and diagnoses in other scripts; CJK is not in DejaVu Sans, so it shows as U+FFFD.
UNICODE_TEXTS = (
    ("Łódź 日本 – lesion.jpg", "Łódź \ufffd\ufffd – lesion.jpg"),
    ("שלום.jpg", "שלום.jpg"),
    ("مرحبا.png", "مرحبا.png"),
    ("Ωμέγα Щука ☺.jpg", "Ωμέγα Щука ☺.jpg"),
)


@pytest.mark.parametrize(("name", "shown"), UNICODE_TEXTS)
def test_file_names_and_diagnoses_in_any_script_are_printed_not_questioned(
    database, tmp_path, name, shown
):
    write_run(tmp_path)
    prediction_id = store(database, name)
    database.set_confirmed([prediction_id], "malignant", name)
    report = case_report.build_report(database, prediction_id, models_dir=tmp_path)
    pages, text = pdf_text(case_report.to_pdf(report))
    # Right-to-left text comes back from the PDF in visual order: compare characters.
    assert pages == 1 and set(shown) <= set(text) and "?" not in text


def test_without_the_font_files_the_core_font_still_renders(database, tmp_path, monkeypatch):
    write_run(tmp_path)
    monkeypatch.setattr(case_report, "FONTS_DIR", tmp_path / "no-fonts")
    assert case_report.pdf_safe("Łódź 日本 – lesion.jpg") == "?ódz ?? - lesion.jpg"
    for name, shown in (
        ("Łódź 日本 – lesion.jpg", "?ódz ?? - lesion.jpg"),
        ("x" * 5000, "xxx..."),
    ):
        prediction_id = store(database, name)
        report = case_report.build_report(database, prediction_id, models_dir=tmp_path)
        pages, text = pdf_text(case_report.to_pdf(report))
        assert pages == 1 and shown in text


@pytest.mark.parametrize(
    "control",
    [
        "\u202a",
        "\u202b",
        "\u202c",
        "\u202d",
        "\u202e",
        "\u2066",
        "\u2069",
        "\u200e",
        "\u200f",
        "\u061c",
    ],
)
def test_bidirectional_controls_are_left_out_of_displayed_names(control):
    assert reports.display_name(f"lesion{control}gpj.exe") == "lesiongpj.exe"


def test_reports_show_a_reversing_name_as_stored_without_its_override(database, tmp_path):
    write_run(tmp_path)
    prediction_id = store(database, "lesion\u202egpj.exe")
    report = case_report.build_report(database, prediction_id, models_dir=tmp_path)
    assert report.file_name == "lesion\u202egpj.exe"
    page = case_report.to_html(report)
    _, text = pdf_text(case_report.to_pdf(report))
    assert "lesiongpj.exe" in page and "\u202e" not in page
    assert "lesiongpj.exe" in text and "\u202e" not in text


def test_long_fields_are_cut_so_that_the_pdf_stays_one_page(database, tmp_path):
    crossval = crossval_payload()
    crossval["summary"]["worst"]["roc_auc_source"] = "a very long source name " * 40
    write_run(tmp_path, crossval)
    long_diagnoses = (("m" * 3000, 0.5), *DIAGNOSES)
    prediction_id = store(
        database, "n" * 3000 + ".jpg", thumbnail=jpeg(), diagnoses=long_diagnoses
    )
    database.set_confirmed([prediction_id], "malignant", "d" * 3000)
    report = case_report.build_report(
        database,
        prediction_id,
        overlay=np.zeros((64, 64, 3), dtype=np.uint8),
        overlay_caption="Grad-CAM toward malignant",
        models_dir=tmp_path,
    )
    pages, text = pdf_text(case_report.to_pdf(report))
    assert pages == 1
    assert "ddd..." in text and "d" * 3000 not in text


def test_a_report_says_when_the_installations_own_threshold_labelled(database, tmp_path):
    write_run(tmp_path)
    card_id, local_id = store(database), store(database, threshold_source="local")
    card = rows(case_report.build_report(database, card_id, models_dir=tmp_path))
    local = rows(case_report.build_report(database, local_id, models_dir=tmp_path))
    assert card["Result"] == "refer (suspicious) (at the model's threshold 30.0%)"
    assert local["Result"] == "refer (suspicious) (at this installation's own threshold 30.0%)"


def test_a_flagged_image_is_reported_as_not_assessed_at_the_local_threshold(database, tmp_path):
    write_run(tmp_path)
    prediction_id = store(database, ood=(55.0, True))
    report = case_report.build_report(database, prediction_id, "me", models_dir=tmp_path)
    report = dataclasses.replace(report, threshold_source="local")
    shown = rows(report)
    assert (
        shown["Result"]
        == "not assessed: not dermoscopy? (at this installation's own threshold 30.0%)"
    )
    assert shown["Malignant probability (calibrated)"] == "43.2%"
    assert report.label == "malignant"  # the stored label is data, not what people read


def test_labels_and_distances_read_as_what_they_are():
    assert reports.shown_label("malignant") == "refer (suspicious)"
    assert reports.shown_label("benign", False) == "below referral threshold"
    assert reports.shown_label("benign", True) == reports.NOT_ASSESSED
    assert reports.shown_label("malignant", pd.NA) == "refer (suspicious)"
    assert reports.threshold_distance(0.46 - 0.061, 0.061) == (
        "+39.9 percentage points above the threshold 6.1%"
    )
    assert reports.threshold_distance(-0.032, 0.061).startswith("-3.2 percentage points below")
    assert reports.threshold_distance(0.0001, 0.061) == "at the threshold 6.1%"
