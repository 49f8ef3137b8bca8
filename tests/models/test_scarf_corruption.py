"""Statistical tests of SCARF's corruption and feature bank, each shown able to fail.

A check returns a p-value; the real sampler must pass (p > 1e-3) and each deliberately
broken variant (the known mistakes: uniform min-max draws, an inverted mask, a
Bernoulli(c) mask instead of exactly q, always the same features, a feature-uniform but
non-uniform subset, values taken from the wrong column) must be rejected by the same
check (p < 1e-6). Seeds are fixed, so every outcome is deterministic.
"""
import itertools

import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

from scarfx.models.corruption import (
    ClassBank,
    FeatureBank,
    augment_with_corruption,
    FeatureCorruption,
    build_feature_bank,
    corrupt_features,
    corruption_count,
    sample_corruption_mask,
)
from scarfx.models.tabular_data import TabularData

N = 20_000
RATE = 0.6
SEED = tf.constant([3, 4], tf.int64)
CAT_P = np.array([0.7, 0.2, 0.08, 0.02])  # a skewed categorical marginal


def make_bank(n=5000, seed=0):
    """Three numeric columns (exponential, lognormal, normal) and two skewed categorical ones.

    M = 5 and c = 0.6 give q = 3, so an inverted mask (M - q = 2) changes the count."""
    rng = np.random.default_rng(seed)
    numeric = np.stack(
        [rng.exponential(2.0, n), rng.lognormal(0.0, 0.75, n), rng.normal(0.0, 1.0, n)], axis=1
    ).astype(np.float32)
    categorical = rng.choice(4, size=(n, 2), p=CAT_P).astype(np.int64)
    return numeric, categorical


def distinguishable_batch(n=N, dn=3, dc=2):
    """Anchor rows whose values no bank draw can take, so every replaced cell is visible."""
    return np.full((n, dn), -1000.0, np.float32), np.full((n, dc), 99, np.int64)


# ---- samplers: (numeric, categorical, bank_numeric, bank_categorical, rate, seed) -> (num', cat', mask)


def real_sampler(numeric, categorical, bank_numeric, bank_categorical, rate, seed):
    out_n, out_c, mask = corrupt_features(
        tf.constant(numeric), tf.constant(categorical), tf.constant(bank_numeric), tf.constant(bank_categorical),
        rate, seed,
    )
    return out_n.numpy(), out_c.numpy(), mask.numpy()


def _marginal_draws(numeric, categorical, bank_numeric, bank_categorical):
    """Every cell replaced by a correct marginal draw (the real sampler with every feature picked)."""
    n2, c2, _ = real_sampler(numeric, categorical, bank_numeric, bank_categorical, 1.0, tf.constant([7, 7], tf.int64))
    return n2, c2


def _apply(mask, numeric, categorical, replacement_n, replacement_c):
    dn = numeric.shape[1]
    return np.where(mask[:, :dn], replacement_n, numeric), np.where(mask[:, dn:], replacement_c, categorical), mask


def uniform_min_max_sampler(numeric, categorical, bank_numeric, bank_categorical, rate, seed):
    """The pytorch-scarf bug: replacements uniform between each column's min and max."""
    _, _, mask = real_sampler(numeric, categorical, bank_numeric, bank_categorical, rate, seed)
    rng = np.random.default_rng(0)
    uniform_n = rng.uniform(bank_numeric.min(0), bank_numeric.max(0), size=numeric.shape).astype(np.float32)
    uniform_c = rng.integers(bank_categorical.min(0), bank_categorical.max(0) + 1, size=categorical.shape)
    return _apply(mask, numeric, categorical, uniform_n, uniform_c)


def inverted_mask_sampler(numeric, categorical, bank_numeric, bank_categorical, rate, seed):
    """The other pytorch-scarf bug: corrupts the complement, M - q features."""
    _, _, mask = real_sampler(numeric, categorical, bank_numeric, bank_categorical, rate, seed)
    return _apply(~mask, numeric, categorical, *_marginal_draws(numeric, categorical, bank_numeric, bank_categorical))


def bernoulli_mask_sampler(numeric, categorical, bank_numeric, bank_categorical, rate, seed):
    """Each feature corrupted independently with probability c: right on average, count not fixed."""
    mask = np.random.default_rng(1).random((numeric.shape[0], numeric.shape[1] + categorical.shape[1])) < rate
    return _apply(mask, numeric, categorical, *_marginal_draws(numeric, categorical, bank_numeric, bank_categorical))


