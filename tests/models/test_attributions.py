"""Attributions must find the one feature the label depends on; random ones would not."""
import numpy as np
import pytest

from scarfx.models import attributions
from scarfx.models.network import build_classifier, build_encoder
from scarfx.models.scarf_config import ScarfConfig
from scarfx.models.tabular_data import FeatureLayout

ROWS = 600
LAYOUT = FeatureLayout(
    numeric_names=("num__noise_a", "num__signal", "num__noise_b"),
    categorical_names=("cat__colour", "cat__shape"),
    categorical_cardinalities=(4, 3),
)


@pytest.fixture(scope="module")
def trained():
    """A tiny classifier fit on data whose label is `signal > 0`; every other column is noise."""
    import keras

    rng = np.random.default_rng(0)
    numeric = rng.normal(size=(ROWS, 3)).astype(np.float32)
    categorical = np.stack([rng.integers(0, 4, ROWS), rng.integers(0, 3, ROWS)], axis=1).astype(np.int64)
    labels = (numeric[:, 1] > 0).astype(np.int64)
    keras.utils.set_random_seed(0)
    classifier = build_classifier(build_encoder(LAYOUT, ScarfConfig(encoder_depth=2, encoder_width=32)), 2)
    classifier.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy",
                       metrics=["accuracy"])
    history = classifier.fit({"numeric": numeric, "categorical": categorical}, labels,
                             epochs=15, batch_size=64, verbose=0)
    assert history.history["accuracy"][-1] > 0.9, "the tiny model did not learn the synthetic rule"
    matrix, names = attributions.feature_matrix({"numeric": numeric, "categorical": categorical}, LAYOUT)
    return classifier, matrix, names


def test_feature_matrix_maps_columns_to_raw_names():
    matrix, names = attributions.feature_matrix(
        {"numeric": np.zeros((2, 3)), "categorical": np.ones((2, 2), np.int64)}, LAYOUT
    )
    assert names == ["noise_a", "signal", "noise_b", "colour", "shape"]
    assert matrix.shape == (2, 5) and matrix[:, 3:].tolist() == [[1, 1], [1, 1]]


def test_signal_feature_ranks_first_by_a_wide_margin(trained):
    classifier, matrix, names = trained
    result = attributions.explain(
        attributions.classifier_predict_fn(classifier, LAYOUT), matrix, names, background_rows=48, explain_rows=64
    )
    ranking = result.global_importance()
    assert ranking[0][0] == "signal", ranking
    # Random attributions would put `signal` first one time in five, and never with a
    # 3x margin over the runner-up; the learned rule ignores every other column.
    assert ranking[0][1] > 3 * ranking[1][1], ranking
    # SHAP's efficiency property: contributions add up to prediction minus the base value.
    np.testing.assert_allclose(result.base_values + result.values.sum(axis=1), result.probabilities, atol=1e-4)
    assert result.top_features(0, k=1)[0][0] == "signal"


def test_missing_numeric_cells_are_explained_like_any_other_value():
    """Transform hands the model NaN for a missing numeric cell: masking must pass NaN
    through (or replace it) as a value, never spread it into other cells."""
    rng = np.random.default_rng(1)
    matrix = np.concatenate([rng.normal(size=(80, 3)), rng.integers(0, 3, size=(80, 2))], axis=1)
    matrix[rng.random(80) < 0.3, 1] = np.nan
    matrix[rng.random(80) < 0.3, 2] = np.nan
    names = ["noise_a", "signal", "noise_b", "colour", "shape"]

    def predict(m):  # only whether `signal` is missing matters
        p = np.where(np.isnan(m[:, 1]), 0.9, 0.2)
        return np.stack([1 - p, p], axis=1)

    result = attributions.explain(predict, matrix, names, background_rows=32, explain_rows=40)
    assert np.all(np.isfinite(result.values))
    assert result.global_importance()[0][0] == "signal"
    others = [i for i, n in enumerate(names) if n != "signal"]
    np.testing.assert_allclose(result.values[:, others], 0.0, atol=1e-12)
    np.testing.assert_allclose(result.base_values + result.values.sum(axis=1), result.probabilities, atol=1e-9)
    np.testing.assert_array_equal(np.isnan(result.feature_values), np.isnan(matrix[:40]))


def test_evaluation_plan_keeps_narrow_tables_as_they_were_and_bounds_wide_ones():
    # Up to 250 features: all 64 rows, 2 permutations (2M + 1 evaluations each).
    assert attributions.evaluation_plan(17, 64) == (64, 2 * 35)
    assert attributions.evaluation_plan(250, 64) == (64, 2 * 501)
    budget = attributions.EVALUATION_BUDGET
    previous_cost = 0
    for m in (100, 300, 1000, 3000):
        rows, evals = attributions.evaluation_plan(m, 64)
        assert evals % (2 * m + 1) == 0 and evals >= 2 * m + 1  # whole permutations, at least one
        assert attributions.MIN_EXPLAINED_ROWS <= rows <= 64
        assert rows * evals <= budget
        # Model cost ~ evaluations x features: linear in M, not quadratic.
        cost = rows * evals * m
        assert cost <= 1.05 * budget * m
        assert cost > previous_cost
        previous_cost = cost
    assert attributions.evaluation_plan(1000, 5) == (5, 2 * 2001)  # few rows: all their permutations


def test_a_wide_table_is_explained_within_the_budget_and_still_finds_the_signal():
    rng = np.random.default_rng(2)
    m = 400
    matrix = rng.normal(size=(80, m))
    names = [f"f{i}" for i in range(m)]
    calls = []

    def predict(x):  # only f7 matters
        calls.append(len(x))
        p = 1 / (1 + np.exp(-3 * x[:, 7]))
        return np.stack([1 - p, p], axis=1)

    result = attributions.explain(predict, matrix, names, background_rows=16, explain_rows=64)
    rows, evals = attributions.evaluation_plan(m, 64)
    assert result.values.shape == (rows, m)
    assert result.global_importance()[0][0] == "f7"
    np.testing.assert_allclose(result.base_values + result.values.sum(axis=1), result.probabilities, atol=1e-9)
    # Model rows scored: within 2x of the plan (shap adds its own evaluations per row), and a
    # fraction of the 10 permutations of every row the explainer took before the budget.
    assert sum(calls) <= 2 * rows * evals * 16
    assert sum(calls) < 0.25 * 64 * 10 * (2 * m + 1) * 16


def test_background_shrinks_past_100_features_so_a_rows_masked_copies_stay_small():
    assert [attributions.background_size(m) for m in (17, 100, 300, 1000, 3000)] == [32, 32, 10, 8, 8]
    assert attributions.background_size(17, rows=5) == 5  # never more than asked for
    rng = np.random.default_rng(3)
    m = 400
    matrix = rng.normal(size=(40, m))
    calls = []

    def predict(x):
        calls.append(len(x))
        p = 1 / (1 + np.exp(-x[:, 0]))
        return np.stack([1 - p, p], axis=1)

    attributions.explain(predict, matrix, [f"f{i}" for i in range(m)], background_rows=32, explain_rows=8)
    # The largest model call is one row's masked copies: (2M + 1) x the shrunk background.
    assert max(calls) <= (2 * m + 1) * attributions.background_size(m) < (2 * m + 1) * 32
