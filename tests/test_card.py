"""The run card's reader: typed properties, old-card defaults, the minimal card."""

import pytest

from core.storage import runs
from core.storage.card import CARD_VERSION, Card


def test_a_card_from_before_the_newer_keys_reads_as_it_was_meant():
    card = Card.from_dict({"image_size": 160, "threshold": {"value": 0.3}, "tta": True})
    assert card.version == 1
    assert card.tta_views == "flips" and card.resample == "bilinear" and card.tta
    assert card.target == "binary" and card.diagnoses == ()
    assert card.test_metrics == {} and card.val_metrics == {} and card.data == {}
    assert card.crossval is None and card.crossval_fine_tuned is None
    assert card.members == () and not card.is_ensemble
    assert card.threshold == 0.3 and card.image_size == 160


@pytest.mark.parametrize("payload", [[], {"image_size": 64}, {"threshold": {"value": 0.5}}])
def test_a_card_without_an_image_size_or_threshold_is_refused(payload):
    with pytest.raises(ValueError, match="lacks image_size or threshold"):
        Card.from_dict(payload)


def test_the_minimal_card_survives_a_run_folder(tmp_path):
    card = Card.minimal("run-1", 32, 0.25, metrics={"test": {"roc_auc": 0.8}})
    folder = tmp_path / "run-1"
    folder.mkdir()
    (folder / runs.MODEL_FILE).write_bytes(b"stand-in")
    runs.write_card(folder, card)
    loaded = runs.load_run(folder).card
    assert loaded == card and loaded.version == CARD_VERSION
    assert loaded.test_metrics["roc_auc"] == 0.8 and loaded.threshold_rule == "youden"


def test_replace_makes_a_new_card_and_leaves_the_old_one_alone():
    card = Card.minimal("run-1", 32, 0.25)
    refreshed = card.replace(crossval={"mean": {"roc_auc": 0.7}})
    assert refreshed.crossval == {"mean": {"roc_auc": 0.7}} and card.crossval is None


def test_an_ensemble_card_lists_its_members():
    member = {
        "run_id": "run-a",
        "backbone": "mobilenet_v2",
        "image_size": 224,
        "metrics": {"test": {"roc_auc": 0.9}},
        "crossval": {"mean": {"roc_auc": 0.7}},
    }
    card = Card.minimal("ensemble-1", 224, 0.1, backbone="ensemble", members=[member])
    assert card.is_ensemble and [m.run_id for m in card.members] == ["run-a"]
    (first,) = card.members
    assert first.test_metrics == {"roc_auc": 0.9} and first.crossval_fine_tuned is None