def first_features_sampler(numeric, categorical, bank_numeric, bank_categorical, rate, seed):
    """Always corrupts the same first q features: right count, wrong choice."""
    m = numeric.shape[1] + categorical.shape[1]
    mask = np.zeros((numeric.shape[0], m), bool)
    mask[:, :corruption_count(m, rate)] = True
    return _apply(mask, numeric, categorical, *_marginal_draws(numeric, categorical, bank_numeric, bank_categorical))


def cyclic_block_sampler(numeric, categorical, bank_numeric, bank_categorical, rate, seed):
    """q cyclically adjacent features from a random start: each feature equally likely,
    exactly q per row, but only M of the C(M, q) subsets ever occur."""
    m = numeric.shape[1] + categorical.shape[1]
    q = corruption_count(m, rate)
    start = np.random.default_rng(2).integers(m, size=(numeric.shape[0], 1))
    mask = (np.arange(m)[None, :] - start) % m < q
    return _apply(mask, numeric, categorical, *_marginal_draws(numeric, categorical, bank_numeric, bank_categorical))


def wrong_column_sampler(numeric, categorical, bank_numeric, bank_categorical, rate, seed):
    """An indexing slip: feature j's replacement comes from bank column j+1 (mod width)."""
    return real_sampler(
        numeric, categorical, np.roll(bank_numeric, -1, axis=1), np.roll(bank_categorical, -1, axis=1), rate, seed
    )


BROKEN = {
    "uniform_min_max": uniform_min_max_sampler,
    "inverted_mask": inverted_mask_sampler,
    "bernoulli_mask": bernoulli_mask_sampler,
    "first_features": first_features_sampler,
    "cyclic_block": cyclic_block_sampler,
    "wrong_column": wrong_column_sampler,
}


def run(sampler, rate=RATE, n=N):
    bank_n, bank_c = make_bank()
    numeric, categorical = distinguishable_batch(n)
    out_n, out_c, _ = sampler(numeric, categorical, bank_n, bank_c, rate, SEED)
    changed = np.concatenate([out_n != numeric, out_c != categorical], axis=1)
    return bank_n, bank_c, out_n, out_c, changed


# ---- the checks: each returns a p-value (large = consistent with the paper's definition)


def p_exact_count(sampler):
    """Exactness is deterministic: 1.0 if every row has exactly q corrupted features, else 0.0."""
    *_, changed = run(sampler)
    return 1.0 if np.all(changed.sum(axis=1) == corruption_count(changed.shape[1], RATE)) else 0.0


def p_uniform_feature_choice(sampler):
    """Chi-square: every feature is picked equally often."""
    *_, changed = run(sampler)
    return stats.chisquare(changed.sum(axis=0)).pvalue


def p_uniform_subsets(sampler):
    """Chi-square over all C(M, q) subsets: the corrupted set is a uniform q-subset."""
    *_, changed = run(sampler)
    m = changed.shape[1]
    q = corruption_count(m, RATE)
    codes = changed.astype(np.int64) @ (1 << np.arange(m))
    subsets = [sum(1 << j for j in c) for c in itertools.combinations(range(m), q)]
    counts = np.array([np.sum(codes == code) for code in subsets])
    if counts.sum() != len(codes):
        return 0.0  # some row's subset does not have q elements
    return stats.chisquare(counts).pvalue


def p_marginals(sampler):
    """Min over columns of KS (numeric) and chi-square (categorical) against the bank's marginal."""
    bank_n, bank_c, out_n, out_c, changed = run(sampler)
    dn = out_n.shape[1]
    if not np.all(changed.any(axis=0)):
        return 0.0  # some feature is never corrupted, so its marginal cannot match
    pvalues = []
    for j in range(dn):
        pvalues.append(stats.ks_2samp(out_n[changed[:, j], j], bank_n[:, j]).pvalue)
    for j in range(out_c.shape[1]):
        drawn = out_c[changed[:, dn + j], j]
        if drawn.min() < 0 or drawn.max() >= 4:
            return 0.0  # a value outside the marginal's support
        expected = np.bincount(bank_c[:, j], minlength=4) / len(bank_c)
        pvalues.append(stats.chisquare(np.bincount(drawn, minlength=4), expected * len(drawn)).pvalue)
    return min(pvalues)


@pytest.mark.parametrize("check", [p_exact_count, p_uniform_feature_choice, p_uniform_subsets, p_marginals])
def test_real_sampler_passes(check):
    assert check(real_sampler) > 1e-3


@pytest.mark.parametrize(
    "check,broken",
    [
        (p_exact_count, "inverted_mask"),
        (p_exact_count, "bernoulli_mask"),
        (p_uniform_feature_choice, "first_features"),
        (p_uniform_subsets, "first_features"),
        (p_uniform_subsets, "cyclic_block"),  # passes the per-feature check, fails this one
        (p_marginals, "uniform_min_max"),
        (p_marginals, "wrong_column"),
    ],
)
def test_same_checks_reject_broken_samplers(check, broken):
    assert check(BROKEN[broken]) < 1e-6


