"""SCARF's corruption: replace q = max(1, ⌊c·M⌋) of a row's M features by draws from their marginals.

The marginals are a bank of training rows (FeatureBank); for each corrupted cell a random
bank row's value of that feature is copied (NaN included, so missing cells stay possible).
Categorical features are corrupted as vocabulary ids, before embedding. Stateless random
ops keyed by (seed, step) let corruption run inside the XLA-compiled train step and keep
a run reproducible. Used by pretraining (FeatureCorruption) and fine-tuning augmentation.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Iterable

import keras
import numpy as np
import tensorflow as tf

from scarfx.models.tabular_data import TabularData


def corruption_count(num_features: int, corruption_rate: float) -> int:
    """q = max(1, ⌊c·M⌋); the epsilon keeps 0.29·100 at 29 despite float rounding."""
    return max(1, int(math.floor(corruption_rate * num_features + 1e-9)))


def _rng_key(seed) -> tf.Tensor:
    """A stateless-RNG key: an int (-> [seed, 0]) or anything shaped [2]."""
    if isinstance(seed, (int, np.integer)):
        seed = [int(seed), 0]
    return tf.cast(seed, tf.int64)


def sample_corruption_mask(batch_size, num_features: int, q: int, seed) -> tf.Tensor:
    """Bool [B, M] with exactly q True per row, the subset uniform over all q-subsets.

    The positions of the q largest of M i.i.d. uniforms form a uniformly random q-subset.
    Scattering top_k's *indices* (distinct within a row), rather than thresholding at
    the q-th largest value, keeps the count exact even when two float32 draws tie.
    Memory O(B·M); on XLA CPU this is ~3x cheaper than a double argsort.
    """
    noise = tf.random.stateless_uniform(tf.stack([batch_size, num_features]), seed=_rng_key(seed))
    chosen = tf.math.top_k(noise, k=q, sorted=False).indices  # [B, q]
    rows = tf.broadcast_to(tf.range(tf.shape(chosen)[0])[:, tf.newaxis], tf.shape(chosen))
    hits = tf.scatter_nd(tf.stack([rows, chosen], axis=-1), tf.ones_like(chosen), tf.shape(noise))
    return hits > 0


def corrupt_features(numeric, categorical, bank_numeric, bank_categorical, corruption_rate: float, seed,
                     row_ranges=None):
    """Returns (numeric', categorical', mask): SCARF's corrupted view of a batch.

    Pure tensor function. Each corrupted cell (row i, feature j) takes feature j's value
    from a uniformly drawn bank row, i.e. an independent draw from j's empirical
    marginal. `seed` is an int or a shape-[2] integer tensor (stateless RNG:
    reproducible and XLA-friendly). The inputs are not modified; unmasked cells are
    copied through. `row_ranges` ([B, 2] ints: first bank row, row count) limits row i's
    draws to its own slice of the bank (the rows of its class, for class-conditional
    augmentation); None draws from the whole bank.
    """
    dn, dc = numeric.shape[1], categorical.shape[1]
    m = dn + dc
    q = corruption_count(m, corruption_rate)
    mask_seed, rows_seed = tf.unstack(tf.random.experimental.stateless_split(_rng_key(seed), num=2))
    batch = tf.shape(numeric)[0]
    mask = sample_corruption_mask(batch, m, q, mask_seed)
    if row_ranges is None:
        bank_rows = tf.maximum(tf.shape(bank_numeric)[0], tf.shape(bank_categorical)[0])
        rows = tf.random.stateless_uniform(
            tf.stack([batch, m]), seed=rows_seed, minval=0, maxval=bank_rows, dtype=tf.int32
        )
    else:
        row_ranges = tf.cast(row_ranges, tf.int32)
        u = tf.random.stateless_uniform(tf.stack([batch, m]), seed=rows_seed)
        offset = tf.cast(u * tf.cast(row_ranges[:, 1:], tf.float32), tf.int32)
        rows = row_ranges[:, :1] + tf.minimum(offset, row_ranges[:, 1:] - 1)

    def replace(values, bank, rows_j, mask_j, width):
        if width == 0:
            return values
        # bank[rows_j[i, k], k] through one flat gather: no [B, M, M] intermediate.
        flat = tf.cast(rows_j, tf.int64) * width + tf.range(width, dtype=tf.int64)[tf.newaxis, :]
        drawn = tf.cast(tf.gather(tf.reshape(bank, [-1]), flat), values.dtype)
        return tf.where(mask_j, drawn, values)

    numeric_out = replace(numeric, bank_numeric, rows[:, :dn], mask[:, :dn], dn)
    categorical_out = replace(categorical, bank_categorical, rows[:, dn:], mask[:, dn:], dc)
    return numeric_out, categorical_out, mask


@dataclasses.dataclass
class FeatureBank:
    """A uniform sample of at most `size` training rows; its columns sample each marginal.

    Built by reservoir sampling (Algorithm R, vectorised per batch), so it can be filled
    from a stream of batches in bounded memory: every row seen has the same chance,
    size / rows_seen, of being in the bank.
    """

    numeric: np.ndarray  # float32 [S, Dn]
    categorical: np.ndarray  # int64 [S, Dc]
    rows_seen: int

    def __len__(self) -> int:
        return len(self.numeric)

    @classmethod
    def from_batches(cls, batches: Iterable[tuple[np.ndarray, np.ndarray]], size: int, seed: int) -> "FeatureBank":
        reservoir = Reservoir(size, seed)
        for num, cat in batches:
            reservoir.add(num, cat)
        return reservoir.bank()


class Reservoir:
    """Algorithm R over batches of rows, vectorised per batch: after any number of `add`s,
    every row seen has the same chance, size / rows_seen, of being in the sample."""

    def __init__(self, size: int, seed: int):
        if size < 1:
            raise ValueError(f"feature bank size must be >= 1, got {size}")
        self.size, self.rng = size, np.random.default_rng(seed)
        self.numeric = self.categorical = None
        self.filled = self.seen = 0

    def add(self, num, cat) -> None:
        num, cat = np.asarray(num, np.float32), np.asarray(cat, np.int64)
        size = self.size
        if self.numeric is None:
            self.numeric = np.empty((size, num.shape[1]), np.float32)
            self.categorical = np.empty((size, cat.shape[1]), np.int64)
        n = len(num)
        fill = min(n, size - self.filled)  # the first `size` rows go straight in
        self.numeric[self.filled:self.filled + fill] = num[:fill]
        self.categorical[self.filled:self.filled + fill] = cat[:fill]
        self.filled += fill
        # Row with global index t >= size replaces slot j ~ U{0..t} when j < size.
        t = self.seen + np.arange(fill, n)
        slots = self.rng.integers(0, t + 1)
        hit = np.flatnonzero(slots < size)
        if len(hit):
            # Sequential semantics: for a slot hit twice, the later row wins.
            last_first, first_pos = np.unique(slots[hit][::-1], return_index=True)
            keep = hit[len(hit) - 1 - first_pos]
            self.numeric[last_first], self.categorical[last_first] = num[fill:][keep], cat[fill:][keep]
        self.seen += n

    def bank(self) -> FeatureBank:
        if self.numeric is None or self.filled == 0:
            raise ValueError("cannot build a feature bank from no rows")
        return FeatureBank(self.numeric[:self.filled], self.categorical[:self.filled], self.seen)


def build_feature_bank(data: TabularData, size: int, seed: int, chunk_rows: int = 65_536) -> FeatureBank:
    """The bank for an in-memory table: all rows if N <= size, else a reservoir sample."""
    chunks = (
        (data.numeric[i:i + chunk_rows], data.categorical[i:i + chunk_rows])
        for i in range(0, len(data), chunk_rows)
    )
    return FeatureBank.from_batches(chunks, size, seed)


@keras.saving.register_keras_serializable(package="scarfx")
class FeatureCorruption(keras.layers.Layer):
    """SCARF's corruption as a layer; the bank is kept as non-trainable weights.

    call({"numeric", "categorical"}, seed) -> the corrupted dict; `seed` is a [2] int tensor.
    """

    def __init__(self, bank_rows: int, num_numeric: int, num_categorical: int, corruption_rate: float, **kwargs):
        super().__init__(**kwargs)
        self.bank_rows = int(bank_rows)
        self.num_numeric = int(num_numeric)
        self.num_categorical = int(num_categorical)
        self.corruption_rate = float(corruption_rate)
        self.bank_numeric = self.add_weight(
            shape=(self.bank_rows, self.num_numeric), dtype="float32", trainable=False, initializer="zeros",
            name="bank_numeric",
        )
        self.bank_categorical = self.add_weight(
            shape=(self.bank_rows, self.num_categorical), dtype="int64", trainable=False, initializer="zeros",
            name="bank_categorical",
        )

    @classmethod
    def from_bank(cls, bank: FeatureBank, corruption_rate: float, **kwargs) -> "FeatureCorruption":
        layer = cls(len(bank), bank.numeric.shape[1], bank.categorical.shape[1], corruption_rate, **kwargs)
        layer.set_bank(bank)
        return layer

    def set_bank(self, bank: FeatureBank) -> None:
        self.bank_numeric.assign(np.asarray(bank.numeric, np.float32))
        self.bank_categorical.assign(np.asarray(bank.categorical, np.int64))

    def call(self, inputs, seed):
        numeric, categorical, _ = corrupt_features(
            inputs["numeric"], inputs["categorical"], self.bank_numeric, self.bank_categorical,
            self.corruption_rate, seed,
        )
        return {"numeric": numeric, "categorical": categorical}

    def get_config(self):
        return {
            **super().get_config(),
            "bank_rows": self.bank_rows,
            "num_numeric": self.num_numeric,
            "num_categorical": self.num_categorical,
            "corruption_rate": self.corruption_rate,
        }


@dataclasses.dataclass
class ClassBank:
    """Per-class banks stacked into one: class k's rows are [offsets[k], offsets[k] + counts[k])."""

    bank: FeatureBank
    offsets: np.ndarray  # int32 [K]
    counts: np.ndarray  # int32 [K]; 0 for a class with no rows

    @classmethod
    def from_labelled(cls, batches: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]], num_classes: int,
                      size: int, seed: int) -> "ClassBank":
        """A reservoir of at most `size` rows per class, filled in one pass over (numeric,
        categorical, labels) batches: memory is bounded by the reservoirs, not the rows."""
        reservoirs = [Reservoir(size, seed + k) for k in range(num_classes)]
        for numeric, categorical, labels in batches:
            labels = np.asarray(labels)
            for k, reservoir in enumerate(reservoirs):
                rows = labels == k
                if rows.any():
                    reservoir.add(np.asarray(numeric)[rows], np.asarray(categorical)[rows])
        parts, offsets, counts = [], [], []
        for reservoir in reservoirs:
            bank = reservoir.bank() if reservoir.filled else None
            offsets.append(sum(len(p) for p in parts))
            counts.append(len(bank) if bank is not None else 0)
            if bank is not None:
                parts.append(bank)
        if not parts:
            raise ValueError("cannot build a class bank from no labelled rows")
        stacked = FeatureBank(np.concatenate([p.numeric for p in parts]), np.concatenate([p.categorical for p in parts]),
                              sum(p.rows_seen for p in parts))
        return cls(stacked, np.asarray(offsets, np.int32), np.asarray(counts, np.int32))


