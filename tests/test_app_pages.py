"""AppTest over every page: renders on a fresh database and with data; key widgets work."""

import dataclasses
import io
import json
import shutil
import zipfile
from contextlib import nullcontext

import numpy as np
import pytest
import streamlit as st
from app_fixtures import SAMPLE_IMAGES, app, crossval_payload, texts

import ui.formatting
import ui.metrics
import ui.predict
from core import config, worker
from core.analysis import metrics, reports
from core.serving import predict_service
from core.storage import db, runs

PAGES = (
    "Home.py",
    "pages/1_Predict.py",
    "pages/2_Train.py",
    "pages/3_Metrics.py",
    "pages/4_History.py",
)


def database() -> db.Database:
    return db.open_database(config.DB_PATH)


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_on_a_fresh_database(fresh_app, page):
    at = app(page).run()
    assert not at.exception
    assert not at.error


def test_home_shows_the_active_model_and_the_research_notice(trained_run):
    at = app("Home.py").run()
    assert not at.exception
    assert trained_run in texts(at.markdown)
    assert "not a diagnostic device" in texts(at.warning)
    assert {metric.label for metric in at.metric} >= {"Test ROC AUC", "Runs", "Stored predictions"}
    assert [subheader.value for subheader in at.subheader][:2] == ["Start here", "Active model"]
    links = [link.proto.label for link in at.get("page_link")]
    assert [link.split(" ")[0] for link in links] == ["Predict", "Train", "Evaluate", "Later,"]
    assert "bundled sample" in links[1]
    facts = at.dataframe[0].value.set_index("Property")["Value"]
    assert (
        facts["Test-time augmentation"] == "on: the image and its 7 other flips and quarter turns"
    )


def test_home_warns_when_storage_is_lost_on_restart(fresh_app, monkeypatch):
    monkeypatch.setenv("DERMO_EPHEMERAL_STORAGE", "1")
    at = app("Home.py").run()
    assert not at.exception
    assert "Temporary storage" in texts(at.warning)


def test_predict_stores_good_images_and_reports_bad_ones(trained_run):
    before = database().count_predictions(db.HistoryFilter())
    image = SAMPLE_IMAGES[0].read_bytes()
    at = app("pages/1_Predict.py").run()
    at.file_uploader(key="predict_upload").set_value(
        [("lesion.jpg", image, "image/jpeg"), ("notes.png", b"not an image", "image/png")]
    ).run()
    assert not at.exception
    assert "notes.png: not an image" in texts(at.error)
    assert at.metric[0].label == "Malignant probability (calibrated)"
    assert database().count_predictions(db.HistoryFilter()) == before + 1
    at.segmented_control(key="predict_view").set_value("Heat map").run()
    assert not at.exception and len(at.image) == 1  # the heat map, its colour scale below

    again = app("pages/1_Predict.py").run()
    again.file_uploader(key="predict_upload").set_value(("copy.jpg", image, "image/jpeg")).run()
    assert "This image was predicted before" in texts(again.subheader)
    again.selectbox(key="predict_confirm_label").set_value("malignant")
    again.selectbox(key="predict_confirm_diagnosis").set_value("melanoma")
    again.button[0].click().run()  # the form's submit button
    outcomes = database().confirmed_outcomes(db.HistoryFilter())
    assert "malignant" in outcomes["confirmed_label"].tolist()


def test_uploading_the_same_image_again_shows_it_without_storing_it(trained_run):
    image = SAMPLE_IMAGES[5].read_bytes()
    at = app("pages/1_Predict.py").run()
    at.file_uploader(key="predict_upload").set_value(("first.jpg", image, "image/jpeg")).run()
    stored = database().count_predictions(db.HistoryFilter())
    for name in ("again.jpg", "first.jpg"):
        at.file_uploader(key="predict_upload").set_value((name, image, "image/jpeg")).run()
        assert not at.exception
        assert "not stored again" in texts(at.caption)
        assert "This image was predicted before" not in texts(at.subheader)
    assert database().count_predictions(db.HistoryFilter()) == stored


