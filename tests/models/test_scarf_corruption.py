"""Statistical tests of SCARF's corruption, each shown able to fail on a broken sampler.

A check returns a p-value; the real sampler must pass (p > 1e-3) and each deliberately
broken variant (the known mistakes: uniform min-max draws, an inverted mask, a
Bernoulli(c) mask instead of exactly q) must be rejected by the same check (p < 1e-6).
"""
import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

from models.scarf import corrupt_features, corruption_count, sample_corruption_mask

N = 20_000
SEED = tf.constant([3, 4], tf.int64)


def make_bank(n=5000, seed=0):
    rng = np.random.default_rng(seed)
    numeric = np.stack([rng.exponential(2.0, n), rng.normal(0, 1, n)], axis=1).astype(np.float32)
    categorical = rng.choice(4, size=(n, 2), p=[0.7, 0.2, 0.08, 0.02]).astype(np.int64)
    return numeric, categorical


def real_sampler(numeric, categorical, bank_numeric, bank_categorical, rate, seed):
    out_n, out_c, mask = corrupt_features(
        tf.constant(numeric), tf.constant(categorical), tf.constant(bank_numeric), tf.constant(bank_categorical),
        rate, seed,
    )
    return out_n.numpy(), out_c.numpy(), mask.numpy()


def uniform_min_max_sampler(numeric, categorical, bank_numeric, bank_categorical, rate, seed):
    """The pytorch-scarf bug: numeric replacements uniform between the column's min and max."""
    out_n, out_c, mask = real_sampler(numeric, categorical, bank_numeric, bank_categorical, rate, seed)
    rng = np.random.default_rng(0)
    uniform = rng.uniform(bank_numeric.min(0), bank_numeric.max(0), size=numeric.shape).astype(np.float32)
    dn = numeric.shape[1]
    out_n = np.where(mask[:, :dn], uniform, numeric)
    uniform_c = rng.integers(categorical.min(), categorical.max() + 1, size=categorical.shape)
    out_c = np.where(mask[:, dn:], uniform_c, categorical)
    return out_n, out_c, mask


def inverted_mask_sampler(numeric, categorical, bank_numeric, bank_categorical, rate, seed):
    """The other pytorch-scarf bug: corrupts the complement, M - q features."""
    out_n, out_c, mask = real_sampler(numeric, categorical, bank_numeric, bank_categorical, rate, seed)
    dn = numeric.shape[1]
    inv = ~mask
    # Re-draw so the cells now marked really are replaced with marginal draws.
    n2, c2, _ = real_sampler(numeric, categorical, bank_numeric, bank_categorical, 0.999, seed)
    return np.where(inv[:, :dn], n2, numeric), np.where(inv[:, dn:], c2, categorical), inv


def bernoulli_mask_sampler(numeric, categorical, bank_numeric, bank_categorical, rate, seed):
    """Each feature corrupted independently with probability c: the count is not fixed."""
    rng = np.random.default_rng(1)
    mask = rng.random((numeric.shape[0], numeric.shape[1] + categorical.shape[1])) < rate
    n2, c2, _ = real_sampler(numeric, categorical, bank_numeric, bank_categorical, 0.999, seed)
    dn = numeric.shape[1]
    return np.where(mask[:, :dn], n2, numeric), np.where(mask[:, dn:], c2, categorical), mask


def first_features_sampler(numeric, categorical, bank_numeric, bank_categorical, rate, seed):
    """Always corrupts the same first q features: right count, wrong choice."""
    m = numeric.shape[1] + categorical.shape[1]
    q = corruption_count(m, rate)
    mask = np.zeros((numeric.shape[0], m), bool)
    mask[:, :q] = True
    n2, c2, _ = real_sampler(numeric, categorical, bank_numeric, bank_categorical, 0.999, seed)
    dn = numeric.shape[1]
    return np.where(mask[:, :dn], n2, numeric), np.where(mask[:, dn:], c2, categorical), mask


BROKEN = {
    "uniform_min_max": uniform_min_max_sampler,
    "inverted_mask": inverted_mask_sampler,
    "bernoulli_mask": bernoulli_mask_sampler,
    "first_features": first_features_sampler,
}


def batch(n=N, seed=5):
    """Anchor rows whose values are distinguishable from any bank draw (so changes are visible)."""
    numeric = np.full((n, 2), -1000.0, np.float32)
    categorical = np.full((n, 2), 99, np.int64)
    return numeric, categorical


def run(sampler, rate=0.6):
    bank_n, bank_c = make_bank()
    numeric, categorical = batch()
    out_n, out_c, mask = sampler(numeric, categorical, bank_n, bank_c, rate, SEED)
    return bank_n, bank_c, numeric, categorical, out_n, out_c, mask


