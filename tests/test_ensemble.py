"""Ensemble runs: two tiny members trained on the bundled sample, combined and used as a run."""

import shutil

import keras
import numpy as np
import pandas as pd
import pytest

from core.__main__ import main
from core.modelling.model import build_ensemble, build_model, ensemble_members, with_features
from core.serving import gradcam
from core.serving.inference import Predictor, load_run_model
from core.storage import runs, spreadsheet
from core.train import ensemble
from tests.app_fixtures import SAMPLE_IMAGES, tiny_train_config


def held_out_frame(image_names, labels, probabilities, source="Clinic A") -> pd.DataFrame:
    return pd.DataFrame(
        {
            "held_out": source,
            "image_name": image_names,
            "label": labels,
            "probability": probabilities,
        }
    )


@pytest.fixture(scope="module")
def member_runs(tmp_path_factory):
    """Two members on the sample's one split: MobileNetV3-Small at 64 px, MobileNetV2 at 96."""
    from core.train import training

    models = tmp_path_factory.mktemp("ensemble") / "models"
    settings = {"threshold_rule": "sensitivity"}
    first = training.train(tiny_train_config(**settings), models_directory=models)
    second = training.train(
        tiny_train_config(backbone="mobilenet_v2", image_size=96, **settings),
        models_directory=models,
    )
    return models, [first.run_id, second.run_id]


@pytest.fixture(scope="module")
def ensemble_run(member_runs):
    models, members = member_runs
    result = ensemble.build_ensemble_run(members, models_directory=models)
    return runs.load_run(models / result.run_id)


def test_the_ensemble_is_a_run_with_its_members_on_its_card(ensemble_run, member_runs):
    _, members = member_runs
    card = ensemble_run.card
    assert card.backbone == ensemble.BACKBONE
    assert [member.run_id for member in card.members] == members
    assert card.image_size == 96
    assert card.members[0].test_metrics["roc_auc"] is not None
    assert 0.0 < card.threshold < 1.0
    assert card.test_metrics["n"] > 0
    assert runs.read_history(ensemble_run.folder).empty
    for name in (runs.MODEL_FILE, runs.SPLIT_FILE, runs.TEST_PREDICTIONS_FILE, runs.OOD_FILE):
        assert (ensemble_run.folder / name).is_file()


def test_its_output_is_the_sigmoid_of_the_members_mean_logit(ensemble_run):
    model = load_run_model(ensemble_run)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (4, 96, 96, 3)).astype("float32")
    logits = []
    for member in ensemble_members_of(model):
        rows = member.input_shape[1]
        resized = keras.layers.Resizing(rows, rows, antialias=True)(images)
        probability = np.clip(member(resized)[0].numpy()[:, 0], 1e-7, 1 - 1e-7)
        logits.append(np.log(probability) - np.log(1 - probability))
    expected = 1 / (1 + np.exp(-np.mean(logits, axis=0)))
    np.testing.assert_allclose(model(images)[0].numpy()[:, 0], expected, rtol=1e-5, atol=1e-6)


def ensemble_members_of(model):
    members = ensemble_members(model)
    assert len(members) == 2
    return members


def test_predictions_are_coherent_and_flagged_like_any_run(ensemble_run):
    predictor = Predictor(ensemble_run)
    result = predictor.predict_bytes(SAMPLE_IMAGES[0].name, SAMPLE_IMAGES[0].read_bytes())
    assert not result.error
    assert 0.0 <= result.probability <= 1.0
    assert result.ood_score is not None
    total = sum(probability for _, probability in result.diagnoses)
    assert total == pytest.approx(1.0, abs=1e-6)


def test_features_are_the_members_side_by_side(ensemble_run):
    model = load_run_model(ensemble_run)
    outputs = with_features(model)(np.zeros((1, 96, 96, 3), "float32"))
    widths = [member.get_layer("pooled").output.shape[-1] for member in ensemble_members(model)]
    assert outputs[-1].shape == (1, sum(widths))


def test_grad_cam_is_the_mean_of_the_members_maps(ensemble_run):
    model = load_run_model(ensemble_run)
    image = np.random.default_rng(1).integers(0, 256, (96, 96, 3), dtype=np.uint8)
    heatmap = gradcam.grad_cam(model, image)
    assert heatmap.shape == (96, 96)
    assert heatmap.min() >= 0.0 and heatmap.max() <= 1.0
    assert "2 ensemble members" in gradcam.source_note(model)
    member = runs.load_run(ensemble_run.folder.parent / ensemble_run.card.members[0].run_id)
    assert gradcam.source_note(load_run_model(member)) == ""


def test_the_same_run_twice_or_an_ensemble_as_member_is_refused(member_runs, ensemble_run):
    models, members = member_runs
    with pytest.raises(ValueError, match="two or more different runs"):
        ensemble.build_ensemble_run([members[0], members[0]], models_directory=models)
    with pytest.raises(ValueError, match="ensembles already"):
        ensemble.build_ensemble_run([members[0], ensemble_run.run_id], models_directory=models)


def test_members_of_another_split_are_refused(member_runs, tmp_path):
    models, members = member_runs
    copy = tmp_path / "other-split"
    shutil.copytree(models / members[1], copy)
    split = spreadsheet.read_csv(copy / runs.SPLIT_FILE, dtype={"image_name": str})
    split.loc[split["split"] == "test", "split"] = "train"
    spreadsheet.to_csv(split, copy / runs.SPLIT_FILE, index=False)
    with pytest.raises(ValueError, match="another split"):
        ensemble.build_ensemble_run([members[0], str(copy)], models_directory=models)


