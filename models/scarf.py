"""SCARF (Bahri et al., arXiv 2106.15147) in Keras: contrastive pretraining, then fine-tuning.

Pretraining view: for every row, a fresh uniform subset of exactly q = max(1, ⌊c·M⌋) of
its M features is replaced by values drawn from each feature's empirical marginal (a
bank of training rows: for each corrupted cell, a random bank row's value of that
feature). Categorical features are corrupted as vocabulary ids, before embedding. The
clean row is the anchor and is never altered. Encoder f and head g map both views;
InfoNCE (Algorithm 1) pulls a row towards its own corrupted view and away from the
batch's other corrupted views. Then g is dropped and f plus a softmax classifier are
fine-tuned on labelled rows (label >= 0) only.

Randomness: weights and tf.data shuffling follow `ScarfConfig.seed` (via
`keras.utils.set_random_seed`); corruption uses stateless random ops keyed by
(seed, optimizer step), so it runs inside the XLA-compiled train step and a run is
reproducible; the fixed validation pairs use the key (seed, -1), which no step uses.

Early stopping (patience `config.patience`, best weights restored): pretraining on the
InfoNCE of fixed corrupted validation pairs; fine-tuning on the validation log-loss of
a stratified labelled split (or of each fold, for an ensemble of K members).

Numeric inputs may be NaN (a missing cell): corruption copies NaN like any value, and
the encoder's NumericEncoding layer imputes it and adds a missing indicator.

This module knows nothing of TFX: it takes arrays, or a tf.data stream of batches (StreamedTable),
and returns a Keras classifier.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import os
import time
from typing import Callable, Iterable

import keras
import numpy as np
import tensorflow as tf

from models.distribution import make_strategy
from models.numeric_encoding import NumericEncoding
from models.scarf_config import FINETUNE_MONITORS, ScarfConfig

__all__ = [
    "ScarfConfig", "FeatureLayout", "TabularData", "TrainingResult", "FeatureBank", "TableSurvey", "TableSource",
    "InMemoryTable", "StreamedTable", "as_source", "row_hash_unit",
    "corruption_count", "sample_corruption_mask", "corrupt_features", "build_feature_bank",
    "FeatureCorruption", "embedding_dim", "TabularEmbedding", "L2Normalize", "build_encoder",
    "build_projection_head", "build_classifier", "info_nce_loss", "ScarfPretrainer",
    "make_fixed_validation_pairs", "split_rows", "stratified_folds", "fine_tuning_splits", "average_classifiers", "BestEpochStopping", "check_inputs", "pretrain", "fine_tune",
    "train_scarf_classifier",
]


@dataclasses.dataclass(frozen=True)
class FeatureLayout:
    numeric_names: tuple[str, ...]
    categorical_names: tuple[str, ...]
    categorical_cardinalities: tuple[int, ...]  # ids lie in [0, cardinality)

    @property
    def num_features(self) -> int:
        return len(self.numeric_names) + len(self.categorical_names)


@dataclasses.dataclass
class TabularData:
    numeric: np.ndarray  # float32 [N, Dn]   (Dn may be 0); NaN = missing
    categorical: np.ndarray  # int64 [N, Dc]   (Dc may be 0)
    labels: np.ndarray  # int64 [N]; -1 = unlabelled

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, rows: np.ndarray) -> "TabularData":
        return TabularData(self.numeric[rows], self.categorical[rows], self.labels[rows])

    def inputs(self) -> dict[str, np.ndarray]:
        return {"numeric": self.numeric, "categorical": self.categorical}


@dataclasses.dataclass
class TrainingResult:
    classifier: keras.Model  # {"numeric", "categorical"} -> probabilities float32 [B, K]
    pretrain_history: dict[str, list[float]]  # per epoch: loss, val_loss (InfoNCE), train_seconds
    finetune_history: dict[str, list[float]]  # first member, per epoch: loss, accuracy, val_loss, ...
    summary: dict  # JSON-serialisable counts, best epochs, timings
    encoder: keras.Model | None = None  # the pretrained f (members fine-tune copies); saved for warm starts


# --------------------------------------------------------------------------- corruption


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


def corrupt_features(numeric, categorical, bank_numeric, bank_categorical, corruption_rate: float, seed):
    """Returns (numeric', categorical', mask): SCARF's corrupted view of a batch.

    Pure tensor function. Each corrupted cell (row i, feature j) takes feature j's value
    from a uniformly drawn bank row, i.e. an independent draw from j's empirical
    marginal. `seed` is an int or a shape-[2] integer tensor (stateless RNG:
    reproducible and XLA-friendly). The inputs are not modified; unmasked cells are
    copied through.
    """
    dn, dc = numeric.shape[1], categorical.shape[1]
    m = dn + dc
    q = corruption_count(m, corruption_rate)
    mask_seed, rows_seed = tf.unstack(tf.random.experimental.stateless_split(_rng_key(seed), num=2))
    batch = tf.shape(numeric)[0]
    mask = sample_corruption_mask(batch, m, q, mask_seed)
    bank_rows = tf.maximum(tf.shape(bank_numeric)[0], tf.shape(bank_categorical)[0])
    rows = tf.random.stateless_uniform(
        tf.stack([batch, m]), seed=rows_seed, minval=0, maxval=bank_rows, dtype=tf.int32
    )

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
        if size < 1:
            raise ValueError(f"feature bank size must be >= 1, got {size}")
        rng = np.random.default_rng(seed)
        numeric = categorical = None
        filled = seen = 0
        for num, cat in batches:
            num, cat = np.asarray(num, np.float32), np.asarray(cat, np.int64)
            if numeric is None:
                numeric = np.empty((size, num.shape[1]), np.float32)
                categorical = np.empty((size, cat.shape[1]), np.int64)
            n = len(num)
            fill = min(n, size - filled)  # the first `size` rows go straight in
            numeric[filled:filled + fill], categorical[filled:filled + fill] = num[:fill], cat[:fill]
            filled += fill
            # Row with global index t >= size replaces slot j ~ U{0..t} when j < size.
            t = seen + np.arange(fill, n)
            slots = rng.integers(0, t + 1)
            hit = np.flatnonzero(slots < size)
            if len(hit):
                # Sequential semantics: for a slot hit twice, the later row wins.
                last_first, first_pos = np.unique(slots[hit][::-1], return_index=True)
                keep = hit[len(hit) - 1 - first_pos]
                numeric[last_first], categorical[last_first] = num[fill:][keep], cat[fill:][keep]
            seen += n
        if numeric is None or filled == 0:
            raise ValueError("cannot build a feature bank from no rows")
        return cls(numeric[:filled], categorical[:filled], seen)


def build_feature_bank(data: TabularData, size: int, seed: int, chunk_rows: int = 65_536) -> FeatureBank:
    """The bank for an in-memory table: all rows if N <= size, else a reservoir sample."""
    chunks = (
        (data.numeric[i:i + chunk_rows], data.categorical[i:i + chunk_rows])
        for i in range(0, len(data), chunk_rows)
    )
    return FeatureBank.from_batches(chunks, size, seed)


# --------------------------------------------------------------------------- row sources


@dataclasses.dataclass
class TableSurvey:
    """What one pass over a table finds: counts, the feature bank, and every split's size."""

    rows: int
    labelled: int
    bank: FeatureBank | None
    pretrain_split: tuple[int, int]  # (train, validation) rows; validation 0 = no early stopping
    finetune_splits: list[tuple[int, int]]  # per ensemble member