def augment_with_corruption(ds: tf.data.Dataset, bank: "FeatureBank | ClassBank", corruption_rate: float,
                            row_fraction: float, seed: int) -> tf.data.Dataset:
    """Fine-tuning augmentation with SCARF's own corruption: in each (inputs, labels) batch,
    a `row_fraction` of the rows get ⌊c·M⌋ features redrawn from their marginals (the
    pretraining bank) and keep their label. The rest pass clean, so the classifier still
    sees the true joint. Stateless RNG keyed by (seed, batch number): reproducible.

    From a ClassBank, a row's features are redrawn from its own class's marginals
    (labelled rows only), so a corrupted row stays a plausible member of its class
    instead of carrying its label onto features drawn from the other classes."""
    ranges = None
    if isinstance(bank, ClassBank):
        ranges = tf.constant(np.stack([bank.offsets, bank.counts], axis=1))
        bank = bank.bank
    bank_numeric = tf.constant(bank.numeric)
    bank_categorical = tf.constant(bank.categorical)

    def corrupt(step, batch):
        inputs, labels = batch
        key = tf.stack([tf.constant(seed, tf.int64), step])
        corrupt_key, rows_key = tf.unstack(tf.random.experimental.stateless_split(key, num=2))
        row_ranges = None if ranges is None else tf.gather(ranges, tf.cast(labels, tf.int32))
        numeric, categorical, _ = corrupt_features(inputs["numeric"], inputs["categorical"], bank_numeric,
                                                   bank_categorical, corruption_rate, corrupt_key, row_ranges)
        chosen = tf.random.stateless_uniform(tf.shape(labels)[:1], seed=rows_key) < row_fraction
        return {"numeric": tf.where(chosen[:, tf.newaxis], numeric, inputs["numeric"]),
                "categorical": tf.where(chosen[:, tf.newaxis], categorical, inputs["categorical"])}, labels

    return ds.enumerate().map(corrupt, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