def test_the_outcome_form_starts_empty_and_refuses_contradictions(trained_run):
    at = app("pages/1_Predict.py").run()
    upload = ("outcome.jpg", SAMPLE_IMAGES[6].read_bytes(), "image/jpeg")
    at.file_uploader(key="predict_upload").set_value(upload).run()
    assert at.selectbox(key="predict_confirm_label").value is None
    at.button[0].click().run()
    assert "Choose the confirmed outcome" in texts(at.error)
    at.selectbox(key="predict_confirm_label").set_value("benign")
    at.selectbox(key="predict_confirm_diagnosis").set_value("melanoma")
    at.button[0].click().run()
    assert "melanoma is a malignant diagnosis" in texts(at.error)
    assert database().confirmed_outcomes(db.HistoryFilter(file_name_contains="outcome")).empty


DIAGNOSES = (("nevus", 0.6), ("melanoma", 0.3), ("benign keratosis", 0.06), ("other", 0.04))


def with_diagnoses_and_ood(monkeypatch, diagnoses=DIAGNOSES, ood_flag=True):
    """Make every good prediction have these diagnoses and this OOD flag."""
    original = predict_service.predict_uploads

    def flagged(*args, **kwargs):
        return [
            dataclasses.replace(
                result,
                prediction=dataclasses.replace(
                    result.prediction, diagnoses=diagnoses, ood_flag=ood_flag, ood_score=99.0
                ),
            )
            if result.ok
            else result
            for result in original(*args, **kwargs)
        ]

    monkeypatch.setattr(predict_service, "predict_uploads", flagged)


def test_predict_warns_first_about_ood_and_shows_the_likely_diagnoses(
    trained_run,
    monkeypatch,
):
    with_diagnoses_and_ood(monkeypatch)
    at = app("pages/1_Predict.py").run()
    upload = ("odd.jpg", SAMPLE_IMAGES[7].read_bytes(), "image/jpeg")
    at.file_uploader(key="predict_upload").set_value(upload).run()
    assert not at.exception
    facts = list(at.columns[1].children.values())
    assert facts[0].type == "warning" and "Out of distribution" in facts[0].value
    # No result for a flagged image, but its probability stays in view.
    assert reports.NOT_ASSESSED in texts(at.markdown)
    assert "refer" not in texts(at.markdown) and "below referral" not in texts(at.markdown)
    assert at.metric[0].value.endswith("%")
    top, rest = (frame.value for frame in at.dataframe)
    assert top["diagnosis"].tolist() == ["nevus", "melanoma", "benign keratosis"]
    assert at.expander[0].label == "Other diagnoses (1)" and rest["diagnosis"].tolist() == [
        "other"
    ]
    assert "not a diagnosis" in texts(at.caption)


def test_a_result_reads_as_a_referral_with_its_distance_in_points(
    trained_run,
    monkeypatch,
):
    with_diagnoses_and_ood(monkeypatch, diagnoses=(), ood_flag=False)
    spinners = []
    monkeypatch.setattr(st, "spinner", lambda text, **_: spinners.append(text) or nullcontext())
    at = app("pages/1_Predict.py").run()
    upload = ("plain.jpg", SAMPLE_IMAGES[9].read_bytes(), "image/jpeg")
    at.file_uploader(key="predict_upload").set_value(upload).run()
    assert not at.exception
    assert ui.predict.LOADING_MODEL in spinners
    shown = texts(at.markdown)
    assert ("refer (suspicious), at the model's threshold" in shown) != (
        "below referral threshold, at the model's threshold" in shown
    )
    assert "percentage points" in at.metric[0].delta


def test_a_binary_model_shows_no_diagnoses_and_no_ood_warning(
    trained_run,
    monkeypatch,
):
    with_diagnoses_and_ood(monkeypatch, diagnoses=(), ood_flag=False)
    at = app("pages/1_Predict.py").run()
    upload = ("plain.jpg", SAMPLE_IMAGES[8].read_bytes(), "image/jpeg")
    at.file_uploader(key="predict_upload").set_value(upload).run()
    assert not at.exception and not at.dataframe
    assert "Most likely diagnoses" not in texts(at.markdown)
    assert "Out of distribution" not in texts(at.warning)