def test_drawn_values_do_not_look_uniform_min_max():
    """The draws are far from uniform on [min, max] (what the PyTorch port samples)."""
    bank_n, _, out_n, _, changed = run(real_sampler)
    drawn = out_n[changed[:, 0], 0]
    lo, hi = bank_n[:, 0].min(), bank_n[:, 0].max()
    assert stats.kstest(drawn, stats.uniform(lo, hi - lo).cdf).pvalue < 1e-6


@pytest.mark.parametrize(
    "dn,dc,rate,q",
    [(1, 0, 0.6, 1), (0, 1, 0.6, 1), (1, 1, 0.6, 1), (2, 1, 0.1, 1), (3, 2, 0.6, 3), (10, 5, 0.6, 9), (4, 6, 0.9, 9)],
)
def test_every_row_gets_exactly_q_corrupted_features(dn, dc, rate, q):
    """End to end through corrupt_features, for tiny M and for ⌊c·M⌋ = 0 (then q = 1)."""
    assert corruption_count(dn + dc, rate) == q
    rng = np.random.default_rng(0)
    bank_n = rng.normal(size=(300, dn)).astype(np.float32)
    bank_c = rng.integers(0, 5, size=(300, dc)).astype(np.int64)
    numeric, categorical = distinguishable_batch(2000, dn, dc)
    out_n, out_c, mask = real_sampler(numeric, categorical, bank_n, bank_c, rate, SEED)
    changed = np.concatenate([out_n != numeric, out_c != categorical], axis=1)
    np.testing.assert_array_equal(changed, mask)
    assert np.all(changed.sum(axis=1) == q)


@pytest.mark.parametrize("m,rate,q", [(1, 0.6, 1), (2, 0.6, 1), (5, 0.6, 3), (3, 0.1, 1), (100, 0.29, 29)])
def test_corruption_mask_count_is_floor_c_m_at_least_one(m, rate, q):
    assert corruption_count(m, rate) == q
    mask = sample_corruption_mask(tf.constant(500), m, q, SEED).numpy()
    assert mask.shape == (500, m) and np.all(mask.sum(axis=1) == q)


def test_anchor_is_unchanged_and_only_masked_cells_change():
    bank_n, bank_c = make_bank()
    numeric, categorical = make_bank(300, seed=9)
    before_n, before_c = numeric.copy(), categorical.copy()
    inputs = {"numeric": tf.constant(numeric), "categorical": tf.constant(categorical)}
    out_n, out_c, mask = corrupt_features(
        inputs["numeric"], inputs["categorical"], bank_n, bank_c, 0.5, SEED
    )
    np.testing.assert_array_equal(inputs["numeric"].numpy(), before_n)  # the anchor tensors
    np.testing.assert_array_equal(inputs["categorical"].numpy(), before_c)
    mask = mask.numpy()
    np.testing.assert_array_equal(out_n.numpy()[~mask[:, :3]], before_n[~mask[:, :3]])
    np.testing.assert_array_equal(out_c.numpy()[~mask[:, 3:]], before_c[~mask[:, 3:]])
    assert len({tuple(r) for r in mask}) > 1  # a fresh subset per row, not one for the batch


def test_same_seed_same_view_new_seed_new_view():
    bank_n, bank_c = make_bank()
    n, c = distinguishable_batch(1000)
    a = real_sampler(n, c, bank_n, bank_c, RATE, SEED)
    b = real_sampler(n, c, bank_n, bank_c, RATE, SEED)
    d = real_sampler(n, c, bank_n, bank_c, RATE, tf.constant([3, 5], tf.int64))
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[2], d[2])


def test_corruption_layer_keeps_bank_as_non_trainable_weights_and_matches_function():
    bank_n, bank_c = make_bank(100)
    bank = FeatureBank(bank_n, bank_c, rows_seen=100)
    layer = FeatureCorruption.from_bank(bank, RATE)
    assert not layer.trainable_weights and len(layer.non_trainable_weights) == 2
    np.testing.assert_array_equal(layer.bank_categorical.numpy(), bank_c)
    n, c = distinguishable_batch(64)
    out = layer({"numeric": tf.constant(n), "categorical": tf.constant(c)}, seed=SEED)
    expected = real_sampler(n, c, bank_n, bank_c, RATE, SEED)
    np.testing.assert_array_equal(out["numeric"].numpy(), expected[0])
    np.testing.assert_array_equal(out["categorical"].numpy(), expected[1])
    clone = FeatureCorruption.from_config(layer.get_config())
    assert (clone.bank_rows, clone.num_numeric, clone.num_categorical, clone.corruption_rate) == (100, 3, 2, RATE)