class TableSource:
    """Training rows as tf.data, read afresh on every pass, in a fixed order.

    `survey` reads the table once (checks, counts, the reservoir bank); the other methods
    then give each stage's rows, unbatched: pretraining's train/validation rows (input
    dicts) and, per ensemble member, its labelled train/validation rows ((inputs, label)).
    How rows are assigned to splits is the subclass's: an in-memory table uses seeded
    permutations of its row indices, a stream a hash of each row's position.
    """

    def shuffle_buffer(self, rows: int, config: ScarfConfig) -> int:
        """Rows in the shuffle buffer: a stream's is bounded by `config.shuffle_buffer`."""
        return max(1, min(rows, config.shuffle_buffer))

    def survey(self, layout: FeatureLayout, num_classes: int, config: ScarfConfig, with_bank: bool) -> TableSurvey:
        raise NotImplementedError

    def pretrain_rows(self, validation: bool) -> tf.data.Dataset:
        raise NotImplementedError

    def labelled_rows(self, member: int, validation: bool) -> tf.data.Dataset:
        raise NotImplementedError

    def unlabelled_batches(self, batch_size: int) -> tf.data.Dataset:
        """Input dicts of the unlabelled rows, batched (for pseudo-labelling)."""
        raise NotImplementedError


class InMemoryTable(TableSource):
    """A TabularData as a source. Its splits are `split_rows` / `fine_tuning_splits` of the
    row indices, and each split is shuffled whole, as the arrays always were trained."""

    def __init__(self, data: TabularData):
        self.data = TabularData(np.asarray(data.numeric, np.float32), np.asarray(data.categorical, np.int64),
                                np.asarray(data.labels, np.int64))
        self._pretrain = self._finetune = None

    def shuffle_buffer(self, rows, config):
        return max(1, rows)  # the table is in memory anyway: shuffled whole, as always

    def survey(self, layout, num_classes, config, with_bank):
        check_inputs(self.data, layout, num_classes, config)
        bank = build_feature_bank(self.data, config.feature_bank_size, config.seed) if with_bank else None
        rng = np.random.default_rng(config.seed)
        self._pretrain = split_rows(len(self.data), config.validation_fraction, rng)
        self._pretrain = (self._pretrain[0], self._pretrain[1][:config.max_validation_rows])
        self._labelled = self.data.take(np.flatnonzero(self.data.labels >= 0))
        self._finetune = [(train, val[:config.max_validation_rows])
                          for train, val in fine_tuning_splits(self._labelled.labels, config)]
        return TableSurvey(len(self.data), len(self._labelled), bank,
                           (len(self._pretrain[0]), len(self._pretrain[1])),
                           [(len(t), len(v)) for t, v in self._finetune])

    def pretrain_rows(self, validation):
        return tf.data.Dataset.from_tensor_slices(self.data.take(self._pretrain[int(validation)]).inputs())

    def labelled_rows(self, member, validation):
        part = self._labelled.take(self._finetune[member][int(validation)])
        return tf.data.Dataset.from_tensor_slices((part.inputs(), part.labels))

    def unlabelled_batches(self, batch_size):
        unlabelled = self.data.take(np.flatnonzero(self.data.labels < 0))
        return tf.data.Dataset.from_tensor_slices(unlabelled.inputs()).batch(batch_size)


# Salts of the row hashes that assign a streamed row to its splits.
_PRETRAIN_SALT, _FINETUNE_SALT = "pretrain", "finetune"
_HASH_BUCKETS = 1 << 30


def row_hash_unit(rows: tf.Tensor, seed: int, salt: str) -> tf.Tensor:
    """A float64 in [0, 1) per row index: a fixed function of (seed, salt, row), so a
    streamed row lands in the same split on every pass without an index held in memory."""
    keys = tf.strings.join([f"{seed}:{salt}:", tf.strings.as_string(rows)])
    return tf.cast(tf.strings.to_hash_bucket_fast(keys, _HASH_BUCKETS), tf.float64) / _HASH_BUCKETS


def _check_batch(numeric: np.ndarray, categorical: np.ndarray, labels: np.ndarray, layout: FeatureLayout,
                 num_classes: int) -> None:
    """check_inputs' per-row checks, for one batch of a stream."""
    dn, dc = len(layout.numeric_names), len(layout.categorical_names)
    if numeric.shape[1:] != (dn,) or categorical.shape[1:] != (dc,):
        raise ValueError(f"expected numeric [B, {dn}] and categorical [B, {dc}], "
                         f"got {numeric.shape} and {categorical.shape}")
    if dn and np.any(np.isinf(numeric)):
        raise ValueError("numeric features must be finite or NaN (missing), not inf")
    if dc and len(categorical):
        cards = np.asarray(layout.categorical_cardinalities)
        bad = np.flatnonzero((categorical.min(axis=0) < 0) | (categorical.max(axis=0) >= cards))
        if len(bad):
            raise ValueError(f"categorical feature {layout.categorical_names[bad[0]]!r} has ids outside "
                             f"[0, {cards[bad[0]]})")
    if np.any((labels < -1) | (labels >= num_classes)):
        raise ValueError(f"labels must lie in [0, {num_classes}) or be -1 (unlabelled)")