def test_predict_a_zip_shows_a_table_and_a_csv(trained_run, monkeypatch):
    with_diagnoses_and_ood(monkeypatch)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in SAMPLE_IMAGES[1:4]:
            archive.write(path, f"batch/{path.name}")
    at = app("pages/1_Predict.py").run()
    at.file_uploader(key="predict_upload").set_value(
        ("batch.zip", buffer.getvalue(), "application/zip")
    ).run()
    assert not at.exception
    table = at.dataframe[0]
    assert len(table.value) == 3
    assert table.value["thumbnail"].str.startswith("data:image/jpeg;base64,").all()
    assert table.value["out_of_distribution"].all()
    assert (table.value["label"] == reports.NOT_ASSESSED).all()
    assert at.get("download_button")
    # The Grad-CAM of an image inside the archive is drawn from the archive again.
    at.selectbox(key="predict_detail").set_value(2).run()
    assert not at.exception and at.image


def test_metrics_threshold_slider_recomputes_the_operating_point(trained_run):
    at = app("pages/3_Metrics.py").run()
    assert not at.exception
    at.slider(key=f"metrics_threshold_{trained_run}").set_value(0.9).run()
    assert not at.exception
    predictions = database().run_test_predictions(trained_run)
    expected = metrics.threshold_metrics(predictions["label"], predictions["probability"], 0.9)
    shown = {metric.label: metric.value for metric in at.metric}
    assert shown["Sensitivity"] == f"{expected['sensitivity']:.3f}"


def copy_run(source, models_dir, run_id: str, threshold: float):
    """A copy of a trained run under another id, with another threshold in its card."""
    folder = models_dir / run_id
    shutil.copytree(source, folder)
    # Each test writes the cross-validation it needs; training may have written one.
    (folder / runs.CROSSVAL_FILE).unlink(missing_ok=True)
    card = json.loads((folder / "card.json").read_text())
    card["run_id"], card["threshold"]["value"] = run_id, threshold
    (folder / "card.json").write_text(json.dumps(card))
    return folder


@pytest.fixture
def two_runs(fresh_app, app_paths, trained_run):
    """Two copies of the trained run, thresholds 0.3 (active) and 0.6."""
    source = app_paths.models_dir / trained_run
    first = copy_run(source, fresh_app.models_dir, "20990101-000000-first", 0.3)
    second = copy_run(source, fresh_app.models_dir, "20990102-000000-second", 0.6)
    runs.set_active(first.name)
    return first, second


def test_metrics_threshold_belongs_to_the_run_and_resets_to_it(two_runs):
    first, second = (folder.name for folder in two_runs)
    at = app("pages/3_Metrics.py").run()
    at.selectbox(key="metrics_run").set_value(first).run()
    at.slider(key=f"metrics_threshold_{first}").set_value(0.9).run()
    at.selectbox(key="metrics_run").set_value(second).run()
    assert not at.exception
    assert at.slider(key=f"metrics_threshold_{second}").value == pytest.approx(0.6)
    predictions = database().run_test_predictions(second)
    expected = metrics.threshold_metrics(predictions["label"], predictions["probability"], 0.6)
    shown = {metric.label: metric.value for metric in at.metric}
    assert shown["Sensitivity"] == f"{expected['sensitivity']:.3f}"
    at.slider(key=f"metrics_threshold_{second}").set_value(0.1).run()
    at.button(key=f"metrics_threshold_reset_{second}").click().run()
    assert at.slider(key=f"metrics_threshold_{second}").value == pytest.approx(0.6)


def test_metrics_draws_the_held_out_source_cross_validation(two_runs):
    first, _ = two_runs
    at = app("pages/3_Metrics.py").run()
    assert "Held-out sources" not in texts(at.subheader)
    (first / runs.CROSSVAL_FILE).write_text(json.dumps(crossval_payload()))
    at.run()
    assert not at.exception
    assert "Held-out sources" in texts(at.subheader)
    (table,) = [t.value for t in at.table if "Held-out source" in t.value.columns]
    assert table["Held-out source"].tolist()[-2:] == ["Mean over sources", "Worst source"]
    assert "Not held out: HAM10000: 17 malignant images" in texts(at.caption)
    titles = [
        json.loads(chart.proto.spec)["layout"]["title"]["text"] for chart in at.get("plotly_chart")
    ]
    assert {"ROC AUC on each held-out source", "ROC on held-out sources"} <= set(titles)


