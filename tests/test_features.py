"""The on-disk feature cache: reuse, keying, size limit and clearing."""

import numpy as np

from core.train import features


def test_only_missing_rows_are_computed(tmp_path):
    folder = features.cache_folder("mobilenet_v2", 160, "bilinear", "abc", root=tmp_path)
    calls = []

    def compute(indices):
        calls.append(list(indices))
        return np.array([[float(index), 1.0] for index in indices])

    first, computed = features.cached_features(folder, ["a", "b"], compute)
    assert computed == 2 and calls == [[0, 1]]
    second, computed = features.cached_features(folder, ["b", "c", "a"], compute)
    assert computed == 1 and calls[-1] == [1]
    np.testing.assert_array_equal(second[0], first[1])
    np.testing.assert_array_equal(second[2], first[0])


def test_weights_digest_changes_with_weights():
    weights = [np.zeros((2, 2)), np.ones(3)]
    changed = [np.zeros((2, 2)), np.full(3, 2.0)]
    assert features.weights_digest(weights) == features.weights_digest([w.copy() for w in weights])
    assert features.weights_digest(weights) != features.weights_digest(changed)


def test_size_limit_drops_least_recently_used_shards_and_clear_empties(tmp_path):
    folder = features.cache_folder("mobilenet_v2", 160, "bilinear", "abc", root=tmp_path)
    for key in ("a", "b", "c"):
        features.save_features(folder, [key], np.zeros((1, 2000), np.float32))
    one_shard = next(folder.glob("*.npz")).stat().st_size
    features.enforce_limit(features.cache_root(tmp_path), limit_bytes=2 * one_shard)
    assert len(list(folder.glob("*.npz"))) == 2
    assert features.cache_size(tmp_path) <= 2 * one_shard
    assert features.clear_cache(tmp_path) > 0
    assert features.cache_size(tmp_path) == 0