class StreamedTable(TableSource):
    """A table read as a stream of batches, e.g. the Trainer's transformed TFRecords.

    `make_batches()` returns a fresh one-pass dataset of {"numeric" float32 [B, Dn],
    "categorical" int64 [B, Dc], "labels" int64 [B]} in a fixed order. Memory holds the
    bank, the shuffle buffer (`config.shuffle_buffer` rows) and the validation pairs
    (at most `config.max_validation_rows`), whatever the row count. A row's splits follow
    from a hash of its position in the stream: pretraining validation with probability
    `validation_fraction`; fine-tuning fold `hash mod K` (or a `validation_fraction`
    holdout when there are too few labelled rows for K folds of 4+).
    """

    def __init__(self, make_batches: Callable[[], tf.data.Dataset]):
        self.make_batches = make_batches
        self._config = None
        self._folds = 0

    def _annotated(self) -> tf.data.Dataset:
        """Batches with each row's position ("row") and its two split hashes."""
        seed = self._config.seed

        def annotate(offset, batch):
            n = tf.shape(batch["labels"], out_type=tf.int64)[0]
            rows = offset + tf.range(n)
            return offset + n, {**batch, "pretrain_u": row_hash_unit(rows, seed, _PRETRAIN_SALT),
                                "finetune_u": row_hash_unit(rows, seed + 1, _FINETUNE_SALT)}

        return self.make_batches().scan(tf.constant(0, tf.int64), annotate)

    def _in_validation(self, batch, member: int):
        """Fine-tuning validation membership of labelled rows, for `member`."""
        if self._folds:
            return tf.cast(tf.floor(batch["finetune_u"] * self._folds), tf.int32) == member
        return batch["finetune_u"] < self._config.validation_fraction

    def survey(self, layout, num_classes, config, with_bank):
        check_inputs(None, layout, num_classes, config)
        self._config = config
        k = max(1, config.ensemble_size)
        counts = {"rows": 0, "labelled": 0, "pretrain_validation": 0, "holdout": 0, "folds": np.zeros(k, np.int64)}

        def checked():
            for batch in self._annotated().as_numpy_iterator():
                numeric, categorical, labels = batch["numeric"], batch["categorical"], batch["labels"]
                _check_batch(numeric, categorical, labels, layout, num_classes or 1 << 62)
                u = batch["finetune_u"][labels >= 0]
                counts["rows"] += len(labels)
                counts["labelled"] += len(u)
                counts["pretrain_validation"] += int((batch["pretrain_u"] < config.validation_fraction).sum())
                counts["holdout"] += int((u < config.validation_fraction).sum())
                counts["folds"] += np.bincount(np.floor(u * k).astype(np.int64), minlength=k)[:k]
                yield numeric, categorical

        if with_bank:
            bank = FeatureBank.from_batches(checked(), config.feature_bank_size, config.seed)
        else:
            bank = None
            for _ in checked():
                pass
        n, labelled = counts["rows"], counts["labelled"]
        if n == 0:
            raise ValueError("no rows to train on")
        if labelled == 0 and num_classes is not None:
            raise ValueError("no labelled rows to fine-tune on")
        cap = config.max_validation_rows
        self._folds = k if k > 1 and labelled >= 4 * k else 0
        if self._folds:
            self._holdout = True
            splits = [(labelled - int(v), min(int(v), cap)) for v in counts["folds"]]
        else:
            val = counts["holdout"]
            self._holdout = val >= 2 and labelled - val >= 2
            splits = [(labelled - val, min(val, cap)) if self._holdout else (labelled, 0)]
        val = counts["pretrain_validation"]
        self._pretrain_holdout = val >= 2 and n - val >= 2
        pretrain_split = (n - val, min(val, cap)) if self._pretrain_holdout else (n, 0)
        return TableSurvey(n, labelled, bank, pretrain_split, splits)

    def _rows(self, keep, with_labels: bool) -> tf.data.Dataset:
        """The rows `keep(batch)` selects, unbatched: input dicts, or (inputs, label) pairs.
        Selection and restructuring run per batch; only the result is unbatched."""
        def select(batch):
            mask = keep(batch)
            inputs = {k: tf.boolean_mask(batch[k], mask) for k in ("numeric", "categorical")}
            return (inputs, tf.boolean_mask(batch["labels"], mask)) if with_labels else inputs

        return self._annotated().map(select, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).unbatch()

    def pretrain_rows(self, validation):
        fraction = self._config.validation_fraction

        def keep(batch):
            if not self._pretrain_holdout:
                return tf.fill(tf.shape(batch["labels"]), not validation)
            return (batch["pretrain_u"] < fraction) == validation

        ds = self._rows(keep, with_labels=False)
        return ds.take(self._config.max_validation_rows) if validation else ds

    def labelled_rows(self, member, validation):
        def keep(batch):
            labelled = batch["labels"] >= 0
            if not self._holdout:
                return labelled & tf.constant(not validation)
            return labelled & (self._in_validation(batch, member) == validation)

        ds = self._rows(keep, with_labels=True)
        return ds.take(self._config.max_validation_rows) if validation else ds

    def unlabelled_batches(self, batch_size):
        return self._rows(lambda batch: batch["labels"] < 0, with_labels=False).batch(batch_size)


def as_source(data: "TabularData | TableSource") -> TableSource:
    return data if isinstance(data, TableSource) else InMemoryTable(data)


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


# --------------------------------------------------------------------------- network


def embedding_dim(cardinality: int) -> int:
    """fast.ai's rule round(1.6·card^0.56), clipped to [2, 16]: small vocabularies get
    small embeddings, and no categorical feature outweighs the numeric ones in the MLP's input."""
    return int(min(16, max(2, round(1.6 * cardinality**0.56))))


@keras.saving.register_keras_serializable(package="scarfx")
class TabularEmbedding(keras.layers.Layer):
    """Embeds each categorical id column and concatenates them after the numeric columns."""

    def __init__(self, cardinalities, **kwargs):
        super().__init__(**kwargs)
        self.cardinalities = tuple(int(c) for c in cardinalities)
        self.embeddings = [
            keras.layers.Embedding(card, embedding_dim(card), name=f"embedding_{i}")
            for i, card in enumerate(self.cardinalities)
        ]

    def call(self, numeric, categorical):
        parts = [tf.cast(numeric, self.compute_dtype)]
        for i, embedding in enumerate(self.embeddings):
            parts.append(embedding(categorical[:, i]))
        return tf.concat(parts, axis=-1)

    def get_config(self):
        return {**super().get_config(), "cardinalities": list(self.cardinalities)}


@keras.saving.register_keras_serializable(package="scarfx")
class L2Normalize(keras.layers.Layer):
    """Projects embeddings onto the unit sphere, so dot products are cosine similarities."""

    def __init__(self, epsilon: float = 1e-12, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = float(epsilon)

    def call(self, x):
        return tf.math.l2_normalize(x, axis=-1, epsilon=self.epsilon)

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}


def model_inputs(layout: FeatureLayout) -> dict[str, keras.KerasTensor]:
    return {
        "numeric": keras.Input((len(layout.numeric_names),), dtype="float32", name="numeric"),
        "categorical": keras.Input((len(layout.categorical_names),), dtype="int64", name="categorical"),
    }


def build_encoder(layout: FeatureLayout, config: ScarfConfig, name: str = "encoder") -> keras.Model:
    """f: encoded numeric features + per-feature embeddings, then `encoder_depth` ReLU
    layers of `encoder_width` (each followed by dropout when `config.dropout` > 0)."""
    inputs = model_inputs(layout)
    numeric = NumericEncoding(config.numeric_bins, config.missing_indicators, name="numeric_encoding")(
        inputs["numeric"]
    )
    x = TabularEmbedding(layout.categorical_cardinalities, name="tabular_embedding")(numeric, inputs["categorical"])
    for i in range(config.encoder_depth):
        x = keras.layers.Dense(config.encoder_width, activation="relu", name=f"encoder_dense_{i}")(x)
        if config.dropout > 0:
            x = keras.layers.Dropout(config.dropout, name=f"encoder_dropout_{i}")(x)
    return keras.Model(inputs, x, name=name)


def build_projection_head(config: ScarfConfig) -> keras.Sequential:
    """g: `head_depth` dense layers of `head_width` (ReLU between them), output L2-normalised."""
    layers = [
        keras.layers.Dense(config.head_width, activation="relu", name=f"head_dense_{i}")
        for i in range(config.head_depth - 1)
    ]
    layers += [keras.layers.Dense(config.head_width, name=f"head_dense_{config.head_depth - 1}"), L2Normalize()]
    return keras.Sequential(layers, name="projection_head")