def test_history_filters_by_file_name(trained_run):
    records = [
        db.PredictionRecord(
            "test", trained_run, name, name * 4, 10, 10, 0.7, "malignant", 0.5, 1.0, tta
        )
        for name, tta in (("alpha.jpg", True), ("beta.jpg", False))
    ]
    database().insert_predictions(records)
    at = app("pages/4_History.py").run()
    assert not at.exception
    at.text_input(key="history_file").set_value("alpha").run()
    assert not at.exception
    assert "1 prediction," in texts(at.caption)
    columns = at.dataframe[0].value.columns
    assert "sha256" not in columns and "session_id" not in columns
    # The run averages eight views: the column names them, not "flip".
    shown = at.dataframe[0].value
    assert shown["tta"].tolist() == ["on: the image and its 7 other flips and quarter turns"]
    assert shown["label"].tolist() == ["refer (suspicious)"]


def test_history_filters_on_the_out_of_distribution_flag(fresh_app):
    records = [
        db.PredictionRecord(
            "test",
            "run",
            f"{name}.jpg",
            name * 4,
            10,
            10,
            0.4,
            "benign",
            0.5,
            1.0,
            False,
            5.0,
            flag,
        )
        for name, flag in (("odd", True), ("plain", False), ("unscored", None))
    ]
    database().insert_predictions(records)
    at = app("pages/4_History.py").run()
    assert "3 predictions," in texts(at.caption)
    at.radio(key="history_ood").set_value("Flagged").run()
    assert "1 prediction," in texts(at.caption)
    assert at.dataframe[0].value["file_name"].tolist() == ["odd.jpg"]
    # The stored label stays benign; what people read is that the image was not assessed.
    assert at.dataframe[0].value["label"].tolist() == [reports.NOT_ASSESSED]
    assert database().query_predictions(db.HistoryFilter(ood_flag=True))["label"][0] == "benign"
    at.radio(key="history_ood").set_value("Not flagged").run()
    assert "2 predictions," in texts(at.caption)
    assert at.dataframe[0].value["label"].tolist() == ["below referral threshold"] * 2


# A right-to-left override makes "lesion<U+202E>gpj.exe" display as "lesionexe.jpg".
REVERSING_NAME = "lesion\u202egpj.exe"


def test_history_shows_file_names_without_bidirectional_controls(fresh_app):
    record = db.PredictionRecord(
        "test", "run", REVERSING_NAME, "c" * 64, 10, 10, 0.4, "benign", 0.5, 1.0, False
    )
    database().insert_predictions([record])
    at = app("pages/4_History.py").run()
    assert not at.exception
    assert at.dataframe[0].value["file_name"].tolist() == ["lesiongpj.exe"]
    assert "\u202e" not in at.selectbox(key="history_report_id").format_func(1)
    stored = database().query_predictions(db.HistoryFilter())["file_name"]
    assert stored.tolist() == [REVERSING_NAME]


def test_train_page_trains_in_the_background_and_activates(trained_run):
    at = app("pages/2_Train.py").run()
    assert not at.exception and not at.error
    at.selectbox(key="train_backbone").set_value("mobilenet_v3_small")
    at.selectbox(key="train_image_size").set_value(64)
    at.radio(key="train_weights").set_value("none")
    at.number_input(key="train_epochs").set_value(1)
    at.number_input(key="train_fine_tune").set_value(0)
    at.button(key="train_start").click().run()
    job = worker.latest_job()
    assert job is not None
    if not worker.read_status(job.job_id).finished:
        assert at.button(key="train_start").disabled  # one job at a time
    status = worker.wait(job.job_id, timeout=300)
    assert status.state == "succeeded", status.error
    at.run()
    assert not at.exception
    assert not at.button(key="train_start").disabled
    assert "after Start" in texts(at.success)
    at.selectbox(key="train_run").set_value(status.run_id).run()
    if "near chance" in texts(at.warning):  # one head epoch from random weights often is
        at.checkbox(key=f"train_activate_anyway_{status.run_id}").check().run()
    at.button(key="train_activate").click().run()
    try:
        assert runs.active_run_id() == status.run_id
    finally:
        runs.set_active(trained_run)


def with_validation_auc(folder, auc: float) -> None:
    card = json.loads((folder / "card.json").read_text())
    card["metrics"]["val"]["roc_auc"] = auc
    (folder / "card.json").write_text(json.dumps(card))


