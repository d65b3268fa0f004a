"""Cross-validation by source on tiny synthetic data: folds, grouping, JSON and the CLI."""

import csv
import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
from app_fixtures import tiny_train_config
from test_pipeline import run_cli

from core import config
from core.modelling.model import resolve_weights
from core.storage import runs
from core.storage.card import Card
from core.train import crossval
from core.train.recipe import prepare_data

SOURCES = ("clinic A", "clinic B", "clinic C")


@pytest.fixture
def three_clinics(make_dataset):
    """36 images from each of three sources, half of them malignant."""
    root = make_dataset("csv", n_benign=54, n_malignant=54)
    path = root / "metadata.csv"
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    for index, row in enumerate(rows):
        row["source"] = SOURCES[(index // 2) % 3]  # patients (two images) stay in one
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root


def test_fold_split_holds_the_source_out_with_its_groups():
    split = np.array(["train", "val", "test", "train", "val", "train"], dtype=object)
    groups = np.array([0, 1, 2, 3, 3, 4])
    sources = np.array(["a", "a", "b", "b", "a", "b"], dtype=object)
    fold = crossval.fold_split(split, groups, sources, "b")
    # Row 3 is held out; row 4 shares its group but comes from "a", so it is left out.
    assert fold.tolist() == ["train", "val", "test", "test", crossval.EXCLUDED, "test"]


def test_sources_without_enough_cases_are_skipped_with_a_reason():
    frame = {"source": ["a"] * 70 + ["b"] * 10, "label": [0, 1] * 35 + [1] * 10}
    chosen, skipped = crossval.held_out_sources(pd.DataFrame(frame))
    assert chosen == ["a"]
    assert skipped[0]["source"] == "b" and "10 malignant" in skipped[0]["reason"]


@pytest.mark.slow
def test_crossval_scores_each_source_it_never_trained_on(three_clinics, tmp_path, monkeypatch):
    monkeypatch.setattr(config, "CACHE_DIR", tmp_path / "cache")
    settings = tiny_train_config(data_dir=str(three_clinics), csv=None, image_size=32)
    prepared = prepare_data(settings, lambda progress: None)
    weights = resolve_weights(settings.backbone, settings.image_size, settings.weights)
    result = crossval.crossval_by_source(
        settings, prepared, weights, lambda p: None, lambda: False, min_cases=10
    )
    assert [fold.held_out for fold in result.folds] == sorted(SOURCES)
    for fold in result.folds:
        assert fold.held_out not in fold.train_sources and len(fold.train_sources) == 2
        assert fold.metrics["n"] == 36 and fold.metrics["n_positive"] == 18
        assert 0 <= fold.metrics["roc_auc"] <= 1
    labels, probabilities = result.pooled()
    assert len(labels) == len(probabilities) == 108
    payload = result.to_json(run_threshold=0.5)
    json.dumps(payload, allow_nan=False)
    summary = payload["summary"]
    aucs = [fold["metrics"]["roc_auc"] for fold in payload["folds"]]
    assert summary["mean"]["roc_auc"] == pytest.approx(np.mean(aucs))
    assert summary["worst"]["roc_auc"] == min(aucs)
    assert all(fold["at_run_threshold"]["threshold"] == 0.5 for fold in payload["folds"])
    # The rule's threshold for each source is chosen without that source's predictions.
    for fold, entry in zip(result.folds, payload["folds"], strict=True):
        assert entry["at_rule_threshold"]["threshold"] <= fold.threshold
    first = result.folds[0]
    before = result.rule_threshold(first)
    first.probabilities = 1.0 - first.probabilities
    assert result.rule_threshold(first) == before
    assert set(summary["rule"]["mean"]) == {"sensitivity", "specificity"}


def test_one_source_is_a_clear_error(make_dataset, tmp_path, monkeypatch):
    monkeypatch.setattr(config, "CACHE_DIR", tmp_path / "cache")
    settings = tiny_train_config(data_dir=str(make_dataset("csv")), csv=None, image_size=32)
    prepared = prepare_data(settings, lambda progress: None)
    with pytest.raises(ValueError, match="two or more sources"):
        crossval.crossval_by_source(settings, prepared, None, lambda p: None, lambda: False)


def test_crossval_refuses_several_machines(make_dataset):
    settings = tiny_train_config(data_dir=str(make_dataset("csv")), csv=None)
    settings = dataclasses.replace(settings, strategy="multiworker")
    with pytest.raises(ValueError, match="one machine"):
        crossval.run_crossval(settings)


@pytest.mark.slow
def test_crossval_cli_writes_the_runs_json(three_clinics, tmp_path):
    models, cache = tmp_path / "models", tmp_path / "cache"
    common = ["--backbone", "mobilenet_v3_small", "--image-size", "32", "--weights", "none"]
    common += ["--epochs", "1", "--fine-tune-epochs", "0", "--data", str(three_clinics)]
    run_cli(["train", *common, "--threshold-rule", "sensitivity", "--activate"], models, cache)
    run = runs.resolve_run(None, models)
    arguments = ["crossval", "--by", "source", "--quick", "--min-cases", "10"]
    result = run_cli([*arguments, "--run", run.run_id, *common], models, cache)
    assert "mean ROC AUC" in result.stdout
    saved = runs.load_crossval(runs.load_run(models / run.run_id))
    assert saved["run_threshold"] == run.card.threshold
    assert [fold["held_out"] for fold in saved["folds"]] == sorted(SOURCES)


def test_folds_can_be_limited_to_named_sources():
    frame = pd.DataFrame({"source": ["a"] * 60 + ["b"] * 60, "label": [0, 1] * 60})
    assert held_out(frame, only=("b",)) == ["b"]
    with pytest.raises(ValueError, match="no images from source"):
        crossval.held_out_sources(frame, only=("my clinic",))


def held_out(frame, **options) -> list[str]:
    return crossval.held_out_sources(frame, **options)[0]


def test_folds_run_one_at_a_time_merge_into_the_runs_fine_tuned_record(tmp_path):
    folder = tmp_path / "run-1"
    folder.mkdir()
    run = runs.Run(run_id="run-1", folder=folder, card=Card.minimal("run-1", 32, 0.3))
    runs.write_card(folder, run.card)

    def fold_file(source: str) -> dict:
        fold = {"held_out": source, "threshold": 0.5, "metrics": {"roc_auc": 0.7}}
        return {
            "by": "source",
            "preset": "full",
            "config": {},
            "min_cases": 30,
            "created_at": "2026-12-07T00:00:00+00:00",
            "folds": [fold],
            "skipped": [],
        }

    labels = [1, 1, 0, 0] * 10
    predictions = pd.DataFrame(
        {
            "held_out": ["A"] * 40 + ["B"] * 40,
            "image_name": [f"i{n}" for n in range(80)],
            "label": labels * 2,
            "probability": [0.6, 0.2, 0.4, 0.1] * 20,
        }
    )
    payload = crossval.merge([fold_file("A"), fold_file("B")], predictions, 0.3)
    assert [fold["held_out"] for fold in payload["folds"]] == ["A", "B"]
    # At the run's threshold 0.3: half the malignant (0.6 yes, 0.2 no), benign 0.4 called.
    assert payload["folds"][0]["at_run_threshold"]["sensitivity"] == 0.5
    assert payload["folds"][0]["at_run_threshold"]["specificity"] == 0.5
    assert crossval.save_with_run(run, payload) == runs.CROSSVAL_FINE_TUNED_FILE
    assert runs.load_crossval(run, runs.CROSSVAL_FINE_TUNED_FILE)["folds"][1]["held_out"] == "B"
    saved_card = json.loads((folder / runs.CARD_FILE).read_text())
    assert saved_card["crossval_fine_tuned"]["mean"]["roc_auc"] == 0.7
    with pytest.raises(ValueError, match="held out twice"):
        crossval.merge([fold_file("A"), fold_file("A")], None, 0.3)
    with pytest.raises(ValueError, match="mix presets"):
        crossval.merge([fold_file("A"), {**fold_file("B"), "preset": "quick"}], None, 0.3)