# ---- the checks: each returns a p-value (1.0 = consistent with the paper's definition)


def p_exact_count(out_n, out_c, numeric, categorical, rate):
    changed = np.concatenate([out_n != numeric, out_c != categorical], axis=1)
    q = corruption_count(changed.shape[1], rate)
    return 1.0 if np.all(changed.sum(axis=1) == q) else 0.0


def p_uniform_feature_choice(out_n, out_c, numeric, categorical):
    changed = np.concatenate([out_n != numeric, out_c != categorical], axis=1)
    counts = changed.sum(axis=0)
    return stats.chisquare(counts).pvalue


def p_numeric_marginal(bank_n, out_n, numeric):
    changed = out_n[:, 0] != numeric[:, 0]
    return stats.ks_2samp(out_n[changed, 0], bank_n[:, 0]).pvalue


def p_categorical_marginal(bank_c, out_c, categorical):
    changed = out_c[:, 0] != categorical[:, 0]
    drawn = out_c[changed, 0]
    expected = np.bincount(bank_c[:, 0], minlength=4) / len(bank_c)
    observed = np.bincount(drawn, minlength=4)[:4]
    if observed.sum() != len(drawn):
        return 0.0  # a value outside the marginal's support
    return stats.chisquare(observed, expected * len(drawn)).pvalue


def count_p(sampler):
    _, _, numeric, categorical, out_n, out_c, _ = run(sampler)
    return p_exact_count(out_n, out_c, numeric, categorical, 0.6)


def choice_p(sampler):
    _, _, numeric, categorical, out_n, out_c, _ = run(sampler)
    return p_uniform_feature_choice(out_n, out_c, numeric, categorical)


def marginal_p(sampler):
    bank_n, bank_c, numeric, categorical, out_n, out_c, _ = run(sampler)
    return min(p_numeric_marginal(bank_n, out_n, numeric), p_categorical_marginal(bank_c, out_c, categorical))


@pytest.mark.parametrize("check", [count_p, choice_p, marginal_p])
def test_real_sampler_passes(check):
    assert check(real_sampler) > 1e-3


@pytest.mark.parametrize(
    "check,broken",
    [
        (count_p, "inverted_mask"),
        (count_p, "bernoulli_mask"),
        (choice_p, "first_features"),
        (marginal_p, "uniform_min_max"),
    ],
)
def test_same_checks_reject_broken_samplers(check, broken):
    assert check(BROKEN[broken]) < 1e-6


@pytest.mark.parametrize("m,rate,q", [(1, 0.6, 1), (2, 0.6, 1), (5, 0.6, 3), (10, 0.6, 6), (3, 0.1, 1), (100, 0.29, 29)])
def test_corruption_count_is_floor_c_m_at_least_one(m, rate, q):
    assert corruption_count(m, rate) == q
    mask = sample_corruption_mask(tf.constant(500), m, q, SEED).numpy()
    assert mask.shape == (500, m) and np.all(mask.sum(axis=1) == q)


def test_anchor_is_unchanged_and_rows_draw_fresh_subsets():
    bank_n, bank_c = make_bank()
    numeric, categorical = make_bank(300, seed=9)
    before_n, before_c = numeric.copy(), categorical.copy()
    _, _, mask = real_sampler(numeric, categorical, bank_n, bank_c, 0.5, SEED)
    np.testing.assert_array_equal(numeric, before_n)
    np.testing.assert_array_equal(categorical, before_c)
    assert len({tuple(r) for r in mask}) > 1  # not the same subset for every row


def test_only_numeric_or_only_categorical_features():
    bank_n, bank_c = make_bank()
    n, c = batch(1000)
    out_n, out_c, mask = real_sampler(n, c[:, :0], bank_n, bank_c[:, :0], 0.6, SEED)
    assert out_c.shape == (1000, 0) and np.all((out_n != n).sum(axis=1) == 1)
    out_n, out_c, mask = real_sampler(n[:, :0], c, bank_n[:, :0], bank_c, 0.6, SEED)
    assert out_n.shape == (1000, 0) and np.all((out_c != c).sum(axis=1) == 1)


def test_same_seed_same_view_new_seed_new_view():
    bank_n, bank_c = make_bank()
    n, c = batch(1000)
    a = real_sampler(n, c, bank_n, bank_c, 0.6, SEED)
    b = real_sampler(n, c, bank_n, bank_c, 0.6, SEED)
    d = real_sampler(n, c, bank_n, bank_c, 0.6, tf.constant([3, 5], tf.int64))
    np.testing.assert_array_equal(a[0], b[0])
    assert not np.array_equal(a[2], d[2])