def test_any_run_can_be_activated_but_a_near_chance_one_only_when_confirmed(two_runs):
    first, second = two_runs
    with_validation_auc(first, 0.95)
    with_validation_auc(second, 0.5)
    at = app("pages/2_Train.py").run()
    at.selectbox(key="train_run").set_value(second.name).run()
    assert "near chance" in texts(at.warning)
    assert at.button(key="train_activate").disabled
    at.checkbox(key=f"train_activate_anyway_{second.name}").check().run()
    at.button(key="train_activate").click().run()
    assert runs.active_run_id() == second.name
    assert "now the active model" in texts(at.success)
    # The previous active run, the committed default in a fresh checkout, can go now.
    at.selectbox(key="train_run").set_value(first.name).run()
    assert "near chance" not in texts(at.warning)
    assert not at.button(key="train_activate").disabled


def test_the_delete_confirmation_belongs_to_one_run(two_runs):
    _, second = two_runs
    third = copy_run(second, second.parent, "20990103-000000-third", 0.5)
    at = app("pages/2_Train.py").run()
    at.selectbox(key="train_run").set_value(second.name).run()
    at.checkbox(key=f"train_delete_confirm_{second.name}").check().run()
    assert not at.button(key="train_delete").disabled
    at.selectbox(key="train_run").set_value(third.name).run()
    assert not at.checkbox(key=f"train_delete_confirm_{third.name}").value
    assert at.button(key="train_delete").disabled
    at.checkbox(key=f"train_delete_confirm_{third.name}").check().run()
    at.button(key="train_delete").click().run()
    assert not third.exists() and second.exists()
    assert at.selectbox(key="train_run").value != third.name
    assert at.button(key="train_delete").disabled  # nothing armed for the run shown now


def test_sites_are_all_or_named_never_both(fresh_app):
    at = app("pages/2_Train.py").run()
    assert at.multiselect(key="train_sites").value == ["all"]
    at.multiselect(key="train_sites").select("torso").run()
    assert at.multiselect(key="train_sites").value == ["torso"]
    at.multiselect(key="train_sites").select("head/neck").run()
    assert at.multiselect(key="train_sites").value == ["torso", "head/neck"]
    at.multiselect(key="train_sites").select("all").run()
    assert at.multiselect(key="train_sites").value == ["all"]


def test_every_uploader_states_its_limit_from_the_config(trained_run):
    predict = app("pages/1_Predict.py").run()
    history = app("pages/4_History.py").run()
    train = app("pages/2_Train.py").run()
    train.radio(key="train_source").set_value("Upload a ZIP").run()
    limits = {
        key: at.file_uploader(key=key).proto.max_upload_size_mb
        for at, key in (
            (predict, "predict_upload"),
            (history, "history_import_file_0"),
            (train, "train_zip"),
        )
    }
    per_file = config.MAX_UPLOAD_BYTES // 1024**2
    dataset = config.MAX_DATASET_UPLOAD_BYTES // 1024**2
    assert limits == {
        "predict_upload": per_file,
        "history_import_file_0": per_file,
        "train_zip": dataset,
    }


def test_a_zip_without_a_dataset_layout_is_refused_and_removed(fresh_app):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("photos/a.jpg", SAMPLE_IMAGES[0].read_bytes())
        archive.writestr("__MACOSX/photos/._a.jpg", b"x")
    at = app("pages/2_Train.py").run()
    at.radio(key="train_source").set_value("Upload a ZIP").run()
    at.file_uploader(key="train_zip").set_value(
        ("photos.zip", buffer.getvalue(), "application/zip")
    ).run()
    at.button(key="train_unpack").click().run()
    assert "no dataset layout" in texts(at.error)
    assert str(fresh_app.data_root) not in texts(at.error)
    assert not (fresh_app.data_root / "uploads" / "photos").exists()
    assert "__MACOSX" not in texts(at.warning)


def test_unavailable_weights_stop_the_start_with_what_to_do(fresh_app, monkeypatch):
    from core.modelling import model

    def offline(backbone, image_size, weights):
        raise model.WeightsUnavailable("not cached and could not be downloaded; connect")

    monkeypatch.setattr(model, "resolve_weights", offline)
    at = app("pages/2_Train.py").run()
    at.button(key="train_start").click().run()
    assert "could not be downloaded; connect" in texts(at.error)
    assert worker.latest_job() is None


