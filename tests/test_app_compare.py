"""AppTest of the Metrics page's "Compare runs" tab: runs compared on the same images.

The runs here are written straight into run folders (a card, test predictions and, where a
test needs them, evaluations), with no model trained: the tab reads only those files.
"""

import json

import numpy as np
import pandas as pd
import pytest
from app_fixtures import app, texts

from core.analysis import compare, metrics
from core.serving import evaluation
from core.storage import runs
from core.storage.card import Card

FIRST, SECOND, THIRD = (
    "20991201-000000-first",
    "20991202-000000-second",
    "20991204-000000-third",
)


def image_names(start: int, stop: int) -> list[str]:
    return [f"ISIC_{index:07d}" for index in range(start, stop)]


def scored(names: list[str], seed: int) -> pd.DataFrame:
    """Labels alternating benign and malignant, probabilities that lean towards the label."""
    rng = np.random.default_rng(seed)
    labels = np.array([int(name[-1]) % 2 for name in names])
    probabilities = np.clip(0.3 * labels + 0.7 * rng.random(len(names)), 0.0, 1.0)
    return pd.DataFrame({"image_name": names, "label": labels, "probability": probabilities})


def write_run(models_dir, run_id: str, threshold: float, tests: pd.DataFrame) -> None:
    folder = models_dir / run_id
    folder.mkdir(parents=True)
    # Metrics reads the card and the tables, never the model, so an empty file stands in.
    (folder / runs.MODEL_FILE).write_bytes(b"")
    evaluation = metrics.evaluate(tests["label"], tests["probability"], threshold, n_bootstrap=20)
    card = Card.minimal(
        run_id,
        64,
        threshold,
        created_at="2099-12-01T00:00:00+00:00",
        backbone="mobilenet_v3_small",
        data={"n_images": len(tests)},
        metrics={"test": evaluation, "val": {"roc_auc": 0.8}},
    )
    runs.write_card(folder, card)
    epoch = {"phase": "head", "epoch": 1, "loss": 0.6, "auc": 0.7}
    history = [{**epoch, "val_loss": 0.6, "val_auc": 0.7, "seconds": 1.0}]
    tables = tests.assign(site=None, source="synthetic", diagnosis=None)
    runs.write_tables(folder, history, tables, tests[["image_name"]])


def write_evaluation(models_dir, run_id: str, frame: pd.DataFrame) -> str:
    """An evaluation of the run on the dataset "clinic", as the app stores one; its key."""
    predictions = frame.assign(
        image_name=[f"upload/{name}.jpg" for name in frame["image_name"]],
        sha256=[f"hash-{name}" for name in frame["image_name"]],
        ood_score=1.0,
        ood_flag=False,
        site=None,
        sex=None,
        age=None,
        source=None,
        diagnosis=None,
    )
    run = runs.load_run(models_dir / run_id)
    record = evaluation.evaluation_record(
        run, predictions, dataset="clinic", tta=False, unreadable=[], n_bootstrap=20
    )
    evaluation.save_evaluation(run, record, predictions)
    return record["dataset_key"]


@pytest.fixture
def two_test_splits(fresh_app):
    """Two runs whose test splits share 30 of their images: 40 and 35 images."""
    splits = {FIRST: scored(image_names(0, 40), 0), SECOND: scored(image_names(10, 45), 1)}
    for (run_id, tests), threshold in zip(splits.items(), (0.4, 0.5), strict=True):
        write_run(fresh_app.models_dir, run_id, threshold, tests)
    return splits


def compare_tab(*chosen: str):
    at = app("pages/3_Metrics.py").run()
    at.multiselect(key="metrics_compare").set_value(list(chosen)).run()
    assert not at.exception
    return at


def paired_table(at) -> pd.DataFrame:
    (table,) = [t.value for t in at.table if "Paired result" in t.value.columns]
    return table.set_index("Paired result")


def test_different_test_splits_get_a_warning_and_are_paired_on_shared_images(two_test_splits):
    at = compare_tab(FIRST, SECOND)
    warnings = texts(at.warning)
    assert f"{FIRST}: 40 images" in warnings and f"{SECOND}: 35 images" in warnings
    assert any("Setting or test metric" in t.value.columns for t in at.table)
    expected = compare.paired_table(
        compare.pair_test_splits(two_test_splits), {FIRST: 0.4, SECOND: 0.5}
    )
    shown = paired_table(at)
    assert shown.columns.tolist() == [f"{SECOND} vs {FIRST}"]
    assert shown.loc["Images (malignant)", f"{SECOND} vs {FIRST}"] == "30 (15)"
    assert shown.to_dict() == expected.to_dict()
    assert "matched by image name: 30 images" in texts(at.caption)
    titles = [
        json.loads(chart.proto.spec)["layout"]["title"]["text"] for chart in at.get("plotly_chart")
    ]
    assert "ROC on the paired images" in titles


def test_runs_tested_on_the_same_images_get_no_warning(fresh_app):
    tests = scored(image_names(0, 30), 0)
    write_run(fresh_app.models_dir, FIRST, 0.4, tests)
    write_run(
        fresh_app.models_dir, SECOND, 0.5, tests.assign(probability=tests["probability"] / 2)
    )
    at = compare_tab(FIRST, SECOND)
    assert "tested on different images" not in texts(at.warning)
    assert paired_table(at).loc["Images (malignant)"].tolist() == ["30 (15)"]


def test_a_shared_evaluation_set_is_offered_first_and_matched_by_content(
    two_test_splits,
    fresh_app,
):
    clinic = scored(image_names(100, 124), 2)
    clinic_key = write_evaluation(fresh_app.models_dir, FIRST, clinic)
    # The second run scored the same images, one of them twice: it still counts once.
    again = pd.concat([clinic, clinic.iloc[:1]]).assign(probability=lambda f: f["probability"] / 2)
    assert write_evaluation(fresh_app.models_dir, SECOND, again) == clinic_key
    at = compare_tab(FIRST, SECOND)
    basis = at.radio(key="metrics_compare_basis")
    assert basis.value == clinic_key
    assert "Evaluation set clinic" in basis.options[0]
    assert "shared evaluation set clinic, matched by content (SHA-256): 24 images" in texts(
        at.caption
    )
    assert paired_table(at).iloc[0, 0] == "24 (12)"
    basis.set_value(compare.TEST_SPLIT).run()
    assert not at.exception
    assert paired_table(at).iloc[0, 0] == "30 (15)"
    basis.set_value(clinic_key).run()
    # A third run that was never evaluated on the clinic's images leaves only the test splits.
    write_run(fresh_app.models_dir, THIRD, 0.5, two_test_splits[FIRST])
    at.multiselect(key="metrics_compare").set_value([FIRST, SECOND, THIRD]).run()
    assert not at.exception
    assert at.radio(key="metrics_compare_basis").options == [
        "Test splits: the images they have in common"
    ]
    assert paired_table(at).columns.tolist() == [f"{SECOND} vs {FIRST}", f"{THIRD} vs {FIRST}"]


def test_runs_without_shared_images_are_not_compared(fresh_app):
    write_run(fresh_app.models_dir, FIRST, 0.4, scored(image_names(0, 20), 0))
    write_run(fresh_app.models_dir, SECOND, 0.5, scored(image_names(20, 40), 1))
    at = compare_tab(FIRST, SECOND)
    assert "no image in common" in texts(at.warning)
    assert not [t for t in at.table if "Paired result" in t.value.columns]