def build_classifier(encoder: keras.Model, num_classes: int, name: str = "scarf_classifier",
                     seed: int | None = None, linear_skip: bool = False) -> keras.Model:
    """f followed by a softmax layer; shares (does not copy) the encoder's weights.

    `linear_skip` adds a linear map of f's own input layer (encoded numerics, missing
    indicators, embeddings) to the logits: a wide-and-deep classifier, so a signal that
    is linear in the features (what logistic regression finds on few labels) does not
    have to survive four ReLU layers first. The encoder, SCARF-pretrained, is unchanged."""
    init = keras.initializers.GlorotUniform(seed=seed)
    if not linear_skip:
        probabilities = keras.layers.Dense(num_classes, activation="softmax", name="classifier",
                                           kernel_initializer=init)(encoder.output)
        return keras.Model(encoder.inputs, probabilities, name=name)
    logits = keras.layers.Dense(num_classes, name="classifier", kernel_initializer=init)(encoder.output)
    wide = keras.layers.Dense(num_classes, use_bias=False, name="classifier_linear_skip",
                              kernel_initializer=keras.initializers.Zeros())(encoder.get_layer("tabular_embedding").output)
    logits = keras.layers.Add(name="classifier_logits")([logits, wide])
    probabilities = keras.layers.Softmax(name="classifier_softmax")(logits)
    return keras.Model(encoder.inputs, probabilities, name=name)


def average_classifiers(members: list[keras.Model], layout: FeatureLayout) -> keras.Model:
    """One model whose output is the mean of the members' probabilities (an ensemble)."""
    if len(members) == 1:
        return members[0]
    inputs = model_inputs(layout)
    mean = keras.layers.Average(name="ensemble_mean")([member(inputs) for member in members])
    return keras.Model(inputs, mean, name="scarf_classifier")


# --------------------------------------------------------------------------- loss


def info_nce_loss(anchors, positives, temperature: float = 1.0, symmetric: bool = False):
    """InfoNCE of Algorithm 1: row i's positive is positives[i]; the batch's others are negatives.

    One [B, B] matmul of unit vectors (cosine similarities / τ), then sparse softmax
    cross-entropy with the diagonal as targets, averaged over rows. `symmetric` also adds
    the positives -> anchors direction (mean of both). Any B >= 1 works (B = 1 gives 0).
    """
    anchors = tf.math.l2_normalize(anchors, axis=-1)
    positives = tf.math.l2_normalize(positives, axis=-1)
    logits = tf.matmul(anchors, positives, transpose_b=True) / temperature
    targets = tf.range(tf.shape(logits)[0])
    loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(targets, logits))
    if symmetric:
        reverse = tf.nn.sparse_softmax_cross_entropy_with_logits(targets, tf.transpose(logits))
        loss = 0.5 * (loss + tf.reduce_mean(reverse))
    return loss


def _step_logs(logs: dict) -> dict:
    """A train/test step's logs. Under MultiWorkerMirroredStrategy Keras 3.6 reduces them
    across workers along axis 0, which a scalar lacks (tensorflow/tensorflow#72388):
    there, each goes out as a [1] vector, and the reduction gives back the scalar."""
    if isinstance(tf.distribute.get_strategy(), tf.distribute.MultiWorkerMirroredStrategy):
        return {k: tf.reshape(v, [1]) for k, v in logs.items()}
    return logs


@keras.saving.register_keras_serializable(package="scarfx")
class ScarfPretrainer(keras.Model):
    """Trains f and g with InfoNCE; each train step corrupts its own batch.

    Training data: batches of clean input dicts. The corruption key is
    (seed, optimizer step), so every step draws fresh views. Both views go through f and
    g as one [2B] batch (no batch-dependent layers, so this equals two passes, and one
    larger matmul is much faster on CPU). Validation data are fixed (clean, corrupted)
    pairs, so the early-stopping signal does not move with the corruption noise.
    """

    def __init__(self, encoder, head, corruption: FeatureCorruption, temperature=1.0, symmetric=False, seed=0,
                 **kwargs):
        super().__init__(**kwargs)
        self.encoder = encoder
        self.head = head
        self.corruption = corruption
        self.temperature = float(temperature)
        self.symmetric = bool(symmetric)
        self.seed = int(seed)
        self.loss_tracker = keras.metrics.Mean(name="loss")

    @property
    def metrics(self):
        return [self.loss_tracker]

    def call(self, inputs, training=False):
        return self.head(self.encoder(inputs, training=training), training=training)

    def contrastive_loss(self, clean, corrupted, training=False):
        """InfoNCE over the global batch. Under a strategy with several replicas, each
        replica embeds its share and all-gathers both views, so every row still has the
        whole global batch's B - 1 negatives, as on one device."""
        batch = tf.shape(clean["numeric"])[0]
        both = {k: tf.concat([clean[k], corrupted[k]], axis=0) for k in ("numeric", "categorical")}
        z = self(both, training=training)
        anchors, positives = z[:batch], z[batch:]
        context = tf.distribute.get_replica_context()
        if context is not None and context.num_replicas_in_sync > 1:
            anchors, positives = context.all_gather(anchors, axis=0), context.all_gather(positives, axis=0)
        return info_nce_loss(anchors, positives, self.temperature, self.symmetric)

    def train_step(self, data):
        # The key is (seed, step · replicas + replica): distinct per replica and step, and
        # (seed, step) on one device.
        context = tf.distribute.get_replica_context()
        replicas = context.num_replicas_in_sync if context is not None else 1
        replica = tf.cast(context.replica_id_in_sync_group, tf.int64) if replicas > 1 else 0
        step = tf.cast(self.optimizer.iterations, tf.int64) * replicas + replica
        seed = tf.stack([tf.constant(self.seed, tf.int64), step])
        corrupted = self.corruption(data, seed=seed)
        with tf.GradientTape() as tape:
            loss = self.contrastive_loss(data, corrupted, training=True)
            # Every replica holds the same global loss; all_gather's gradient sums the
            # replicas' upstream gradients and the optimizer sums theirs: scale by 1/R.
            scaled = loss / replicas if replicas > 1 else loss
        # Read after the forward pass: the first call is what builds the head's weights.
        variables = self.encoder.trainable_variables + self.head.trainable_variables
        self.optimizer.apply(tape.gradient(scaled, variables), variables)
        self.loss_tracker.update_state(loss)
        return _step_logs({"loss": self.loss_tracker.result()})

    def test_step(self, data):
        clean, corrupted = data
        self.loss_tracker.update_state(self.contrastive_loss(clean, corrupted, training=False))
        return _step_logs({"loss": self.loss_tracker.result()})

    def get_config(self):
        return {
            **super().get_config(),
            "encoder": keras.saving.serialize_keras_object(self.encoder),
            "head": keras.saving.serialize_keras_object(self.head),
            "corruption": keras.saving.serialize_keras_object(self.corruption),
            "temperature": self.temperature,
            "symmetric": self.symmetric,
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("encoder", "head", "corruption"):
            config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)


VALIDATION_SEED_STREAM = -1  # second half of the validation key; train steps use 0, 1, 2, ...


def make_fixed_validation_pairs(data: TabularData, bank: FeatureBank, corruption_rate: float, seed: int):
    """(clean, corrupted) input dicts of NumPy arrays, corrupted once with a fixed key.

    Built once before pretraining; every epoch's validation InfoNCE is computed on these
    same pairs, so it measures the model, not the luck of that epoch's corruption.
    """
    numeric, categorical, _ = corrupt_features(
        tf.constant(data.numeric, tf.float32), tf.constant(data.categorical, tf.int64),
        tf.constant(bank.numeric, tf.float32), tf.constant(bank.categorical, tf.int64),
        corruption_rate, tf.constant([seed, VALIDATION_SEED_STREAM], tf.int64),
    )
    return data.inputs(), {"numeric": numeric.numpy(), "categorical": categorical.numpy()}


# --------------------------------------------------------------------------- training


