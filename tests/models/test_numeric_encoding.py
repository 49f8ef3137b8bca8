"""NumericEncoding: how the network reads a numeric feature (imputation, indicator, PLE)."""
import numpy as np
import pytest

from scarfx.models.numeric_encoding import EDGE_LIMIT, NumericEncoding, ple_edges

NAN = float("nan")


def test_missing_value_is_imputed_to_zero_with_an_indicator():
    layer = NumericEncoding(bins=0, missing_indicators=True)
    got = np.asarray(layer(np.array([[1.5, NAN], [NAN, -2.0]], np.float32)))
    # per feature: [value, missing]
    np.testing.assert_array_equal(got, [[1.5, 0.0, 0.0, 1.0], [0.0, 1.0, -2.0, 0.0]])
    assert layer.width_per_feature == 2


def test_without_indicators_a_missing_value_is_just_the_imputed_zero():
    got = np.asarray(NumericEncoding(bins=0, missing_indicators=False)(np.array([[NAN, 0.7]], np.float32)))
    np.testing.assert_allclose(got, [[0.0, 0.7]], rtol=1e-6)


def test_edges_are_normal_quantiles_clamped_at_the_transform_bound():
    edges = ple_edges(4)
    np.testing.assert_allclose(edges, [-EDGE_LIMIT, -0.6744898, 0.0, 0.6744898, EDGE_LIMIT], rtol=1e-5)


@pytest.mark.parametrize("value, expected", [
    (0.0, [1.0, 1.0, 0.0, 0.0]),  # the median fills the lower half of the bins
    (0.3372449, [1.0, 1.0, 0.5, 0.0]),  # halfway through bin 3
    (-5.0, [(-5.0 + EDGE_LIMIT) / (EDGE_LIMIT - 0.6744898), 0.0, 0.0, 0.0]),  # below the first edge: negative
    (5.0, [1.0, 1.0, 1.0, (5.0 - 0.6744898) / (EDGE_LIMIT - 0.6744898)]),  # above the last edge: > 1
])
def test_piecewise_linear_encoding(value, expected):
    got = np.asarray(NumericEncoding(bins=4, missing_indicators=False)(np.array([[value]], np.float32)))
    np.testing.assert_allclose(got[0], expected, rtol=1e-4, atol=1e-6)


def test_ple_blocks_are_contiguous_per_feature_and_missing_is_all_zero_bins_plus_flag():
    layer = NumericEncoding(bins=3, missing_indicators=True)
    got = np.asarray(layer(np.array([[NAN, 10.0]], np.float32)))
    assert got.shape == (1, 8) and layer.width_per_feature == 4
    np.testing.assert_allclose(got[0, :4], [1.0, 0.5, 0.0, 1.0], atol=1e-6)  # 0 = median: halfway through bin 2
    np.testing.assert_allclose(got[0, 4:7], [1.0, 1.0, (10.0 - 0.4307273) / (EDGE_LIMIT - 0.4307273)], rtol=1e-4)
    assert got[0, 7] == 0.0


def test_config_round_trip_and_bad_bins():
    layer = NumericEncoding(bins=8, missing_indicators=False, name="n")
    again = NumericEncoding.from_config(layer.get_config())
    assert (again.bins, again.missing_indicators) == (8, False)
    with pytest.raises(ValueError, match="bins"):
        NumericEncoding(bins=1)