def test_corruption_runs_under_xla():
    bank_n, bank_c = make_bank(100)
    n, c = distinguishable_batch(64)
    fn = tf.function(lambda *args: corrupt_features(*args, RATE, SEED), jit_compile=True)
    out = fn(tf.constant(n), tf.constant(c), tf.constant(bank_n), tf.constant(bank_c))
    assert np.all(out[2].numpy().sum(axis=1) == corruption_count(5, RATE))


# ---- the feature bank: a uniform (reservoir) sample of rows


def _row_ids(n):
    return TabularData(np.arange(n, dtype=np.float32)[:, None], np.zeros((n, 0), np.int64), np.zeros(n, np.int64))


def reservoir_bank(data, size, seed):
    return build_feature_bank(data, size, seed, chunk_rows=64)  # many chunks: exercises the streaming path


def head_bank(data, size, seed):
    """Broken: the first `size` rows (a file's head is rarely a uniform sample)."""
    return FeatureBank(data.numeric[:size], data.categorical[:size], len(data))


def always_replace_bank(data, size, seed):
    """Broken reservoir: every new row replaces a random slot, so late rows dominate."""
    rng = np.random.default_rng(seed)
    bank = data.numeric[:size].copy()
    for t in range(size, len(data)):
        bank[rng.integers(size)] = data.numeric[t]
    return FeatureBank(bank, data.categorical[:size], len(data))


def p_bank_uniform(builder, n=600, size=60, repeats=300):
    """Chi-square: over many seeds, every row is in the bank equally often (size / n)."""
    data = _row_ids(n)
    counts = np.zeros(n)
    for seed in range(repeats):
        bank = builder(data, size, seed)
        assert len(bank) == size
        ids = bank.numeric[:, 0].astype(int)
        assert len(np.unique(ids)) == size  # a sample without replacement
        counts[ids] += 1
    return stats.chisquare(counts).pvalue


def test_reservoir_bank_is_a_uniform_sample():
    assert p_bank_uniform(reservoir_bank) > 1e-3


@pytest.mark.parametrize("broken", [head_bank, always_replace_bank])
def test_bank_check_rejects_biased_samples(broken):
    assert p_bank_uniform(broken) < 1e-6


def test_small_table_bank_is_the_whole_table():
    data = _row_ids(50)
    bank = build_feature_bank(data, 100, seed=0)
    assert bank.rows_seen == 50
    np.testing.assert_array_equal(bank.numeric, data.numeric)


def test_class_conditional_augmentation_draws_each_row_from_its_own_class_uniformly():
    """finetune_corruption_source=same_class: a corrupted cell takes the value of a uniformly
    drawn labelled training row of the same class, never of another class."""
    rng = np.random.default_rng(0)
    n, dn, dc = 3000, 4, 2
    labels = rng.integers(0, 3, n)
    labels[labels == 2] = 0  # class 2 has no rows: its range is empty and never drawn
    ids = np.arange(n)
    # Every cell names its row, and the sign names the row's class (class 0 negative).
    numeric = (np.where(labels == 0, -1, 1) * (ids + 1))[:, None].repeat(dn, 1).astype(np.float32)
    categorical = (labels * n + ids)[:, None].repeat(dc, 1).astype(np.int64)
    class_bank = ClassBank.from_labelled([(numeric, categorical, labels)], 3, 10_000, seed=0)
    np.testing.assert_array_equal(class_bank.counts, [np.sum(labels == 0), np.sum(labels == 1), 0])

    ds = tf.data.Dataset.from_tensor_slices(({"numeric": numeric, "categorical": categorical}, labels)).batch(500)
    drawn = []
    for inputs, y in augment_with_corruption(ds, class_bank, RATE, 1.0, seed=1).as_numpy_iterator():
        sign = np.where(y == 0, -1, 1)[:, None]
        assert (np.sign(inputs["numeric"]) == sign).all()
        assert (inputs["categorical"] // n == y[:, None]).all()
        drawn.append(np.abs(inputs["numeric"][y == 1]).ravel() - 1)
    # Corrupted cells of class-1 rows: uniform over the class-1 rows.
    class_one = np.flatnonzero(labels == 1)
    values = np.concatenate(drawn).astype(int)
    counts = np.bincount(values, minlength=n)[class_one]
    assert stats.chisquare(counts).pvalue > 1e-3
