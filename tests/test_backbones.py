"""Backbones and allowed settings: one table each, read by TrainConfig, the CLI and the UI."""

import pytest

from core import config
from core.__main__ import build_parser
from core.modelling import backbones
from core.train.train_config import PRESETS, TrainConfig, preset_config


def test_each_backbone_names_only_its_own_imagenet_files():
    for name in backbones.BACKBONE_NAMES:
        own = {backbones.imagenet_file_name(name, size) for size in backbones.OFFERED_IMAGE_SIZES}
        others = {
            backbones.imagenet_file_name(other, size)
            for other in backbones.BACKBONE_NAMES
            if other != name
            for size in backbones.OFFERED_IMAGE_SIZES
        }
        assert own and not own & others, name


def test_the_offered_sizes_hold_every_imagenet_size_and_every_preset_size():
    offered = set(backbones.OFFERED_IMAGE_SIZES)
    for weights in backbones.IMAGENET_WEIGHTS.values():
        assert set(weights.sizes) <= offered
    presets = {preset_config(name, data_dir="").image_size for name in PRESETS}
    assert presets | {config.DEFAULT_IMAGE_SIZE} <= offered
    assert min(offered) >= backbones.MIN_IMAGE_SIZE


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"backbone": "resnet"}, "unknown backbone"),
        ({"image_size": backbones.MIN_IMAGE_SIZE - 1}, "at least"),
        ({"imbalance": "oversample"}, "imbalance"),
        ({"tta_views": "rotations"}, "tta_views"),
        ({"target": "melanoma"}, "target"),
    ],
)
def test_train_config_refuses_values_outside_the_tables(settings, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(data_dir="x", **settings).validate()


def test_the_cli_offers_the_same_backbones(capsys):
    parser = build_parser()
    for name in backbones.BACKBONE_NAMES:
        assert parser.parse_args(["train", "--data", "x", "--backbone", name]).backbone == name
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--data", "x", "--backbone", "resnet"])
    assert "invalid choice" in capsys.readouterr().err