def split_rows(n: int, fraction: float, rng: np.random.Generator, labels: np.ndarray | None = None):
    """(train, validation) sorted row indices; stratified by label when labels are given.

    No validation rows (empty array) when the split would leave fewer than 2 on a side;
    the caller then trains for the maximum epochs without early stopping.
    """
    rows = rng.permutation(n)
    empty = np.array([], dtype=np.int64)
    if labels is None:
        n_val = int(round(n * fraction))
        if n_val < 2 or n - n_val < 2:
            return np.sort(rows), empty
        return np.sort(rows[n_val:]), np.sort(rows[:n_val])
    val = []
    for cls in np.unique(labels):
        members = rows[labels[rows] == cls]
        k = int(round(len(members) * fraction))
        if len(members) >= 2 and k == 0 and fraction > 0:
            k = 1  # every class with 2+ rows is represented in validation
        val.append(members[:k])
    val_rows = np.concatenate(val) if val else empty
    if len(val_rows) < 2 or n - len(val_rows) < 2:
        return np.sort(rows), empty
    return np.setdiff1d(rows, val_rows), np.sort(val_rows)


class _EpochTimer(keras.callbacks.Callback):
    """Wall seconds per epoch, and the part spent training (validation excluded)."""

    def on_train_begin(self, logs=None):
        self.epoch_seconds, self.train_seconds = [], []

    def on_epoch_begin(self, epoch, logs=None):
        self._start, self._validation = time.perf_counter(), 0.0

    def on_test_begin(self, logs=None):
        self._test_start = time.perf_counter()

    def on_test_end(self, logs=None):
        self._validation += time.perf_counter() - self._test_start

    def on_epoch_end(self, epoch, logs=None):
        total = time.perf_counter() - self._start
        self.epoch_seconds.append(total)
        self.train_seconds.append(total - self._validation)


class BestEpochStopping(keras.callbacks.Callback):
    """Early stopping on a lexicographic validation key (larger is better); restores the best weights.

    `key(logs)` returns a tuple, e.g. (val_accuracy, -val_loss): an epoch improves if its
    accuracy is higher, or equal with a lower loss, so a plateau in the (coarse, small
    sample) validation accuracy does not stop training while the loss still improves.
    Training stops after `patience` epochs without improvement. NaN never improves.
    With `min_delta` > 0 the first component must gain more than that to count: on a
    small validation split that the model already separates, the loss keeps creeping
    towards 0 while the model overfits, and such creeping must not keep it training.
    """

    def __init__(self, key, patience: int, min_delta: float = 0.0):
        super().__init__()
        self.key = key
        self.patience = patience
        self.min_delta = float(min_delta)

    def _improves(self, current: tuple) -> bool:
        if any(math.isnan(v) for v in current):
            return False
        if self.best is None:
            return True
        return current[0] > self.best[0] + self.min_delta or (current[0] == self.best[0] and current[1:] > self.best[1:])

    def on_train_begin(self, logs=None):
        self.best, self.best_epoch, self.best_weights, self.wait = None, None, None, 0

    def on_epoch_end(self, epoch, logs=None):
        current = tuple(float(v) for v in self.key(logs or {}))
        if self._improves(current):
            self.best, self.best_epoch, self.wait = current, epoch, 0
            self.best_weights = self.model.get_weights()
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.best_weights is not None:
            self.model.set_weights(self.best_weights)


class _EpochProgress(keras.callbacks.Callback):
    """One line per epoch on the `scarfx.progress` logger, e.g. `pretrain epoch 3/20  loss 4.1 ... 2.1 s`.

    The logger has no handler unless the CLI installs one (pipeline/logs.py), so
    library users and tests see nothing; pipeline users see the Trainer move.
    """

    def __init__(self, stage: str, epochs: int):
        super().__init__()
        self.stage, self.epochs = stage, epochs

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        metrics = "  ".join(f"{k} {float(v):.4f}" for k, v in (logs or {}).items() if k != "learning_rate")
        import logging

        logging.getLogger("scarfx.progress").info(
            "%s epoch %d/%d  %s  %.1f s", self.stage, epoch + 1, self.epochs, metrics, time.perf_counter() - self._start
        )


def _callbacks(key, config: ScarfConfig, log_dir: str | None, stage: str, has_validation: bool):
    """(callbacks, timer, stopper or None)."""
    timer = _EpochTimer()
    epochs = config.pretrain_epochs if stage == "pretrain" else config.finetune_epochs
    callbacks, stopper = [timer, _EpochProgress(stage, epochs)], None
    if has_validation:
        stopper = BestEpochStopping(key, config.patience, config.finetune_min_delta if stage == "finetune" else 0.0)
        callbacks.append(stopper)
    if log_dir:
        callbacks.append(
            keras.callbacks.TensorBoard(log_dir=os.path.join(log_dir, stage), update_freq="epoch", write_graph=False)
        )
    return callbacks, timer, stopper


def _history(history) -> dict[str, list[float]]:
    return {k: [float(v) for v in values] for k, values in history.history.items()}