def test_a_note_about_the_weights_is_shown_when_the_job_starts(fresh_app, monkeypatch):
    from core.modelling import model

    started = []
    monkeypatch.setattr(
        model,
        "resolve_weights",
        lambda *_: model.ResolvedWeights("imagenet", "w.h5", "Offline: using the 224 px file."),
    )
    monkeypatch.setattr(worker, "start_training", lambda *a, **k: started.append(a) or "job")
    at = app("pages/2_Train.py").run()
    at.button(key="train_start").click().run()
    assert started and "Offline: using the 224 px file." in texts(at.info)


def test_the_quick_preset_sets_its_settings_and_says_what_it_costs(fresh_app, monkeypatch):
    from core.modelling import model

    started = []
    monkeypatch.setattr(model, "resolve_weights", lambda *_: model.ResolvedWeights("none", None))
    monkeypatch.setattr(worker, "start_training", lambda *a, **k: started.append(a[0]) or "job")
    at = app("pages/2_Train.py").run()
    assert at.radio(key="train_preset").value == "default"
    assert at.selectbox(key="train_image_size").value == 224
    assert "about 8 minutes" in at.radio(key="train_preset").proto.captions[1]
    at.radio(key="train_preset").set_value("quick").run()
    assert not at.exception and not at.warning
    assert at.selectbox(key="train_image_size").value == 160
    assert at.number_input(key="train_fine_tune").value == 3
    assert at.selectbox(key="train_rule").value == "sensitivity"
    at.number_input(key="train_epochs").set_value(2)  # a setting the preset leaves alone
    at.button(key="train_start").click().run()
    (config,) = started
    assert (config.image_size, config.tta_views, config.head_epochs) == (160, "flips", 2)
    at.radio(key="train_preset").set_value("default").run()
    assert at.selectbox(key="train_image_size").value == 224
    assert at.number_input(key="train_epochs").value == 2


def test_display_helpers_format_for_people():
    assert ui.formatting.plural(1, "prediction") == "1 prediction"
    assert ui.formatting.plural(0, "prediction") == "0 predictions"
    assert ui.formatting.utc_time("2026-11-28T06:23:47+00:00") == "2026-11-28 06:23 UTC"
    assert ui.formatting.utc_time("2026-11-28T07:23:47+01:00") == "2026-11-28 06:23 UTC"
    assert ui.formatting.utc_time(None) == "n/a"
    assert (
        ui.formatting.file_location(config.REPO_ROOT / "data" / "app.duckdb") == "data/app.duckdb"
    )
    assert ui.formatting.file_location("/elsewhere/app.duckdb") == "app.duckdb"
    assert ui.metrics.change(0.5, 0.5) is None
    assert ui.metrics.change(0.5, 0.4999) is None
    assert ui.metrics.change(0.6, 0.5) == "+0.100"
    assert ui.metrics.change(None, 0.5) is None


def test_train_page_clears_both_caches(fresh_app):
    from core.train import features, image_cache

    shard = features.cache_root() / "shard.npz"
    shard.parent.mkdir(parents=True)
    shard.write_bytes(b"\0" * 1024**2)
    image = image_cache.image_path(image_cache.cache_folder(512, "bilinear"), "ab" * 32)
    image_cache.write_image(image, np.zeros((512, 512, 3), dtype=np.uint8))
    at = app("pages/2_Train.py").run()
    assert "1.0 MB of backbone features, 0.8 MB of decoded images" in texts(at.caption)
    at.button(key="train_clear_cache").click().run()
    assert not shard.exists() and not image.exists()
    assert "Freed 1.8 MB." in texts(at.success)
    assert at.run().button(key="train_clear_cache").disabled


def test_a_deleted_run_disappears_from_the_train_page_at_once(two_runs):
    _, second = two_runs
    finished = worker.JobStatus(
        job_id="20990102-000001-train", state="succeeded", run_id=second.name
    )
    worker.write_status(finished)
    at = app("pages/2_Train.py").run()
    assert "Training finished" in texts(at.success)
    at.selectbox(key="train_run").set_value(second.name).run()
    at.checkbox(key=f"train_delete_confirm_{second.name}").check().run()
    at.button(key="train_delete").click().run()
    assert not at.exception and not second.exists()
    # Neither the finished training's notice nor an error about its files, nor the Run box.
    for shown in (at, app("pages/2_Train.py").run()):
        assert "Training finished" not in texts(shown.success)
        assert "card.json" not in texts(shown.error)
        assert second.name not in shown.selectbox(key="train_run").options
