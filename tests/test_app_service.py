"""The page-level operations in core: predicting uploads, finding datasets, report tables."""

import io
import zipfile

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from core import config
from core.analysis import metrics, reports
from core.inputs import datasets, images
from core.serving import predict_service
from core.serving.inference import Prediction, Predictor
from core.storage import db, runs
from core.storage.card import Card


def jpeg_bytes(color=(200, 120, 90), size=(40, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="JPEG")
    return buffer.getvalue()


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


class FakePredictor:
    """Stands in for Predictor: probability from the red channel, errors for non-images."""

    default_tta = False
    threshold = 0.5

    def predict_with_previews(self, items, preview, tta=None):
        for name, data in items:
            try:
                image = images.decode_image(data)
            except images.ImageError as error:
                failed = Prediction(name, None, None, self.threshold, "fake-run", error=str(error))
                yield failed, None
                continue
            probability = image.getpixel((0, 0))[0] / 255
            prediction = Prediction(
                name,
                probability,
                "malignant" if probability >= 0.5 else "benign",
                self.threshold,
                "fake-run",
                width=image.width,
                height=image.height,
                sha256=images.sha256_bytes(data),
                latency_ms=1.0,
                diagnoses=(("melanoma", probability), ("nevus", 1 - probability)),
            )
            image.thumbnail((preview, preview))
            yield prediction, image


@pytest.fixture
def database(tmp_path):
    database = db.open_database(tmp_path / "app.duckdb")
    yield database
    database.close()


def test_zip_uploads_are_expanded_and_odd_members_reported():
    archive = zip_bytes(
        {"a/one.jpg": jpeg_bytes(), "two.png": jpeg_bytes(), "run.sh": b"x", "readme.txt": b"x"}
    )
    uploads, problems = predict_service.expand_uploads(
        [("single.jpg", jpeg_bytes()), ("batch.zip", archive), ("broken.zip", b"PK not a zip")]
    )
    assert [upload.name for upload in uploads] == [
        "single.jpg",
        "batch.zip/a/one.jpg",
        "batch.zip/two.png",
    ]
    assert any(p.startswith("batch.zip/run.sh: skipped") for p in problems)
    assert not any("readme.txt" in problem for problem in problems)
    assert any(p.startswith("broken.zip: not a readable zip") for p in problems)


def test_a_zip_with_path_traversal_is_refused():
    _, problems = predict_service.expand_uploads([("evil.zip", zip_bytes({"../x.jpg": b"1"}))])
    assert problems == ["evil.zip: unsafe member '../x.jpg': path traversal ('..')"]


def test_predict_uploads_stores_good_predictions_only(database):
    uploads = [
        predict_service.Upload("red.jpg", jpeg_bytes((250, 10, 10))),
        predict_service.Upload("bad.jpg", b"garbage"),
        predict_service.Upload("dark.jpg", jpeg_bytes((20, 10, 10))),
    ]
    progress = []
    results = predict_service.predict_uploads(
        FakePredictor(),
        database,
        uploads,
        "session-1",
        progress_callback=lambda *a: progress.append(a),
    )
    assert progress[-1] == (3, 3)
    assert [result.ok for result in results] == [True, False, True]
    assert results[1].prediction_id is None and results[1].thumbnail is None
    stored = database.query_predictions(db.HistoryFilter(session_id="session-1"))
    assert sorted(stored["file_name"]) == ["dark.jpg", "red.jpg"]
    # The diagnoses are kept with the prediction, as the Predictor ranked them.
    red = database.prediction(results[0].prediction_id)
    assert db.stored_diagnoses(red["diagnoses"]) == results[0].prediction.diagnoses
    assert results[0].distance == pytest.approx(results[0].prediction.probability - 0.5)
    frame = predict_service.results_frame(results)
    assert list(frame["label"]) == ["malignant", "", "benign"]
    assert b"bad.jpg" in predict_service.results_csv(results)


def test_earlier_predictions_of_the_same_image_exclude_this_batch(database):
    upload = predict_service.Upload("red.jpg", jpeg_bytes((250, 10, 10)))
    first = predict_service.predict_uploads(FakePredictor(), database, [upload], "s1")
    second = predict_service.predict_uploads(FakePredictor(), database, [upload], "s2")
    earlier = predict_service.earlier_predictions(database, second[0], [second[0].prediction_id])
    assert len(earlier) == 1 and earlier["file_name"][0] == "red.jpg"
    assert first[0].prediction_id != second[0].prediction_id


def test_the_same_image_again_in_one_session_is_one_prediction(database):
    red = jpeg_bytes((250, 10, 10))
    twice = [predict_service.Upload("red.jpg", red), predict_service.Upload("copy.jpg", red)]
    first = predict_service.predict_uploads(FakePredictor(), database, twice, "s")
    again = predict_service.predict_uploads(
        FakePredictor(), database, [predict_service.Upload("red.jpg", red)], "s"
    )
    with_tta = predict_service.predict_uploads(
        FakePredictor(), database, [predict_service.Upload("red.jpg", red)], "s", tta=True
    )
    assert first[0].prediction_id == first[1].prediction_id == again[0].prediction_id
    assert [r.repeated for r in (*first, *again, *with_tta)] == [False, False, True, False]
    assert with_tta[0].prediction_id != first[0].prediction_id
    assert database.count_predictions(db.HistoryFilter(session_id="s")) == 2


@pytest.fixture
def opened(monkeypatch) -> list[int]:
    """The byte count of every image Pillow opens from here on."""
    sizes = []
    original_open = Image.open

    def spy(source, *args, **options):
        sizes.append(len(source.getbuffer()))
        return original_open(source, *args, **options)

    monkeypatch.setattr(Image, "open", spy)
    return sizes


def test_each_upload_is_decoded_once_for_its_prediction_and_thumbnail(trained_run, opened):
    predictor = Predictor(runs.load_run(config.MODELS_DIR / trained_run))
    data = jpeg_bytes(size=(1400, 1050))
    (result,) = predict_service.predict_uploads(
        predictor, None, [predict_service.Upload("large.jpg", data)], "once"
    )
    assert result.ok and opened == [len(data)]
    assert (result.prediction.width, result.prediction.height) == (1400, 1050)
    assert Image.open(io.BytesIO(result.thumbnail)).size == (96, 72)


def test_explain_draws_the_heat_map_over_the_whole_image(trained_run, opened):
    predictor = Predictor(runs.load_run(config.MODELS_DIR / trained_run))
    data = min((config.SAMPLE_DIR / "images").glob("*.jpg")).read_bytes()
    explanation = predict_service.explain(predictor, data)
    assert explanation.image.shape == explanation.heatmap.shape == explanation.overlay.shape
    assert max(explanation.image.shape[:2]) <= predict_service.DISPLAY_PIXELS
    assert opened == [len(data)]  # the model input and the display copy share one decode


def make_csv_dataset(folder):
    (folder / "images").mkdir(parents=True)
    (folder / "labels.csv").write_text("image_name,target\na,0\n")


def test_datasets_are_found_inside_the_data_root_only(tmp_path):
    make_csv_dataset(tmp_path / "isic")
    for name in ("benign", "malignant"):
        (tmp_path / "folders" / "nested" / name).mkdir(parents=True)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.csv").write_text("a,b\n")
    found = datasets.discover_datasets(tmp_path)
    assert [choice.data_dir.name for choice in found] == ["isic", "nested"]
    assert found[0].csv.name == "labels.csv" and found[1].csv is None
    with pytest.raises(datasets.DatasetPathError, match="outside"):
        datasets.confine("../elsewhere", tmp_path)
    assert datasets.confine("isic", tmp_path) == (tmp_path / "isic").resolve()


def test_an_uploaded_zip_is_unpacked_into_the_uploads_folder(tmp_path):
    archive = zip_bytes({"set/labels.csv": b"image_name,target\na,0\n", "set/a.jpg": jpeg_bytes()})
    result = datasets.unpack_dataset_zip("My data (v2).zip", archive, tmp_path)
    assert result.folder == (tmp_path / "uploads" / "My_data_v2").resolve()
    assert result.extracted == 2
    assert [c.data_dir.name for c in datasets.datasets_in(result.folder, tmp_path)] == ["set"]
    with pytest.raises(datasets.DatasetPathError, match="already exists"):
        datasets.unpack_dataset_zip("My data (v2).zip", archive, tmp_path)
    with pytest.raises(images.ArchiveError):
        datasets.unpack_dataset_zip("evil.zip", zip_bytes({"../x.jpg": b"1"}), tmp_path)
    assert not (tmp_path / "uploads" / "evil").exists()
    with pytest.raises(datasets.DatasetPathError):
        datasets.safe_folder_name("..zip")


def evaluation(seed=0, n=80):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    probabilities = np.clip(labels * 0.3 + rng.random(n) * 0.7, 0, 1)
    return labels, probabilities, metrics.evaluate(labels, probabilities, 0.5, n_bootstrap=50)


def test_report_tables_from_an_evaluation():
    labels, probabilities, test = evaluation()
    table = reports.headline_table(test)
    auc_row = table[table["metric"] == "ROC AUC"].iloc[0]
    assert auc_row["ci_low"] <= auc_row["value"] <= auc_row["ci_high"]
    # Metrics without an interval are NaN in float columns, never None in object ones.
    assert table[["value", "ci_low", "ci_high"]].dtypes.eq("float64").all()
    assert table.loc[table["metric"] == "NPV", "ci_low"].isna().all()
    frame = {"label": labels, "probability": probabilities}
    point = reports.operating_point(pd.DataFrame(frame), 0.5)
    assert point.roc_point == (1 - test["specificity"], test["sensitivity"])
    assert point.pr_point == (test["sensitivity"], test["ppv"])
    card = Card.minimal(
        "one",
        64,
        0.5,
        backbone="b",
        data={"source": "s", "n_images": 80, "sites": ["all"]},
        metrics={"test": test},
    )
    compared = reports.comparison_table({"one": card, "two": card.replace(backbone=None)})
    assert list(compared.columns) == ["one", "two"]
    assert compared.loc["ROC AUC", "one"].startswith(f"{test['roc_auc']:.3f} (")
    assert compared.loc["Backbone", "two"] == "n/a"
    assert set(reports.roc_curves({"one": card})) == {"one"}


def test_real_world_metrics_per_model_say_when_cases_are_too_few():
    rng = np.random.default_rng(3)
    labels = ["malignant"] * 12 + ["benign"] * 14 + ["malignant"]
    probabilities = [*(0.5 + rng.random(12) / 2), *(rng.random(14) / 2), 0.7]
    confirmed = pd.DataFrame(
        {
            "run_id": ["a"] * 26 + ["b"],
            "probability": probabilities,
            "threshold": [0.5] * 26 + [0.4],
            "confirmed_label": labels,
        }
    )
    table = reports.real_world_metrics(confirmed).set_index("Model")
    assert table.loc["a", "Confirmed"] == 26 and table.loc["a", "Malignant"] == 12
    assert table.loc["a", "ROC AUC"].startswith("1.000 (")
    assert table.loc["a", "Specificity"].startswith("1.000 (")
    # One confirmed case: nothing looks precise that is not.
    row = table.loc["b"]
    assert row["Confirmed"] == 1 and row["Threshold"] == "0.400"
    assert {row[name] for name in ("ROC AUC", "Sensitivity", "Specificity", "PPV", "NPV")} == {
        reports.TOO_FEW_CASES
    }


def test_crossval_table_has_a_row_per_source_then_mean_and_worst():
    from app_fixtures import crossval_payload

    crossval = crossval_payload()
    table = reports.crossval_table(crossval)
    assert table["Held-out source"].tolist() == [
        "ISIC 2017 challenge",
        "ISIC Archive 9-class set",
        "Mean over sources",
        "Worst source",
    ]
    first = crossval["folds"][0]["metrics"]
    assert table["ROC AUC (95% CI)"][0].startswith(f"{first['roc_auc']:.3f} (")
    assert table["Images"][0] == "120" and table["OOD flagged"].tolist()[:2] == ["1.2%", "n/a"]
    assert table["Sensitivity at the run's threshold"][0] == "0.810 (0.700–0.900)"
    assert table["ROC AUC (95% CI)"][3].endswith(
        f"({crossval['summary']['worst']['roc_auc_source']})"
    )
    assert reports.crossval_skipped(crossval) == ["HAM10000: 17 malignant images, fewer than 30"]
    assert set(reports.crossval_roc_curves(crossval)) == {f["held_out"] for f in crossval["folds"]}
    without = reports.crossval_table(crossval_payload(run_threshold=None))
    assert "Sensitivity at the run's threshold" not in without.columns


def test_an_upload_is_read_again_from_the_files_by_name_and_hash():
    red, dark = jpeg_bytes((250, 10, 10)), jpeg_bytes((20, 10, 10))
    files = [("a.jpg", red), ("batch.zip", zip_bytes({"in/a.jpg": dark})), ("a.jpg", dark)]
    uploads, _ = predict_service.expand_uploads(files)
    for upload in uploads:
        sha256 = images.sha256_bytes(upload.data)
        assert predict_service.upload_bytes(files, upload.name, sha256) == upload.data
    assert predict_service.upload_bytes(files, "a.jpg", "0" * 64) is None
    assert predict_service.upload_bytes(files, "batch.zip/in/b.jpg", "0" * 64) is None