def _shard_by_data(ds: tf.data.Dataset) -> tf.data.Dataset:
    """Under a multi-worker strategy every worker builds the same global batches (same
    rows, seeds and split hashes) and keeps its replicas' share of each: sharding by
    file would give workers different rows and different row positions."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options)


def _build_for(strategy: tf.distribute.Strategy, model: keras.Model, variables) -> None:
    """Builds `model`'s optimizer (and the model, by one call on an empty batch) under a
    several-replica `strategy`, and leaves the strategy to fit's scope. Keras 3's fit
    otherwise builds a model made under a strategy from a cross-replica mean of the first
    batch, which fails for dict inputs under MultiWorkerMirroredStrategy and for uneven
    per-replica batches; everything is built here, so that step has nothing to do."""
    if strategy.num_replicas_in_sync == 1:
        return
    with strategy.scope():
        variables = variables()
        model.optimizer.build(variables)
    model._distribute_strategy = None  # fit then runs under `with strategy.scope()`: get_strategy()
    if not isinstance(model, ScarfPretrainer):  # a compiled classifier: its logs come from compute_metrics
        compute_metrics = model.compute_metrics
        model.compute_metrics = lambda *args, **kwargs: _step_logs(compute_metrics(*args, **kwargs))


def _batched(rows: tf.data.Dataset, batch_size: int, shuffle_buffer: int, seed: int, drop_remainder: bool = False):
    if shuffle_buffer:
        rows = rows.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    return _shard_by_data(rows.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE))


def _training_dataset(rows: tf.data.Dataset, count: int, shuffle_buffer: int, config: ScarfConfig,
                      drop_remainder: bool):
    """(endless shuffled batches, steps per epoch, batch). An epoch is `config.steps_per_epoch`
    steps when set (the Trainer's train_steps), else one pass but >= min_steps_per_epoch."""
    batch = max(1, min(config.batch_size, count))
    passes = count // batch if drop_remainder else math.ceil(count / batch)
    steps = config.steps_per_epoch or max(passes, config.min_steps_per_epoch, 1)
    ds = _batched(rows, batch, shuffle_buffer, config.seed, drop_remainder).repeat()
    return ds, steps, batch


def _materialize(rows: tf.data.Dataset, count: int) -> TabularData:
    """The first `count` (bounded) rows of input dicts as arrays."""
    batch = next(iter(rows.batch(count).take(1)))
    return TabularData(batch["numeric"].numpy(), batch["categorical"].numpy(), np.zeros(count, np.int64))


def _steady_rate(seconds: list[float], rows_per_epoch: int) -> tuple[float | None, float | None]:
    """(median seconds per epoch, rows/s); the first epoch (XLA compilation) is left out when possible."""
    steady = seconds[1:] or seconds
    if not steady:
        return None, None
    per_epoch = float(np.median(steady))
    return per_epoch, (rows_per_epoch / per_epoch if per_epoch > 0 else None)


def pretrain(encoder, data: "TabularData | TableSource", layout: FeatureLayout, config: ScarfConfig, log_dir=None,
             jit_compile: bool = True, bank: FeatureBank | None = None, survey: TableSurvey | None = None,
             strategy: tf.distribute.Strategy | None = None):
    """Stage 1 on every row, labelled or not; trains `encoder` in place. Returns (history, summary).

    A `validation_fraction` of rows is held out as fixed corrupted pairs (at most
    `max_validation_rows`) for early stopping (patience `config.patience`, best weights
    restored); the bank is drawn from all rows. Training batches drop the remainder, so
    every step has B - 1 negatives. The train step (corruption included) is
    XLA-compiled unless `jit_compile=False` or the `strategy` (the one `encoder` was built
    under; default: TF's current) has several replicas. `survey` is the source's, when
    already taken.
    """
    start = time.perf_counter()
    source = as_source(data)
    if survey is None:
        survey = source.survey(layout, None, config, with_bank=bank is None)
    bank = bank if bank is not None else survey.bank
    train_count, val_count = survey.pretrain_split
    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
        corruption = FeatureCorruption.from_bank(bank, config.corruption_rate, name="corruption")
        model = ScarfPretrainer(
            encoder, build_projection_head(config), corruption, config.temperature, config.symmetric_loss, config.seed
        )
        model.compile(optimizer=keras.optimizers.Adam(config.learning_rate),
                      jit_compile=jit_compile and strategy.num_replicas_in_sync == 1)

    def built_variables():
        model({"numeric": tf.zeros((1, len(layout.numeric_names))),
               "categorical": tf.zeros((1, len(layout.categorical_names)), tf.int64)})  # builds the head
        return encoder.trainable_variables + model.head.trainable_variables

    _build_for(strategy, model, built_variables)
    train_ds, steps, batch = _training_dataset(source.pretrain_rows(False), train_count,
                                               source.shuffle_buffer(train_count, config), config, drop_remainder=True)
    val_ds = None
    if val_count:
        clean, corrupted = make_fixed_validation_pairs(_materialize(source.pretrain_rows(True), val_count), bank,
                                                       config.corruption_rate, config.seed)
        val_ds = _shard_by_data(tf.data.Dataset.from_tensor_slices((clean, corrupted)).batch(batch))
    callbacks, timer, stopper = _callbacks(
        lambda logs: (-logs["val_loss"],), config, log_dir, "pretrain", val_ds is not None
    )
    with strategy.scope():
        history = model.fit(
            train_ds, validation_data=val_ds, epochs=config.pretrain_epochs, steps_per_epoch=steps,
            validation_steps=config.validation_steps if val_ds is not None else None, callbacks=callbacks, verbose=0,
        )
    hist = _history(history)
    hist["train_seconds"] = [float(x) for x in timer.train_seconds]  # per epoch, validation excluded
    seconds_per_epoch, rows_per_second = _steady_rate(timer.train_seconds, steps * batch)
    summary = {
        "pretrain_rows": survey.rows,
        "pretrain_train_rows": train_count,
        "pretrain_validation_pairs": int(val_count),
        "pretrain_steps_per_epoch": int(steps),
        "feature_bank_rows": len(bank),
        "corrupted_features_per_row": corruption_count(layout.num_features, config.corruption_rate),
        "pretrain_epochs_run": len(hist.get("loss", [])),
        "pretrain_best_epoch": stopper.best_epoch + 1 if stopper and stopper.best_epoch is not None else None,
        "pretrain_best_val_info_nce": -stopper.best[0] if stopper and stopper.best is not None else None,
        "pretrain_seconds": time.perf_counter() - start,
        "pretrain_seconds_per_epoch": seconds_per_epoch,  # training only, validation excluded
        "pretrain_rows_per_second": rows_per_second,
    }
    return hist, summary


def _no_pretraining_summary(layout: FeatureLayout, config: ScarfConfig) -> dict:
    """Same keys as `pretrain`'s summary, so reports need not special-case the baseline."""
    return {
        "pretrain_rows": 0, "pretrain_train_rows": 0, "pretrain_validation_pairs": 0, "feature_bank_rows": 0,
        "corrupted_features_per_row": corruption_count(layout.num_features, config.corruption_rate),
        "pretrain_epochs_run": 0, "pretrain_best_epoch": None, "pretrain_best_val_info_nce": None,
        "pretrain_seconds": 0.0, "pretrain_seconds_per_epoch": None, "pretrain_rows_per_second": None,
    }


def stratified_folds(labels: np.ndarray, k: int, rng: np.random.Generator) -> list[np.ndarray]:
    """k disjoint sorted row-index arrays covering all rows, each class dealt round-robin
    from a random start so every fold gets its share of every class."""
    folds = [[] for _ in range(k)]
    start = 0
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cls))
        for i, row in enumerate(members):
            folds[(start + i) % k].append(row)
        start = (start + len(members)) % k
    return [np.sort(np.asarray(f, dtype=np.int64)) for f in folds]