def test_members_of_another_seed_are_refused(member_runs, tmp_path):
    models, members = member_runs
    copy = tmp_path / "other-seed"
    shutil.copytree(models / members[1], copy)
    card = runs.load_run(copy).card
    runs.write_card(copy, card.replace(config={**card.config, "seed": 7}))
    with pytest.raises(ValueError, match="differ in seed"):
        ensemble.build_ensemble_run([members[0], str(copy)], models_directory=models)


def test_members_of_different_targets_cannot_be_combined():
    diagnosis = build_model("mobilenet_v3_small", 32, "none", target="diagnosis")
    binary = build_model("mobilenet_v3_small", 32, "none", target="binary")
    with pytest.raises(ValueError, match="share a target"):
        build_ensemble([diagnosis, binary])
    with pytest.raises(ValueError, match="two or more"):
        build_ensemble([diagnosis])


def test_fold_ensembles_pair_images_and_keep_only_shared_sources():
    names = [f"ISIC_{index}" for index in range(4)]
    labels = [0, 1, 0, 1]
    first = pd.concat(
        [
            held_out_frame(names, labels, [0.2, 0.8, 0.5, 0.5]),
            held_out_frame(names, labels, [0.1] * 4, source="Clinic B"),
        ]
    )
    second = held_out_frame(names[::-1], labels[::-1], [0.5, 0.5, 0.8, 0.2][::-1])
    combined = ensemble.fold_ensemble({"a": first, "b": second})
    assert set(combined["held_out"]) == {"Clinic A"}
    by_name = combined.set_index("image_name")["probability"]
    # ISIC_0: 0.2 and 0.5, a logit of -log 4 and one of 0, whose mean is -log 2.
    assert by_name["ISIC_0"] == pytest.approx(1 / 3)
    assert by_name["ISIC_1"] == pytest.approx(2 / 3)
    assert by_name["ISIC_3"] == pytest.approx(1 / 3)


def test_fold_ensembles_refuse_disagreeing_labels():
    names = ["ISIC_0", "ISIC_1"]
    first = held_out_frame(names, [0, 1], [0.2, 0.8])
    second = held_out_frame(names, [1, 1], [0.2, 0.8])
    with pytest.raises(ValueError, match="disagree"):
        ensemble.fold_ensemble({"a": first, "b": second})


def test_the_fold_record_scores_each_source_at_the_run_threshold():
    rng = np.random.default_rng(0)
    labels = np.array([0] * 40 + [1] * 40)
    frame = held_out_frame(
        [f"ISIC_{index}" for index in range(80)],
        labels,
        rng.uniform(0, 1, 80) * 0.5 + labels * 0.4,
    )
    record = ensemble.fold_record(frame, 0.5, {"seed": 42})
    (fold,) = record["folds"]
    assert fold["held_out"] == "Clinic A"
    assert fold["metrics"]["n"] == 80
    assert fold["at_run_threshold"]["threshold"] == 0.5
    assert record["summary"]["mean"]["roc_auc"] == fold["metrics"]["roc_auc"]


def test_the_command_line_builds_an_ensemble_with_held_out_folds(
    member_runs, tmp_path, monkeypatch, capsys
):
    models, members = member_runs
    monkeypatch.setattr(runs, "models_dir", lambda directory=None: models)
    split = spreadsheet.read_csv(models / members[0] / runs.SPLIT_FILE, dtype={"image_name": str})
    rng = np.random.default_rng(2)
    labels = np.array([0, 1] * (len(split) // 2))
    names = split["image_name"].iloc[: len(labels)]
    arguments = ["ensemble"]
    for index, member in enumerate(members):
        path = tmp_path / f"folds_{index}.csv"
        probabilities = np.clip(labels * 0.5 + rng.uniform(0, 0.5, len(labels)), 0.01, 0.99)
        spreadsheet.to_csv(held_out_frame(names, labels, probabilities), path, index=False)
        arguments += ["--member", member, "--held-out", f"{member}={path}"]
    assert main(arguments) == 0
    run_id = capsys.readouterr().out.split("run ", 1)[1].split()[0]
    run = runs.load_run(models / run_id)
    assert "pooled held-out-source predictions" in run.card.to_dict()["threshold"]["chosen_on"]
    record = runs.load_crossval(run, runs.CROSSVAL_FINE_TUNED_FILE)
    assert [fold["held_out"] for fold in record["folds"]] == ["Clinic A"]
    assert run.card.crossval_fine_tuned == record["summary"]


def test_crossval_of_an_ensemble_points_to_its_members(ensemble_run, monkeypatch, capsys):
    monkeypatch.setattr(runs, "models_dir", lambda directory=None: ensemble_run.folder.parent)
    assert main(["crossval", "--run", str(ensemble_run.folder)]) == 2
    assert "is an ensemble" in capsys.readouterr().err


def test_reports_and_metrics_show_the_members_beside_the_ensemble(
    ensemble_run, tmp_path, monkeypatch
):
    from core.analysis import reports
    from tests.app_fixtures import app, point_app_at

    card = ensemble_run.card
    assert card.architecture == "ensemble of mobilenet_v3_small (64 px) + mobilenet_v2 (96 px)"
    table = reports.members_table(card)
    assert list(table["Run"]) == [*(member.run_id for member in card.members), "ensemble"]
    paths = point_app_at(tmp_path, monkeypatch)
    for run_id in [*(member.run_id for member in card.members), ensemble_run.run_id]:
        shutil.copytree(ensemble_run.folder.parent / run_id, paths.models_dir / run_id)
    runs.set_active(ensemble_run.run_id, paths.models_dir)
    at = app("pages/3_Metrics.py").run()
    assert not at.exception
    assert any("Ensemble members" in element.value for element in at.markdown)
    assert any("mean logit" in element.value for element in at.caption)
