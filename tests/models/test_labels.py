import numpy as np
import pytest

from scarfx.models.labels import hide_labels


def test_keeps_a_stratified_fraction_and_every_class():
    labels = np.array([0] * 900 + [1] * 90 + [2] * 10 + [-1] * 50)
    out = hide_labels(labels, 0.25, seed=0)
    assert [(out == c).sum() for c in (0, 1, 2)] == [225, 22, 2]
    assert np.all(out[labels == -1] == -1)
    assert np.all((out == labels) | (out == -1))
    np.testing.assert_array_equal(out, hide_labels(labels, 0.25, seed=0))
    assert not np.array_equal(out, hide_labels(labels, 0.25, seed=1))


def test_tiny_class_keeps_one_label_and_full_fraction_is_identity():
    labels = np.array([0] * 50 + [1])
    assert (hide_labels(labels, 0.1, 0) == 1).sum() == 1
    np.testing.assert_array_equal(hide_labels(labels, 1.0, 0), labels)
    with pytest.raises(ValueError):
        hide_labels(labels, 0.0, 0)