def fine_tuning_splits(labels: np.ndarray, config: ScarfConfig) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, validation) rows per ensemble member: K folds, or one stratified holdout
    when K = 1 or there are fewer than 4·K labelled rows (folds of 4+ rows)."""
    rng = np.random.default_rng(config.seed + 1)
    k = config.ensemble_size
    if k > 1 and len(labels) >= 4 * k:
        rows = np.arange(len(labels))
        return [(np.setdiff1d(rows, fold), fold) for fold in stratified_folds(labels, k, rng)]
    return [split_rows(len(labels), config.validation_fraction, rng, labels)]


def _finetune_optimizer(config: ScarfConfig):
    if config.weight_decay > 0:
        return keras.optimizers.AdamW(config.learning_rate, weight_decay=config.weight_decay)
    return keras.optimizers.Adam(config.learning_rate)


def _monitor(config: ScarfConfig):
    if config.finetune_monitor == "accuracy":
        return lambda logs: (logs["val_accuracy"], -logs["val_loss"])
    return lambda logs: (-logs["val_loss"],)


def _compile_member(member, config: ScarfConfig, learning_rate: float, jit_compile: bool = True) -> None:
    optimizer = _finetune_optimizer(dataclasses.replace(config, learning_rate=learning_rate))
    member.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        jit_compile=jit_compile,
    )


def augment_with_corruption(ds: tf.data.Dataset, bank: FeatureBank, corruption_rate: float,
                            row_fraction: float, seed: int) -> tf.data.Dataset:
    """Fine-tuning augmentation with SCARF's own corruption: in each (inputs, labels) batch,
    a `row_fraction` of the rows get ⌊c·M⌋ features redrawn from their marginals (the
    pretraining bank) and keep their label. The rest pass clean, so the classifier still
    sees the true joint. Stateless RNG keyed by (seed, batch number): reproducible."""
    bank_numeric = tf.constant(bank.numeric)
    bank_categorical = tf.constant(bank.categorical)

    def corrupt(step, batch):
        inputs, labels = batch
        key = tf.stack([tf.constant(seed, tf.int64), step])
        corrupt_key, rows_key = tf.unstack(tf.random.experimental.stateless_split(key, num=2))
        numeric, categorical, _ = corrupt_features(inputs["numeric"], inputs["categorical"], bank_numeric,
                                                   bank_categorical, corruption_rate, corrupt_key)
        chosen = tf.random.stateless_uniform(tf.shape(labels)[:1], seed=rows_key) < row_fraction
        return {"numeric": tf.where(chosen[:, tf.newaxis], numeric, inputs["numeric"]),
                "categorical": tf.where(chosen[:, tf.newaxis], categorical, inputs["categorical"])}, labels

    return ds.enumerate().map(corrupt, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def _fit_member(encoder, layout: FeatureLayout, train: tf.data.Dataset, train_count: int, shuffle_buffer: int,
                val: tf.data.Dataset | None, num_classes: int, config: ScarfConfig, k: int, log_dir=None,
                bank: FeatureBank | None = None, strategy: tf.distribute.Strategy | None = None):
    """One ensemble member: a copy of `encoder` plus a fresh softmax layer, fitted on the
    `train` rows ((inputs, label), unbatched) and early-stopped on `val`. Returns (member,
    history, best epoch or None, steps per epoch).

    With `linear_probe`, the softmax layer is first fitted alone on the frozen encoder
    (LP-FT, Kumar et al. 2022): full fine-tuning then starts from a fitted head rather
    than a random one, so its first steps do not wreck the pretrained features, and an
    early stop still leaves a converged linear model on them."""
    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
        member_encoder = build_encoder(layout, config, name=f"encoder_{k}")
        member_encoder.set_weights(encoder.get_weights())
        member = build_classifier(member_encoder, num_classes, name=f"member_{k}", seed=config.seed + k,
                                  linear_skip=config.linear_skip)
    min_steps = config.min_steps_per_epoch if config.finetune_min_steps_per_epoch is None \
        else config.finetune_min_steps_per_epoch
    train_ds, steps, _ = _training_dataset(
        train, train_count, shuffle_buffer,
        dataclasses.replace(config, seed=config.seed + k, min_steps_per_epoch=min_steps), drop_remainder=False,
    )
    if config.finetune_corruption_rate > 0 and bank is not None:
        train_ds = augment_with_corruption(train_ds, bank, config.finetune_corruption_rate,
                                           config.finetune_corrupted_rows, config.seed + 1000 * (k + 1))
    # Epochs shorter than min_steps_per_epoch are validated more often; patience and the
    # epoch cap scale with them, so the step budgets stay those of min_steps_per_epoch.
    # An epoch length given explicitly (steps_per_epoch) is taken as it is.
    scale = 1 if config.steps_per_epoch else max(1, math.ceil(config.min_steps_per_epoch / steps))
    stage_config = dataclasses.replace(config, patience=config.patience * scale,
                                       finetune_epochs=config.finetune_epochs * scale)
    val_ds = _shard_by_data(val.batch(config.batch_size).prefetch(tf.data.AUTOTUNE)) if val is not None else None

    def fit(log):
        callbacks, timer, stopper = _callbacks(_monitor(config), stage_config, log, "finetune", val_ds is not None)
        with strategy.scope():
            history = member.fit(
                train_ds, validation_data=val_ds, epochs=stage_config.finetune_epochs, steps_per_epoch=steps,
                validation_steps=config.validation_steps if val_ds is not None else None,
                callbacks=callbacks, verbose=0,
            )
        hist = _history(history)
        hist["train_seconds"] = [float(x) for x in timer.train_seconds]
        return hist, (stopper.best_epoch if stopper is not None else None)

    jit = strategy.num_replicas_in_sync == 1
    if config.linear_probe:
        member_encoder.trainable = False
        with strategy.scope():
            _compile_member(member, config, config.learning_rate, jit)
        _build_for(strategy, member, lambda: member.trainable_variables)
        fit(None)
        member_encoder.trainable = True
    with strategy.scope():
        _compile_member(member, config, config.learning_rate * config.finetune_learning_rate_multiplier, jit)
    _build_for(strategy, member, lambda: member.trainable_variables)
    hist, best = fit(log_dir)
    return member, hist, best, steps


PREDICT_BATCH = 4096


def pseudo_labels(classifier, data: "TabularData | TableSource", threshold: float) -> TabularData:
    """The unlabelled rows the classifier is at least `threshold` sure of, labelled with its
    prediction (self-training). Rows stay unlabelled in `data` itself. Read in batches;
    only the chosen rows are kept."""
    if isinstance(data, TabularData):
        unlabelled = data.take(np.flatnonzero(data.labels < 0))
        batches = (unlabelled.take(np.arange(i, min(i + PREDICT_BATCH, len(unlabelled))))
                   for i in range(0, len(unlabelled), PREDICT_BATCH))
        empty = unlabelled.take(np.arange(0))
    else:
        ds = data.unlabelled_batches(PREDICT_BATCH)
        batches = (TabularData(b["numeric"], b["categorical"], np.full(len(b["numeric"]), -1, np.int64))
                   for b in ds.as_numpy_iterator())
        spec = ds.element_spec
        empty = TabularData(np.zeros((0, spec["numeric"].shape[1]), np.float32),
                            np.zeros((0, spec["categorical"].shape[1]), np.int64), np.zeros(0, np.int64))
    chosen = [empty]
    for batch in batches:
        probabilities = classifier.predict(batch.inputs(), batch_size=PREDICT_BATCH, verbose=0)
        confident = np.flatnonzero(probabilities.max(axis=1) >= threshold)
        part = batch.take(confident)
        part.labels = probabilities[confident].argmax(axis=1).astype(np.int64)
        chosen.append(part)
    return functools.reduce(_concat, chosen)


def _concat(a: TabularData, b: TabularData) -> TabularData:
    return TabularData(np.concatenate([a.numeric, b.numeric]), np.concatenate([a.categorical, b.categorical]),
                       np.concatenate([a.labels, b.labels]))


def fine_tune(encoder, data: "TabularData | TableSource", layout: FeatureLayout, num_classes: int,
              config: ScarfConfig, log_dir=None, bank: FeatureBank | None = None, survey: TableSurvey | None = None,
              strategy: tf.distribute.Strategy | None = None):
    """Stage 2 on labelled rows (label >= 0). Returns (classifier, history, summary).

    Each of the `ensemble_size` members starts from a copy of `encoder` (so `encoder`
    itself stays as pretrained) plus a fresh softmax layer, and early-stops on its own
    validation rows (`config.finetune_monitor`, patience `config.patience`, best weights
    restored). The classifier averages the members' probabilities. With
    `self_training_rounds`, the members are then refitted, each round, on their training
    rows plus the unlabelled rows the current ensemble labels with confidence >=
    `pseudo_label_threshold`; validation stays on true labels only.
    """
    start = time.perf_counter()
    source = as_source(data)
    # The augmentation's marginals come from every row, labelled or not, as in pretraining.
    augment = config.finetune_corruption_rate > 0
    if survey is None:
        survey = source.survey(layout, num_classes, config, with_bank=augment and bank is None)
    bank = (bank if bank is not None else survey.bank) if augment else None
    pseudo = None
    pseudo_counts = []
    for round_ in range(1 + config.self_training_rounds):
        if round_:
            pseudo = pseudo_labels(classifier, source, config.pseudo_label_threshold)
            pseudo_counts.append(len(pseudo))
            if len(pseudo) == 0:
                break
        members, histories, best_epochs, best_losses, epochs_run, steps_run = [], [], [], [], [], []
        for k, (train_count, val_count) in enumerate(survey.finetune_splits):
            train = source.labelled_rows(k, validation=False)
            if pseudo is not None:
                train = train.concatenate(tf.data.Dataset.from_tensor_slices((pseudo.inputs(), pseudo.labels)))
                train_count += len(pseudo)
            val = source.labelled_rows(k, validation=True) if val_count else None
            member, hist, best, steps = _fit_member(encoder, layout, train, train_count,
                                             source.shuffle_buffer(train_count, config), val, num_classes, config, k,
                                             log_dir if k == 0 and round_ == 0 else None, bank, strategy)
            members.append(member)
            histories.append(hist)
            epochs_run.append(len(hist.get("loss", [])))
            steps_run.append(int(steps))
            if best is not None:
                best_epochs.append(best + 1)
                best_losses.append(float(hist["val_loss"][best]))
        classifier = average_classifiers(members, layout)
        # The curves and best epochs reported are those of the model returned: the last round's.
        first_history = histories[0]
    summary = {
        "finetune_labelled_rows": survey.labelled,
        "finetune_train_rows": survey.finetune_splits[0][0],
        "finetune_validation_rows": survey.finetune_splits[0][1],
        "finetune_steps_per_epoch": steps_run[0],
        "ensemble_size": len(members),
        "finetune_epochs_run": epochs_run[0],
        "finetune_best_epoch": best_epochs[0] if best_epochs else None,
        "finetune_best_epochs": best_epochs,
        "finetune_best_val_loss": float(np.mean(best_losses)) if best_losses else None,
        "finetune_monitor": config.finetune_monitor,
        "pseudo_labelled_rows": pseudo_counts,
        "finetune_seconds": time.perf_counter() - start,
    }
    return classifier, first_history, summary


def check_inputs(data: TabularData | None, layout: FeatureLayout, num_classes: int | None,
                 config: ScarfConfig | None = None) -> None:
    """Raises ValueError, before any training, on inputs the model cannot use. Without
    `data` (a stream), only the layout and config; a stream's rows are checked batch by
    batch as its survey reads them. Without `num_classes` (pretraining alone), labels
    are not checked."""
    dn, dc = len(layout.numeric_names), len(layout.categorical_names)
    if dn + dc == 0:
        raise ValueError("no features to train on")
    if num_classes is not None and num_classes < 2:
        raise ValueError(f"need at least 2 classes, got {num_classes}")
    if len(layout.categorical_cardinalities) != dc or any(c < 1 for c in layout.categorical_cardinalities):
        raise ValueError(f"need one cardinality >= 1 per categorical feature, got {layout.categorical_cardinalities}")
    if config is not None:
        if config.finetune_monitor not in FINETUNE_MONITORS:
            raise ValueError(f"finetune_monitor must be one of {FINETUNE_MONITORS}, got {config.finetune_monitor!r}")
        if config.ensemble_size < 1:
            raise ValueError(f"ensemble_size must be >= 1, got {config.ensemble_size}")
        if not 0.0 <= config.dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {config.dropout}")
        for key in ("shuffle_buffer", "max_validation_rows"):
            if getattr(config, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(config, key)}")
        for key in ("steps_per_epoch", "validation_steps"):
            if getattr(config, key) is not None and getattr(config, key) < 1:
                raise ValueError(f"{key} must be >= 1 or unset, got {getattr(config, key)}")
    if data is None:
        return
    n = len(data.labels)
    if data.numeric.shape != (n, dn) or data.categorical.shape != (n, dc):
        raise ValueError(
            f"expected numeric [{n}, {dn}] and categorical [{n}, {dc}], "
            f"got {data.numeric.shape} and {data.categorical.shape}"
        )
    if n == 0:
        raise ValueError("no rows to train on")
    _check_batch(data.numeric, data.categorical, data.labels, layout, num_classes if num_classes is not None else 1 << 62)
    if num_classes is not None and not np.any(data.labels >= 0):
        raise ValueError("no labelled rows to fine-tune on")


def train_scarf_classifier(
    data: "TabularData | TableSource",
    layout: FeatureLayout,
    num_classes: int,
    config: ScarfConfig = ScarfConfig(),
    log_dir: str | None = None,
    init_encoder: Callable[[keras.Model], dict] | None = None,
    strategy: tf.distribute.Strategy | None = None,
) -> TrainingResult:
    """Pretrains f on all rows (unless config.pretrain is False), then fine-tunes f + a
    softmax classifier on the labelled rows. TensorBoard logs go to log_dir/{pretrain,finetune}.

    `data` is an in-memory TabularData or a TableSource (e.g. a StreamedTable of the
    Trainer's TFRecords): either way one survey pass checks it and fills the bank, and
    both stages read it through tf.data.

    `init_encoder` (warm start) is called on the freshly built f before pretraining, to
    load an earlier model's weights into it (see models.warm_start); it returns what it
    carried over, which goes into the summary as `warm_start`.

    Models are built and trained under `strategy` (default: one from
    `config.distribution`); the global batch `batch_size` is split across its replicas.
    The classifier and encoder returned are plain (undistributed) copies, to save anywhere."""
    strategy = strategy or make_strategy(config.distribution)
    source = as_source(data)
    # One sample of every row's marginals, for pretraining's corruption and fine-tuning's
    # augmentation alike, filled in the survey's one pass.
    survey = source.survey(layout, num_classes, config,
                           with_bank=config.pretrain or config.finetune_corruption_rate > 0)
    # Weight init and shuffling follow the seed, and the softmax layers are seeded, so
    # pretrain=True and pretrain=False start from identical weights and differ only by
    # the pretraining.
    keras.utils.set_random_seed(config.seed)
    with strategy.scope():
        encoder = build_encoder(layout, config)
    warm_start = init_encoder(encoder) if init_encoder is not None else None
    summary = {"pretrained": config.pretrain, "rows": survey.rows, "num_features": layout.num_features,
               "warm_started": warm_start is not None, "replicas": strategy.num_replicas_in_sync}
    if warm_start is not None:
        summary["warm_start"] = warm_start
    pretrain_history = {}
    if config.pretrain:
        pretrain_history, stage = pretrain(encoder, source, layout, config, log_dir, survey=survey, strategy=strategy)
    else:
        stage = _no_pretraining_summary(layout, config)
    summary.update(stage)
    classifier, finetune_history, stage = fine_tune(encoder, source, layout, num_classes, config, log_dir,
                                                    survey=survey, strategy=strategy)
    summary.update(stage)
    summary["unlabelled_rows"] = survey.rows - survey.labelled
    if strategy is not tf.distribute.get_strategy():
        classifier, encoder = _plain_copy(classifier), _plain_copy(encoder)
    return TrainingResult(classifier, pretrain_history, finetune_history, summary, encoder)


def _plain_copy(model: keras.Model) -> keras.Model:
    """The model rebuilt outside any strategy, holding its trained weights as plain variables."""
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy
