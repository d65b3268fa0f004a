"""Which backbone weights a run gets, offline included, before any data work."""

import pytest

from core.modelling import model


@pytest.fixture
def keras_home(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    (tmp_path / "models").mkdir()
    # Offline: every download fails the way urllib's DNS failure does.
    monkeypatch.setattr(model, "_download", lambda backbone, name: "Name or service not known")
    return tmp_path / "models"


def test_cached_file_is_used_as_is(keras_home):
    name = model.imagenet_file_name("mobilenet_v2", 160)
    (keras_home / name).write_bytes(b"")
    resolved = model.resolve_weights("mobilenet_v2", 160, "imagenet")
    assert resolved == model.ResolvedWeights("imagenet", name, "")


def test_offline_mobilenet_v2_falls_back_to_another_cached_size(keras_home):
    cached = model.imagenet_file_name("mobilenet_v2", 160)
    (keras_home / cached).write_bytes(b"")
    resolved = model.resolve_weights("mobilenet_v2", 224, "imagenet")
    assert resolved.argument == str(keras_home / cached) and resolved.file == cached
    assert "224 px" in resolved.note and cached in resolved.note
    assert "could not be downloaded" in resolved.note


def test_offline_with_nothing_cached_says_what_to_do(keras_home):
    with pytest.raises(model.WeightsUnavailable, match="KERAS_HOME") as raised:
        model.resolve_weights("efficientnet_b0", 224, "imagenet")
    assert "choose weights 'none'" in str(raised.value)
    assert "Name or service not known" in str(raised.value)


def test_none_and_files_need_no_download(keras_home, tmp_path):
    assert model.resolve_weights("mobilenet_v2", 224, "none") == model.ResolvedWeights(None, None)
    weights_file = tmp_path / "mine.weights.h5"
    weights_file.write_bytes(b"")
    resolved = model.resolve_weights("mobilenet_v2", 224, str(weights_file))
    assert resolved.file == "mine.weights.h5"
    with pytest.raises(ValueError, match="existing file"):
        model.resolve_weights("mobilenet_v2", 224, str(tmp_path / "missing.h5"))


def test_mobilenet_v2_file_names_follow_keras():
    assert model.imagenet_file_name("mobilenet_v2", 192).endswith("_1.0_192_no_top.h5")
    # keras.applications uses the 224 px file for sizes it has no file for.
    assert model.imagenet_file_name("mobilenet_v2", 288).endswith("_1.0_224_no_top.h5")
